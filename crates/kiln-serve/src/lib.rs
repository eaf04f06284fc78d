//! An OpenAI-compatible server for kiln models.
//!
//! - `POST /v1/chat/completions` and `POST /v1/completions` in OpenAI's shapes, with
//!   `stream: true` as server-sent events, `temperature`, `top_p`, `max_tokens`, `stop`,
//!   `seed` (and vLLM's `ignore_eos`);
//! - `GET /v1/models`: the base model and every adapter; a request picks one by its `model`;
//! - `GET /health`, `GET /metrics` (Prometheus text format);
//! - `POST /v1/feedback {"id", "rating" | "preferred"}`: preference pairs appended to a JSONL
//!   file that preference tuning reads ([`feedback`]).
//!
//! Several LoRA adapters stay resident over one base model, and requests for different adapters
//! decode in the same batch with continuous batching ([`engine`]). Limits: decoding slots and
//! queue places (429 beyond them), the context guard (400 naming the numbers), unknown models
//! (404), malformed JSON or parameters (400), an optional bearer key (401). [`Server::run`]
//! stops accepting on shutdown and finishes the requests in flight.
//!
//! ```no_run
//! # async fn demo(p: kiln_models::Pretrained) -> kiln_serve::Result<()> {
//! let server = kiln_serve::Server::new("base", p.model, Vec::new(), p.tokenizer,
//!     kiln_serve::ServeOptions::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! server.run(listener, kiln_serve::shutdown_signal()).await
//! # }
//! ```

pub mod api;
pub mod engine;
pub mod feedback;
pub mod metrics;
mod server;

use std::path::PathBuf;

pub use server::{Server, shutdown_signal};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Two models share a name, or a name is empty.
    #[error("the model name `{0}` is empty or already taken (names must be unique)")]
    Name(String),
    /// An I/O error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (or socket) involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, ServeError>;

/// Limits and options of a [`Server`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Requests decoded together at most (the batch's slots).
    pub max_concurrent: usize,
    /// Requests waiting for a slot at most; more get 429.
    pub max_queue: usize,
    /// A bearer key every `/v1` request must carry.
    pub api_key: Option<String>,
    /// Where feedback's preference pairs go (`None`: feedback is off).
    pub feedback: Option<PathBuf>,
    /// `max_tokens` when a request gives none (cut to the context left).
    pub default_max_tokens: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            max_queue: 64,
            api_key: None,
            feedback: None,
            default_max_tokens: 256,
        }
    }
}
