//! Weights kept in llama.cpp's block-quantized formats (Q4_0, Q4_1, Q8_0 and the k-quants
//! Q4_K, Q5_K, Q6_K) for fast inference on the CPU.
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
use inputs::Prepared;
pub(crate) use inputs::{Q8Input, Q16Input};

/// Most input rows for which [`crate::AdaptableLinear`] uses its quantized weight; larger inputs
/// (prompt prefill, training batches) are compute-bound and use the dense `f32` weight.
pub const QUANTIZED_MAX_ROWS: usize = 16;

/// Values per block of Q4_0, Q4_1 and Q8_0 (the k-quants have super-blocks of [`QK_K`] values).
pub const QUANT_BLOCK: usize = 32;

mod dot;
mod inputs;
pub(crate) mod k_quants;
#[cfg(test)]
mod tests;
pub use k_quants::QK_K;

/// A llama.cpp block format (variants named as in llama.cpp).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantFormat {
    /// `d: f16, qs: [u8; 16]`; `w = (q - 8)·d` with 4-bit `q`.
    Q4_0,
    /// `d: f16, m: f16, qs: [u8; 16]`; `w = q·d + m` with 4-bit `q`.
    Q4_1,
    /// `d: f16, qh: u32, qs: [u8; 16]`; `w = (q - 16)·d` with 5-bit `q` (its fifth bit in
    /// `qh`). llama.cpp writes it for the tensors of a Q4_K_M file whose rows are not a
    /// multiple of 256 values.
    Q5_0,
    /// `d: f16, qs: [i8; 32]`; `w = q·d`.
    Q8_0,
    /// 256-value super-blocks `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`: eight runs
    /// of 32 values with 6-bit scales `s` and minimums `m`; `w = d·s·q - dmin·m` with 4-bit `q`.
    Q4_K,
    /// As [`Q4_K`](Self::Q4_K) with a fifth bit of each value in `qh: [u8; 32]` (after the
    /// scales).
    Q5_K,
    /// 256-value super-blocks `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`: sixteen
    /// runs of 16 values with 8-bit scales `s`; `w = d·s·(q - 32)` with 6-bit `q`.
    Q6_K,
}

impl QuantFormat {
    /// Bytes of one block in the GGUF layout.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q8_0 => 34,
            Self::Q4_K => 144,
            Self::Q5_K => 176,
            Self::Q6_K => 210,
        }
    }

    /// Values per block: [`QUANT_BLOCK`] (32), or [`QK_K`] (256) for the k-quants.
    pub fn block_values(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q8_0 => QUANT_BLOCK,
            Self::Q4_K | Self::Q5_K | Self::Q6_K => QK_K,
        }
    }

    /// One block (`block_bytes()` bytes) dequantized into `out` (`block_values()` values), with
    /// llama.cpp's formulas. The GGUF reader (kiln-models) decodes these formats with this
    /// function too.
    ///
    /// # Panics
    /// When `block` or `out` is too short.
    pub fn decode_into(self, block: &[u8], out: &mut [f32]) {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q8_0 => {
                out[..QUANT_BLOCK].copy_from_slice(&self.decode_block(block));
            }
            Self::Q4_K | Self::Q5_K | Self::Q6_K => {
                k_quants::decode(self, &block[..self.block_bytes()], out);
            }
        }
    }

    /// One block (`block_bytes()` bytes in the GGUF layout) dequantized, with llama.cpp's
    /// formulas. The GGUF reader (kiln-models) decodes these formats with this function too.
    /// `q·d` is exact in `f32` (a 4- or 8-bit integer times an `f16` scale), so `Q4_1`'s fused
    /// `q·d + m` equals the unfused one of ggml's reference code.
    ///
    /// # Panics
    /// When `block` is shorter than [`block_bytes`](Self::block_bytes), or for a k-quant
    /// format (use [`decode_into`](Self::decode_into)).
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
            Self::Q5_0 => {
                for (j, q) in q5_values(x).into_iter().enumerate() {
                    w[j] = (f32::from(q) - 16.0) * d;
                }
            }
            Self::Q8_0 => {
                for (wj, &q) in w.iter_mut().zip(&x[2..]) {
                    *wj = f32::from(q as i8) * d;
                }
            }
            Self::Q4_K | Self::Q5_K | Self::Q6_K => {
                panic!("{} blocks hold {QK_K} values: use decode_into", self.name())
            }
        }
        w
    }

    /// The llama.cpp name (`Q4_1`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q8_0 => "Q8_0",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
        }
    }
}

/// The 32 unsigned 5-bit values of a Q5_0 block: the nibbles of `qs` (value `j` in the low
/// nibble of byte `j`, value `j + 16` in its high nibble) with the fifth bit `j` of `qh`.
fn q5_values(block: &[u8]) -> [u8; QUANT_BLOCK] {
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    std::array::from_fn(|j| {
        let byte = block[6 + j % 16];
        let nibble = if j < 16 { byte & 0x0F } else { byte >> 4 };
        nibble | ((((qh >> j) & 1) as u8) << 4)
    })
}

/// A `[rows, cols]` matrix (PyTorch's `[out, in]` for a projection) in a block format; each row is
/// `cols / block_values()` blocks, stored exactly as in a GGUF file (`f16` scales inside each block, so the
/// kernels read one stream of the fewest bytes). Cloning is cheap (the storage is shared).
#[derive(Debug, Clone)]
pub struct QuantizedMatrix {
    pub(crate) format: QuantFormat,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// GGUF blocks, row-major.
    pub(crate) data: Arc<[u8]>,
    /// How [`matmul`](Self::matmul) treats its input rows.
    pub(crate) inputs: Inputs,
}

/// How [`QuantizedMatrix::matmul`] treats its input rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inputs {
    /// Kept in `f32`; each block is widened to `f32` in registers: `x·Wᵀ` with the
    /// dequantized weight up to the order of the `f32` sums (the slowest kernels).
    F32,
    /// Quantized to 16 bits per 32-value block (`d = max|x| / 32767`), multiplied with 16-bit
    /// integer dot products: each input moves by at most `d / 2`, a relative error of
    /// `1.5·10⁻⁵` of its block's largest value (about the rounding of an `f16`). The default.
    Q16,
    /// Quantized to 8 bits per block (`d = max|x| / 127`), as llama.cpp does (its Q8_0, Q8_1
    /// and Q8_K blocks), with 8-bit integer dot products: the fewest operations, a relative
    /// error of `0.4%` of the block's largest value.
    Q8,
}

impl QuantizedMatrix {
    /// Builds a matrix from GGUF block data (`rows · cols / block_values()` blocks, row-major).
    ///
    /// # Errors
    /// [`NnError::QuantizedBlocks`] when `cols` is not a multiple of the block size or the data
    /// has the wrong length.
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
        let bv = format.block_values();
        if !cols.is_multiple_of(bv) {
            return Err(bad(format!(
                "{} rows of {cols} values: not a whole number of {bv}-value blocks",
                format.name()
            )));
        }
        let need = rows * cols / bv * format.block_bytes();
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
            inputs: Inputs::Q16,
        })
    }

    /// The same matrix, whose [`matmul`](Self::matmul) treats its inputs as `inputs` says.
    /// The default is [`Inputs::Q16`] for every format, whose rounding keeps greedy text equal
    /// to the `f32` model's on the checkpoints tested. The k-quants' `f32`-input kernel is
    /// portable code only (slower than a dense `f32` product); their 16-bit kernel is the
    /// portable loop compiled with AVX2 enabled, their 8-bit one hand-written AVX2.
    pub fn with_inputs(mut self, inputs: Inputs) -> Self {
        self.inputs = inputs;
        self
    }

    /// How [`matmul`](Self::matmul) treats its input rows.
    pub fn inputs(&self) -> Inputs {
        self.inputs
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
        self.cols / self.format.block_values() * self.format.block_bytes()
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
        let bb = self.format.block_bytes();
        for (block, chunk) in self
            .data
            .chunks_exact(bb)
            .zip(out.chunks_exact_mut(self.format.block_values()))
        {
            self.format.decode_into(block, chunk);
        }
        out
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
    /// With [`Inputs::F32`] each block is widened to `f32` in registers: the result equals `x·Wᵀ`
    /// with the dequantized weight up to the order of the `f32` sums.
    /// With [`Inputs::Q16`] (the default) or [`Inputs::Q8`] (llama.cpp's method), each input
    /// row is first quantized per block (32 values for 16 bits; the weight's block size for 8) (a scale `d_x = max|x| / 32767` or `/ 127` per block), once for
    /// all weight rows; each block product is then an integer dot product of the weight's and
    /// the input's quantized values, scaled by both scales (`d_w·d_x·Σ q_w·q_x`, minus
    /// `dmin·d_x·Σ m·Σq_x` for the k-quants, plus `m·Σx` for Q4_1). Rounding each input value
    /// to the nearest level moves it by at most `d_x / 2`, so the result differs from `x·Wᵀ`
    /// by at most `Σ_blocks (d_x/2)·Σ|w|`; one large input value in a block makes that block's
    /// `d_x` large.
    /// Rows of the matrix are split over the rayon thread pool.
    ///
    /// # Panics
    /// When `x.len() != n · cols`.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; n * self.rows];
        self.matmul_into(x, n, &mut out);
        out
    }

    /// [`matmul`](Self::matmul) into `out` (`[n, rows]`, overwritten): no allocation for one
    /// input row.
    ///
    /// # Panics
    /// When `x.len() != n · cols` or `out.len() != n · rows`.
    pub fn matmul_into(&self, x: &[f32], n: usize, out: &mut [f32]) {
        assert_eq!(x.len(), n * self.cols, "matmul: x must be [n, cols]");
        assert_eq!(out.len(), n * self.rows, "matmul: out must be [n, rows]");
        if n == 0 {
            return;
        }
        if n == 1 {
            self.matmul_t(x, 1, out);
            return;
        }
        // Row-major [rows, n] first: each task owns a run of weight rows.
        let mut out_t = vec![0.0f32; self.rows * n];
        self.matmul_t(x, n, &mut out_t);
        for r in 0..self.rows {
            for j in 0..n {
                out[j * self.rows + r] = out_t[r * n + j];
            }
        }
    }

    /// `x·Wᵀ` of one input row `x` (`[cols]`) for several matrices of the same columns:
    /// `outs[i] = mats[i]·x` (`[mats[i].rows()]`). The input is prepared (quantized) once when
    /// the matrices treat it alike, and the rows of all of them are split over the rayon pool
    /// together: one parallel region for the projections that share an input (a layer's
    /// query, key and value; gate and up).
    ///
    /// # Panics
    /// When a matrix's columns differ from `x.len()`, or an output's length from its rows.
    pub fn matmul_many(mats: &[&QuantizedMatrix], x: &[f32], outs: &mut [&mut [f32]]) {
        assert_eq!(mats.len(), outs.len(), "matmul_many: one output per matrix");
        for (m, o) in mats.iter().zip(outs.iter()) {
            assert_eq!(x.len(), m.cols, "matmul_many: x must be [cols]");
            assert_eq!(o.len(), m.rows, "matmul_many: out must be [rows]");
        }
        let Some(first) = mats.first() else { return };
        let key = |m: &QuantizedMatrix| (m.effective_inputs(), m.format.block_values());
        if mats.iter().any(|m| key(m) != key(first)) {
            for (m, o) in mats.iter().zip(outs.iter_mut()) {
                m.matmul_t(x, 1, o);
            }
            return;
        }
        let prep = first.prepare(x, 1);
        let mut tasks: Vec<(&QuantizedMatrix, usize, &mut [f32])> = Vec::new();
        for (m, o) in mats.iter().zip(outs.iter_mut()) {
            let per_task = m.rows_per_task();
            for (c, chunk) in o.chunks_mut(per_task).enumerate() {
                tasks.push((m, c * per_task, chunk));
            }
        }
        tasks
            .into_par_iter()
            .for_each(|(m, first, out)| m.rows_prepared(first, &prep, x, 1, out));
    }

    /// How [`matmul`](Self::matmul) treats its inputs.
    fn effective_inputs(&self) -> Inputs {
        self.inputs
    }

    /// The input rows `x` (`[n, cols]`) as the kernels of this matrix read them.
    fn prepare(&self, x: &[f32], n: usize) -> Prepared {
        match self.effective_inputs() {
            Inputs::Q16 => Prepared::Q16(Q16Input::quantize(x, n, self.cols)),
            Inputs::Q8 => Prepared::Q8(Q8Input::quantize(
                x,
                n,
                self.cols,
                self.format.block_values(),
            )),
            // Σx per block of each input row, for the offset term of Q4_0/Q4_1.
            Inputs::F32 => Prepared::F32(
                x.chunks_exact(QUANT_BLOCK)
                    .map(|b| b.iter().sum())
                    .collect(),
            ),
        }
    }

    /// `out[i·n + j] = W[first + i] · x[j]` for the `out.len() / n` rows from `first`.
    fn rows_prepared(&self, first: usize, prep: &Prepared, x: &[f32], n: usize, out: &mut [f32]) {
        match prep {
            Prepared::Q16(xq) => self.rows_dot_q16(first, xq, out),
            Prepared::Q8(xq) => self.rows_dot(first, xq, out),
            Prepared::F32(xsum) => self.rows_dot_f32(first, x, xsum, n, out),
        }
    }

    /// `x·Wᵀ` transposed: `out_t` is `[rows, n]`.
    fn matmul_t(&self, x: &[f32], n: usize, out_t: &mut [f32]) {
        let prep = self.prepare(x, n);
        self.split(out_t, n, &|first, out| {
            self.rows_prepared(first, &prep, x, n, out);
        });
    }

    /// Weight rows per rayon task: enough tasks to balance the pool, few enough to keep the
    /// scheduling cheap.
    fn rows_per_task(&self) -> usize {
        (self.rows / 32).clamp(8, 256)
    }

    /// Runs `work(first_row, out)` over runs of rows of `out_t` (`[rows, n]`), on the rayon
    /// pool for large matrices.
    fn split(&self, out_t: &mut [f32], n: usize, work: &(dyn Fn(usize, &mut [f32]) + Sync)) {
        let per_task = self.rows_per_task();
        let task = |(c, out): (usize, &mut [f32])| work(c * per_task, out);
        if self.rows * self.cols >= 1 << 16 {
            out_t
                .par_chunks_mut(per_task * n)
                .enumerate()
                .for_each(task);
        } else {
            out_t.chunks_mut(per_task * n).enumerate().for_each(task);
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
