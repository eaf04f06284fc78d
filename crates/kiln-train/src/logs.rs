use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::callback::{EvalLog, StepLog};
use crate::{Result, TrainError};

/// One line of the JSONL metrics log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogRecord {
    /// A training step.
    Step(StepLog),
    /// An evaluation.
    Eval(EvalLog),
}

impl LogRecord {
    fn step(&self) -> usize {
        match self {
            LogRecord::Step(s) => s.step,
            LogRecord::Eval(e) => e.step,
        }
    }
}

/// An append-only JSONL metrics file, flushed after every record.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending; when `keep_until` is given, records of later steps (left by
    /// an interrupted run that is being resumed) are dropped first. Returns the log and the
    /// records it keeps.
    ///
    /// # Errors
    /// An I/O error, or a line that is not a record.
    pub fn open(path: &Path, keep_until: Option<usize>) -> Result<(Self, Vec<LogRecord>)> {
        let mut kept = Vec::new();
        match keep_until {
            Some(last) if path.exists() => {
                let f = File::open(path).map_err(TrainError::io(path))?;
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(TrainError::io(path))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let rec: LogRecord =
                        serde_json::from_str(&line).map_err(TrainError::json(path))?;
                    if rec.step() <= last {
                        kept.push(rec);
                    }
                }
                let mut f = File::create(path).map_err(TrainError::io(path))?;
                for rec in &kept {
                    let line = serde_json::to_string(rec).map_err(TrainError::json(path))?;
                    writeln!(f, "{line}").map_err(TrainError::io(path))?;
                }
            }
            Some(_) => {}
            None => {
                File::create(path).map_err(TrainError::io(path))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(TrainError::io(path))?;
        Ok((
            Self {
                path: path.into(),
                file,
            },
            kept,
        ))
    }

    /// Appends one record and flushes it.
    ///
    /// # Errors
    /// An I/O error.
    pub fn write(&mut self, record: &LogRecord) -> Result<()> {
        let line = serde_json::to_string(record).map_err(TrainError::json(&self.path))?;
        writeln!(self.file, "{line}").map_err(TrainError::io(&self.path))?;
        self.file.flush().map_err(TrainError::io(&self.path))
    }
}

/// A progress bar over optimizer steps on stderr: loss, learning rate, tokens/s and ETA.
/// Hidden when disabled or when stderr is not a terminal.
pub(crate) fn progress_bar(total: usize, start: usize, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(start as u64);
    bar.reset_eta();
    bar
}

/// Draws the training loss (per step) and validation loss (per evaluation) against the step
/// into an 800×500 PNG file: training in blue, validation in red with dots.
///
/// The image has no text (no font engine is compiled in): horizontal grid lines mark round loss
/// values (a 1, 2 or 5 × 10ᵏ spacing, with a darker line at every integer when the spacing is
/// below 1), and the x axis spans step 0 to the last step. The numbers are in the JSONL log.
///
/// # Errors
/// Nothing to draw, or the image cannot be written.
pub fn plot_curves(path: &Path, records: &[LogRecord]) -> Result<()> {
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Step(s) if s.loss.is_finite() => Some((s.step as f64, f64::from(s.loss))),
            _ => None,
        })
        .collect();
    let val: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Eval(e) if e.val_loss.is_finite() => Some((e.step as f64, e.val_loss)),
            _ => None,
        })
        .collect();
    let err = |message: String| TrainError::Plot {
        path: path.into(),
        message,
    };
    if train.is_empty() && val.is_empty() {
        return Err(err("no finite loss to draw".into()));
    }
    let all = train.iter().chain(&val);
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))
        .map_err(|e| err(e.to_string()))?;
    let (lo, hi) = (y_min - pad, y_max + pad);
    let spacing = grid_spacing(hi - lo);
    let mut k = (lo / spacing).ceil();
    while k * spacing <= hi {
        let y = k * spacing;
        let integer = spacing < 1.0 && (y - y.round()).abs() < spacing * 1e-3;
        let colour = if integer {
            RGBColor(150, 150, 150)
        } else {
            RGBColor(220, 220, 220)
        };
        chart
            .draw_series(LineSeries::new([(0.0, y), (x_max, y)], colour))
            .map_err(|e| err(e.to_string()))?;
        k += 1.0;
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, hi), (0.0, lo), (x_max, lo)],
            BLACK.stroke_width(2),
        ))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(train, &BLUE))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(val.clone(), RED.stroke_width(2)))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(val.into_iter().map(|p| Circle::new(p, 3, RED.filled())))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// A 1, 2 or 5 × 10ᵏ spacing giving about 5 to 10 grid lines over `range`.
fn grid_spacing(range: f64) -> f64 {
    let raw = (range / 6.0).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<LogRecord> {
        let mut out = Vec::new();
        for step in 1..=40usize {
            out.push(LogRecord::Step(StepLog {
                step,
                epoch: 0,
                loss: 3.0 / (step as f32).sqrt(),
                lr: 1e-3,
                grad_norm: 1.0,
                loss_tokens: 10,
                tokens_per_sec: 100.0,
                elapsed_secs: step as f64,
            }));
            if step % 10 == 0 {
                out.push(LogRecord::Eval(EvalLog {
                    step,
                    val_loss: 3.2 / (step as f64).sqrt(),
                    val_perplexity: (3.2 / (step as f64).sqrt()).exp(),
                    val_tokens: 5,
                    is_best: true,
                    extra: Default::default(),
                }));
            }
        }
        out
    }

    #[test]
    fn curve_is_a_png_and_log_round_trips() {
        let dir = std::env::temp_dir().join(format!("kiln-train-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("curve.png");
        plot_curves(&png, &records()).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, right after the chunk header.
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 800);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 500);
        assert!(plot_curves(&png, &[]).is_err());
        assert_eq!(grid_spacing(3.0), 0.5);
        assert_eq!(grid_spacing(0.06), 0.01);

        // A resumed run keeps the records up to its checkpoint step and drops the rest.
        let path = dir.join("metrics.jsonl");
        let (mut log, kept) = MetricsLog::open(&path, None).unwrap();
        assert!(kept.is_empty());
        for r in records() {
            log.write(&r).unwrap();
        }
        drop(log);
        let (_, kept) = MetricsLog::open(&path, Some(20)).unwrap();
        assert_eq!(kept.len(), 22);
        let steps = |r: &[LogRecord]| r.iter().map(LogRecord::step).collect::<Vec<_>>();
        assert_eq!(steps(&kept), steps(&records()[..22]));
        assert!(matches!(kept[21], LogRecord::Eval(_)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 22);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
