//! AVX2 kernels for the k-quant super-blocks (Q4_K, Q5_K, Q6_K) against inputs quantized to
//! 8 bits per 256 values (llama.cpp's `ggml_vec_dot_q{4,5,6}_K_q8_K` formulas): per run of 32
//! values, `_mm256_maddubs_epi16` of the unsigned weight values with the signed input values,
//! then `_mm256_madd_epi16` with the run's scale, summed in 8 lanes of `i32`.
//!
//! The safe functions of [`crate::quant`] call these kernels only after
//! [`super::quant_avx2::available`] confirmed the CPU features, and the kernels assert the lengths
//! of their slices before reading them.

use std::arch::x86_64::*;

use crate::quant::k_quants::{QK_K, scale_min_k4};
use crate::quant::{Q8Input, QuantFormat, QuantizedMatrix};

/// `out[i·n + j] = W[first + i] · x[j]` for the `out.len() / n` rows from `first`, with the `n`
/// input rows quantized in 256-value blocks in `xq`.
pub(crate) fn rows_dot(m: &QuantizedMatrix, first: usize, xq: &Q8Input, out: &mut [f32]) {
    let n = xq.n;
    let nb = m.cols / QK_K;
    let count = out.len() / n;
    let rb = m.row_bytes();
    let bb = m.format.block_bytes();
    let data = &m.data[first * rb..(first + count) * rb];
    assert!(
        super::quant_avx2::available()
            && xq.block == QK_K
            && xq.qs.len() == n * m.cols
            && xq.d.len() == n * nb
            && xq.bsums.len() == n * m.cols / 16
            && out.len() == count * n
            && rb == nb * bb
    );
    for r in 0..count {
        for j in 0..n {
            let mut acc = 0.0f32;
            let mut mins = 0.0f32;
            for b in 0..nb {
                let k = j * nb + b;
                let block = &data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
                let qx = &xq.qs[k * QK_K..(k + 1) * QK_K];
                let bsums = &xq.bsums[k * 16..(k + 1) * 16];
                let (dot, min) = block_dot(m.format, block, qx, xq.d[k], bsums);
                acc += dot;
                mins += min;
            }
            out[r * n + j] = acc - mins;
        }
    }
}

/// One super-block: `(d_x·d·Σ scale·q·q_x, d_x·dmin·Σ min·Σq_x)`.
fn block_dot(format: QuantFormat, x: &[u8], qx: &[i8], dx: f32, bsums: &[i16]) -> (f32, f32) {
    assert!(x.len() == format.block_bytes() && qx.len() == QK_K && bsums.len() == 16);
    let h = |i: usize| half::f16::from_bits(u16::from_le_bytes([x[i], x[i + 1]])).to_f32();
    match format {
        QuantFormat::Q4_K | QuantFormat::Q5_K => {
            let mut scales = [0i16; 8];
            let mut summ = 0i32;
            for (j, s) in scales.iter_mut().enumerate() {
                let (sc, m) = scale_min_k4(j, &x[4..16]);
                *s = i16::from(sc);
                summ += i32::from(m) * (i32::from(bsums[2 * j]) + i32::from(bsums[2 * j + 1]));
            }
            // SAFETY: AVX2 was confirmed by the caller's dispatch; `x` is a whole super-block
            // of the format and `qx` holds 256 values (asserted above).
            let sumi = unsafe {
                if format == QuantFormat::Q4_K {
                    q45_k::<false>(x.as_ptr(), qx.as_ptr(), &scales)
                } else {
                    q45_k::<true>(x.as_ptr(), qx.as_ptr(), &scales)
                }
            };
            (dx * h(0) * sumi as f32, dx * h(2) * summ as f32)
        }
        QuantFormat::Q6_K => {
            let scales: [i16; 16] = std::array::from_fn(|g| i16::from(x[192 + g] as i8));
            // SAFETY: as above.
            let sumi = unsafe { q6_k(x.as_ptr(), qx.as_ptr(), &scales) };
            (dx * h(208) * sumi as f32, 0.0)
        }
        _ => unreachable!("not a k-quant format"),
    }
}

/// The sum of the 8 lanes of `v` (at most 256 · 63 · 127 · 127 in magnitude: no overflow).
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    _mm_cvtsi128_si32(s)
}

/// `Σ_j scale_j · Σ_{k∈j} q_k·q_x,k` of a Q4_K (`FIVE = false`) or Q5_K super-block.
#[target_feature(enable = "avx2")]
unsafe fn q45_k<const FIVE: bool>(x: *const u8, qx: *const i8, scales: &[i16; 8]) -> i32 {
    // SAFETY: the caller passes a whole super-block and 256 input values.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        let ql = x.add(if FIVE { 48 } else { 16 });
        let qh = if FIVE {
            _mm256_loadu_si256(x.add(16).cast())
        } else {
            _mm256_setzero_si256()
        };
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let bits = _mm256_loadu_si256(ql.add(32 * j).cast());
            let mut lo = _mm256_and_si256(bits, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if FIVE {
                let s = _mm_cvtsi32_si128(2 * j as i32);
                let b0 = _mm256_and_si256(_mm256_srl_epi16(qh, s), one);
                let s = _mm_cvtsi32_si128(2 * j as i32 + 1);
                let b1 = _mm256_and_si256(_mm256_srl_epi16(qh, s), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
            }
            let y0 = _mm256_loadu_si256(qx.add(64 * j).cast());
            let y1 = _mm256_loadu_si256(qx.add(64 * j + 32).cast());
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, y0),
                _mm256_set1_epi16(scales[2 * j]),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, y1),
                _mm256_set1_epi16(scales[2 * j + 1]),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        hsum_i32(sumi)
    }
}

/// `Σ_g scale_g · Σ_{k∈g} (q_k - 32)·q_x,k` of a Q6_K super-block: the unsigned 6-bit values
/// multiply the input, and `32·Σ q_x` is subtracted per pair.
#[target_feature(enable = "avx2")]
unsafe fn q6_k(x: *const u8, qx: *const i8, scales: &[i16; 16]) -> i32 {
    // SAFETY: the caller passes a whole super-block and 256 input values.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(3);
        let k32 = _mm256_set1_epi8(32);
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            let l0 = _mm256_loadu_si256(x.add(64 * n).cast());
            let l1 = _mm256_loadu_si256(x.add(64 * n + 32).cast());
            let qh = _mm256_loadu_si256(x.add(128 + 32 * n).cast());
            let high = |s: i32| {
                let v = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(s));
                _mm256_slli_epi16(_mm256_and_si256(v, m3), 4)
            };
            let v = [
                _mm256_or_si256(_mm256_and_si256(l0, m4), high(0)),
                _mm256_or_si256(_mm256_and_si256(l1, m4), high(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), high(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), high(6)),
            ];
            for (k, v) in v.into_iter().enumerate() {
                let y = _mm256_loadu_si256(qx.add(128 * n + 32 * k).cast());
                let p = _mm256_sub_epi16(_mm256_maddubs_epi16(v, y), _mm256_maddubs_epi16(k32, y));
                let g = 8 * n + 2 * k;
                let sc = _mm256_set_m128i(_mm_set1_epi16(scales[g + 1]), _mm_set1_epi16(scales[g]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc));
            }
        }
        hsum_i32(sumi)
    }
}
