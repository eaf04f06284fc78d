//! Text in bitmap charts with the 8×8 font of the `font8x8` crate (embedded; no font engine
//! or system font needed). Used by the loss curve and by the CLI's bar charts.

use font8x8::{BASIC_FONTS, UnicodeFonts};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Width and height in pixels of one character at `scale` (font pixels per bitmap pixel).
pub fn char_size(scale: i32) -> i32 {
    8 * scale
}

/// Width in pixels of `s` drawn at `scale`.
pub fn text_width(s: &str, scale: i32) -> i32 {
    s.chars().count() as i32 * char_size(scale)
}

/// Draws `s` with its top-left corner at `at`, each font pixel a `scale`×`scale` square.
/// Characters outside the basic Latin set are drawn as `?`.
///
/// # Errors
/// The backend's drawing error.
pub fn draw_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &str,
    at: (i32, i32),
    scale: i32,
    colour: &RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let scale = scale.max(1);
    for (i, col, row) in lit_pixels(s) {
        let x = at.0 + i * char_size(scale) + col * scale;
        square(area, (x, at.1 + row * scale), scale, colour)?;
    }
    Ok(())
}

/// Draws `s` rotated a quarter turn counter-clockwise (reading bottom to top, for a y-axis
/// title) with the top-left corner of its bounding box at `at`.
///
/// # Errors
/// The backend's drawing error.
pub fn draw_text_vertical<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &str,
    at: (i32, i32),
    scale: i32,
    colour: &RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let scale = scale.max(1);
    let height = text_width(s, scale);
    for (i, col, row) in lit_pixels(s) {
        // Character i occupies rows [height - (i+1)·8s, height - i·8s) of the box; its pixel
        // (col, row) lands at x = row, y = 7 - col after the turn.
        let base_y = at.1 + height - (i + 1) * char_size(scale);
        square(
            area,
            (at.0 + row * scale, base_y + (7 - col) * scale),
            scale,
            colour,
        )?;
    }
    Ok(())
}

/// The lit pixels of `s` in the 8×8 font as (character index, column, row); characters outside
/// the basic Latin set are drawn as `?`.
fn lit_pixels(s: &str) -> impl Iterator<Item = (i32, i32, i32)> + '_ {
    s.chars().enumerate().flat_map(|(i, c)| {
        let glyph = BASIC_FONTS
            .get(c)
            .or_else(|| BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        (0..8i32).flat_map(move |row| {
            (0..8i32)
                .filter(move |col| glyph[row as usize] & (1 << col) != 0)
                .map(move |col| (i as i32, col, row))
        })
    })
}

/// One font pixel: a `scale`×`scale` square of bitmap pixels from `at`.
fn square<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    scale: i32,
    colour: &RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for dy in 0..scale {
        for dx in 0..scale {
            area.draw_pixel((at.0 + dx, at.1 + dy), colour)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dark pixels of a `w`×`h` white buffer after `draw`.
    fn dark(w: u32, h: u32, draw: impl Fn(&DrawingArea<BitMapBackend<'_>, Shift>)) -> usize {
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            draw(&root);
            root.present().unwrap();
        }
        buf.chunks(3).filter(|p| p[0] < 128).count()
    }

    #[test]
    fn text_sets_pixels_inside_its_box_only() {
        assert_eq!(text_width("loss", 2), 64);
        let horizontal = dark(80, 20, |a| {
            draw_text(a, "loss", (0, 0), 2, &BLACK).unwrap();
        });
        // The same glyph pixels, turned.
        let vertical = dark(20, 80, |a| {
            draw_text_vertical(a, "loss", (0, 0), 2, &BLACK).unwrap();
        });
        // Every font pixel is a full 2×2 square.
        let bits: u32 = "loss"
            .chars()
            .flat_map(|c| BASIC_FONTS.get(c).unwrap())
            .map(|row| row.count_ones())
            .sum();
        assert_eq!(horizontal, 4 * bits as usize);
        let one = dark(40, 10, |a| {
            draw_text(a, "loss", (0, 0), 1, &BLACK).unwrap();
        });
        assert_eq!(one, bits as usize);
        assert_eq!(horizontal, vertical);
        // Nothing lands outside a box one character too small.
        let clipped = dark(56, 16, |a| {
            draw_text(a, "loss", (0, 0), 2, &BLACK).unwrap();
        });
        assert!(clipped < horizontal);
        assert_eq!(
            dark(80, 20, |a| draw_text(a, "", (0, 0), 2, &BLACK).unwrap()),
            0
        );
    }
}
