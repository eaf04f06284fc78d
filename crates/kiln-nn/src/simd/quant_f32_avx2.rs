//! AVX2 + FMA + F16C kernels for `f32` inputs and the 32-value block formats: each block is
//! widened to four 8-lane `f32` vectors in registers.
//!
//! The safe functions of [`crate::quant`] call these kernels only after
//! [`super::quant_avx2::available`] confirmed the CPU features, and the kernels assert the
//! lengths of their slices before reading them.

use std::arch::x86_64::*;

use super::quant_avx2::{block_bytes, header, hsum};
use crate::quant::{QUANT_BLOCK, QuantFormat, QuantizedMatrix};

/// `out[i·n + j] = W[first + i] · x[j]` for the `out.len() / n` rows from `first`; `xsum`
/// holds the sum of each 32-value block of each input row (`[n, cols / 32]`).
pub(crate) fn rows_dot(
    m: &QuantizedMatrix,
    first: usize,
    x: &[f32],
    xsum: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let nb = m.cols / QUANT_BLOCK;
    let count = out.len() / n;
    let rb = m.row_bytes();
    let data = &m.data[first * rb..(first + count) * rb];
    assert!(
        super::quant_avx2::available()
            && x.len() >= n * m.cols
            && xsum.len() >= n * nb
            && out.len() == count * n
    );
    // SAFETY: `available()` confirmed AVX2, FMA and F16C; `data` holds exactly `count · nb`
    // blocks of the format, `x` holds `n` rows of `cols = nb · 32` values, and every load
    // below stays inside them.
    unsafe {
        match m.format {
            QuantFormat::Q4_0 => rows::<0>(data, nb, x, xsum, n, out),
            QuantFormat::Q4_1 => rows::<1>(data, nb, x, xsum, n, out),
            QuantFormat::Q8_0 => rows::<2>(data, nb, x, xsum, n, out),
            QuantFormat::Q5_0 | QuantFormat::Q4_K | QuantFormat::Q5_K | QuantFormat::Q6_K => {
                unreachable!("32-value block formats only")
            }
        }
    }
}

/// The 32 quantized values of a block of format `F` as four vectors of 8 `f32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn values<const F: u8>(p: *const u8) -> [__m256; 4] {
    // SAFETY: the caller passes a pointer to a whole block.
    let q32 = unsafe {
        if F == 2 {
            let q = p.add(2);
            [
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(q.cast())),
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(q.add(8).cast())),
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(q.add(16).cast())),
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(q.add(24).cast())),
            ]
        } else {
            let q = p.add(if F == 1 { 4 } else { 2 });
            // Byte i holds value i (low nibble) and value i + 16 (high nibble).
            let v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(q.cast()));
            let v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(q.add(8).cast()));
            let mask = _mm256_set1_epi32(0x0F);
            [
                _mm256_and_si256(v0, mask),
                _mm256_and_si256(v1, mask),
                _mm256_srli_epi32(v0, 4),
                _mm256_srli_epi32(v1, 4),
            ]
        }
    };
    q32.map(|v| _mm256_cvtepi32_ps(v))
}

/// `Σ_k q[k] · x[k]` lane-wise over the four vectors of a block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot(q: &[__m256; 4], x: *const f32) -> __m256 {
    // SAFETY: the caller passes a pointer to 32 values.
    unsafe {
        let a = _mm256_mul_ps(q[0], _mm256_loadu_ps(x));
        let b = _mm256_mul_ps(q[1], _mm256_loadu_ps(x.add(8)));
        let a = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(x.add(16)), a);
        let b = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(x.add(24)), b);
        _mm256_add_ps(a, b)
    }
}

/// One block of one row against one input block: `t += d·Σq·x`, `h += [d, m]·Σx`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step<const F: u8>(
    p: *const u8,
    q: &[__m256; 4],
    x: *const f32,
    xsum: f32,
    t: &mut __m256,
    h: &mut __m128,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let dm = header(p);
        *t = _mm256_fmadd_ps(dot(q, x), _mm256_broadcastss_ps(dm), *t);
        if F != 2 {
            *h = _mm_fmadd_ps(dm, _mm_set1_ps(xsum), *h);
        }
    }
}

/// The row's result from its accumulators: `Σ lanes of t` plus the offset term
/// (`m·Σx` for Q4_1, `-8d·Σx` for Q4_0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn finish<const F: u8>(t: __m256, h: __m128) -> f32 {
    let s = hsum(t);
    match F {
        0 => s - 8.0 * _mm_cvtss_f32(h),
        3 => s - 16.0 * _mm_cvtss_f32(h),
        1 => s + _mm_cvtss_f32(_mm_shuffle_ps(h, h, 1)),
        _ => s,
    }
}

/// `d·Σ q·x + m·Σ x` per block: the scale multiplies one partial sum instead of every weight.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows<const F: u8>(
    data: &[u8],
    nb: usize,
    x: &[f32],
    xsum: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let count = out.len() / n;
    let bb = block_bytes(F);
    let dp = data.as_ptr();
    let cols = nb * QUANT_BLOCK;
    let xp = x.as_ptr();
    let mut r = 0;
    // One input row: two weight rows at a time share each load of `x`.
    while n == 1 && r + 2 <= count {
        let (p0, p1) = (r * nb * bb, (r + 1) * nb * bb);
        let (mut t0, mut t1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut h0, mut h1) = (_mm_setzero_ps(), _mm_setzero_ps());
        for (b, &xs) in xsum[..nb].iter().enumerate() {
            // SAFETY: blocks `b` of rows `r` and `r + 1` exist; `x` has `cols` values.
            unsafe {
                let (a0, a1) = (dp.add(p0 + b * bb), dp.add(p1 + b * bb));
                let xb = xp.add(b * QUANT_BLOCK);
                step::<F>(a0, &values::<F>(a0), xb, xs, &mut t0, &mut h0);
                step::<F>(a1, &values::<F>(a1), xb, xs, &mut t1, &mut h1);
            }
        }
        out[r] = finish::<F>(t0, h0);
        out[r + 1] = finish::<F>(t1, h1);
        r += 2;
    }
    // Otherwise one weight row at a time, two input rows sharing each decoded block.
    while r < count {
        let p0 = r * nb * bb;
        let mut j = 0;
        while j < n {
            let two = j + 1 < n;
            let (mut t0, mut t1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut h0, mut h1) = (_mm_setzero_ps(), _mm_setzero_ps());
            for b in 0..nb {
                // SAFETY: block `b` of row `r` exists; `x` has `n` rows of `cols` values.
                unsafe {
                    let a = dp.add(p0 + b * bb);
                    let q = values::<F>(a);
                    let x0 = xp.add(j * cols + b * QUANT_BLOCK);
                    step::<F>(a, &q, x0, xsum[j * nb + b], &mut t0, &mut h0);
                    if two {
                        let x1 = xp.add((j + 1) * cols + b * QUANT_BLOCK);
                        step::<F>(a, &q, x1, xsum[(j + 1) * nb + b], &mut t1, &mut h1);
                    }
                }
            }
            out[r * n + j] = finish::<F>(t0, h0);
            if two {
                out[r * n + j + 1] = finish::<F>(t1, h1);
            }
            j += 2;
        }
        r += 1;
    }
}
