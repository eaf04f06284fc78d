//! Weights kept in llama.cpp's block-quantized formats (Q4_0, Q4_1, Q8_0) for fast inference on
//! the CPU.
//!
//! Decoding one token reads every weight of the model once, so on a CPU it is bound by memory
//! bandwidth: a 135M-parameter model is 540 MB in `f32` but 85 MB in Q4_1. A [`QuantizedMatrix`]
//! holds a checkpoint's own blocks (as stored in a GGUF file) and multiplies a few input rows
//! by them directly, dequantizing each block in registers. The blocks are the checkpoint's exact
//! values, so the result equals `x·Wᵀ` with the dequantized `f32` weight up to the order of the
//! floating-point sums.
//!
//! [`crate::AdaptableLinear`] uses an attached matrix for the base projection when the input is on the
//! `flex` CPU device without autodiff and has at most [`QUANTIZED_MAX_ROWS`] rows (decoding);
//! everything else (training, long prompts, other backends) uses the dense `f32` weight.

use std::sync::Arc;

use half::f16;
use rayon::prelude::*;

use crate::{NnError, Result};

/// Most input rows for which [`crate::AdaptableLinear`] uses its quantized weight; larger inputs
/// (prompt prefill, training batches) are compute-bound and use the dense `f32` weight.
pub const QUANTIZED_MAX_ROWS: usize = 16;

/// Values per block in every supported format.
pub const QUANT_BLOCK: usize = 32;

/// A llama.cpp block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantFormat {
    /// `d: f16, qs: [u8; 16]`; `w = (q - 8)·d` with 4-bit `q`.
    Q4_0,
    /// `d: f16, m: f16, qs: [u8; 16]`; `w = q·d + m` with 4-bit `q`.
    Q4_1,
    /// `d: f16, qs: [i8; 32]`; `w = q·d`.
    Q8_0,
}

impl QuantFormat {
    /// Bytes of one block in the GGUF layout.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }

    /// One block (`block_bytes()` bytes in the GGUF layout) dequantized, with llama.cpp's
    /// formulas. The GGUF reader (kiln-models) decodes these formats with this function too.
    /// `q·d` is exact in `f32` (a 4- or 8-bit integer times an `f16` scale), so `Q4_1`'s fused
    /// `q·d + m` equals the unfused one of ggml's reference code.
    ///
    /// # Panics
    /// When `block` is shorter than [`block_bytes`](Self::block_bytes).
    pub fn decode_block(self, block: &[u8]) -> [f32; QUANT_BLOCK] {
        let x = &block[..self.block_bytes()];
        let h = |i: usize| f16::from_bits(u16::from_le_bytes([x[i], x[i + 1]])).to_f32();
        let d = h(0);
        let mut w = [0.0f32; QUANT_BLOCK];
        match self {
            Self::Q4_0 => {
                for (j, &q) in x[2..].iter().enumerate() {
                    w[j] = (f32::from(q & 0x0F) - 8.0) * d;
                    w[j + 16] = (f32::from(q >> 4) - 8.0) * d;
                }
            }
            Self::Q4_1 => {
                let m = h(2);
                for (j, &q) in x[4..].iter().enumerate() {
                    w[j] = f32::from(q & 0x0F).mul_add(d, m);
                    w[j + 16] = f32::from(q >> 4).mul_add(d, m);
                }
            }
            Self::Q8_0 => {
                for (wj, &q) in w.iter_mut().zip(&x[2..]) {
                    *wj = f32::from(q as i8) * d;
                }
            }
        }
        w
    }

    /// The llama.cpp name (`Q4_1`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q8_0 => "Q8_0",
        }
    }
}

/// A `[rows, cols]` matrix (PyTorch's `[out, in]` for a projection) in a block format; each row is
/// `cols / 32` blocks, stored exactly as in a GGUF file (`f16` scales inside each block, so the
/// kernels read one stream of the fewest bytes). Cloning is cheap (the storage is shared).
#[derive(Debug, Clone)]
pub struct QuantizedMatrix {
    pub(crate) format: QuantFormat,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// GGUF blocks, row-major.
    pub(crate) data: Arc<[u8]>,
}

impl QuantizedMatrix {
    /// Builds a matrix from GGUF block data (`rows · cols / 32` blocks, row-major).
    ///
    /// # Errors
    /// [`NnError::QuantizedBlocks`] when `cols` is not a multiple of 32 or the data has the
    /// wrong length.
    pub fn from_gguf_blocks(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<Self> {
        let bad = |reason: String| NnError::QuantizedBlocks {
            format: format.name().into(),
            reason,
        };
        if !cols.is_multiple_of(QUANT_BLOCK) {
            return Err(bad(format!(
                "{} rows of {cols} values: not a whole number of {QUANT_BLOCK}-value blocks",
                format.name()
            )));
        }
        let need = rows * cols / QUANT_BLOCK * format.block_bytes();
        if data.len() != need {
            return Err(bad(format!(
                "a [{rows}, {cols}] {} matrix needs {need} bytes, got {}",
                format.name(),
                data.len()
            )));
        }
        Ok(Self {
            format,
            rows,
            cols,
            data: data.into(),
        })
    }

    /// The block format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Rows (output features of a projection).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features of a projection).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the matrix occupies in memory.
    pub fn size_bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes of one row of blocks.
    pub(crate) fn row_bytes(&self) -> usize {
        self.cols / QUANT_BLOCK * self.format.block_bytes()
    }

    /// The same matrix with its rows reordered: row `i` of the result is row `order[i]` of this one.
    ///
    /// # Panics
    /// When `order` has the wrong length or an index out of range.
    pub fn permute_rows(&self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.rows, "permute_rows: one index per row");
        let rb = self.row_bytes();
        Self {
            data: order
                .iter()
                .flat_map(|&r| self.data[r * rb..(r + 1) * rb].iter().copied())
                .collect(),
            ..self.clone()
        }
    }

    /// The values as `f32`, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (b, chunk) in out.chunks_exact_mut(QUANT_BLOCK).enumerate() {
            chunk.copy_from_slice(&self.block(b));
        }
        out
    }

    /// Block `b` (row-major block index) dequantized.
    fn block(&self, b: usize) -> [f32; QUANT_BLOCK] {
        let bb = self.format.block_bytes();
        self.format.decode_block(&self.data[b * bb..(b + 1) * bb])
    }

    /// `x·Wᵀ` as a tensor `[..., rows]` when the quantized path applies to `x` (`[..., cols]`):
    /// the `flex` CPU device without autodiff (and kiln-peft's `flex` feature), `f32` values and
    /// at most [`QUANTIZED_MAX_ROWS`] rows. `None` otherwise; use the dense weight then.
    pub fn try_forward<const D: usize>(
        &self,
        x: &burn::tensor::Tensor<D>,
    ) -> Option<burn::tensor::Tensor<D>> {
        #[cfg(feature = "flex")]
        if applies(x, self.cols) {
            return Some(forward(self, x.clone()));
        }
        #[cfg(not(feature = "flex"))]
        let _ = x;
        None
    }

    /// `x·Wᵀ` for `n` input rows: `x` is `[n, cols]` row-major, the result `[n, rows]`.
    ///
    /// Rows of the matrix are split over the rayon thread pool.
    ///
    /// # Panics
    /// When `x.len() != n · cols`.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "matmul: x must be [n, cols]");
        // Row-major [rows, n] first: each task owns a run of weight rows.
        let mut out_t = vec![0.0f32; self.rows * n];
        if n == 0 {
            return out_t;
        }
        // Enough tasks to balance the pool, few enough to keep the scheduling cheap.
        let per_task = (self.rows / 32).clamp(8, 256);
        // Σx per block of each input row, for the offset term of Q4_0/Q4_1.
        let xsum: Vec<f32> = x
            .chunks_exact(QUANT_BLOCK)
            .map(|b| b.iter().sum())
            .collect();
        let work = |(c, out): (usize, &mut [f32])| self.rows_dot(c * per_task, x, &xsum, n, out);
        if self.rows * self.cols >= 1 << 16 {
            out_t
                .par_chunks_mut(per_task * n)
                .enumerate()
                .for_each(work);
        } else {
            out_t.chunks_mut(per_task * n).enumerate().for_each(work);
        }
        if n == 1 {
            return out_t;
        }
        let mut out = vec![0.0f32; n * self.rows];
        for r in 0..self.rows {
            for j in 0..n {
                out[j * self.rows + r] = out_t[r * n + j];
            }
        }
        out
    }

    /// `out[i·n + j] = Σ_k W[first + i, k] · x[j, k]` for the `out.len() / n` rows from `first`.
    fn rows_dot(&self, first: usize, x: &[f32], xsum: &[f32], n: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            avx2::rows_dot(self, first, x, xsum, n, out);
            return;
        }
        let _ = xsum;
        for (i, o) in out.chunks_exact_mut(n).enumerate() {
            self.row_dot_scalar(first + i, x, o);
        }
    }

    fn row_dot_scalar(&self, row: usize, x: &[f32], out: &mut [f32]) {
        let nb = self.cols / QUANT_BLOCK;
        for (j, o) in out.iter_mut().enumerate() {
            let xr = &x[j * self.cols..(j + 1) * self.cols];
            let mut lanes = [0.0f32; 8];
            for b in 0..nb {
                let w = self.block(row * nb + b);
                let xb = &xr[b * QUANT_BLOCK..(b + 1) * QUANT_BLOCK];
                for k in 0..QUANT_BLOCK {
                    lanes[k % 8] = w[k].mul_add(xb[k], lanes[k % 8]);
                }
            }
            *o = lanes.iter().sum();
        }
    }
}

/// Whether the quantized path applies to `x`: the `flex` CPU device without autodiff, `f32` values, a
/// last dimension of `d_in` and at most [`QUANTIZED_MAX_ROWS`] rows.
#[cfg(feature = "flex")]
fn applies<const D: usize>(x: &burn::tensor::Tensor<D>, d_in: usize) -> bool {
    let device = x.device();
    let dims = x.dims();
    !device.is_autodiff()
        && device == burn::tensor::Device::flex()
        && x.dtype() == burn::tensor::DType::F32
        && dims[D - 1] == d_in
        && dims[..D - 1].iter().product::<usize>() <= QUANTIZED_MAX_ROWS
}

/// `x·Wᵀ` with `W = q`, for an `x` the quantized path applies to.
#[cfg(feature = "flex")]
fn forward<const D: usize>(
    q: &QuantizedMatrix,
    x: burn::tensor::Tensor<D>,
) -> burn::tensor::Tensor<D> {
    use burn::tensor::{Tensor, TensorData};
    let device = x.device();
    let mut dims = x.dims();
    let n = dims[..D - 1].iter().product();
    let values = x
        .into_data()
        .try_into_vec::<f32>()
        .expect("applies() checked the element type");
    dims[D - 1] = q.rows();
    Tensor::from_data(TensorData::new(q.matmul(&values, n), dims), &device)
}

#[cfg(target_arch = "x86_64")]
use crate::simd::quant_avx2 as avx2;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random GGUF blocks of `format` with realistic scales.
    fn random_blocks(format: QuantFormat, blocks: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let mut data = Vec::with_capacity(blocks * format.block_bytes());
        for _ in 0..blocks {
            let d = f16::from_f32(rng.random_range(0.001..0.05)).to_bits();
            data.extend_from_slice(&d.to_le_bytes());
            if format == QuantFormat::Q4_1 {
                let m = f16::from_f32(rng.random_range(-0.4..0.0)).to_bits();
                data.extend_from_slice(&m.to_le_bytes());
            }
            let values = if format == QuantFormat::Q8_0 { 32 } else { 16 };
            for _ in 0..values {
                data.push(rng.random());
            }
        }
        data
    }

    /// The reference: llama.cpp's dequantization formulas written out per value.
    fn reference_weights(format: QuantFormat, data: &[u8]) -> Vec<f32> {
        let mut w = Vec::new();
        for b in data.chunks_exact(format.block_bytes()) {
            let h = |i: usize| f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
            let d = h(0);
            match format {
                QuantFormat::Q4_0 => {
                    let q = &b[2..];
                    w.extend(q.iter().map(|&v| (i32::from(v & 15) - 8) as f32 * d));
                    w.extend(q.iter().map(|&v| (i32::from(v >> 4) - 8) as f32 * d));
                }
                QuantFormat::Q4_1 => {
                    let (m, q) = (h(2), &b[4..]);
                    w.extend(q.iter().map(|&v| f32::from(v & 15) * d + m));
                    w.extend(q.iter().map(|&v| f32::from(v >> 4) * d + m));
                }
                QuantFormat::Q8_0 => w.extend(b[2..].iter().map(|&v| f32::from(v as i8) * d)),
            }
        }
        w
    }

    #[test]
    fn matmul_matches_dequantized_weights() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for format in [QuantFormat::Q4_0, QuantFormat::Q4_1, QuantFormat::Q8_0] {
            let (rows, cols) = (71, 96);
            let data = random_blocks(format, rows * cols / 32, &mut rng);
            let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
            let w = reference_weights(format, &data);
            assert_eq!(m.dequantize(), w, "{format:?} dequantize");
            for n in [1, 2, 3, 5] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                let y = m.matmul(&x, n);
                for j in 0..n {
                    for r in 0..rows {
                        let want: f64 = (0..cols)
                            .map(|k| f64::from(w[r * cols + k]) * f64::from(x[j * cols + k]))
                            .sum();
                        let got = f64::from(y[j * rows + r]);
                        assert!(
                            (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                            "{format:?} n={n} [{j}, {r}]: {got} vs {want}"
                        );
                    }
                }
                // The portable path agrees with the dispatched one.
                let mut s = vec![0.0f32; n];
                m.row_dot_scalar(rows - 1, &x, &mut s);
                for j in 0..n {
                    let got = y[j * rows + rows - 1];
                    assert!((s[j] - got).abs() < 1e-5 * (1.0 + got.abs()));
                }
            }
        }
    }

    #[test]
    fn large_matrices_split_over_threads_give_the_same_result() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (rows, cols) = (1000, 128);
        let data = random_blocks(QuantFormat::Q4_1, rows * cols / 32, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q4_1, rows, cols, &data).unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y = m.matmul(&x, 1);
        let mut one = [0.0f32];
        for r in [0, 1, 499, 999] {
            let xsum: Vec<f32> = x.chunks_exact(32).map(|b| b.iter().sum()).collect();
            m.rows_dot(r, &x, &xsum, 1, &mut one);
            assert!((one[0] - y[r]).abs() <= 1e-6 * (1.0 + y[r].abs()));
        }
    }

    #[test]
    fn permuted_rows_move_whole_rows() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let data = random_blocks(QuantFormat::Q4_1, 3 * 2, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q4_1, 3, 64, &data).unwrap();
        let p = m.permute_rows(&[2, 0, 1]);
        let (a, b) = (m.dequantize(), p.dequantize());
        assert_eq!(&b[..64], &a[128..]);
        assert_eq!(&b[64..128], &a[..64]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let err = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q8_0, 2, 48, &[0; 68]);
        assert!(err.unwrap_err().to_string().contains("not a whole number"));
        let err = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q8_0, 2, 64, &[0; 100]);
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("needs 136 bytes, got 100")
        );
    }
}
