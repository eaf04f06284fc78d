//! Inference kernels: one query head against a key/value cache, and RMSNorm of a few rows.

use std::cell::RefCell;

use crate::simd::decode::{scores, weighted_sum};
use crate::simd::{best_isa, exp::exp_sub_sum};

thread_local! {
    /// Scores of the current query, reused across calls on the same thread.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `Σ a·b` in eight independent lanes (vectorizable), summed at the end.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = lanes.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// `out = softmax(scale · q·Kᵀ)·V` for one query head over `keys.len() / head_dim` cached
/// positions (the caller picks the positions it may attend: causal, sliding window).
///
/// # Shapes
/// - `q`, `out`: `[head_dim]`
/// - `keys`, `values`: `[positions, head_dim]`, row-major
///
/// # Panics
/// When the shapes disagree or there are no positions.
pub fn attend_cached(q: &[f32], keys: &[f32], values: &[f32], scale: f32, out: &mut [f32]) {
    let hd = q.len();
    assert!(
        hd > 0 && out.len() == hd && keys.len() == values.len() && keys.len().is_multiple_of(hd),
        "attend_cached: shapes"
    );
    let n = keys.len() / hd;
    assert!(n > 0, "attend_cached: no positions to attend");
    let isa = best_isa();
    SCORES.with_borrow_mut(|s| {
        s.resize(n, 0.0);
        scores(isa, q, keys, scale, s);
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total = exp_sub_sum(isa, s, max);
        let inv = 1.0 / total;
        s.iter_mut().for_each(|p| *p *= inv);
        weighted_sum(isa, s, values, out);
    });
}

/// `out = x / rms(x) · w` for each row, on the calling thread (for the few rows of a
/// decoding step, where splitting the work costs more than it saves).
///
/// # Shapes
/// - `x`, `out`: `[n, d]`; `w`: `[d]`
pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    assert!(
        x.len() == out.len() && x.len().is_multiple_of(d.max(1)),
        "rms_norm_rows: shapes"
    );
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = dot(row, row) / d as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(row).zip(w) {
            *o = v * r * w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attend_cached_matches_the_naive_softmax() {
        let mut rng = crate::init::HostRng::new(7);
        // 12: the portable loops; 64: the AVX2 ones where the CPU has them.
        for (hd, n) in [(12, 1), (12, 5), (12, 37), (64, 1), (64, 37), (64, 300)] {
            let q = rng.uniform(hd, -1.0, 1.0);
            let k = rng.uniform(n * hd, -1.0, 1.0);
            let v = rng.uniform(n * hd, -1.0, 1.0);
            let scale = 0.3;
            let scores: Vec<f64> = k
                .chunks_exact(hd)
                .map(|k| {
                    f64::from(scale)
                        * q.iter()
                            .zip(k)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum::<f64>()
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = e.iter().sum();
            let mut want = vec![0.0f64; hd];
            for (p, v) in e.iter().zip(v.chunks_exact(hd)) {
                for (w, x) in want.iter_mut().zip(v) {
                    *w += p / total * f64::from(*x);
                }
            }
            let mut out = vec![0.0f32; hd];
            attend_cached(&q, &k, &v, scale, &mut out);
            for (o, w) in out.iter().zip(&want) {
                assert!((f64::from(*o) - w).abs() < 1e-5, "{n}: {o} vs {w}");
            }
        }
    }
}
