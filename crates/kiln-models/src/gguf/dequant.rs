//! Dequantization of ggml block formats to `f32`, following ggml's `dequantize_row_*` reference
//! code operation by operation.
//!
//! Each block format has one decoder, `decode_<type>_block(block, out)`, from the bytes of one
//! block to its values.

use half::f16;

use kiln_nn::QuantFormat;

use super::ggml_type::{GgmlType, QK_K};

#[inline]
fn f16_le(lo: u8, hi: u8) -> f32 {
    f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

/// Decodes `src` (whole blocks of `ty`) into `dst`, which holds `blocks * block_elems` values.
///
/// # Errors
/// A type that cannot be dequantized, or data that is not the blocks of `dst.len()` values; the
/// message says what is wrong in GGUF terms (the caller adds the file and tensor).
pub(super) fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), String> {
    let (block_elems, block_bytes) = ty
        .block_layout()
        .ok_or_else(|| format!("cannot dequantize {ty}"))?;
    if !src.len().is_multiple_of(block_bytes) || src.len() / block_bytes * block_elems != dst.len()
    {
        return Err(format!(
            "{} bytes of data are not the {ty} blocks ({block_elems} values in {block_bytes} \
             bytes each) of {} values",
            src.len(),
            dst.len()
        ));
    }
    match ty {
        GgmlType::F32 => {
            for (y, x) in dst.iter_mut().zip(src.as_chunks::<4>().0) {
                *y = f32::from_le_bytes(*x);
            }
        }
        GgmlType::F16 => {
            for (y, x) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                *y = f16_le(x[0], x[1]);
            }
        }
        GgmlType::BF16 => {
            for (y, x) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                *y = f32::from_bits(u32::from(u16::from_le_bytes(*x)) << 16);
            }
        }
        GgmlType::Q4_0 => blocks::<18, 32>(src, dst, decode_q4_0_block),
        GgmlType::Q4_1 => blocks::<20, 32>(src, dst, decode_q4_1_block),
        GgmlType::Q5_0 => blocks::<22, 32>(src, dst, decode_q5_0_block),
        GgmlType::Q5_1 => blocks::<24, 32>(src, dst, decode_q5_1_block),
        GgmlType::Q8_0 => blocks::<34, 32>(src, dst, decode_q8_0_block),
        GgmlType::Q2_K => blocks::<84, QK_K>(src, dst, decode_q2_k_block),
        GgmlType::Q3_K => blocks::<110, QK_K>(src, dst, decode_q3_k_block),
        GgmlType::Q4_K => blocks::<144, QK_K>(src, dst, decode_q4_k_block),
        GgmlType::Q5_K => blocks::<176, QK_K>(src, dst, decode_q5_k_block),
        GgmlType::Q6_K => blocks::<210, QK_K>(src, dst, decode_q6_k_block),
        GgmlType::Q8_K => blocks::<292, QK_K>(src, dst, decode_q8_k_block),
        other => return Err(format!("cannot dequantize {other}")),
    }
    Ok(())
}

/// Applies `f` to each block of `B` bytes and its `N` output values.
#[inline]
fn blocks<const B: usize, const N: usize>(
    src: &[u8],
    dst: &mut [f32],
    f: fn(&[u8; B], &mut [f32; N]),
) {
    for (x, y) in src
        .as_chunks::<B>()
        .0
        .iter()
        .zip(dst.as_chunks_mut::<N>().0)
    {
        f(x, y);
    }
}

/// Q4_0: the decoder the CPU kernels use ([`kiln_nn::QuantFormat::decode_block`]).
fn decode_q4_0_block(x: &[u8; 18], y: &mut [f32; 32]) {
    *y = QuantFormat::Q4_0.decode_block(x);
}

/// Q4_1: the decoder the CPU kernels use ([`kiln_nn::QuantFormat::decode_block`]).
fn decode_q4_1_block(x: &[u8; 20], y: &mut [f32; 32]) {
    *y = QuantFormat::Q4_1.decode_block(x);
}

/// `d: f16, qh: u32, qs: [u8; 16]`; `y = (q - 16) * d` with the fifth bit from `qh`.
pub(crate) fn decode_q5_0_block(x: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_le(x[0], x[1]);
    let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
    for j in 0..16 {
        let q = x[6 + j];
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((u32::from(q & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = ((u32::from(q >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

/// `d: f16, m: f16, qh: u32, qs: [u8; 16]`; `y = q * d + m` with the fifth bit from `qh`.
pub(crate) fn decode_q5_1_block(x: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_le(x[0], x[1]);
    let m = f16_le(x[2], x[3]);
    let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
    for j in 0..16 {
        let q = x[8 + j];
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (u32::from(q & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = (u32::from(q >> 4) | h1) as f32 * d + m;
    }
}

/// Q8_0: the decoder the CPU kernels use ([`kiln_nn::QuantFormat::decode_block`]).
fn decode_q8_0_block(x: &[u8; 34], y: &mut [f32; 32]) {
    *y = QuantFormat::Q8_0.decode_block(x);
}

/// `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16`.
pub(crate) fn decode_q2_k_block(x: &[u8; 84], y: &mut [f32; QK_K]) {
    let d = f16_le(x[80], x[81]);
    let min = f16_le(x[82], x[83]);
    let mut is = 0;
    let mut out = 0;
    for n in 0..2 {
        let q = &x[16 + 32 * n..16 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let sc = x[is];
                is += 1;
                let dl = d * f32::from(sc & 0x0F);
                let ml = min * f32::from(sc >> 4);
                for &b in &q[16 * half..16 * half + 16] {
                    y[out] = dl * f32::from((b >> shift) & 3) - ml;
                    out += 1;
                }
            }
        }
    }
}

/// `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12] (16 packed 6-bit), d: f16`.
pub(crate) fn decode_q3_k_block(x: &[u8; 110], y: &mut [f32; QK_K]) {
    let d_all = f16_le(x[108], x[109]);
    let s = &x[96..108];
    let mut scales = [0i32; 16];
    for (j, scale) in scales.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *scale = i32::from(low | (high << 4)) - 32;
    }
    let hmask = &x[0..32];
    let mut is = 0;
    let mut out = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &x[32 + 32 * n..32 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                for l in 16 * half..16 * half + 16 {
                    let low = i32::from((q[l] >> shift) & 3);
                    let sub = if hmask[l] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - sub) as f32;
                    out += 1;
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

/// Q4_K: the decoder the CPU kernels use ([`kiln_nn::QuantFormat::decode_into`]).
pub(crate) fn decode_q4_k_block(x: &[u8; 144], y: &mut [f32; QK_K]) {
    QuantFormat::Q4_K.decode_into(x, y);
}

/// Q5_K: the decoder the CPU kernels use ([`kiln_nn::QuantFormat::decode_into`]).
pub(crate) fn decode_q5_k_block(x: &[u8; 176], y: &mut [f32; QK_K]) {
    QuantFormat::Q5_K.decode_into(x, y);
}

/// Q6_K: the decoder the CPU kernels use ([`kiln_nn::QuantFormat::decode_into`]).
pub(crate) fn decode_q6_k_block(x: &[u8; 210], y: &mut [f32; QK_K]) {
    QuantFormat::Q6_K.decode_into(x, y);
}

/// `d: f32, qs: [i8; 256], bsums: [i16; 16]`; `y = d * q`.
pub(crate) fn decode_q8_k_block(x: &[u8; 292], y: &mut [f32; QK_K]) {
    let d = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
    for (y, &q) in y.iter_mut().zip(&x[4..4 + QK_K]) {
        *y = d * f32::from(q as i8);
    }
}
