//! The row kernels behind [`QuantizedMatrix::matmul`]: the portable loops and the dispatch to
//! the AVX2 ones, per input kind.

use half::f16;

use super::inputs::{Q8Input, Q16Input};
use super::{QK_K, QUANT_BLOCK, QuantFormat, QuantizedMatrix, k_quants, q5_values};
#[cfg(target_arch = "x86_64")]
use crate::simd::{
    k_quants_avx2 as k_avx2, quant_avx2 as avx2, quant_f32_avx2 as f32_avx2,
    quant_i16_avx2 as i16_avx2, quant_i16_avx512 as i16_avx512,
};

impl QuantizedMatrix {
    /// `out[i·n + j] = Σ_k W[first + i, k] · x[j, k]` for the `out.len() / n` rows from `first`,
    /// with `f32` inputs (`xsum`: the sum of each 32-value block of `x`).
    pub(super) fn rows_dot_f32(
        &self,
        first: usize,
        x: &[f32],
        xsum: &[f32],
        n: usize,
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.format.block_values() == QUANT_BLOCK
            && self.format != QuantFormat::Q5_0
            && avx2::available()
        {
            f32_avx2::rows_dot(self, first, x, xsum, n, out);
            return;
        }
        let _ = xsum;
        for (i, o) in out.chunks_exact_mut(n).enumerate() {
            self.row_dot_f32_scalar(first + i, x, o);
        }
    }

    /// The portable `f32`-input kernel: each block dequantized, then multiplied.
    pub(super) fn row_dot_f32_scalar(&self, row: usize, x: &[f32], out: &mut [f32]) {
        let bv = self.format.block_values();
        let bb = self.format.block_bytes();
        let rb = self.row_bytes();
        let data = &self.data[row * rb..(row + 1) * rb];
        let mut w = vec![0.0f32; bv];
        for (j, o) in out.iter_mut().enumerate() {
            let xr = &x[j * self.cols..(j + 1) * self.cols];
            let mut lanes = [0.0f32; 8];
            for (block, xb) in data.chunks_exact(bb).zip(xr.chunks_exact(bv)) {
                self.format.decode_into(block, &mut w);
                for k in 0..bv {
                    lanes[k % 8] = w[k].mul_add(xb[k], lanes[k % 8]);
                }
            }
            *o = lanes.iter().sum();
        }
    }

    /// `out[i·n + j] = W[first + i] · x[j]` for the `out.len() / n` rows from `first`, with the
    /// input rows quantized to 16 bits in `xq`.
    pub(super) fn rows_dot_q16(&self, first: usize, xq: &Q16Input, out: &mut [f32]) {
        if self.format.block_values() == QK_K {
            let rb = self.row_bytes();
            let data = &self.data[first * rb..(first + out.len() / xq.n) * rb];
            #[cfg(target_arch = "x86_64")]
            if avx2::available() {
                crate::simd::k_quants_i16::rows_dot(self.format, data, self.cols, xq, out);
                return;
            }
            k_quants::rows_dot_q16(self.format, data, self.cols, xq, out);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if xq.n == 1 && i16_avx512::available() {
            i16_avx512::rows_dot(self, first, xq, out);
            return;
        }
        // A decoding batch: each row summed as the one-row kernel sums it, so a sequence's
        // result does not depend on the batch it is decoded in.
        #[cfg(target_arch = "x86_64")]
        if xq.n <= i16_avx512::MAX_INPUTS && i16_avx512::available() {
            i16_avx512::rows_dot_many(self, first, xq, out);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            i16_avx2::rows_dot(self, first, xq, out);
            return;
        }
        for (i, o) in out.chunks_exact_mut(xq.n).enumerate() {
            self.row_dot_q16_scalar(first + i, xq, o);
        }
    }

    /// The portable 16-bit-input kernel of the 32-value formats: the same integer products as
    /// the SIMD one, summed in another order.
    pub(super) fn row_dot_q16_scalar(&self, row: usize, xq: &Q16Input, out: &mut [f32]) {
        let nb = self.cols / QUANT_BLOCK;
        let bb = self.format.block_bytes();
        let rb = self.row_bytes();
        let data = &self.data[row * rb..(row + 1) * rb];
        for (j, o) in out.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for (b, w) in data.chunks_exact(bb).enumerate() {
                let k = j * nb + b;
                let q = &xq.qs[k * QUANT_BLOCK..(k + 1) * QUANT_BLOCK];
                let h = |i: usize| f16::from_bits(u16::from_le_bytes([w[i], w[i + 1]])).to_f32();
                let (d, dx, xs) = (h(0), xq.d[k], xq.sum[k]);
                let nibbles = |v: &[u8]| -> i32 {
                    (0..16)
                        .map(|i| {
                            i32::from(v[i] & 0x0F) * i32::from(q[i])
                                + i32::from(v[i] >> 4) * i32::from(q[i + 16])
                        })
                        .sum()
                };
                sum += match self.format {
                    QuantFormat::Q4_0 => d * dx * nibbles(&w[2..18]) as f32 - 8.0 * d * xs,
                    QuantFormat::Q4_1 => d * dx * nibbles(&w[4..20]) as f32 + h(2) * xs,
                    QuantFormat::Q5_0 => {
                        let sumi: i32 = q5_values(w)
                            .iter()
                            .zip(q)
                            .map(|(&a, &b)| i32::from(a) * i32::from(b))
                            .sum();
                        d * dx * sumi as f32 - 16.0 * d * xs
                    }
                    QuantFormat::Q8_0 => {
                        let sumi: i32 = (0..32)
                            .map(|i| i32::from(w[2 + i] as i8) * i32::from(q[i]))
                            .sum();
                        d * dx * sumi as f32
                    }
                    QuantFormat::Q4_K | QuantFormat::Q5_K | QuantFormat::Q6_K => {
                        unreachable!("32-value block formats only")
                    }
                };
            }
            *o = sum;
        }
    }

    /// `out[i·n + j] = W[first + i] · x[j]` for the `out.len() / n` rows from `first`, with the
    /// input rows quantized in `xq`.
    pub(super) fn rows_dot(&self, first: usize, xq: &Q8Input, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            match self.format {
                QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q5_0 | QuantFormat::Q8_0 => {
                    avx2::rows_dot(self, first, xq, out);
                }
                QuantFormat::Q4_K | QuantFormat::Q5_K | QuantFormat::Q6_K => {
                    k_avx2::rows_dot(self, first, xq, out);
                }
            }
            return;
        }
        for (i, o) in out.chunks_exact_mut(xq.n).enumerate() {
            self.row_dot_scalar(first + i, xq, o);
        }
    }

    /// The portable kernel: the same integer products as the SIMD one, summed in another order.
    pub(super) fn row_dot_scalar(&self, row: usize, xq: &Q8Input, out: &mut [f32]) {
        let bv = self.format.block_values();
        let nb = self.cols / bv;
        let bb = self.format.block_bytes();
        let rb = self.row_bytes();
        let data = &self.data[row * rb..(row + 1) * rb];
        if bv == QK_K {
            for (j, o) in out.iter_mut().enumerate() {
                *o = data
                    .chunks_exact(bb)
                    .enumerate()
                    .map(|(b, w)| {
                        let k = j * nb + b;
                        k_quants::dot_block(
                            self.format,
                            w,
                            &xq.qs[k * QK_K..(k + 1) * QK_K],
                            xq.d[k],
                            &xq.bsums[k * 16..(k + 1) * 16],
                        )
                    })
                    .sum();
            }
            return;
        }
        for (j, o) in out.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for (b, w) in data.chunks_exact(bb).enumerate() {
                let k = j * nb + b;
                let q = &xq.qs[k * QUANT_BLOCK..(k + 1) * QUANT_BLOCK];
                let h = |i: usize| f16::from_bits(u16::from_le_bytes([w[i], w[i + 1]])).to_f32();
                let dd = h(0) * xq.d[k];
                sum += match self.format {
                    QuantFormat::Q4_0 => {
                        let sumi: i32 = (0..16)
                            .map(|i| {
                                let v = w[2 + i];
                                (i32::from(v & 0x0F) - 8) * i32::from(q[i])
                                    + (i32::from(v >> 4) - 8) * i32::from(q[i + 16])
                            })
                            .sum();
                        dd * sumi as f32
                    }
                    QuantFormat::Q4_1 => {
                        let sumi: i32 = (0..16)
                            .map(|i| {
                                let v = w[4 + i];
                                i32::from(v & 0x0F) * i32::from(q[i])
                                    + i32::from(v >> 4) * i32::from(q[i + 16])
                            })
                            .sum();
                        dd * sumi as f32 + h(2) * xq.s[k]
                    }
                    QuantFormat::Q5_0 => {
                        let sumi: i32 = q5_values(w)
                            .iter()
                            .zip(q)
                            .map(|(&a, &b)| (i32::from(a) - 16) * i32::from(b))
                            .sum();
                        dd * sumi as f32
                    }
                    QuantFormat::Q8_0 => {
                        let sumi: i32 = (0..32)
                            .map(|i| i32::from(w[2 + i] as i8) * i32::from(q[i]))
                            .sum();
                        dd * sumi as f32
                    }
                    QuantFormat::Q4_K | QuantFormat::Q5_K | QuantFormat::Q6_K => {
                        unreachable!("k-quants are handled above")
                    }
                };
            }
            *o = sum;
        }
    }
}
