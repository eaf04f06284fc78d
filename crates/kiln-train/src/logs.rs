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
/// into a PNG file: training in blue, validation in red with dots.
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
    chart
        .configure_mesh()
        .x_labels(0)
        .y_labels(0)
        .draw()
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
