//! AVX2 kernels for the k-quant super-blocks (Q4_K, Q5_K, Q6_K) against inputs quantized to
//! 8 bits per 256 values (llama.cpp's `ggml_vec_dot_q{4,5,6}_K_q8_K` formulas): per run of 32
//! values, `_mm256_maddubs_epi16` of the unsigned weight values with the signed input values,
//! then `_mm256_madd_epi16` with the run's scale, summed in 8 lanes of `i32`.
//!
//! The safe functions of [`crate::quant`] call these kernels only after
//! [`super::quant_avx2::available`] confirmed the CPU features, and the kernels assert the lengths
//! of their slices before reading them.

use std::arch::x86_64::*;

use crate::quant::k_quants::QK_K;
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
    // SAFETY: `available()` confirmed AVX2, FMA and F16C; `data` holds `count · nb` whole
    // super-blocks of the format and `xq` holds `n` rows of `nb` input super-blocks with their
    // sums (asserted above); every load below stays inside them.
    unsafe {
        match m.format {
            QuantFormat::Q4_K => rows::<0>(data, nb, xq, out),
            QuantFormat::Q5_K => rows::<1>(data, nb, xq, out),
            QuantFormat::Q6_K => rows::<2>(data, nb, xq, out),
            _ => unreachable!("not a k-quant format"),
        }
    }
}

/// The rows of format `F` (0 = Q4_K, 1 = Q5_K, 2 = Q6_K): per super-block an integer sum in 8
/// lanes, scaled by `d_x·d` into 8 `f32` lanes; the Q4_K/Q5_K minimums in 4 lanes by `d_x·dmin`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows<const F: u8>(data: &[u8], nb: usize, xq: &Q8Input, out: &mut [f32]) {
    let n = xq.n;
    let bb = if F == 2 {
        210
    } else if F == 1 {
        176
    } else {
        144
    };
    let (dp, qp, sp) = (data.as_ptr(), xq.qs.as_ptr(), xq.bsums.as_ptr());
    for (r, row_out) in out.chunks_exact_mut(n).enumerate() {
        for (j, o) in row_out.iter_mut().enumerate() {
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = _mm_setzero_ps();
            for b in 0..nb {
                let k = j * nb + b;
                // SAFETY: super-block `b` of row `r` and input block `k` exist (see `rows_dot`).
                unsafe {
                    let x = dp.add((r * nb + b) * bb);
                    let qx = qp.add(k * QK_K);
                    let dx = *xq.d.get_unchecked(k);
                    if F == 2 {
                        let d = dx * f16_at(x.add(208));
                        let sumi = q6_k(x, qx);
                        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                    } else {
                        let (d, dmin) = (dx * f16_at(x), dx * f16_at(x.add(2)));
                        let (scales, mins) = scales_mins_k4(x.add(4));
                        // Σ_j min_j · (bsums[2j] + bsums[2j+1]).
                        let bs = sp.add(k * 16);
                        let pair = _mm_hadd_epi16(
                            _mm_loadu_si128(bs.cast()),
                            _mm_loadu_si128(bs.add(8).cast()),
                        );
                        let prod = _mm_madd_epi16(mins, pair);
                        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
                        let sumi = q45_k::<F>(x, qx, scales);
                        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                    }
                }
            }
            *o = hsum_ps(acc) - hsum_ps128(acc_m);
        }
    }
}

/// The `f16` at `p`, as `f32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller passes a pointer to two readable bytes.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The eight 6-bit scales and the eight minimums of a Q4_K/Q5_K super-block (`p`: its 12 scale
/// bytes), each widened to `i16` (`get_scale_min_k4` for all eight at once).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_mins_k4(p: *const u8) -> (__m128i, __m128i) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const HIGH2: u32 = 0x0303_0303;
    // SAFETY: the caller passes a pointer to 12 readable bytes.
    let u: [u32; 3] =
        std::array::from_fn(|i| unsafe { p.add(4 * i).cast::<u32>().read_unaligned() });
    // Scales 0..4 are the low 6 bits of bytes 0..4, scales 4..8 the low nibbles of bytes 8..12
    // with the top 2 bits of bytes 0..4; the minimums likewise from bytes 4..8 and the high
    // nibbles of bytes 8..12.
    let sc_lo = u[0] & LOW6;
    let sc_hi = (u[2] & LOW4) | (((u[0] >> 6) & HIGH2) << 4);
    let mn_lo = u[1] & LOW6;
    let mn_hi = ((u[2] >> 4) & LOW4) | (((u[1] >> 6) & HIGH2) << 4);
    let wide = _mm256_cvtepu8_epi16(_mm_set_epi32(
        mn_hi as i32,
        mn_lo as i32,
        sc_hi as i32,
        sc_lo as i32,
    ));
    (
        _mm256_castsi256_si128(wide),
        _mm256_extracti128_si256(wide, 1),
    )
}

/// The sum of the 8 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    hsum_ps128(_mm_add_ps(
        _mm256_castps256_ps128(v),
        _mm256_extractf128_ps(v, 1),
    ))
}

/// The sum of the 4 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps128(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// `Σ_j scale_j · Σ_{k∈j} q_k·q_x,k` of a Q4_K (`F = 0`) or Q5_K (`F = 1`) super-block.
/// In 8 lanes of `i32`: `scales` holds the eight scales as `i16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45_k<const F: u8>(x: *const u8, qx: *const i8, scales: __m128i) -> __m256i {
    // SAFETY: the caller passes a whole super-block and 256 input values.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        let ql = x.add(if F == 1 { 48 } else { 16 });
        let qh = if F == 1 {
            _mm256_loadu_si256(x.add(16).cast())
        } else {
            _mm256_setzero_si256()
        };
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let bits = _mm256_loadu_si256(ql.add(32 * j).cast());
            let mut lo = _mm256_and_si256(bits, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if F == 1 {
                let s = _mm_cvtsi32_si128(2 * j as i32);
                let b0 = _mm256_and_si256(_mm256_srl_epi16(qh, s), one);
                let s = _mm_cvtsi32_si128(2 * j as i32 + 1);
                let b1 = _mm256_and_si256(_mm256_srl_epi16(qh, s), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
            }
            let y0 = _mm256_loadu_si256(qx.add(64 * j).cast());
            let y1 = _mm256_loadu_si256(qx.add(64 * j + 32).cast());
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), broadcast(scales, 2 * j));
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), broadcast(scales, 2 * j + 1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        sumi
    }
}

/// `i16` lane `i` (0..8) of `v` in all 16 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn broadcast(v: __m128i, i: usize) -> __m256i {
    // Bytes 2i and 2i+1 repeated.
    let b = (2 * i) as i8;
    let pick = _mm_set_epi8(
        b + 1,
        b,
        b + 1,
        b,
        b + 1,
        b,
        b + 1,
        b,
        b + 1,
        b,
        b + 1,
        b,
        b + 1,
        b,
        b + 1,
        b,
    );
    let s = _mm_shuffle_epi8(v, pick);
    _mm256_set_m128i(s, s)
}

/// `Σ_g scale_g · Σ_{k∈g} (q_k - 32)·q_x,k` of a Q6_K super-block: the unsigned 6-bit values
/// multiply the input, and `32·Σ q_x` is subtracted per pair.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k(x: *const u8, qx: *const i8) -> __m256i {
    // SAFETY: the caller passes a whole super-block and 256 input values.
    unsafe {
        // The 16 signed 8-bit scales at bytes 192..208, as `i16`.
        let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192).cast()));
        let scales = [_mm256_castsi256_si128(sc), _mm256_extracti128_si256(sc, 1)];
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(3);
        let k32 = _mm256_set1_epi8(32);
        let mut sumi = _mm256_setzero_si256();
        for (n, half_scales) in scales.into_iter().enumerate() {
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
                // Scales `8n + 2k` (lanes 0..8) and `8n + 2k + 1` (lanes 8..16).
                let g = 2 * k;
                let (lo, hi) = (
                    _mm256_castsi256_si128(broadcast(half_scales, g)),
                    _mm256_castsi256_si128(broadcast(half_scales, g + 1)),
                );
                let sc = _mm256_set_m128i(hi, lo);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc));
            }
        }
        sumi
    }
}
