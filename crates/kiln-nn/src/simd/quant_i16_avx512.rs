//! AVX-512 (F + BW) versions of the 16-bit-input kernels of [`super::quant_i16_avx2`] for one
//! input row (decoding one sequence): each block's 32 weights widen into one 512-bit vector of
//! `i16`, one `_mm512_madd_epi16` multiplies them by the input block, and one multiply-add by
//! both scales turns the 16 partial sums into `f32`. Q5_0's fifth bits are a 32-bit mask, added
//! under that mask. [`rows_dot_many`] takes up to 16 input rows (a decoding batch) and sums
//! each output exactly as the one-row kernel does.
//!
//! The safe functions of [`crate::quant`] call these kernels only after [`available`] confirmed
//! the CPU features, and the kernels assert the lengths of their slices before reading them.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::quant_avx2::{block_bytes, header};
use super::quant_f32_avx2::finish;
use super::quant_i16_avx2::{by_format, checked_blocks};
use crate::quant::{Q16Input, QUANT_BLOCK, QuantFormat, QuantizedMatrix};

/// Whether this CPU has AVX-512 F and BW besides AVX2, FMA and F16C (checked once).
pub(crate) fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        super::quant_avx2::available()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
    })
}

/// `out[i] = W[first + i] · x` for the `out.len()` rows from `first`, with one input row
/// quantized in `xq`.
pub(crate) fn rows_dot(m: &QuantizedMatrix, first: usize, xq: &Q16Input, out: &mut [f32]) {
    assert!(available() && xq.n == 1);
    let (data, nb) = checked_blocks(m, first, xq, out.len());
    // SAFETY: `available()` confirmed AVX-512 F/BW, AVX2, FMA and F16C; `checked_blocks`
    // confirmed that `data` holds exactly `out.len() · nb` blocks of the format and `xq` one row
    // of `nb` quantized blocks, and every load below stays inside them.
    unsafe { by_format!(m.format, rows(data, nb, xq, out)) }
}

/// Input rows [`rows_dot_many`] takes at most.
pub(crate) const MAX_INPUTS: usize = 16;

/// `out[i·n + j] = W[first + i] · x[j]` for the `out.len() / n` rows from `first`, with the
/// `n` (at most [`MAX_INPUTS`]) input rows quantized in `xq`: each block of a weight row is
/// widened once for all input rows, and each output is summed in the order [`rows_dot`] sums
/// it, so a row's result does not depend on the other rows decoded with it.
pub(crate) fn rows_dot_many(m: &QuantizedMatrix, first: usize, xq: &Q16Input, out: &mut [f32]) {
    assert!(available() && (1..=MAX_INPUTS).contains(&xq.n));
    let (data, nb) = checked_blocks(m, first, xq, out.len());
    // SAFETY: as in `rows_dot`, for `n` input rows of `nb` blocks each.
    unsafe { by_format!(m.format, rows_many(data, nb, xq, out)) }
}

/// The rows of format `F` against every input row, one weight row at a time.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn rows_many<const F: u8>(data: &[u8], nb: usize, xq: &Q16Input, out: &mut [f32]) {
    let n = xq.n;
    let bb = block_bytes(F);
    let stride = nb * bb;
    for (r, o) in out.chunks_exact_mut(n).enumerate() {
        let mut t = [_mm512_setzero_ps(); MAX_INPUTS];
        let mut h = [_mm_setzero_ps(); MAX_INPUTS];
        for b in 0..nb {
            // SAFETY: block `b` of row `r` exists and the input has `n` rows of `nb` blocks
            // (the caller checked the lengths).
            unsafe {
                let a = data.as_ptr().add(r * stride + b * bb);
                let dm = header(a);
                let w = weights::<F>(a);
                let d = _mm_cvtss_f32(dm);
                for j in 0..n {
                    let k = j * nb + b;
                    let x = _mm512_loadu_si512(xq.qs.as_ptr().add(k * QUANT_BLOCK).cast());
                    let (dx, xsum) = (*xq.d.get_unchecked(k), *xq.sum.get_unchecked(k));
                    let s = _mm512_madd_epi16(w, x);
                    let scale = _mm512_set1_ps(d * dx);
                    t[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, t[j]);
                    if F != 2 {
                        h[j] = _mm_fmadd_ps(dm, _mm_set1_ps(xsum), h[j]);
                    }
                }
            }
        }
        for j in 0..n {
            o[j] = total::<F>(t[j], h[j]);
        }
    }
}

/// One output from its 16 `f32` lanes `t` and the offset term `h`: the halves added, then
/// [`finish`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn total<const F: u8>(t: __m512, h: __m128) -> f32 {
    let lo = _mm512_castps512_ps256(t);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1));
    finish::<F>(_mm256_add_ps(lo, hi), h)
}

/// The block's 32 weights as 32 `i16` in value order (unsigned 4- or 5-bit values for Q4_0,
/// Q4_1 and Q5_0, whose offsets are applied per block by [`finish`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn weights<const F: u8>(p: *const u8) -> __m512i {
    // SAFETY: the caller passes a pointer to a whole block.
    unsafe {
        if F == 2 {
            return _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.add(2).cast()));
        }
        let offset = match F {
            1 => 4,
            3 => 6,
            _ => 2,
        };
        // Byte i holds value i (low nibble) and value i + 16 (high nibble).
        let q = _mm_loadu_si128(p.add(offset).cast());
        let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
        let w = _mm512_cvtepu8_epi16(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)));
        if F == 3 {
            // Bit j of `qh` is the fifth bit (16) of value j.
            let qh = p.add(2).cast::<u32>().read_unaligned();
            _mm512_mask_add_epi16(w, qh, w, _mm512_set1_epi16(16))
        } else {
            w
        }
    }
}

/// The rows of format `F` (0 = Q4_0, 1 = Q4_1, 2 = Q8_0, 3 = Q5_0), four at a time sharing each
/// input block, then one at a time.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn rows<const F: u8>(data: &[u8], nb: usize, xq: &Q16Input, out: &mut [f32]) {
    let stride = nb * block_bytes(F);
    let mut r = 0;
    while r + 4 <= out.len() {
        // SAFETY: rows `r..r + 4` exist (forwarded from `rows_dot`).
        unsafe { group::<F, 4>(data.as_ptr().add(r * stride), nb, xq, &mut out[r..r + 4]) };
        r += 4;
    }
    while r < out.len() {
        // SAFETY: row `r` exists.
        unsafe { group::<F, 1>(data.as_ptr().add(r * stride), nb, xq, &mut out[r..r + 1]) };
        r += 1;
    }
}

/// `R` consecutive rows from `p` against the input row.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn group<const F: u8, const R: usize>(
    p: *const u8,
    nb: usize,
    xq: &Q16Input,
    out: &mut [f32],
) {
    let bb = block_bytes(F);
    let stride = nb * bb;
    let mut t = [_mm512_setzero_ps(); R];
    let mut h = [_mm_setzero_ps(); R];
    for b in 0..nb {
        // SAFETY: blocks `b` of the `R` rows exist and the input has `nb` blocks (the caller
        // checked the lengths).
        unsafe {
            let x = _mm512_loadu_si512(xq.qs.as_ptr().add(b * QUANT_BLOCK).cast());
            let (dx, xsum) = (*xq.d.get_unchecked(b), *xq.sum.get_unchecked(b));
            for i in 0..R {
                let a = p.add(i * stride + b * bb);
                let dm = header(a);
                let s = _mm512_madd_epi16(weights::<F>(a), x);
                let scale = _mm512_set1_ps(_mm_cvtss_f32(dm) * dx);
                t[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, t[i]);
                if F != 2 {
                    h[i] = _mm_fmadd_ps(dm, _mm_set1_ps(xsum), h[i]);
                }
            }
        }
    }
    for i in 0..R {
        out[i] = total::<F>(t[i], h[i]);
    }
}
