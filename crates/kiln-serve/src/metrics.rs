//! Counters, gauges and histograms in Prometheus' text format (`GET /metrics`).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    sum_count: Mutex<(f64, u64)>,
}

impl Histogram {
    /// Records one observation, in seconds.
    pub fn observe(&self, seconds: f64) {
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut g = self.sum_count.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += seconds;
        g.1 += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let (sum, count) = *self.sum_count.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests per endpoint: chat, completions, models, feedback.
    pub requests: [AtomicU64; 4],
    /// Error responses per status: 400, 401, 404, 429, 500 and others.
    pub errors: [AtomicU64; 6],
    /// Prompt tokens of admitted requests.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Time from a request's arrival to its first token.
    pub time_to_first_token: Histogram,
    /// Time from a request's arrival to its last token.
    pub latency: Histogram,
}

/// An endpoint, for [`Metrics::requests`].
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    Chat = 0,
    /// `POST /v1/completions`
    Completions = 1,
    /// `GET /v1/models`
    Models = 2,
    /// `POST /v1/feedback`
    Feedback = 3,
}

const ENDPOINTS: [&str; 4] = ["chat_completions", "completions", "models", "feedback"];
const STATUSES: [&str; 6] = ["400", "401", "404", "429", "500", "other"];

impl Metrics {
    /// Counts a request.
    pub fn request(&self, e: Endpoint) {
        self.requests[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error response.
    pub fn error(&self, status: u16) {
        let i = match status {
            400 => 0,
            401 => 1,
            404 => 2,
            429 => 3,
            500 => 4,
            _ => 5,
        };
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The text format, with the live queue depth and batch size, and the decode steps and the
    /// sequences they advanced.
    pub fn render(&self, queued: usize, running: usize, steps: usize, rows: usize) -> String {
        let mut out = String::new();
        let families = [
            (
                "kiln_requests_total",
                "Requests received, per endpoint.",
                "endpoint",
                &ENDPOINTS[..],
                &self.requests[..],
            ),
            (
                "kiln_request_errors_total",
                "Error responses, per HTTP status.",
                "status",
                &STATUSES[..],
                &self.errors[..],
            ),
        ];
        for (name, help, label, values, counts) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (v, c) in values.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "{name}{{{label}=\"{v}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let samples = [
            (
                "kiln_prompt_tokens_total",
                "Prompt tokens of admitted requests.",
                "counter",
                count(&self.prompt_tokens),
            ),
            (
                "kiln_generated_tokens_total",
                "Tokens generated.",
                "counter",
                count(&self.generated_tokens),
            ),
            (
                "kiln_queue_depth",
                "Requests waiting for a decoding slot.",
                "gauge",
                queued as u64,
            ),
            (
                "kiln_running_requests",
                "Requests decoding now.",
                "gauge",
                running as u64,
            ),
            (
                "kiln_decode_steps_total",
                "Batched decode steps (prefills not counted).",
                "counter",
                steps as u64,
            ),
            (
                "kiln_decode_rows_total",
                "Sequences advanced by decode steps (rows / steps: the mean batch).",
                "counter",
                rows as u64,
            ),
        ];
        for (name, help, kind, v) in samples {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        self.time_to_first_token.render(
            &mut out,
            "kiln_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
        );
        self.latency.render(
            &mut out,
            "kiln_request_duration_seconds",
            "Time from a request's arrival to its last generated token.",
        );
        out
    }
}
