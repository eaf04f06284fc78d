//! AVX2 + FMA + F16C kernels for the 32-value block formats with inputs quantized to 16 bits:
//! per block, `_mm256_madd_epi16` multiplies the weights (widened to 16 bits) by the input's
//! 16-bit values and sums pairs into 32-bit lanes; one multiply by both scales per block turns
//! the integer sum into `f32`.
//!
//! The safe functions of [`crate::quant`] call these kernels only after
//! [`super::quant_avx2::available`] confirmed the CPU features, and the kernels assert the
//! lengths of their slices before reading them.

use std::arch::x86_64::*;

use super::quant_avx2::{block_bytes, header, row_blocks};
use super::quant_f32_avx2::finish;
use crate::quant::{Q16Input, QUANT_BLOCK, QuantFormat, QuantizedMatrix};

/// `out[i·n + j] = W[first + i] · x[j]` for the `out.len() / n` rows from `first`, with the
/// `n` input rows quantized in `xq`.
pub(crate) fn rows_dot(m: &QuantizedMatrix, first: usize, xq: &Q16Input, out: &mut [f32]) {
    assert!(super::quant_avx2::available());
    let (data, nb) = checked_blocks(m, first, xq, out.len());
    // SAFETY: `available()` confirmed AVX2, FMA and F16C; `checked_blocks` confirmed that
    // `data` holds exactly `count · nb` blocks of the format and `xq` `n` rows of `nb` quantized
    // blocks, and every load below stays inside them.
    unsafe { by_format!(m.format, rows(data, nb, xq, out)) }
}

/// The blocks of the `out_len / xq.n` weight rows from `first` and the blocks per row, after
/// asserting that `xq` and the output hold what the 16-bit kernels read and write.
pub(super) fn checked_blocks<'a>(
    m: &'a QuantizedMatrix,
    first: usize,
    xq: &Q16Input,
    out_len: usize,
) -> (&'a [u8], usize) {
    let n = xq.n;
    let (data, nb, count) = row_blocks(m, first, n, out_len);
    assert!(
        xq.qs.len() == n * m.cols
            && xq.d.len() == n * nb
            && xq.sum.len() == n * nb
            && out_len == count * n
    );
    (data, nb)
}

/// `$rows::<F>($args)` with `F` the kernel code of a 32-value block format (0 = Q4_0,
/// 1 = Q4_1, 2 = Q8_0, 3 = Q5_0).
macro_rules! by_format {
    ($format:expr, $rows:ident($($arg:expr),*)) => {
        match $format {
            QuantFormat::Q4_0 => $rows::<0>($($arg),*),
            QuantFormat::Q4_1 => $rows::<1>($($arg),*),
            QuantFormat::Q8_0 => $rows::<2>($($arg),*),
            QuantFormat::Q5_0 => $rows::<3>($($arg),*),
            QuantFormat::Q4_K | QuantFormat::Q5_K | QuantFormat::Q6_K => {
                unreachable!("32-value block formats only")
            }
        }
    };
}
pub(super) use by_format;

/// The block's 32 weights as two vectors of 16 `i16`: values 0..16 and 16..32 (unsigned
/// 4- or 5-bit values for Q4_0, Q4_1 and Q5_0, whose offsets are applied per block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weights<const F: u8>(p: *const u8) -> (__m256i, __m256i) {
    // SAFETY: the caller passes a pointer to a whole block.
    unsafe {
        if F == 2 {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(2).cast())),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(18).cast())),
            )
        } else {
            let offset = match F {
                1 => 4,
                3 => 6,
                _ => 2,
            };
            let q = _mm_loadu_si128(p.add(offset).cast());
            // Byte i holds value i (low nibble) and value i + 16 (high nibble).
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm256_cvtepu8_epi16(_mm_and_si128(q, mask));
            let hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(q, 4), mask));
            if F != 3 {
                return (lo, hi);
            }
            // Q5_0: bit j of `qh` is the fifth bit (16) of value j.
            let qh = p.add(2).cast::<u32>().read_unaligned();
            let bits = _mm256_setr_epi16(
                1,
                2,
                4,
                8,
                16,
                32,
                64,
                128,
                256,
                512,
                1024,
                2048,
                4096,
                8192,
                16384,
                i16::MIN,
            );
            let sixteen = _mm256_set1_epi16(16);
            let fifth = |h: u32| {
                let set = _mm256_and_si256(_mm256_set1_epi16(h as u16 as i16), bits);
                _mm256_and_si256(_mm256_cmpeq_epi16(set, bits), sixteen)
            };
            (
                _mm256_or_si256(lo, fifth(qh)),
                _mm256_or_si256(hi, fifth(qh >> 16)),
            )
        }
    }
}

/// One block of one row against one input block: `t += d·dx·Σq·qx`, `h += [d, m]·Σx`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn step<const F: u8>(
    p: *const u8,
    w: (__m256i, __m256i),
    x: (__m256i, __m256i),
    dx: f32,
    xsum: f32,
    t: &mut __m256,
    h: &mut __m128,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let dm = header(p);
        let s = _mm256_add_epi32(_mm256_madd_epi16(w.0, x.0), _mm256_madd_epi16(w.1, x.1));
        let scale = _mm256_broadcastss_ps(_mm_mul_ss(dm, _mm_set_ss(dx)));
        *t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, *t);
        if F != 2 {
            *h = _mm_fmadd_ps(dm, _mm_set1_ps(xsum), *h);
        }
    }
}

/// The input's 16-bit values of block `k` (of all rows' blocks) as two vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn input(qs: *const i16, k: usize) -> (__m256i, __m256i) {
    // SAFETY: the caller passes a block index inside the input.
    unsafe {
        let q = qs.add(k * QUANT_BLOCK);
        (
            _mm256_loadu_si256(q.cast()),
            _mm256_loadu_si256(q.add(16).cast()),
        )
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows<const F: u8>(data: &[u8], nb: usize, xq: &Q16Input, out: &mut [f32]) {
    let n = xq.n;
    let count = out.len() / n;
    let bb = block_bytes(F);
    let dp = data.as_ptr();
    let qs = xq.qs.as_ptr();
    let mut r = 0;
    // One input row: four weight rows at a time share each load of the input.
    while n == 1 && r + 4 <= count {
        let p0 = r * nb * bb;
        let stride = nb * bb;
        let mut t = [_mm256_setzero_ps(); 4];
        let mut h = [_mm_setzero_ps(); 4];
        for b in 0..nb {
            // SAFETY: blocks `b` of rows `r..r + 4` exist; the input has `nb` blocks.
            unsafe {
                let x = input(qs, b);
                let (dx, xs) = (xq.d[b], xq.sum[b]);
                for i in 0..4 {
                    let a = dp.add(p0 + i * stride + b * bb);
                    step::<F>(a, weights::<F>(a), x, dx, xs, &mut t[i], &mut h[i]);
                }
            }
        }
        for i in 0..4 {
            out[r + i] = finish::<F>(t[i], h[i]);
        }
        r += 4;
    }
    // Then two weight rows at a time.
    while n == 1 && r + 2 <= count {
        let (p0, p1) = (r * nb * bb, (r + 1) * nb * bb);
        let (mut t0, mut t1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut h0, mut h1) = (_mm_setzero_ps(), _mm_setzero_ps());
        for b in 0..nb {
            // SAFETY: blocks `b` of rows `r` and `r + 1` exist; the input has `nb` blocks.
            unsafe {
                let (a0, a1) = (dp.add(p0 + b * bb), dp.add(p1 + b * bb));
                let x = input(qs, b);
                let (dx, xs) = (xq.d[b], xq.sum[b]);
                step::<F>(a0, weights::<F>(a0), x, dx, xs, &mut t0, &mut h0);
                step::<F>(a1, weights::<F>(a1), x, dx, xs, &mut t1, &mut h1);
            }
        }
        out[r] = finish::<F>(t0, h0);
        out[r + 1] = finish::<F>(t1, h1);
        r += 2;
    }
    // Otherwise one weight row at a time, two input rows sharing each widened block.
    while r < count {
        let p0 = r * nb * bb;
        let mut j = 0;
        while j < n {
            let two = j + 1 < n;
            let (mut t0, mut t1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut h0, mut h1) = (_mm_setzero_ps(), _mm_setzero_ps());
            for b in 0..nb {
                // SAFETY: block `b` of row `r` exists; the input has `n` rows of `nb` blocks.
                unsafe {
                    let a = dp.add(p0 + b * bb);
                    let w = weights::<F>(a);
                    let k = j * nb + b;
                    step::<F>(a, w, input(qs, k), xq.d[k], xq.sum[k], &mut t0, &mut h0);
                    if two {
                        let k = k + nb;
                        step::<F>(a, w, input(qs, k), xq.d[k], xq.sum[k], &mut t1, &mut h1);
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
