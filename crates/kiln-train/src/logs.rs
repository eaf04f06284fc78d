use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::callback::{EvalLog, StepLog};
use crate::text;
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

/// A y-axis label: `y` with `decimals` decimals, never `-0` (ticks at a rounded zero, or at a
/// negative zero from the grid arithmetic, read `0`).
fn tick_label(y: f64, decimals: usize) -> String {
    let label = format!("{y:.decimals$}");
    match label.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => label,
    }
}

/// Draws the training loss (per step) and validation loss (per evaluation) against the step
/// into an 800×500 PNG file: training in blue, validation in red with dots.
///
/// The image carries a title (`Training loss`, followed by `run_name` when given), the step
/// at round ticks along the x axis, the loss at every horizontal grid line (a 1, 2 or 5 × 10ᵏ
/// spacing, with a darker line at every integer when the spacing is below 1), the axis titles
/// `step` and `loss`, and a legend. Text is drawn with the embedded 8×8 bitmap font of
/// [`crate::text`] (no font engine). The x axis spans step 0 to the last step; every number is
/// also in the JSONL log.
///
/// # Errors
/// Nothing to draw, or the image cannot be written.
pub fn plot_curves(path: &Path, records: &[LogRecord], run_name: Option<&str>) -> Result<()> {
    draw_curves(path, records, run_name, true)
}

/// Width and height of the loss curve.
const CURVE_SIZE: (u32, u32) = (800, 500);
/// Space around the plotting area: top (title), left (loss labels), bottom (steps), right.
const CURVE_MARGIN: (i32, i32, i32, i32) = (48, 96, 52, 24);
const GRID: RGBColor = RGBColor(220, 220, 220);
const GRID_INTEGER: RGBColor = RGBColor(150, 150, 150);

/// [`plot_curves`], with or without its text (without: what the image used to be, for tests).
fn draw_curves(
    path: &Path,
    records: &[LogRecord],
    run_name: Option<&str>,
    with_text: bool,
) -> Result<()> {
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
    let root = BitMapBackend::new(path, CURVE_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (top, left, bottom, right) = CURVE_MARGIN;
    let mut chart = ChartBuilder::on(&root)
        .margin_top(top)
        .margin_left(left)
        .margin_bottom(bottom)
        .margin_right(right)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))
        .map_err(|e| err(e.to_string()))?;
    let (lo, hi) = (y_min - pad, y_max + pad);
    // Vertical grid lines and labels at round steps.
    let x_spacing = grid_spacing(x_max).max(1.0).round();
    let x_ticks: Vec<f64> = (0..)
        .map(|k| f64::from(k) * x_spacing)
        .take_while(|x| *x <= x_max)
        .collect();
    for &x in &x_ticks {
        chart
            .draw_series(LineSeries::new([(x, lo), (x, hi)], GRID))
            .map_err(|e| err(e.to_string()))?;
    }
    // Horizontal grid lines at round losses.
    let spacing = grid_spacing(hi - lo);
    let decimals = if spacing >= 1.0 {
        0
    } else {
        (-spacing.log10() - 1e-9).ceil() as usize
    };
    let mut y_ticks = Vec::new();
    let mut k = (lo / spacing).ceil();
    while k * spacing <= hi {
        let y = k * spacing;
        let integer = spacing < 1.0 && (y - y.round()).abs() < spacing * 1e-3;
        let colour = if integer { GRID_INTEGER } else { GRID };
        chart
            .draw_series(LineSeries::new([(0.0, y), (x_max, y)], colour))
            .map_err(|e| err(e.to_string()))?;
        y_ticks.push(y);
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
    if with_text {
        let (width, height) = (CURVE_SIZE.0 as i32, CURVE_SIZE.1 as i32);
        let draw = |s: &str, at: (i32, i32), scale: i32| {
            text::draw_text(&root, s, at, scale, &BLACK).map_err(|e| err(e.to_string()))
        };
        let title = match run_name {
            Some(name) if !name.is_empty() => format!("Training loss: {name}"),
            _ => "Training loss".to_string(),
        };
        draw(&title, ((width - text::text_width(&title, 2)) / 2, 14), 2)?;
        let ch = text::char_size(1);
        for &x in &x_ticks {
            let (px, py) = chart.backend_coord(&(x, lo));
            root.draw(&PathElement::new([(px, py), (px, py + 5)], BLACK))
                .map_err(|e| err(e.to_string()))?;
            let label = format!("{x:.0}");
            draw(&label, (px - text::text_width(&label, 1) / 2, py + 9), 1)?;
        }
        for &y in &y_ticks {
            let (px, py) = chart.backend_coord(&(0.0, y));
            root.draw(&PathElement::new([(px - 5, py), (px, py)], BLACK))
                .map_err(|e| err(e.to_string()))?;
            let label = tick_label(y, decimals);
            draw(
                &label,
                (px - 9 - text::text_width(&label, 1), py - ch / 2),
                1,
            )?;
        }
        draw(
            "step",
            ((width - text::text_width("step", 2)) / 2, height - 24),
            2,
        )?;
        let loss_h = text::text_width("loss", 2);
        text::draw_text_vertical(&root, "loss", (8, (height - loss_h) / 2), 2, &BLACK)
            .map_err(|e| err(e.to_string()))?;
        // The legend, in the top-right corner of the plotting area.
        let entries = [("training loss", BLUE), ("validation loss", RED)];
        let box_w = 44
            + entries
                .iter()
                .map(|(s, _)| text::text_width(s, 1))
                .max()
                .unwrap_or(0);
        let (x1, y0) = (width - right - 8, top + 8);
        let x0 = x1 - box_w;
        let row_h = 16;
        root.draw(&Rectangle::new(
            [(x0, y0), (x1, y0 + 8 + row_h * entries.len() as i32)],
            WHITE.filled(),
        ))
        .map_err(|e| err(e.to_string()))?;
        root.draw(&Rectangle::new(
            [(x0, y0), (x1, y0 + 8 + row_h * entries.len() as i32)],
            BLACK,
        ))
        .map_err(|e| err(e.to_string()))?;
        for (i, (label, colour)) in entries.iter().enumerate() {
            let cy = y0 + 4 + row_h * i as i32 + row_h / 2;
            root.draw(&PathElement::new(
                [(x0 + 8, cy), (x0 + 32, cy)],
                colour.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
            draw(label, (x0 + 38, cy - ch / 2), 1)?;
        }
    }
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
                extra: Default::default(),
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

    /// Width, height and RGB bytes of a PNG file.
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// Pixels in the box `[from, to)` that are neither white nor a grid colour.
    fn ink(rgb: &[u8], width: u32, from: (i32, i32), to: (i32, i32)) -> usize {
        let background = [
            [255u8; 3],
            [GRID.0, GRID.1, GRID.2],
            [GRID_INTEGER.0, GRID_INTEGER.1, GRID_INTEGER.2],
        ];
        let mut n = 0;
        for y in from.1.max(0)..to.1 {
            for x in from.0.max(0)..to.0.min(width as i32) {
                let i = 3 * (y as usize * width as usize + x as usize);
                if let Some(p) = rgb.get(i..i + 3)
                    && !background.iter().any(|b| b == p)
                {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn tick_labels_never_read_minus_zero() {
        assert_eq!(tick_label(-0.0, 0), "0");
        assert_eq!(tick_label(-0.0, 2), "0.00");
        assert_eq!(tick_label(-1e-12, 1), "0.0");
        assert_eq!(tick_label(-0.5, 1), "-0.5");
        assert_eq!(tick_label(-2.0, 0), "-2");
        assert_eq!(tick_label(0.25, 2), "0.25");
    }

    #[test]
    fn curve_is_a_png_and_log_round_trips() {
        let dir = std::env::temp_dir().join(format!("kiln-train-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("curve.png");
        plot_curves(&png, &records(), Some("demo")).unwrap();
        let (width, height, rgb) = decode(&png);
        assert_eq!((width, height), (800, 500));
        // Text in the title band, left of the plot (loss labels and title), below it (steps)
        // and in the legend box; the curves are blue and red.
        let (top, left, bottom, _) = CURVE_MARGIN;
        let (w, h) = (width as i32, height as i32);
        let title = ink(&rgb, width, (0, 0), (w, top - 4));
        let labels = ink(&rgb, width, (0, top), (left - 6, h - bottom));
        let steps = ink(&rgb, width, (left, h - bottom + 6), (w, h));
        assert!(
            title > 100 && labels > 100 && steps > 100,
            "{title} {labels} {steps}"
        );
        let legend = ink(&rgb, width, (w - 200, top + 8), (w - 40, top + 44));
        assert!(legend > 100, "{legend}");
        let has = |c: [u8; 3]| rgb.chunks(3).any(|p| p == c);
        assert!(has([0, 0, 255]) && has([255, 0, 0]));
        // The same chart without text fails every one of those checks.
        draw_curves(&png, &records(), Some("demo"), false).unwrap();
        let (_, _, bare) = decode(&png);
        assert_eq!(ink(&bare, width, (0, 0), (w, top - 4)), 0);
        assert_eq!(ink(&bare, width, (0, top), (left - 6, h - bottom)), 0);
        assert_eq!(ink(&bare, width, (left, h - bottom + 6), (w, h)), 0);
        // A longer title is wider: the run name is drawn.
        plot_curves(&png, &records(), None).unwrap();
        let (_, _, untitled) = decode(&png);
        assert!(ink(&untitled, width, (0, 0), (w, top - 4)) < title);
        assert!(plot_curves(&png, &[], None).is_err());
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
