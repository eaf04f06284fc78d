//! AVX2 + FMA + F16C kernels for the 32-value block formats: integer dot products of each weight
//! block with the input block quantized to 8 bits. Q8_0's values are read signed (llama.cpp's
//! `q8_0_q8_0`); Q4_0, Q4_1 and Q5_0 unsigned, with each block's offset (`-8·d`, the stored
//! minimum, `-16·d`) times the input block's `d·Σq` added after (llama.cpp's `q4_1_q8_1` form),
//! which spares the sign juggling of signed bytes.
//!
//! Where the CPU has VNNI (AVX-512 VNNI with VL and BW, or AVX-VNNI) the 8-bit products go
//! through `vpdpbusd`, one instruction in place of `maddubs` + `madd`; it sums the same four
//! products per lane, exactly, so every variant returns the same bits ([`Dot`]). With AVX-512 BW
//! Q5_0's fifth bits are placed by one masked byte move.
//!
//! The safe functions of [`crate::quant`] call these kernels only after [`available`] confirmed
//! the CPU features, and the kernels assert the lengths of their slices before reading them.
//! The block layout helpers (`block_bytes`, `header`) and `hsum` serve the `f32`-input
//! kernels of `quant_f32_avx2.rs` too.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::quant::{Q8Input, QUANT_BLOCK, QuantFormat, QuantizedMatrix};

/// Whether this CPU has AVX2, FMA and F16C (checked once).
pub(crate) fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// The instruction that multiplies the 8-bit weights by the 8-bit inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dot {
    /// `vpmaddubsw` then `vpmaddwd` against ones (AVX2).
    Avx2,
    /// `vpdpbusd`, VEX-encoded (AVX-VNNI).
    AvxVnni,
    /// `vpdpbusd` on 256-bit registers, EVEX-encoded (AVX-512 VNNI + VL), and Q5_0's fifth
    /// bits placed by a masked byte move (AVX-512 BW).
    Avx512Vnni,
}

impl Dot {
    /// Whether this CPU can run the variant (besides AVX2, FMA and F16C).
    pub(crate) fn available(self) -> bool {
        available()
            && match self {
                Self::Avx2 => true,
                Self::AvxVnni => is_x86_feature_detected!("avxvnni"),
                Self::Avx512Vnni => {
                    is_x86_feature_detected!("avx512vnni")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("avx512bw")
                }
            }
    }

    /// The fastest variant this CPU runs (checked once).
    pub(crate) fn best() -> Self {
        static BEST: OnceLock<Dot> = OnceLock::new();
        *BEST.get_or_init(|| {
            [Self::Avx512Vnni, Self::AvxVnni]
                .into_iter()
                .find(|d| d.available())
                .unwrap_or(Self::Avx2)
        })
    }
}

/// `out[i·n + j] = W[first + i] · x[j]` for the `out.len() / n` rows from `first`, with the
/// `n` input rows quantized in 32-value blocks in `xq`.
pub(crate) fn rows_dot(m: &QuantizedMatrix, first: usize, xq: &Q8Input, out: &mut [f32]) {
    rows_dot_with(Dot::best(), m, first, xq, out);
}

/// [`rows_dot`] through the products of `dot`.
///
/// # Panics
/// When the CPU cannot run `dot`, or the lengths do not match.
pub(crate) fn rows_dot_with(
    dot: Dot,
    m: &QuantizedMatrix,
    first: usize,
    xq: &Q8Input,
    out: &mut [f32],
) {
    let n = xq.n;
    let (data, nb, count) = row_blocks(m, first, n, out.len());
    assert!(
        dot.available()
            && xq.block == QUANT_BLOCK
            && xq.qs.len() == n * m.cols
            && xq.d.len() == n * nb
            && xq.s.len() == n * nb
            && out.len() == count * n
    );
    macro_rules! by_format {
        ($rows:ident) => {
            match m.format {
                QuantFormat::Q4_0 => $rows::<0>(data, nb, xq, out),
                QuantFormat::Q4_1 => $rows::<1>(data, nb, xq, out),
                QuantFormat::Q8_0 => $rows::<2>(data, nb, xq, out),
                QuantFormat::Q5_0 => $rows::<3>(data, nb, xq, out),
                QuantFormat::Q4_K | QuantFormat::Q5_K | QuantFormat::Q6_K => {
                    unreachable!("the k-quants have their own kernels")
                }
            }
        };
    }
    // SAFETY: `dot.available()` confirmed AVX2, FMA, F16C and the variant's VNNI features;
    // `data` holds exactly `count · nb` blocks of the format, `xq` holds `n` rows of `nb`
    // quantized blocks, and every load below stays inside them.
    unsafe {
        match dot {
            Dot::Avx2 => by_format!(rows_avx2),
            Dot::AvxVnni => by_format!(rows_avx_vnni),
            Dot::Avx512Vnni => by_format!(rows_avx512_vnni),
        }
    }
}

/// The blocks of the `out_len / n` weight rows from `first`, the blocks per row and the row count.
pub(super) fn row_blocks(
    m: &QuantizedMatrix,
    first: usize,
    n: usize,
    out_len: usize,
) -> (&[u8], usize, usize) {
    let count = out_len / n;
    let rb = m.row_bytes();
    (
        &m.data[first * rb..(first + count) * rb],
        m.cols / QUANT_BLOCK,
        count,
    )
}

/// Block bytes of format `F` (0 = Q4_0, 1 = Q4_1, 2 = Q8_0, 3 = Q5_0).
pub(super) const fn block_bytes(f: u8) -> usize {
    match f {
        0 => 18,
        1 => 20,
        3 => 22,
        _ => 34,
    }
}

/// The block's `f16` header widened: lane 0 is `d`, lane 1 is `m` (Q4_1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn header(p: *const u8) -> __m128 {
    // SAFETY: every block starts with at least 4 bytes.
    unsafe { _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned())) }
}

/// The 32 quantized values of a weight block of format `F` as bytes in value order: unsigned
/// for Q4_0 and Q4_1 (`0..=15`) and Q5_0 (`0..=31`), whose offsets (`-8`, the stored minimum,
/// `-16`) [`offset`] applies per block; signed for Q8_0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weights<const F: u8>(p: *const u8) -> __m256i {
    // SAFETY: the caller passes a pointer to a whole block.
    unsafe {
        if F == 2 {
            return _mm256_loadu_si256(p.add(2).cast());
        }
        // Byte i holds value i (low nibble) and value i + 16 (high nibble).
        let q = _mm_loadu_si128(
            p.add(match F {
                1 => 4,
                3 => 6,
                _ => 2,
            })
            .cast(),
        );
        let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
        let v = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
        if F == 3 {
            // Q5_0: bit i of `qh` is value i's fifth bit.
            _mm256_or_si256(
                v,
                _mm256_and_si256(fifth_bits(p.add(2)), _mm256_set1_epi8(0x10)),
            )
        } else {
            v
        }
    }
}

/// [`weights`], with Q5_0's fifth bits placed by one masked byte move: bit i of `qh` selects
/// byte i.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512bw,avx512vl")]
unsafe fn weights_avx512<const F: u8>(p: *const u8) -> __m256i {
    // SAFETY: the caller passes a pointer to a whole block.
    unsafe {
        if F != 3 {
            return weights::<F>(p);
        }
        let q = _mm_loadu_si128(p.add(6).cast());
        let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
        let v = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
        let bits = p.add(2).cast::<u32>().read_unaligned();
        _mm256_mask_mov_epi8(v, bits, _mm256_or_si256(v, _mm256_set1_epi8(0x10)))
    }
}

/// Byte i is all ones where bit i of the little-endian `u32` at `p` is set (llama.cpp's
/// `bytes_from_bits_32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    // SAFETY: the caller passes a pointer to 4 readable bytes.
    let bits = unsafe { p.cast::<i32>().read_unaligned() };
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    // Each byte keeps its own bit; all others are set, so the byte is all ones iff its bit is.
    let own = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(own, _mm256_set1_epi64x(-1))
}

/// The weight of `d_x·Σq_x` in a block's product when its values are read unsigned
/// (`Σ w·x = d_w·d_x·Σ u·q_x + offset·d_x·Σq_x`): Q4_1's stored minimum, `-8·d` for Q4_0,
/// `-16·d` for Q5_0; Q8_0 is read signed and has none.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn offset<const F: u8>(h: __m128) -> f32 {
    match F {
        0 => -8.0 * _mm_cvtss_f32(h),
        1 => _mm_cvtss_f32(_mm_movehdup_ps(h)),
        3 => -16.0 * _mm_cvtss_f32(h),
        _ => 0.0,
    }
}

/// `Σ w·y` of the 32 byte pairs, as 8 lanes of partial sums converted to `f32` (exact: each
/// lane is at most 4 · 128 · 127 in magnitude).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn products<const F: u8>(w: __m256i, y: __m256i) -> __m256 {
    // `maddubs` multiplies unsigned by signed bytes; signed weights lend their sign to `y`.
    let p16 = if F != 2 {
        _mm256_maddubs_epi16(w, y)
    } else {
        _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w))
    };
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
}

/// [`products`] through `vpdpbusd` (AVX-VNNI): the same four products summed per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn products_avx_vnni<const F: u8>(w: __m256i, y: __m256i) -> __m256 {
    let zero = _mm256_setzero_si256();
    let p = if F != 2 {
        _mm256_dpbusd_avx_epi32(zero, w, y)
    } else {
        _mm256_dpbusd_avx_epi32(zero, _mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w))
    };
    _mm256_cvtepi32_ps(p)
}

/// [`products`] through `vpdpbusd` (AVX-512 VNNI on 256-bit registers).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
fn products_avx512_vnni<const F: u8>(w: __m256i, y: __m256i) -> __m256 {
    let zero = _mm256_setzero_si256();
    let p = if F != 2 {
        _mm256_dpbusd_epi32(zero, w, y)
    } else {
        _mm256_dpbusd_epi32(zero, _mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w))
    };
    _mm256_cvtepi32_ps(p)
}

/// The sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(t: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// Input rows handled together, sharing each unpacked weight block.
const GROUP: usize = 4;

/// Defines `$name`: `Σ_blocks d_w·d_x·Σ q_w·q_x (+ m_w·s_x)` for each weight row and input
/// row, its weight bytes from `$weights` and 8-bit products from `$products`, compiled for
/// `$features`.
macro_rules! rows_kernel {
    ($name:ident, $features:literal, $products:ident, $weights:ident) => {
        #[target_feature(enable = $features)]
        unsafe fn $name<const F: u8>(data: &[u8], nb: usize, xq: &Q8Input, out: &mut [f32]) {
            let n = xq.n;
            let count = out.len() / n;
            let bb = block_bytes(F);
            let dp = data.as_ptr();
            let qp = xq.qs.as_ptr();
            let mut r = 0;
            // One input row: two weight rows at a time share each load of `x`.
            while n == 1 && r + 2 <= count {
                let (mut t0, mut t1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (mut m0, mut m1) = (0.0f32, 0.0f32);
                for b in 0..nb {
                    // SAFETY: blocks `b` of rows `r` and `r + 1` exist; `xq` has `nb` blocks.
                    unsafe {
                        let a0 = dp.add((r * nb + b) * bb);
                        let a1 = dp.add(((r + 1) * nb + b) * bb);
                        let y = _mm256_loadu_si256(qp.add(b * QUANT_BLOCK).cast());
                        let (dx, sx) = (*xq.d.get_unchecked(b), *xq.s.get_unchecked(b));
                        let (h0, h1) = (header(a0), header(a1));
                        let p0 = $products::<F>($weights::<F>(a0), y);
                        let p1 = $products::<F>($weights::<F>(a1), y);
                        t0 = _mm256_fmadd_ps(_mm256_set1_ps(_mm_cvtss_f32(h0) * dx), p0, t0);
                        t1 = _mm256_fmadd_ps(_mm256_set1_ps(_mm_cvtss_f32(h1) * dx), p1, t1);
                        if F != 2 {
                            m0 += offset::<F>(h0) * sx;
                            m1 += offset::<F>(h1) * sx;
                        }
                    }
                }
                out[r] = hsum(t0) + m0;
                out[r + 1] = hsum(t1) + m1;
                r += 2;
            }
            // Otherwise one weight row at a time against up to GROUP input rows.
            while r < count {
                let mut j = 0;
                while j < n {
                    let g = (n - j).min(GROUP);
                    let mut t = [_mm256_setzero_ps(); GROUP];
                    let mut m = [0.0f32; GROUP];
                    for b in 0..nb {
                        // SAFETY: block `b` of row `r` exists; input rows `j..j + g` exist.
                        unsafe {
                            let a = dp.add((r * nb + b) * bb);
                            let h = header(a);
                            let (dw, mw) = (_mm_cvtss_f32(h), offset::<F>(h));
                            let w = $weights::<F>(a);
                            for (i, (ti, mi)) in t.iter_mut().zip(&mut m).take(g).enumerate() {
                                let k = (j + i) * nb + b;
                                let y = _mm256_loadu_si256(qp.add(k * QUANT_BLOCK).cast());
                                let p = $products::<F>(w, y);
                                *ti = _mm256_fmadd_ps(
                                    _mm256_set1_ps(dw * *xq.d.get_unchecked(k)),
                                    p,
                                    *ti,
                                );
                                if F != 2 {
                                    *mi += mw * *xq.s.get_unchecked(k);
                                }
                            }
                        }
                    }
                    for i in 0..g {
                        out[r * n + j + i] = hsum(t[i]) + m[i];
                    }
                    j += g;
                }
                r += 1;
            }
        }
    };
}

rows_kernel!(rows_avx2, "avx2,fma,f16c", products, weights);
rows_kernel!(
    rows_avx_vnni,
    "avx2,fma,f16c,avxvnni",
    products_avx_vnni,
    weights
);
rows_kernel!(
    rows_avx512_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw",
    products_avx512_vnni,
    weights_avx512
);
