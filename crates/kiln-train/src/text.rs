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
    for (i, c) in s.chars().enumerate() {
        let glyph = BASIC_FONTS.get(c).or_else(|| BASIC_FONTS.get('?'));
        let Some(glyph) = glyph else { continue };
        let cx = at.0 + i as i32 * char_size(scale);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    square(
                        area,
                        (cx + col * scale, at.1 + row as i32 * scale),
                        scale,
                        colour,
                    )?;
                }
            }
        }
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
    for (i, c) in s.chars().enumerate() {
        let glyph = BASIC_FONTS.get(c).or_else(|| BASIC_FONTS.get('?'));
        let Some(glyph) = glyph else { continue };
        // Character i occupies rows [height - (i+1)·8s, height - i·8s) of the box.
        let base_y = at.1 + height - (i as i32 + 1) * char_size(scale);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    // (col, row) of the glyph → x = row, y = 7 - col after the turn.
                    let at = (at.0 + row as i32 * scale, base_y + (7 - col) * scale);
                    square(area, at, scale, colour)?;
                }
            }
        }
    }
    Ok(())
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
