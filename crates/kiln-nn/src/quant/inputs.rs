//! Input rows quantized per 32-value block, as the integer kernels read them.

use super::QUANT_BLOCK;

/// Input rows as one kind of kernel reads them.
pub(super) enum Prepared {
    Q16(Q16Input),
    Q8(Q8Input),
    /// `Σx` per 32-value block (the values themselves are read from `x`).
    F32(Vec<f32>),
}

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2²²`: adding `1.5·2²³` leaves
/// no fraction bits, so the addition itself rounds (no call into libm on CPUs whose baseline
/// lacks a rounding instruction).
pub(super) fn round_even(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

/// Input rows quantized to 16 bits per 32-value block ([`Inputs::Q16`]): a scale
/// `d = max|x| / 32767` and `q = round(x / d)` (ties to even) in `-32767..=32767`, with the
/// exact `f32` sum of each block for the formats' offset terms.
#[derive(Debug, Clone)]
pub(crate) struct Q16Input {
    /// Input rows.
    pub(crate) n: usize,
    /// The scale of each block, `[n, cols / 32]`.
    pub(crate) d: Vec<f32>,
    /// `Σ x` of each block, `[n, cols / 32]`.
    pub(crate) sum: Vec<f32>,
    /// The quantized values, `[n, cols]`.
    pub(crate) qs: Vec<i16>,
}

impl Q16Input {
    /// Quantizes `n` rows of `cols` values (`cols` a multiple of 32).
    pub(crate) fn quantize(x: &[f32], n: usize, cols: usize) -> Self {
        debug_assert!(x.len() == n * cols && cols.is_multiple_of(QUANT_BLOCK));
        let blocks = x.len() / QUANT_BLOCK;
        let mut q = Self {
            n,
            d: Vec::with_capacity(blocks),
            sum: Vec::with_capacity(blocks),
            qs: vec![0; x.len()],
        };
        for (xb, qb) in x
            .chunks_exact(QUANT_BLOCK)
            .zip(q.qs.chunks_exact_mut(QUANT_BLOCK))
        {
            let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 32767.0;
            let id = if d > 0.0 { 32767.0 / amax } else { 0.0 };
            for (qv, &v) in qb.iter_mut().zip(xb) {
                *qv = round_even(v * id).clamp(-32767.0, 32767.0) as i16;
            }
            q.d.push(d);
            q.sum.push(xb.iter().sum());
        }
        q
    }
}

/// Input rows quantized to 8 bits per block, as llama.cpp quantizes activations (its Q8_0,
/// Q8_1 and Q8_K blocks): per block of `block` values a scale `d = max|x| / 127` and
/// `q = round(x / d)` (ties to even) in `-127..=127`. The scales stay `f32` (llama.cpp rounds
/// the 32-value ones to `f16`).
#[derive(Debug, Clone)]
pub(crate) struct Q8Input {
    /// Input rows.
    pub(crate) n: usize,
    /// Values per block (32, or 256 for the k-quant super-blocks).
    pub(crate) block: usize,
    /// The scale of each block, `[n, cols / block]`.
    pub(crate) d: Vec<f32>,
    /// `d · Σ q` of each block (llama.cpp's `s` of Q8_1), `[n, cols / block]`.
    pub(crate) s: Vec<f32>,
    /// The quantized values, `[n, cols]`.
    pub(crate) qs: Vec<i8>,
    /// `Σ q` of each run of 16 values (llama.cpp's `bsums` of Q8_K), `[n, cols / 16]`.
    pub(crate) bsums: Vec<i16>,
}

impl Q8Input {
    /// Quantizes `n` rows of `cols` values (`cols` a multiple of `block`, itself a multiple
    /// of 16).
    pub(crate) fn quantize(x: &[f32], n: usize, cols: usize, block: usize) -> Self {
        debug_assert!(
            x.len() == n * cols && cols.is_multiple_of(block) && block.is_multiple_of(16)
        );
        let blocks = x.len() / block;
        let mut q = Self {
            n,
            block,
            d: Vec::with_capacity(blocks),
            s: Vec::with_capacity(blocks),
            qs: vec![0; x.len()],
            bsums: Vec::with_capacity(x.len() / 16),
        };
        for (xb, qb) in x.chunks_exact(block).zip(q.qs.chunks_exact_mut(block)) {
            let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 127.0 / amax } else { 0.0 };
            for (qv, &v) in qb.iter_mut().zip(xb) {
                *qv = round_even(v * id).clamp(-127.0, 127.0) as i8;
            }
            let sum: i32 = qb.iter().map(|&v| i32::from(v)).sum();
            q.d.push(d);
            q.s.push(d * sum as f32);
            q.bsums.extend(
                qb.chunks_exact(16)
                    .map(|c| c.iter().map(|&v| i16::from(v)).sum::<i16>()),
            );
        }
        q
    }
}
