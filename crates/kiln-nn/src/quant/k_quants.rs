//! llama.cpp's k-quant formats Q4_K, Q5_K and Q6_K: super-blocks of [`QK_K`] values with
//! 6-bit (Q4_K, Q5_K) or 8-bit (Q6_K) scales per sub-block.
//!
//! Each super-block is read as integers: the quantized values `q`, a scale per 16 values and,
//! for Q4_K/Q5_K, a minimum per 32 values, so that `w = d·scale·q - dmin·min` (Q4_K, Q5_K) or
//! `w = d·scale·q` (Q6_K, `q` in `-32..=31`). A dot product with an input super-block quantized
//! to 8 bits (`x = d_x·q_x`, llama.cpp's Q8_K) is then
//! `d_x·d·Σ_g scale_g·Σ_{k∈g} q_k·q_x,k - d_x·dmin·Σ_j min_j·Σ_{k∈j} q_x,k`, in integers but for
//! the last two products (`ggml_vec_dot_q4_K_q8_K` and its siblings).

use half::f16;

use super::QuantFormat;

/// Values per k-quant super-block.
pub const QK_K: usize = 256;

#[inline]
fn f16_at(x: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([x[i], x[i + 1]])).to_f32()
}

/// The `j`-th 6-bit scale and minimum of a Q4_K/Q5_K super-block (`get_scale_min_k4` in ggml).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// One super-block as integers.
pub(crate) struct Unpacked {
    /// `d` (the super-block scale).
    pub(crate) d: f32,
    /// `dmin` (Q4_K/Q5_K; 0 for Q6_K).
    pub(crate) dmin: f32,
    /// The quantized values: `0..=15` (Q4_K), `0..=31` (Q5_K), `-32..=31` (Q6_K).
    pub(crate) q: [i8; QK_K],
    /// The scale of each run of 16 values.
    pub(crate) scales: [i8; QK_K / 16],
    /// The minimum of each run of 32 values (Q4_K/Q5_K).
    pub(crate) mins: [u8; QK_K / 32],
}

/// Reads a super-block of `format` (one of the k-quants) in llama.cpp's layout.
#[inline(always)]
pub(crate) fn unpack(format: QuantFormat, x: &[u8]) -> Unpacked {
    let mut u = Unpacked {
        d: 0.0,
        dmin: 0.0,
        q: [0; QK_K],
        scales: [0; QK_K / 16],
        mins: [0; QK_K / 32],
    };
    match format {
        QuantFormat::Q4_K | QuantFormat::Q5_K => {
            // d: f16, dmin: f16, scales: [u8; 12], (Q5_K: qh: [u8; 32]), qs: [u8; 128]
            u.d = f16_at(x, 0);
            u.dmin = f16_at(x, 2);
            let scales = &x[4..16];
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, scales);
                u.scales[2 * j] = sc as i8;
                u.scales[2 * j + 1] = sc as i8;
                u.mins[j] = m;
            }
            let five = format == QuantFormat::Q5_K;
            let (qh, ql) = if five {
                (&x[16..48], &x[48..176])
            } else {
                (&x[0..0], &x[16..144])
            };
            // Runs of 64 values: 32 low nibbles, then the 32 high nibbles of the same bytes.
            for j in 0..4 {
                let ql = &ql[32 * j..32 * j + 32];
                for l in 0..32 {
                    let (mut lo, mut hi) = (ql[l] & 0x0F, ql[l] >> 4);
                    if five {
                        lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                    }
                    u.q[64 * j + l] = lo as i8;
                    u.q[64 * j + 32 + l] = hi as i8;
                }
            }
        }
        QuantFormat::Q6_K => {
            // ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16
            u.d = f16_at(x, 208);
            for (g, s) in u.scales.iter_mut().enumerate() {
                *s = x[192 + g] as i8;
            }
            for n in 0..2 {
                let ql = &x[64 * n..64 * n + 64];
                let qh = &x[128 + 32 * n..128 + 32 * n + 32];
                let q = &mut u.q[128 * n..128 * n + 128];
                for l in 0..32 {
                    let v = [
                        (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                        (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                        (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                        (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                    ];
                    for (k, v) in v.into_iter().enumerate() {
                        q[32 * k + l] = v as i8 - 32;
                    }
                }
            }
        }
        _ => unreachable!("not a k-quant format"),
    }
    u
}

/// A super-block dequantized with ggml's `dequantize_row_q{4,5,6}_K` formulas.
pub(crate) fn decode(format: QuantFormat, x: &[u8], y: &mut [f32]) {
    let u = unpack(format, x);
    if format == QuantFormat::Q6_K {
        for (k, yk) in y[..QK_K].iter_mut().enumerate() {
            *yk = u.d * f32::from(u.scales[k / 16]) * f32::from(u.q[k]);
        }
    } else {
        for (k, yk) in y[..QK_K].iter_mut().enumerate() {
            let d1 = u.d * f32::from(u.scales[k / 16]);
            let m1 = u.dmin * f32::from(u.mins[k / 32]);
            *yk = d1 * f32::from(u.q[k]) - m1;
        }
    }
}

/// The portable dot product of one weight super-block with one quantized input super-block
/// (`qx`, its scale `dx` and `bsums`, the sums of each run of 16 values of `qx`).
pub(crate) fn dot_block(format: QuantFormat, x: &[u8], qx: &[i8], dx: f32, bsums: &[i16]) -> f32 {
    let u = unpack(format, x);
    let mut sumi = 0i32;
    for (g, &sc) in u.scales.iter().enumerate() {
        let s: i32 = (16 * g..16 * g + 16)
            .map(|k| i32::from(u.q[k]) * i32::from(qx[k]))
            .sum();
        sumi += i32::from(sc) * s;
    }
    let mut summ = 0i32;
    if format != QuantFormat::Q6_K {
        for (j, &m) in u.mins.iter().enumerate() {
            summ += i32::from(m) * (i32::from(bsums[2 * j]) + i32::from(bsums[2 * j + 1]));
        }
    }
    dx * u.d * sumi as f32 - dx * u.dmin * summ as f32
}

/// The dot product of one weight super-block with 256 input values quantized to 16 bits per
/// 32 (`qx`, with the scale `dx[j]` and the exact sum `sx[j]` of each run of 32): per run an
/// integer sum, `Σ_j d_x,j·d·scale_j·Σ q·q_x - dmin·Σ_j min_j·Σx_j` (Q6_K: a scale per 16
/// values, no minimum). Inlined into the rows loop, so that the SIMD build of that loop
/// vectorizes it.
#[inline(always)]
pub(crate) fn dot_block_q16(
    format: QuantFormat,
    x: &[u8],
    qx: &[i16],
    dx: &[f32],
    sx: &[f32],
) -> f32 {
    let u = unpack(format, x);
    let (qx, dx, sx) = (&qx[..QK_K], &dx[..8], &sx[..8]);
    let run = |from: usize, len: usize| -> i32 {
        u.q[from..from + len]
            .iter()
            .zip(&qx[from..from + len])
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum()
    };
    let mut acc = 0.0f32;
    if format == QuantFormat::Q6_K {
        for (j, &d) in dx.iter().enumerate() {
            // Each run of 16 fits in i32 (|q| ≤ 32, |q_x| ≤ 32767); its scale is applied in f32.
            let lo = f32::from(u.scales[2 * j]) * run(32 * j, 16) as f32;
            let hi = f32::from(u.scales[2 * j + 1]) * run(32 * j + 16, 16) as f32;
            acc += d * (lo + hi);
        }
        return u.d * acc;
    }
    let mut mins = 0.0f32;
    for j in 0..8 {
        acc += dx[j] * f32::from(u.scales[2 * j]) * run(32 * j, 32) as f32;
        mins += f32::from(u.mins[j]) * sx[j];
    }
    u.d * acc - u.dmin * mins
}

/// `out[i·n + j] = W[first + i] · x[j]` over the super-blocks of `data` (the rows from
/// `first`), with the `n` input rows quantized to 16 bits in `xq`; the portable loop, which
/// [`crate::simd::k_quants_i16`] also compiles with AVX2 enabled.
#[inline(always)]
pub(crate) fn rows_dot_q16(
    format: QuantFormat,
    data: &[u8],
    cols: usize,
    xq: &super::Q16Input,
    out: &mut [f32],
) {
    let n = xq.n;
    let (nb, bb) = (cols / QK_K, format.block_bytes());
    let runs = cols / 32;
    for (row, row_out) in data.chunks_exact(nb * bb).zip(out.chunks_exact_mut(n)) {
        for (j, o) in row_out.iter_mut().enumerate() {
            *o = row
                .chunks_exact(bb)
                .enumerate()
                .map(|(b, w)| {
                    let k = j * runs + 8 * b;
                    dot_block_q16(
                        format,
                        w,
                        &xq.qs[k * 32..(k + 8) * 32],
                        &xq.d[k..k + 8],
                        &xq.sum[k..k + 8],
                    )
                })
                .sum();
        }
    }
}
