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

/// Most input rows for which [`crate::AdaptableLinear`] uses its quantized weight; larger inputs
/// (prompt prefill, training batches) are compute-bound and use the dense `f32` weight.
pub const QUANTIZED_MAX_ROWS: usize = 16;

/// Values per block of Q4_0, Q4_1 and Q8_0 (the k-quants have super-blocks of [`QK_K`] values).
pub const QUANT_BLOCK: usize = 32;

pub(crate) mod k_quants;
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
    /// `1.5·10⁻⁵` of its block's largest value (about the rounding of an `f16`). The default for
    /// Q4_0, Q4_1 and Q8_0.
    Q16,
    /// Quantized to 8 bits per block (`d = max|x| / 127`), as llama.cpp does (its Q8_0, Q8_1
    /// and Q8_K blocks), with 8-bit integer dot products: the fewest operations, a relative
    /// error of `0.4%` of the block's largest value. The default for the k-quants.
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
            inputs: if format.block_values() == QK_K {
                Inputs::Q8
            } else {
                Inputs::Q16
            },
        })
    }

    /// The same matrix, whose [`matmul`](Self::matmul) treats its inputs as `inputs` says.
    /// The default is [`Inputs::Q16`] for Q4_0, Q4_1 and Q8_0 (AVX2 kernels for every choice)
    /// and [`Inputs::Q8`] for the k-quants, whose `f32`-input kernel is portable code only
    /// (slower than a dense `f32` product) and which have no 16-bit kernel ([`Inputs::Q16`]
    /// is served by the 8-bit one there).
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
    /// With [`Inputs::Q16`] (the default for Q4_0, Q4_1 and Q8_0) or [`Inputs::Q8`] (llama.cpp's
    /// method, the default for the k-quants), each input row is first quantized per block of
    /// the weight's block size (a scale `d_x = max|x| / 32767` or `/ 127` per block), once for
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

    /// How [`matmul`](Self::matmul) treats its inputs for this format ([`Inputs::Q16`] is
    /// served by the 8-bit kernels for the k-quants).
    fn effective_inputs(&self) -> Inputs {
        match self.inputs {
            Inputs::Q16 if self.format.block_values() == QK_K => Inputs::Q8,
            other => other,
        }
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

    /// `out[i·n + j] = Σ_k W[first + i, k] · x[j, k]` for the `out.len() / n` rows from `first`,
    /// with `f32` inputs (`xsum`: the sum of each 32-value block of `x`).
    fn rows_dot_f32(&self, first: usize, x: &[f32], xsum: &[f32], n: usize, out: &mut [f32]) {
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
    fn row_dot_f32_scalar(&self, row: usize, x: &[f32], out: &mut [f32]) {
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
    fn rows_dot_q16(&self, first: usize, xq: &Q16Input, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            i16_avx2::rows_dot(self, first, xq, out);
            return;
        }
        for (i, o) in out.chunks_exact_mut(xq.n).enumerate() {
            self.row_dot_q16_scalar(first + i, xq, o);
        }
    }

    /// The portable 16-bit-input kernel: the same integer products as the SIMD one, summed
    /// in another order.
    fn row_dot_q16_scalar(&self, row: usize, xq: &Q16Input, out: &mut [f32]) {
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
    fn rows_dot(&self, first: usize, xq: &Q8Input, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            match self.format {
                QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q8_0 => {
                    avx2::rows_dot(self, first, xq, out);
                }
                QuantFormat::Q5_0 => {
                    for (i, o) in out.chunks_exact_mut(xq.n).enumerate() {
                        self.row_dot_scalar(first + i, xq, o);
                    }
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
    fn row_dot_scalar(&self, row: usize, xq: &Q8Input, out: &mut [f32]) {
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

/// Input rows as one kind of kernel reads them.
enum Prepared {
    Q16(Q16Input),
    Q8(Q8Input),
    /// `Σx` per 32-value block (the values themselves are read from `x`).
    F32(Vec<f32>),
}

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2²²`: adding `1.5·2²³` leaves
/// no fraction bits, so the addition itself rounds (no call into libm on CPUs whose baseline
/// lacks a rounding instruction).
fn round_even(x: f32) -> f32 {
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
use crate::simd::{
    k_quants_avx2 as k_avx2, quant_avx2 as avx2, quant_f32_avx2 as f32_avx2,
    quant_i16_avx2 as i16_avx2,
};

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
            if format == QuantFormat::Q5_0 {
                let qh: u32 = rng.random();
                data.extend_from_slice(&qh.to_le_bytes());
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
                QuantFormat::Q5_0 => {
                    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                    let q = &b[6..];
                    let high = |j: usize| ((qh >> j) & 1) as i32 * 16;
                    w.extend((0..16).map(|j| (i32::from(q[j] & 15) + high(j) - 16) as f32 * d));
                    w.extend(
                        (0..16).map(|j| (i32::from(q[j] >> 4) + high(j + 16) - 16) as f32 * d),
                    );
                }
                QuantFormat::Q8_0 => w.extend(b[2..].iter().map(|&v| f32::from(v as i8) * d)),
                _ => unreachable!("32-value formats only"),
            }
        }
        w
    }

    /// The input values the kernels multiply: each row quantized and dequantized again.
    fn requantized(x: &[f32], n: usize, cols: usize, block: usize) -> Vec<f64> {
        let q = Q8Input::quantize(x, n, cols, block);
        q.qs.iter()
            .enumerate()
            .map(|(i, &v)| f64::from(v) * f64::from(q.d[i / block]))
            .collect()
    }

    /// Checks `m.matmul` against `w` (the dequantized weights) for several input row counts:
    /// - against `x̃·Wᵀ` in `f64`, `x̃` the 8-bit quantized input, up to the `f32` sums;
    /// - against `x·Wᵀ` in `f64` within the rounding bound `Σ_blocks (d_x/2)·Σ|w|`;
    /// - the portable kernel against the dispatched one on every row.
    fn check_matmul(m: &QuantizedMatrix, w: &[f32], block: usize, rng: &mut ChaCha8Rng) {
        let (rows, cols) = (m.rows(), m.cols());
        for n in [1, 2, 3, 5, 6] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let xt = requantized(&x, n, cols, block);
            let xq = Q8Input::quantize(&x, n, cols, block);
            let y = m.matmul(&x, n);
            let mut scalar = vec![0.0f32; n];
            for r in 0..rows {
                let wr = &w[r * cols..(r + 1) * cols];
                m.row_dot_scalar(r, &xq, &mut scalar);
                for j in 0..n {
                    let xr = &x[j * cols..(j + 1) * cols];
                    let xtr = &xt[j * cols..(j + 1) * cols];
                    let got = f64::from(y[j * rows + r]);
                    let mag: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b).abs()).sum();
                    let tol = 1e-5 * (1.0 + mag);
                    let exact: f64 = wr.iter().zip(xtr).map(|(a, b)| f64::from(*a) * b).sum();
                    assert!(
                        (got - exact).abs() < tol,
                        "{:?} n={n} [{j}, {r}]: {got} vs {exact} (quantized input)",
                        m.format()
                    );
                    let want: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b)).sum();
                    let bound: f64 = (0..cols / block)
                        .map(|b| {
                            let d = f64::from(xq.d[j * cols / block + b]);
                            let sw: f64 = wr[b * block..(b + 1) * block]
                                .iter()
                                .map(|v| f64::from(v.abs()))
                                .sum();
                            d / 2.0 * sw
                        })
                        .sum();
                    assert!(
                        (got - want).abs() <= bound + tol,
                        "{:?} n={n} [{j}, {r}]: {got} vs {want}, bound {bound}",
                        m.format()
                    );
                    let s = f64::from(scalar[j]);
                    assert!(
                        (s - got).abs() < tol,
                        "{:?} n={n} [{j}, {r}]: portable {s} vs {got}",
                        m.format()
                    );
                }
            }
        }
    }

    /// Checks the `f32`-input `m.matmul` against `x·Wᵀ` in `f64` (`w`: the dequantized
    /// weights) and the portable kernel against the dispatched one.
    fn check_matmul_f32(m: &QuantizedMatrix, w: &[f32], rng: &mut ChaCha8Rng) {
        let m = &m.clone().with_inputs(Inputs::F32);
        let (rows, cols) = (m.rows(), m.cols());
        for n in [1, 2, 3, 5] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let y = m.matmul(&x, n);
            let mut scalar = vec![0.0f32; n];
            for r in 0..rows {
                m.row_dot_f32_scalar(r, &x, &mut scalar);
                for j in 0..n {
                    let prods =
                        (0..cols).map(|k| f64::from(w[r * cols + k]) * f64::from(x[j * cols + k]));
                    let want: f64 = prods.clone().sum();
                    let mag: f64 = prods.map(f64::abs).sum();
                    let got = f64::from(y[j * rows + r]);
                    let tol = 1e-5 * (1.0 + mag);
                    assert!(
                        (got - want).abs() < tol,
                        "{:?} n={n} [{j}, {r}]: {got} vs {want}",
                        m.format()
                    );
                    let s = f64::from(scalar[j]);
                    assert!(
                        (s - got).abs() < tol,
                        "{:?} portable {s} vs {got}",
                        m.format()
                    );
                }
            }
        }
    }

    /// Checks the 16-bit-input `m.matmul` against `x̃·Wᵀ` in `f64` (`x̃` the input quantized
    /// to 16 bits; up to the `f32` sums), against `x·Wᵀ` within the rounding bound, and the
    /// portable kernel against the dispatched one.
    fn check_matmul_q16(m: &QuantizedMatrix, w: &[f32], rng: &mut ChaCha8Rng) {
        let m = &m.clone().with_inputs(Inputs::Q16);
        let (rows, cols) = (m.rows(), m.cols());
        for n in [1, 2, 3, 5] {
            let mut x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            // One large value: its block's scale grows, the other blocks keep theirs.
            x[3] = 40.0;
            let xq = Q16Input::quantize(&x, n, cols);
            let y = m.matmul(&x, n);
            let mut scalar = vec![0.0f32; n];
            for r in 0..rows {
                m.row_dot_q16_scalar(r, &xq, &mut scalar);
                for j in 0..n {
                    let wr = &w[r * cols..(r + 1) * cols];
                    let xr = &x[j * cols..(j + 1) * cols];
                    let xt = (0..cols).map(|k| {
                        let i = j * cols + k;
                        f64::from(xq.qs[i]) * f64::from(xq.d[i / QUANT_BLOCK])
                    });
                    let mut exact: f64 = wr.iter().zip(xt).map(|(a, b)| f64::from(*a) * b).sum();
                    // The offset term of each block (`-8d` for Q4_0, `m` for Q4_1) multiplies
                    // the exact `Σx`, not the quantized one.
                    let bb = m.format().block_bytes();
                    for b in 0..cols / QUANT_BLOCK {
                        let blk = &m.data[(r * cols / QUANT_BLOCK + b) * bb..];
                        let h = |i: usize| {
                            f64::from(f16::from_bits(u16::from_le_bytes([blk[i], blk[i + 1]])))
                        };
                        let off = match m.format() {
                            QuantFormat::Q4_0 => -8.0 * h(0),
                            QuantFormat::Q4_1 => h(2),
                            QuantFormat::Q5_0 => -16.0 * h(0),
                            _ => 0.0,
                        };
                        let k = j * cols + b * QUANT_BLOCK;
                        let sx: f64 = x[k..k + QUANT_BLOCK].iter().map(|&v| f64::from(v)).sum();
                        let sxt: f64 = (k..k + QUANT_BLOCK)
                            .map(|i| f64::from(xq.qs[i]) * f64::from(xq.d[i / QUANT_BLOCK]))
                            .sum();
                        exact += off * (sx - sxt);
                    }
                    let mag: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b).abs()).sum();
                    let got = f64::from(y[j * rows + r]);
                    let tol = 1e-5 * (1.0 + mag);
                    assert!(
                        (got - exact).abs() < tol,
                        "{:?} n={n} [{j}, {r}]: {got} vs {exact} (16-bit input)",
                        m.format()
                    );
                    let want: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b)).sum();
                    let bound: f64 = (0..cols / QUANT_BLOCK)
                        .map(|b| {
                            let d = f64::from(xq.d[j * cols / QUANT_BLOCK + b]);
                            let sw: f64 = wr[b * QUANT_BLOCK..(b + 1) * QUANT_BLOCK]
                                .iter()
                                .map(|v| f64::from(v.abs()))
                                .sum();
                            d / 2.0 * sw
                        })
                        .sum();
                    assert!(
                        (got - want).abs() <= bound + tol,
                        "{:?} n={n} [{j}, {r}]: {got} vs {want}, bound {bound}",
                        m.format()
                    );
                    let s = f64::from(scalar[j]);
                    assert!(
                        (s - got).abs() < tol,
                        "{:?} portable {s} vs {got}",
                        m.format()
                    );
                }
            }
        }
    }

    #[test]
    fn matmul_matches_dequantized_weights() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for format in [
            QuantFormat::Q4_0,
            QuantFormat::Q4_1,
            QuantFormat::Q5_0,
            QuantFormat::Q8_0,
        ] {
            let (rows, cols) = (71, 96);
            let data = random_blocks(format, rows * cols / 32, &mut rng);
            let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
            let w = reference_weights(format, &data);
            assert_eq!(m.dequantize(), w, "{format:?} dequantize");
            assert_eq!(m.inputs(), Inputs::Q16, "16-bit inputs by default");
            check_matmul_f32(&m, &w, &mut rng);
            check_matmul_q16(&m, &w, &mut rng);
            check_matmul(&m.with_inputs(Inputs::Q8), &w, QUANT_BLOCK, &mut rng);
        }
    }

    /// Random k-quant super-blocks: random bytes with realistic `f16` scales.
    fn random_k_blocks(format: QuantFormat, blocks: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let bb = format.block_bytes();
        let mut data: Vec<u8> = (0..blocks * bb).map(|_| rng.random()).collect();
        for b in data.chunks_exact_mut(bb) {
            let d = f16::from_f32(rng.random_range(0.0001..0.002)).to_bits();
            let dmin = f16::from_f32(rng.random_range(0.0..0.002)).to_bits();
            if format == QuantFormat::Q6_K {
                b[208..210].copy_from_slice(&d.to_le_bytes());
            } else {
                b[0..2].copy_from_slice(&d.to_le_bytes());
                b[2..4].copy_from_slice(&dmin.to_le_bytes());
            }
        }
        data
    }

    #[test]
    fn k_quant_matmul_matches_dequantized_weights() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for format in [QuantFormat::Q4_K, QuantFormat::Q5_K, QuantFormat::Q6_K] {
            let (rows, cols) = (13, 512);
            let data = random_k_blocks(format, rows * cols / QK_K, &mut rng);
            let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
            let w = m.dequantize();
            assert!(w.iter().all(|v| v.is_finite()) && w.iter().any(|&v| v != 0.0));
            assert_eq!(m.inputs(), Inputs::Q8, "k-quants default to 8-bit inputs");
            check_matmul_f32(&m, &w, &mut rng);
            check_matmul(&m, &w, QK_K, &mut rng);
        }
        let err = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q4_K, 1, 576, &[0; 324]);
        assert!(err.unwrap_err().to_string().contains("256-value blocks"));
    }

    #[test]
    fn quantized_input_rounds_to_the_nearest_level() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let q = Q8Input::quantize(&x, 1, 64, 32);
        for (b, xb) in x.chunks_exact(32).enumerate() {
            let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            assert_eq!(q.d[b], amax / 127.0);
            let mut sum = 0;
            for (k, &v) in xb.iter().enumerate() {
                let qv = q.qs[b * 32 + k];
                assert!((f32::from(qv) * q.d[b] - v).abs() <= q.d[b] / 2.0 * (1.0 + 1e-5));
                sum += i32::from(qv);
            }
            assert_eq!(q.s[b], q.d[b] * sum as f32);
            let b16: i32 = q.qs[b * 32..b * 32 + 16]
                .iter()
                .map(|&v| i32::from(v))
                .sum();
            assert_eq!(i32::from(q.bsums[2 * b]), b16);
        }
        assert!(
            Q8Input::quantize(&[0.0; 32], 1, 32, 32)
                .qs
                .iter()
                .all(|&v| v == 0)
        );
    }

    #[test]
    fn large_matrices_split_over_threads_give_the_same_result() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (rows, cols) = (1000, 128);
        let data = random_blocks(QuantFormat::Q4_1, rows * cols / 32, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q4_1, rows, cols, &data)
            .unwrap()
            .with_inputs(Inputs::Q8);
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y = m.matmul(&x, 1);
        let mut one = [0.0f32];
        let xq = Q8Input::quantize(&x, 1, cols, QUANT_BLOCK);
        for r in [0, 1, 499, 999] {
            m.rows_dot(r, &xq, &mut one);
            assert!((one[0] - y[r]).abs() <= 1e-6 * (1.0 + y[r].abs()));
        }
    }

    /// Times `f32`-input and 8-bit-input products of SmolLM2-sized matrices, interleaved, beside a
    /// one-thread dense `f32` product
    /// (`cargo test -p kiln-nn --release quant_input_timings -- --ignored --nocapture`).
    #[test]
    #[ignore = "prints timings"]
    fn quant_input_timings() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for (format, rows, cols) in [
            (QuantFormat::Q4_1, 1536, 576),
            (QuantFormat::Q4_1, 576, 1536),
            (QuantFormat::Q4_1, 49152, 576),
            (QuantFormat::Q4_K, 576, 1536),
            (QuantFormat::Q6_K, 576, 1536),
        ] {
            let blocks = rows * cols / format.block_values();
            let data = if format == QuantFormat::Q4_1 {
                random_blocks(format, blocks, &mut rng)
            } else {
                random_k_blocks(format, blocks, &mut rng)
            };
            let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
            let dense: Vec<f32> = m.dequantize();
            let mq = m.clone().with_inputs(Inputs::Q8);
            let m16 = m.clone().with_inputs(Inputs::Q16);
            let m = m.with_inputs(Inputs::F32);
            let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let reps = (200_000_000 / (rows * cols)).max(20);
            let time = |m: &QuantizedMatrix| {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(m.matmul(std::hint::black_box(&x), 1));
                }
                t.elapsed().as_secs_f64() / reps as f64 * 1e6
            };
            let time_dense = || {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    let y: Vec<f32> = dense
                        .chunks_exact(cols)
                        .map(|w| w.iter().zip(&x).map(|(a, b)| a * b).sum())
                        .collect();
                    std::hint::black_box(y);
                }
                t.elapsed().as_secs_f64() / reps as f64 * 1e6
            };
            for round in 0..3 {
                let (a, a16, b, c) = (time(&m), time(&m16), time(&mq), time_dense());
                println!(
                    "{format:?} [{rows}, {cols}] round {round}: f32 inputs {a:.1} us, 16-bit \
                     inputs {a16:.1} us, 8-bit inputs {b:.1} us, dense f32 one thread {c:.1} us"
                );
            }
        }
    }

    #[test]
    fn matmul_many_equals_one_matmul_each() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let cols = 64;
        let make = |format, rows, rng: &mut ChaCha8Rng| {
            let data = random_blocks(format, rows * cols / 32, rng);
            QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap()
        };
        let a = make(QuantFormat::Q4_1, 300, &mut rng);
        let b = make(QuantFormat::Q8_0, 40, &mut rng);
        let c = make(QuantFormat::Q4_0, 9, &mut rng);
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        // Alike inputs (one preparation), then one matrix with 8-bit inputs (one each).
        for mats in [
            vec![&a, &b, &c],
            vec![&a, &b.clone().with_inputs(Inputs::Q8)],
        ] {
            let mats: Vec<QuantizedMatrix> = mats.into_iter().cloned().collect();
            let refs: Vec<&QuantizedMatrix> = mats.iter().collect();
            let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0.0; m.rows()]).collect();
            let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
            QuantizedMatrix::matmul_many(&refs, &x, &mut slices);
            for (m, o) in mats.iter().zip(&outs) {
                assert_eq!(o, &m.matmul(&x, 1), "{:?}", m.format());
            }
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
