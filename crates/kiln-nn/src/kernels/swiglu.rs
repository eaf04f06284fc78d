//! SwiGLU: `silu(gate) · up`, forward and backward, in one pass each.

use rayon::prelude::*;

use super::exp::exp_inplace;

const CHUNK: usize = 4096;

/// `h = silu(g) · u`.
///
/// # Shapes
/// - `g`, `u`, `h`: `[n]` (any shape, elementwise)
pub fn swiglu_forward(g: &[f32], u: &[f32], h: &mut [f32]) {
    assert!(g.len() == h.len() && u.len() == h.len(), "swiglu_forward: shapes");
    h.par_chunks_mut(CHUNK).enumerate().for_each(|(c, h)| {
        let g = &g[c * CHUNK..c * CHUNK + h.len()];
        let u = &u[c * CHUNK..c * CHUNK + h.len()];
        // h = exp(-g), then g·u / (1 + exp(-g))
        for (h, g) in h.iter_mut().zip(g) {
            *h = -g;
        }
        exp_inplace(h);
        for ((h, g), u) in h.iter_mut().zip(g).zip(u) {
            *h = g * u / (1.0 + *h);
        }
    });
}

/// The gradients of [`swiglu_forward`]: `dg = dh·u·σ(g)·(1 + g·(1 − σ(g)))`, `du = dh·silu(g)`.
/// With `h`, also writes the forward output `silu(g)·u` (recomputed here instead of kept).
///
/// # Shapes
/// - all `[n]`
pub fn swiglu_backward(
    g: &[f32],
    u: &[f32],
    dh: &[f32],
    dg: &mut [f32],
    du: &mut [f32],
    mut h: Option<&mut [f32]>,
) {
    let n = g.len();
    assert!(u.len() == n && dh.len() == n && dg.len() == n && du.len() == n, "swiglu_backward: shapes");
    if let Some(h) = &h {
        assert_eq!(h.len(), n, "swiglu_backward: shapes");
    }
    let h_chunks: Vec<Option<&mut [f32]>> = match h.take() {
        Some(h) => h.chunks_mut(CHUNK).map(Some).collect(),
        None => (0..n.div_ceil(CHUNK)).map(|_| None).collect(),
    };
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(h_chunks)
        .enumerate()
        .for_each(|(c, ((dg, du), h))| {
            let r = c * CHUNK..c * CHUNK + dg.len();
            let (g, u, dh) = (&g[r.clone()], &u[r.clone()], &dh[r]);
            // dg holds σ(g) first
            for (s, g) in dg.iter_mut().zip(g) {
                *s = -g;
            }
            exp_inplace(dg);
            for s in dg.iter_mut() {
                *s = 1.0 / (1.0 + *s);
            }
            let mut h = h;
            for i in 0..dg.len() {
                let s = dg[i];
                let silu = g[i] * s;
                if let Some(h) = h.as_deref_mut() {
                    h[i] = silu * u[i];
                }
                du[i] = dh[i] * silu;
                dg[i] = dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            }
        });
}
