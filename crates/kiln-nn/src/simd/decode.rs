//! The two loops of one query head against a key/value cache (`kernels::decode`): the scores
//! `s[j] = q·k_j` and the weighted sum `out = Σ p_j·v_j`, with AVX2 + FMA and a portable
//! fallback.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{Isa, usable};

/// `scores[j] = scale · q·keys[j]` for the rows of `keys` (`[scores.len(), q.len()]`).
///
/// # Panics
/// When `keys.len() != scores.len() · q.len()`.
pub(crate) fn scores(isa: Isa, q: &[f32], keys: &[f32], scale: f32, scores: &mut [f32]) {
    let hd = q.len();
    assert_eq!(keys.len(), scores.len() * hd, "scores: shapes");
    #[cfg(target_arch = "x86_64")]
    if usable(isa) != Isa::Scalar && hd.is_multiple_of(8) {
        // SAFETY: `usable` confirmed AVX2 and FMA; every row of `keys` has `hd` values, a
        // multiple of 8, and the loads stay inside `q` and the row.
        unsafe { scores_avx2(q, keys, scale, scores) };
        return;
    }
    let _ = isa;
    for (s, k) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
        let mut lanes = [0.0f32; 8];
        for (i, (a, b)) in q.iter().zip(k).enumerate() {
            lanes[i % 8] += a * b;
        }
        *s = scale * lanes.iter().sum::<f32>();
    }
}

/// `out = Σ_j p[j] · values[j]` for the rows of `values` (`[p.len(), out.len()]`).
///
/// # Panics
/// When `values.len() != p.len() · out.len()`.
pub(crate) fn weighted_sum(isa: Isa, p: &[f32], values: &[f32], out: &mut [f32]) {
    let hd = out.len();
    assert_eq!(values.len(), p.len() * hd, "weighted_sum: shapes");
    #[cfg(target_arch = "x86_64")]
    if usable(isa) != Isa::Scalar && hd.is_multiple_of(8) && hd <= 256 {
        // SAFETY: as in `scores`: AVX2 and FMA confirmed, rows of `hd ≤ 256` values, a
        // multiple of 8.
        unsafe { weighted_sum_avx2(p, values, out) };
        return;
    }
    let _ = isa;
    out.fill(0.0);
    for (w, v) in p.iter().zip(values.chunks_exact(hd)) {
        for (o, x) in out.iter_mut().zip(v) {
            *o += w * x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2(q: &[f32], keys: &[f32], scale: f32, scores: &mut [f32]) {
    let hd = q.len();
    let (qp, kp) = (q.as_ptr(), keys.as_ptr());
    for (j, s) in scores.iter_mut().enumerate() {
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < hd {
            // SAFETY: `i + 8 ≤ hd` and row `j` of `keys` has `hd` values.
            unsafe {
                acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(qp.add(i)),
                    _mm256_loadu_ps(kp.add(j * hd + i)),
                    acc,
                );
            }
            i += 8;
        }
        let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        *s = scale * _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_sum_avx2(p: &[f32], values: &[f32], out: &mut [f32]) {
    let hd = out.len();
    let lanes = hd / 8;
    let mut acc = [_mm256_setzero_ps(); 32];
    let vp = values.as_ptr();
    for (j, &w) in p.iter().enumerate() {
        let w = _mm256_set1_ps(w);
        for (l, a) in acc.iter_mut().enumerate().take(lanes) {
            // SAFETY: `l·8 + 8 ≤ hd` and row `j` of `values` has `hd` values.
            *a = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(vp.add(j * hd + l * 8)) }, *a);
        }
    }
    for (l, a) in acc.iter().enumerate().take(lanes) {
        // SAFETY: `l·8 + 8 ≤ hd = out.len()`.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(l * 8), *a) };
    }
}
