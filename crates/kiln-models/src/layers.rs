//! Building blocks shared by architectures: RMSNorm, LayerNorm (GPT-2, BERT), rotate-half rotary
//! embeddings and an embedding table from given values.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Root-mean-square layer norm, `x / sqrt(mean(x²) + eps) · weight` (field named as in HF).
///
/// # Shapes
/// `[..., d]` → `[..., d]`
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-channel gain, `[d]`.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// A norm with unit gain.
    pub fn new(d: usize, eps: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_data(TensorData::new(vec![1.0f32; d], [d]), device),
            eps,
        }
    }

    /// Normalizes the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let rms = x
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        (x / rms) * self.weight.val().unsqueeze::<D>()
    }
}

/// Hugging Face's rotate-half rotary position embedding.
///
/// HF checkpoints pair dimension `i` with `i + head_dim/2` (not adjacent pairs as
/// `burn::nn::RotaryEncoding` does); keeping that layout keeps q/k weights and their LoRA adapters
/// exactly as PEFT stores them. Angles are computed from the position ids on every forward pass
/// (once, shared by all layers), so no table bounds the context length.
#[derive(Module, Debug)]
pub struct RotaryEmbedding {
    /// Inverse frequencies repeated for both halves, `[head_dim]`.
    pub inv_freq: Tensor<1>,
}

impl RotaryEmbedding {
    /// An embedding from inverse frequencies `[head_dim/2]`.
    pub fn new(inv_freq: &[f64], device: &Device) -> Self {
        let mut full: Vec<f32> = inv_freq.iter().map(|f| *f as f32).collect();
        full.extend_from_within(..);
        let n = full.len();
        Self {
            inv_freq: Tensor::from_data(TensorData::new(full, [n]), device),
        }
    }

    /// The plain RoPE inverse frequencies `theta^(-2i/d)`.
    pub fn default_inv_freq(theta: f64, head_dim: usize) -> Vec<f64> {
        (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
            .collect()
    }

    /// `(cos, sin)` for the given positions, `[batch, 1, seq, head_dim]` each, ready to broadcast
    /// over heads.
    pub fn tables(&self, position_ids: Tensor<2, Int>) -> (Tensor<4>, Tensor<4>) {
        let [b, t] = position_ids.dims();
        let hd = self.inv_freq.dims()[0];
        let pos = position_ids.float().reshape([b, 1, t, 1]);
        let angles = pos * self.inv_freq.clone().reshape([1, 1, 1, hd]);
        (angles.clone().cos(), angles.sin())
    }

    /// Rotates `x: [batch, heads, seq, head_dim]`.
    pub fn apply(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
        let hd = x.dims()[3];
        let half = hd / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos.clone() + rotated * sin.clone()
    }
}

/// Grouped-query attention of `q` over `k`/`v` with an additive `bias`, scores multiplied by
/// `scale`, without copying keys/values per query head: the query heads of each kv head
/// (consecutive, as in HF's `repeat_kv`) are stacked along the sequence axis, so one matmul per
/// kv head serves them all.
///
/// # Shapes
/// - `q`: `[batch, heads, seq, head_dim]`; `k`, `v`: `[batch, kv_heads, keys, head_dim]`
/// - `bias`: `[batch, 1, seq, keys]`
/// - output: `[batch, seq, heads·head_dim]`
pub(crate) fn grouped_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: &Tensor<4>,
    scale: f64,
) -> Tensor<3> {
    let [b, h, t, hd] = q.dims();
    let [_, kvh, s, _] = k.dims();
    let groups = h / kvh;
    // [b, kvh, groups·t, s] -> [b, h, t, s]
    let scores = q
        .reshape([b, kvh, groups * t, hd])
        .matmul(k.swap_dims(2, 3))
        .reshape([b, h, t, s])
        .mul_scalar(scale)
        + bias.clone();
    let probs = softmax(scores, 3).reshape([b, kvh, groups * t, s]);
    // [b, kvh, groups·t, hd] -> [b, h, t, hd] -> [b, t, h·hd]
    probs
        .matmul(v)
        .reshape([b, h, t, hd])
        .swap_dims(1, 2)
        .reshape([b, t, h * hd])
}

/// Layer normalization over the last dimension, `(x - mean) / sqrt(var + eps) · weight + bias`
/// (biased variance, fields named as in Hugging Face checkpoints).
///
/// # Shapes
/// `[..., d]` → `[..., d]`
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Per-channel gain, `[d]`.
    pub weight: Param<Tensor<1>>,
    /// Per-channel shift, `[d]`.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// A norm with unit gain and zero shift.
    pub fn new(d: usize, eps: f64, device: &Device) -> Self {
        Self::from_values(vec![1.0; d], vec![0.0; d], eps, device)
    }

    /// A norm from gain and shift values (each of length `d`).
    pub fn from_values(weight: Vec<f32>, bias: Vec<f32>, eps: f64, device: &Device) -> Self {
        let (dw, db) = (weight.len(), bias.len());
        Self {
            weight: Param::from_data(TensorData::new(weight, [dw]), device),
            bias: Param::from_data(TensorData::new(bias, [db]), device),
            eps,
        }
    }

    /// Normalizes the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(D - 1);
        let normed = centered / var.add_scalar(self.eps).sqrt();
        normed * self.weight.val().unsqueeze::<D>() + self.bias.val().unsqueeze::<D>()
    }
}

/// An embedding table holding `values` (`[rows, width]`).
pub(crate) fn embedding(values: Param<Tensor<2>>, device: &Device) -> Embedding {
    let mut e = EmbeddingConfig::new(1, 1).init(device);
    e.weight = values;
    e
}
