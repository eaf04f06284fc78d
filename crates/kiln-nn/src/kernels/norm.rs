//! RMSNorm forward and backward (the weight is frozen: no weight gradient).

use rayon::prelude::*;

/// Rows per rayon task of the row-wise kernels.
const ROWS_PER_TASK: usize = 16;

/// `out = x / rms(x) · w` per row; `rstd[i] = 1 / sqrt(mean(x_i²) + eps)` is kept for the
/// backward pass.
///
/// # Shapes
/// - `x`, `out`: `[n, d]`; `w`: `[d]`; `rstd`: `[n]`
pub fn rms_norm_forward(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], rstd: &mut [f32]) {
    let d = w.len();
    let n = rstd.len();
    assert!(x.len() == n * d && out.len() == n * d, "rms_norm_forward: shapes");
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, (out, rstd))| {
            let x = &x[task * d * ROWS_PER_TASK..];
            for (i, (o, r)) in out.chunks_exact_mut(d).zip(rstd.iter_mut()).enumerate() {
                let row = &x[i * d..(i + 1) * d];
                let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
                *r = 1.0 / (ms + eps).sqrt();
                for ((o, v), w) in o.iter_mut().zip(row).zip(w) {
                    *o = v * *r * w;
                }
            }
        });
}

/// Adds the input gradient of [`rms_norm_forward`] to `dx`:
/// `dx += rstd · (g − x̂ · mean(g · x̂))` with `g = dy · w` and `x̂ = x · rstd`.
///
/// # Shapes
/// - `x`, `dy`, `dx`: `[n, d]`; `w`: `[d]`; `rstd`: `[n]`
pub fn rms_norm_backward(x: &[f32], w: &[f32], rstd: &[f32], dy: &[f32], dx: &mut [f32]) {
    let d = w.len();
    let n = rstd.len();
    assert!(x.len() == n * d && dy.len() == n * d && dx.len() == n * d, "rms_norm_backward: shapes");
    dx.par_chunks_mut(d * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, dx)| {
            let first = task * ROWS_PER_TASK;
            for (i, dx) in dx.chunks_exact_mut(d).enumerate() {
                let r = rstd[first + i];
                let x = &x[(first + i) * d..(first + i + 1) * d];
                let dy = &dy[(first + i) * d..(first + i + 1) * d];
                let dot = x
                    .iter()
                    .zip(dy)
                    .zip(w)
                    .map(|((x, g), w)| x * g * w)
                    .sum::<f32>()
                    * r
                    / d as f32;
                for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                    *dx += r * (g * w - x * r * dot);
                }
            }
        });
}
