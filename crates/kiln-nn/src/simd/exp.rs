//! Vectorized `f32` exponential: Cody–Waite range reduction `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`,
//! a degree-6 polynomial for `eʳ` (the Cephes `expf` coefficients) and `2ⁿ` added to the
//! exponent bits. Inputs below [`EXP_LO`] (where `eˣ` is under the smallest normal `f32`) give
//! 0 without a slow path, inputs above [`EXP_HI`] give `+∞`, NaN stays NaN.

use super::{Isa, usable};

/// Inputs below this give 0 (`-126·ln 2`: `eˣ` is subnormal or zero below it).
pub(crate) const EXP_LO: f32 = -87.336_54;
/// Inputs above this give `+∞` (`ln f32::MAX`).
pub(crate) const EXP_HI: f32 = 88.722_83;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2 = LN2_HI + LN2_LO`, `LN2_HI` with few enough bits that `n·LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5·2²³`: adding and subtracting it rounds to the nearest integer (ties to even).
const ROUND: f32 = 12_582_912.0;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `eˣ` by the same algorithm as the vector kernels, in portable scalar code.
#[inline]
pub(crate) fn exp_scalar(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_LO {
        return 0.0;
    }
    if x > EXP_HI {
        return f32::INFINITY;
    }
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = P[0];
    for c in &P[1..] {
        p = p * r + c;
    }
    let p = p * (r * r) + (r + 1.0);
    f32::from_bits((p.to_bits() as i32).wrapping_add((n as i32) << 23) as u32)
}

/// `xs[i] = e^(xs[i] − sub)` with the instruction set `isa` (lowered to what the CPU has);
/// returns the sum of the results.
pub(crate) fn exp_sub_sum(isa: Isa, xs: &mut [f32], sub: f32) -> f32 {
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX-512F, AVX2 and FMA; the kernel stays inside `xs`.
        Isa::Avx512 => unsafe { x86::exp_sub_sum_avx512(xs, sub) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX2 and FMA; the kernel stays inside `xs`.
        Isa::Avx2 => unsafe { x86::exp_sub_sum_avx2(xs, sub) },
        _ => {
            let mut lanes = [0.0f32; 8];
            for (i, x) in xs.iter_mut().enumerate() {
                *x = exp_scalar(*x - sub);
                lanes[i % 8] += *x;
            }
            lanes.iter().sum()
        }
    }
}

/// `xs[i] = e^(xs[i] − sub[i])` with the instruction set `isa` (lowered to what the CPU has).
pub(crate) fn exp_sub_each(isa: Isa, xs: &mut [f32], sub: &[f32]) {
    assert_eq!(xs.len(), sub.len(), "exp_sub_each: lengths differ");
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX2 and FMA; both slices have the same length and the
        // kernel stays inside them.
        Isa::Avx2 | Isa::Avx512 => unsafe { x86::exp_sub_each_avx2(xs, sub) },
        _ => {
            for (x, s) in xs.iter_mut().zip(sub) {
                *x = exp_scalar(*x - s);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// `eˣ` of 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp256(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(EXP_LO);
        let hi = _mm256_set1_ps(EXP_HI);
        let xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
        let round = _mm256_set1_ps(ROUND);
        let t = _mm256_fmadd_ps(xc, _mm256_set1_ps(LOG2E), round);
        let n = _mm256_sub_ps(t, round);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        // The low bits of `t` hold `n` (two's complement) once the bits of `ROUND` are removed.
        let ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(round));
        let y = _mm256_castsi256_ps(_mm256_add_epi32(
            _mm256_castps_si256(p),
            _mm256_slli_epi32::<23>(ni),
        ));
        let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo));
        let y = _mm256_blendv_ps(
            y,
            _mm256_set1_ps(f32::INFINITY),
            _mm256_cmp_ps::<_CMP_GT_OQ>(x, hi),
        );
        _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
    }

    /// `eˣ` of 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp512(x: __m512) -> __m512 {
        let lo = _mm512_set1_ps(EXP_LO);
        let hi = _mm512_set1_ps(EXP_HI);
        let xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
        let round = _mm512_set1_ps(ROUND);
        let t = _mm512_fmadd_ps(xc, _mm512_set1_ps(LOG2E), round);
        let n = _mm512_sub_ps(t, round);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        let ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(round));
        let y = _mm512_castsi512_ps(_mm512_add_epi32(
            _mm512_castps_si512(p),
            _mm512_slli_epi32::<23>(ni),
        ));
        let y = _mm512_mask_mov_ps(
            y,
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo),
            _mm512_setzero_ps(),
        );
        let y = _mm512_mask_mov_ps(
            y,
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, hi),
            _mm512_set1_ps(f32::INFINITY),
        );
        _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), x)
    }

    /// Horizontal sum of 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// AVX2 `exp_sub_sum`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_sub_sum_avx2(xs: &mut [f32], sub: f32) -> f32 {
        let s = _mm256_set1_ps(sub);
        let mut acc = _mm256_setzero_ps();
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 8 values.
            unsafe {
                let y = exp256(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), s));
                _mm256_storeu_ps(c.as_mut_ptr(), y);
                acc = _mm256_add_ps(acc, y);
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut tmp = [f32::NEG_INFINITY; 8];
            tmp[..rest.len()].copy_from_slice(rest);
            // SAFETY: `tmp` holds 8 values.
            unsafe {
                let y = exp256(_mm256_sub_ps(_mm256_loadu_ps(tmp.as_ptr()), s));
                _mm256_storeu_ps(tmp.as_mut_ptr(), y);
                acc = _mm256_add_ps(acc, y);
            }
            rest.copy_from_slice(&tmp[..rest.len()]);
        }
        hsum256(acc)
    }

    /// AVX-512 `exp_sub_sum`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn exp_sub_sum_avx512(xs: &mut [f32], sub: f32) -> f32 {
        let s = _mm512_set1_ps(sub);
        let mut acc = _mm512_setzero_ps();
        let mut chunks = xs.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 16 values.
            unsafe {
                let y = exp512(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), s));
                _mm512_storeu_ps(c.as_mut_ptr(), y);
                acc = _mm512_add_ps(acc, y);
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut tmp = [f32::NEG_INFINITY; 16];
            tmp[..rest.len()].copy_from_slice(rest);
            // SAFETY: `tmp` holds 16 values.
            unsafe {
                let y = exp512(_mm512_sub_ps(_mm512_loadu_ps(tmp.as_ptr()), s));
                _mm512_storeu_ps(tmp.as_mut_ptr(), y);
                acc = _mm512_add_ps(acc, y);
            }
            rest.copy_from_slice(&tmp[..rest.len()]);
        }
        _mm512_reduce_add_ps(acc)
    }

    /// AVX2 `exp_sub_each`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `xs` and `sub` must have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_sub_each_avx2(xs: &mut [f32], sub: &[f32]) {
        let n = xs.len() / 8 * 8;
        let (x, s) = (xs.as_mut_ptr(), sub.as_ptr());
        let mut i = 0;
        while i < n {
            // SAFETY: `i + 8 ≤ n ≤ len` for both slices.
            unsafe {
                let y = exp256(_mm256_sub_ps(
                    _mm256_loadu_ps(x.add(i)),
                    _mm256_loadu_ps(s.add(i)),
                ));
                _mm256_storeu_ps(x.add(i), y);
            }
            i += 8;
        }
        for j in n..xs.len() {
            xs[j] = exp_scalar(xs[j] - sub[j]);
        }
    }
}
