//! Labelled horizontal bar charts as PNG files, with an 8×8 bitmap font (no font engine needed).

use std::path::Path;

use anyhow::{Result, anyhow};
use kiln::train::text::{char_size, draw_text};
use plotters::prelude::*;

/// One panel: a title and one bar per row.
pub struct Panel {
    /// Shown above the bars.
    pub title: String,
    /// `(label, value)`; `None` draws no bar and the text `n/a`.
    pub bars: Vec<(String, Option<f64>)>,
    /// How a value is printed after its bar.
    pub format: fn(f64) -> String,
}

const SCALE: i32 = 2; // font pixels per bitmap pixel
const ROW_H: i32 = 26;
const PANEL_W: i32 = 560;
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `panels` in a grid of `columns` under a `title` and writes the PNG to `path`.
///
/// # Errors
/// The image cannot be drawn or written.
pub fn bar_panels(path: &Path, title: &str, panels: &[Panel], columns: usize) -> Result<()> {
    let columns = columns.max(1);
    let rows_of = |p: &Panel| p.bars.len() as i32;
    let max_rows = panels.iter().map(rows_of).max().unwrap_or(0);
    let panel_h = 40 + ROW_H * max_rows + 10;
    let grid_rows = panels.len().div_ceil(columns) as i32;
    let width = PANEL_W * columns as i32 + 20;
    let height = 50 + panel_h * grid_rows;
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(err)?;
    text(&root, title, (10, 12), &BLACK).map_err(err)?;
    for (i, panel) in panels.iter().enumerate() {
        let x0 = 10 + PANEL_W * (i % columns) as i32;
        let y0 = 50 + panel_h * (i / columns) as i32;
        text(&root, &panel.title, (x0, y0), &BLACK).map_err(err)?;
        let label_w = panel
            .bars
            .iter()
            .map(|(l, _)| l.chars().count() as i32)
            .max()
            .unwrap_or(0)
            * char_size(SCALE)
            + 8;
        let value_w = 10 * char_size(SCALE);
        let bar_max = (PANEL_W - 20 - label_w - value_w).max(20);
        let max = panel
            .bars
            .iter()
            .filter_map(|(_, v)| *v)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        for (r, (label, value)) in panel.bars.iter().enumerate() {
            let y = y0 + 30 + ROW_H * r as i32;
            text(&root, label, (x0, y + 4), &BLACK).map_err(err)?;
            let bx = x0 + label_w;
            let (len, shown) = match value {
                Some(v) if v.is_finite() => {
                    let len = if max > 0.0 {
                        ((v.max(0.0) / max) * f64::from(bar_max)).round() as i32
                    } else {
                        0
                    };
                    (len, (panel.format)(*v))
                }
                _ => (0, "n/a".to_string()),
            };
            if len > 0 {
                root.draw(&Rectangle::new(
                    [(bx, y), (bx + len, y + ROW_H - 6)],
                    COLOURS[r % COLOURS.len()].filled(),
                ))
                .map_err(err)?;
            }
            text(&root, &shown, (bx + len + 6, y + 4), &BLACK).map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Draws `s` with its top-left corner at `at`.
fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &str,
    at: (i32, i32),
    colour: &RGBColor,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    draw_text(area, s, at, SCALE, colour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_with_labels_and_bars() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let panels = vec![
            Panel {
                title: "token F1".into(),
                bars: vec![("lora".into(), Some(0.5)), ("ia3".into(), None)],
                format: |v| format!("{v:.3}"),
            },
            Panel {
                title: "tokens/s".into(),
                bars: vec![("lora".into(), Some(40.0)), ("ia3".into(), Some(55.0))],
                format: |v| format!("{v:.1}"),
            },
        ];
        bar_panels(&path, "methods", &panels, 2).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        // Wider for two columns than for one.
        let one = dir.path().join("one.png");
        bar_panels(&one, "methods", &panels, 1).unwrap();
        let width = |b: &[u8]| u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
        assert!(width(&bytes) > width(&std::fs::read(&one).unwrap()));
    }
}
