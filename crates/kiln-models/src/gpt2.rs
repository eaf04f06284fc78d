//! GPT-2 (`GPT2LMHeadModel` in transformers).
//!
//! Learned absolute position embeddings, pre-norm blocks with LayerNorm, fused q/k/v projection
//! (`c_attn`), a GELU MLP and an output head tied to the token embedding. Field names equal
//! Hugging Face checkpoint keys: `transformer.h.{i}.attn.c_attn`, `transformer.ln_f`, ...
//!
//! GPT-2's projections are `Conv1D` layers whose weights are stored `[in, out]` (what PEFT calls
//! `fan_in_fan_out`); they load into [`AdaptableLinear`] without a transpose.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::activation::{gelu, gelu_approximate, relu, sigmoid, silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use kiln_nn::AdaptableLinear;
use kiln_nn::adapter::PromptEncoder;
use kiln_nn::init::{HostRng, normal_param};
use kiln_nn::{AdapterTarget, ModelGeometry};

use crate::adapter::{active_prompt, linear_visitors, prompt_encoder_methods};
use crate::cache::{KvCache, LayerCache};
use crate::error::{parse_json, positive_sizes};
use crate::export::ExportTensors;
use crate::mask::{positions_and_bias, positions_and_bias_cached};
use crate::prompt::{prompt_on_cache, virtual_tokens, with_prompt_encoder};
use crate::source::{GgufNames, StrictLoader, TensorSource};
use crate::{CachedCausalLm, CausalLm, LmInput, ModelError, Result};

/// llama.cpp's names of the GPT-2 tensors in GGUF files. The `output.weight` copy of the tied
/// token embedding has no Hugging Face name.
pub(crate) const GGUF_NAMES: GgufNames = GgufNames {
    fixed: &[
        ("token_embd.weight", "transformer.wte.weight"),
        ("position_embd.weight", "transformer.wpe.weight"),
        ("output_norm.weight", "transformer.ln_f.weight"),
        ("output_norm.bias", "transformer.ln_f.bias"),
    ],
    layers: "transformer.h",
    modules: &[
        ("attn_norm", "ln_1"),
        ("attn_qkv", "attn.c_attn"),
        ("attn_output", "attn.c_proj"),
        ("ffn_norm", "ln_2"),
        ("ffn_up", "mlp.c_fc"),
        ("ffn_down", "mlp.c_proj"),
    ],
};

/// A GPT-2 configuration, deserialized from Hugging Face's `config.json` (unknown keys are
/// ignored; missing keys take transformers' `GPT2Config` defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    /// `gpt2`.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Number of learned positions (the longest sequence the model accepts).
    pub n_positions: usize,
    /// Model width.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// MLP width; defaults to `4 · n_embd`.
    pub n_inner: Option<usize>,
    /// MLP activation: `gelu_new` (tanh approximation, GPT-2's), `gelu_pytorch_tanh`,
    /// `gelu_fast`, `gelu` (exact), `quick_gelu`, `relu`, `silu` or `swish`.
    pub activation_function: String,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// Standard deviation of fresh weights.
    pub initializer_range: f64,
    /// Divide attention scores by `sqrt(head_dim)`.
    pub scale_attn_weights: bool,
    /// Also divide attention scores of block `i` by `i + 1`.
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Compute attention scores in f32 (they are always f32 here).
    pub reorder_and_upcast_attn: bool,
    /// Share the token embedding with the output head (always the case for published GPT-2).
    pub tie_word_embeddings: bool,
    /// Cross-attention blocks (encoder-decoder use); not supported.
    pub add_cross_attention: bool,
    /// Residual dropout probability (training).
    pub resid_pdrop: f64,
    /// Embedding dropout probability (training).
    pub embd_pdrop: f64,
    /// Attention dropout probability (training).
    pub attn_pdrop: f64,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s).
    pub eos_token_id: Option<serde_json::Value>,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            model_type: "gpt2".into(),
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: "gelu_new".into(),
            layer_norm_epsilon: 1e-5,
            initializer_range: 0.02,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
            tie_word_embeddings: true,
            add_cross_attention: false,
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            bos_token_id: Some(50256),
            eos_token_id: Some(serde_json::Value::from(50256)),
        }
    }
}

/// The MLP nonlinearity of a GPT-2 model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gpt2Activation {
    /// `0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))` (`gelu_new`, `gelu_pytorch_tanh`,
    /// `gelu_fast`).
    GeluTanh,
    /// `x·Φ(x)` with the exact normal CDF (`gelu`).
    Gelu,
    /// `x·σ(1.702·x)` (`quick_gelu`).
    QuickGelu,
    /// `max(x, 0)` (`relu`).
    Relu,
    /// `x·σ(x)` (`silu`, `swish`).
    Silu,
}

impl Gpt2Activation {
    /// The activation named by `activation_function`, if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "gelu" => Self::Gelu,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }

    /// Applies the activation element-wise.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::GeluTanh => gelu_approximate(x),
            Self::Gelu => gelu(x),
            Self::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
            Self::Relu => relu(x),
            Self::Silu => silu(x),
        }
    }
}

impl Gpt2Config {
    /// Parses a `config.json` text.
    ///
    /// # Errors
    /// Malformed JSON or an invalid configuration (see [`Gpt2Config::validate`]).
    pub fn from_json_str(text: &str, path: &std::path::Path) -> Result<Self> {
        let cfg: Self = parse_json(text, path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration of a GGUF file's GPT-2 model from its `gpt2.*` metadata (llama.cpp
    /// keys). The vocabulary size comes from `token_embd.weight`; the activation is GPT-2's
    /// `gelu_new`, as in llama.cpp.
    ///
    /// # Errors
    /// A missing key or tensor, or a file of another architecture.
    pub fn from_gguf(file: &crate::gguf::GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?;
        if arch != "gpt2" {
            return Err(ModelError::UnsupportedArchitecture {
                path: file.path().to_path_buf(),
                architecture: arch.into(),
                supported: "gpt2".into(),
            });
        }
        let u = |k: &str| file.get_u32(&format!("gpt2.{k}")).map(|v| v as usize);
        let n_embd = u("embedding_length")?;
        let ff = u("feed_forward_length")?;
        let cfg = Self {
            vocab_size: file.tensor_info("token_embd.weight")?.shape()[0],
            n_positions: u("context_length")?,
            n_embd,
            n_layer: u("block_count")?,
            n_head: u("attention.head_count")?,
            n_inner: (ff != 4 * n_embd).then_some(ff),
            layer_norm_epsilon: f64::from(file.get_f32("gpt2.attention.layer_norm_epsilon")?),
            bos_token_id: file.get_u32("tokenizer.ggml.bos_token_id").ok(),
            eos_token_id: file
                .get_u32("tokenizer.ggml.eos_token_id")
                .ok()
                .map(serde_json::Value::from),
            resid_pdrop: 0.0,
            embd_pdrop: 0.0,
            attn_pdrop: 0.0,
            ..Self::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// MLP width.
    pub fn inner_size(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// The MLP activation.
    ///
    /// # Errors
    /// An unsupported `activation_function`.
    pub fn activation(&self) -> Result<Gpt2Activation> {
        Gpt2Activation::from_name(&self.activation_function).ok_or_else(|| {
            ModelError::InvalidConfig {
                field: "activation_function".into(),
                reason: format!(
                    "`{}` is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, \
                     quick_gelu, relu, silu, swish)",
                    self.activation_function
                ),
            }
        })
    }

    /// The factor attention scores of block `layer` are multiplied by.
    pub fn attn_scale(&self, layer: usize) -> f64 {
        let mut s = 1.0;
        if self.scale_attn_weights {
            s /= (self.head_dim() as f64).sqrt();
        }
        if self.scale_attn_by_inverse_layer_idx {
            s /= (layer + 1) as f64;
        }
        s
    }

    /// Checks that the sizes fit together and that the model is one kiln implements.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(ModelError::InvalidConfig {
                field: field.into(),
                reason,
            })
        };
        positive_sizes(&[
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.inner_size()),
        ])?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(
                "n_head",
                format!("{} does not divide n_embd {}", self.n_head, self.n_embd),
            );
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return bad(
                "layer_norm_epsilon",
                format!("{} must be positive", self.layer_norm_epsilon),
            );
        }
        if self.add_cross_attention {
            return bad(
                "add_cross_attention",
                "cross-attention blocks are not supported".into(),
            );
        }
        self.activation()?;
        Ok(())
    }

    /// A freshly initialized model (HF's init: `N(0, initializer_range²)` weights, with the
    /// output projections `attn.c_proj` and `mlp.c_proj` scaled by `1/sqrt(2·n_layer)`, zero
    /// biases and unit LayerNorms).
    ///
    /// # Panics
    /// If the configuration is invalid (see [`Gpt2Config::validate`]).
    pub fn init(&self, seed: u64, device: &Device) -> Gpt2LMHeadModel {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        Gpt2LMHeadModel::new_random(self, seed, device)
    }
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

/// Causal self-attention with a fused q/k/v projection.
#[derive(Module, Debug)]
pub struct Gpt2Attention {
    /// Fused q/k/v projection `[n_embd, 3·n_embd]` (outputs ordered q, k, v).
    pub c_attn: AdaptableLinear,
    /// Output projection `[n_embd, n_embd]`.
    pub c_proj: AdaptableLinear,
    /// Heads.
    pub num_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Factor applied to the attention scores.
    pub scale: f64,
}

impl Gpt2Attention {
    /// # Shapes
    /// - `x`: `[batch, seq, n_embd]`
    /// - `bias`: additive attention bias `[batch, 1, seq, seq]` (0 or a large negative)
    /// - output: `[batch, seq, n_embd]`
    ///
    /// With a `cache`, new keys/values are appended and `bias` is `[batch, 1, seq, past + seq]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        bias: &Tensor<4>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, hd) = (self.num_heads, self.head_dim);
        let d = h * hd;
        let qkv = self.c_attn.forward(x);
        // [b, t, d] -> [b, h, t, hd]
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * d, d)
                .reshape([b, t, h, hd])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let (k, v) = match cache {
            None => (k, v),
            Some(c) => c.append(k, v),
        };
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(self.scale) + bias.clone();
        let probs = softmax(scores, 3);
        let out = probs.matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        self.c_proj.forward(out)
    }
}

/// Feed-forward: `c_proj(act(c_fc(x)))`.
#[derive(Module, Debug)]
pub struct Gpt2Mlp {
    /// Up projection `[n_embd, n_inner]`.
    pub c_fc: AdaptableLinear,
    /// Down projection `[n_inner, n_embd]`.
    pub c_proj: AdaptableLinear,
    /// Nonlinearity.
    #[module(skip)]
    pub act: Gpt2Activation,
}

impl Gpt2Mlp {
    /// `[batch, seq, n_embd]` → `[batch, seq, n_embd]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.c_proj.forward(self.act.forward(self.c_fc.forward(x)))
    }
}

/// One pre-norm block.
#[derive(Module, Debug)]
pub struct Gpt2Block {
    /// Norm before attention.
    pub ln_1: LayerNorm,
    /// Attention.
    pub attn: Gpt2Attention,
    /// Norm before the MLP.
    pub ln_2: LayerNorm,
    /// Feed-forward.
    pub mlp: Gpt2Mlp,
}

impl Gpt2Block {
    /// `[batch, seq, n_embd]` → `[batch, seq, n_embd]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        bias: &Tensor<4>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), bias, cache);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

/// The transformer stack (`transformer.*` in checkpoints).
#[derive(Module, Debug)]
pub struct Gpt2Model {
    /// Token embedding `[vocab, n_embd]`.
    pub wte: Embedding,
    /// Position embedding `[n_positions, n_embd]`.
    pub wpe: Embedding,
    /// Blocks.
    pub h: Vec<Gpt2Block>,
    /// Final norm.
    pub ln_f: LayerNorm,
}

/// A GPT-2 causal language model (`GPT2LMHeadModel` in transformers).
#[derive(Module, Debug)]
pub struct Gpt2LMHeadModel {
    /// The transformer stack.
    pub transformer: Gpt2Model,
    /// Output head `[n_embd, vocab]`; `None` when tied to `transformer.wte` (published GPT-2).
    pub lm_head: Option<AdaptableLinear>,
    /// Prompt or prefix tuning, applied in every forward pass (PEFT's `prompt_encoder`).
    pub prompt_encoder: Option<PromptEncoder>,
    /// The prompt encoder is bypassed (adapters disabled).
    pub prompt_disabled: bool,
}

pub(crate) fn embedding(values: Param<Tensor<2>>, device: &Device) -> Embedding {
    let mut e = EmbeddingConfig::new(1, 1).init(device);
    e.weight = values;
    e
}

impl Gpt2LMHeadModel {
    fn new_random(cfg: &Gpt2Config, seed: u64, device: &Device) -> Self {
        let rng = HostRng::new(seed);
        let std = cfg.initializer_range as f32;
        let proj_std = std / (2.0 * cfg.n_layer as f32).sqrt();
        let (d, ff) = (cfg.n_embd, cfg.inner_size());
        let act = cfg.activation().expect("the configuration was validated");
        let lin = |name: &str, i: usize, o: usize, std: f32| {
            AdaptableLinear::init_normal(&mut rng.fork(name), i, o, true, std, device)
        };
        let ln = || LayerNorm::new(d, cfg.layer_norm_epsilon, device);
        let h = (0..cfg.n_layer)
            .map(|l| {
                let p = format!("transformer.h.{l}");
                Gpt2Block {
                    ln_1: ln(),
                    attn: Gpt2Attention {
                        c_attn: lin(&format!("{p}.attn.c_attn"), d, 3 * d, std),
                        c_proj: lin(&format!("{p}.attn.c_proj"), d, d, proj_std),
                        num_heads: cfg.n_head,
                        head_dim: cfg.head_dim(),
                        scale: cfg.attn_scale(l),
                    },
                    ln_2: ln(),
                    mlp: Gpt2Mlp {
                        c_fc: lin(&format!("{p}.mlp.c_fc"), d, ff, std),
                        c_proj: lin(&format!("{p}.mlp.c_proj"), ff, d, proj_std),
                        act,
                    },
                }
            })
            .collect();
        let wte = normal_param(
            &mut rng.fork("transformer.wte"),
            [cfg.vocab_size, d],
            std,
            device,
        );
        let wpe = normal_param(
            &mut rng.fork("transformer.wpe"),
            [cfg.n_positions, d],
            std,
            device,
        );
        let lm_head = (!cfg.tie_word_embeddings).then(|| {
            AdaptableLinear::init_normal(
                &mut rng.fork("lm_head"),
                d,
                cfg.vocab_size,
                false,
                std,
                device,
            )
        });
        Self {
            transformer: Gpt2Model {
                wte: embedding(wte, device),
                wpe: embedding(wpe, device),
                h,
                ln_f: ln(),
            },
            lm_head,
            prompt_encoder: None,
            prompt_disabled: false,
        }
    }

    /// Builds the model from a checkpoint's tensors (Hugging Face names, with or without the
    /// `transformer.` prefix), strictly: a missing or unexpected tensor, or a shape mismatch, is
    /// an error naming the tensor. The attention-mask buffers some checkpoints carry
    /// (`attn.bias`, `attn.masked_bias`) are ignored. With tied embeddings, an `lm_head.weight`
    /// in the checkpoint must equal the token embedding.
    ///
    /// # Errors
    /// See above; also an invalid configuration and unsupported element types.
    pub fn from_source<S: TensorSource + ?Sized>(
        cfg: &Gpt2Config,
        source: &S,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let act = cfg.activation()?;
        let mut ld = StrictLoader::new(source);
        let prefix = if !ld.has("transformer.wte.weight") && ld.has("wte.weight") {
            ""
        } else {
            "transformer."
        };
        let (d, ff, eps) = (cfg.n_embd, cfg.inner_size(), cfg.layer_norm_epsilon);
        let lin = |ld: &mut StrictLoader<'_, S>,
                   name: &str,
                   d_in: usize,
                   d_out: usize|
         -> Result<AdaptableLinear> {
            let w = ld.take(&format!("{prefix}{name}.weight"), &[d_in, d_out])?;
            let b = ld.take(&format!("{prefix}{name}.bias"), &[d_out])?;
            Ok(AdaptableLinear::from_in_out(
                w,
                d_in,
                d_out,
                Some(b),
                device,
            ))
        };
        let norm = |ld: &mut StrictLoader<'_, S>, name: &str| -> Result<LayerNorm> {
            let w = ld.take(&format!("{prefix}{name}.weight"), &[d])?;
            let b = ld.take(&format!("{prefix}{name}.bias"), &[d])?;
            Ok(LayerNorm::from_values(w, b, eps, device))
        };
        let emb = |ld: &mut StrictLoader<'_, S>, name: &str, rows: usize| -> Result<Vec<f32>> {
            ld.take(&format!("{prefix}{name}.weight"), &[rows, d])
        };

        let wte = emb(&mut ld, "wte", cfg.vocab_size)?;
        let wpe = emb(&mut ld, "wpe", cfg.n_positions)?;
        let mut h = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let p = format!("h.{l}");
            h.push(Gpt2Block {
                ln_1: norm(&mut ld, &format!("{p}.ln_1"))?,
                attn: Gpt2Attention {
                    c_attn: lin(&mut ld, &format!("{p}.attn.c_attn"), d, 3 * d)?,
                    c_proj: lin(&mut ld, &format!("{p}.attn.c_proj"), d, d)?,
                    num_heads: cfg.n_head,
                    head_dim: cfg.head_dim(),
                    scale: cfg.attn_scale(l),
                },
                ln_2: norm(&mut ld, &format!("{p}.ln_2"))?,
                mlp: Gpt2Mlp {
                    c_fc: lin(&mut ld, &format!("{p}.mlp.c_fc"), d, ff)?,
                    c_proj: lin(&mut ld, &format!("{p}.mlp.c_proj"), ff, d)?,
                    act,
                },
            });
        }
        let ln_f = norm(&mut ld, "ln_f")?;

        let head_shape = [cfg.vocab_size, d];
        let lm_head = if cfg.tie_word_embeddings {
            if let Some(head) = ld.take_optional("lm_head.weight", &head_shape)? {
                let max_diff = head
                    .iter()
                    .zip(&wte)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                if max_diff > 0.0 {
                    return Err(ModelError::Tensor {
                        source_name: source.source_name(),
                        tensor: "lm_head.weight".into(),
                        reason: format!(
                            "differs from {prefix}wte.weight (max abs difference {max_diff}) \
                             while tie_word_embeddings is true"
                        ),
                    });
                }
            }
            None
        } else {
            let w = ld.take("lm_head.weight", &head_shape)?;
            Some(AdaptableLinear::from_torch(
                w,
                cfg.vocab_size,
                d,
                None,
                device,
            ))
        };
        // Causal-mask buffers of older checkpoints; the mask is rebuilt on every forward pass.
        ld.finish(&|n| n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias"))?;

        let param = |values: Vec<f32>, rows: usize| {
            Param::from_data(TensorData::new(values, [rows, d]), device)
        };
        Ok(Self {
            transformer: Gpt2Model {
                wte: embedding(param(wte, cfg.vocab_size), device),
                wpe: embedding(param(wpe, cfg.n_positions), device),
                h,
                ln_f,
            },
            lm_head,
            prompt_encoder: None,
            prompt_disabled: false,
        })
    }

    /// The longest sequence the position embedding covers.
    pub fn max_positions(&self) -> usize {
        self.transformer.wpe.weight.shape().dims::<2>()[0]
    }
}

impl Gpt2LMHeadModel {
    /// Adds the tensors of a Hugging Face checkpoint of the model, by their checkpoint keys.
    pub(crate) fn export_tensors(&self, out: &mut ExportTensors) {
        let layer_norm = |out: &mut ExportTensors, name: String, ln: &LayerNorm| {
            out.param(format!("{name}.weight"), &ln.weight);
            out.param(format!("{name}.bias"), &ln.bias);
        };
        let t = &self.transformer;
        out.linears(self);
        out.param("transformer.wte.weight", &t.wte.weight);
        out.param("transformer.wpe.weight", &t.wpe.weight);
        for (i, b) in t.h.iter().enumerate() {
            layer_norm(out, format!("transformer.h.{i}.ln_1"), &b.ln_1);
            layer_norm(out, format!("transformer.h.{i}.ln_2"), &b.ln_2);
        }
        layer_norm(out, "transformer.ln_f".into(), &t.ln_f);
    }
}

impl CausalLm for Gpt2LMHeadModel {
    fn device(&self) -> Device {
        self.transformer.wte.weight.device()
    }

    fn vocab_size(&self) -> usize {
        self.transformer.wte.weight.shape().dims::<2>()[0]
    }

    fn hidden_size(&self) -> usize {
        self.transformer.wte.weight.shape().dims::<2>()[1]
    }

    fn max_positions(&self) -> Option<usize> {
        CachedCausalLm::max_context(self)
    }

    /// # Panics
    /// If the sequence is longer than the position embedding ([`Gpt2LMHeadModel::max_positions`]).
    fn forward_hidden(&self, input: &LmInput) -> Tensor<3> {
        let prompted = with_prompt_encoder(
            active_prompt(&self.prompt_encoder, self.prompt_disabled),
            input,
        );
        let input = prompted.as_ref().unwrap_or(input);
        let [b, t] = input.input_ids.dims();
        let device = input.input_ids.device();
        let m = &self.transformer;
        let x = m.wte.forward(input.input_ids.clone());
        let (x, positions, bias, mut cache, n_soft) =
            if input.prefix.is_none() && input.soft_prompt.is_none() {
                let (positions, bias) = positions_and_bias(input, &device);
                (x, positions, bias, None, 0)
            } else {
                let (x, mask, cache, n_soft) = virtual_tokens(input, x);
                let past = cache.len();
                let (positions, bias) =
                    positions_and_bias_cached([b, n_soft + t], Some(&mask), past, &device);
                (x, positions, bias, (past > 0).then_some(cache), n_soft)
            };
        let total = cache.as_ref().map_or(0, KvCache::len) + n_soft + t;
        assert!(
            total <= self.max_positions(),
            "sequence length {total} exceeds GPT-2's {} learned positions",
            self.max_positions()
        );
        let mut x = x + m.wpe.forward(positions);
        match cache.as_mut() {
            None => {
                for block in &m.h {
                    x = block.forward(x, &bias, None);
                }
            }
            Some(cache) => {
                let layers = cache.layers_mut(m.h.len());
                for (block, lc) in m.h.iter().zip(layers.iter_mut()) {
                    x = block.forward(x, &bias, Some(lc));
                }
            }
        }
        m.ln_f.forward(x).narrow(1, n_soft, t)
    }

    fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => crate::causal_lm::tied_logits(self.transformer.wte.weight.val(), hidden),
        }
    }
}

impl CachedCausalLm for Gpt2LMHeadModel {
    type Cache = KvCache;

    fn new_cache(&self) -> KvCache {
        KvCache::default()
    }

    fn max_context(&self) -> Option<usize> {
        let n = active_prompt(&self.prompt_encoder, self.prompt_disabled)
            .map_or(0, PromptEncoder::num_virtual_tokens);
        Some(self.max_positions().saturating_sub(n))
    }

    /// # Panics
    /// If the total length exceeds the learned positions.
    fn forward_cached(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let device = input_ids.device();
        let m = &self.transformer;
        let x = m.wte.forward(input_ids);
        let (x, mask, n_soft) = prompt_on_cache(
            active_prompt(&self.prompt_encoder, self.prompt_disabled),
            x,
            attention_mask,
            cache,
        );
        let past = cache.len();
        let [b, t, _] = x.dims();
        let total = mask.dims()[1];
        assert!(
            total <= self.max_positions(),
            "sequence length {total} exceeds GPT-2's {} learned positions",
            self.max_positions()
        );
        let (positions, bias) = positions_and_bias_cached([b, t], Some(&mask), past, &device);
        let mut x = x + m.wpe.forward(positions);
        let layers = cache.layers_mut(m.h.len());
        for (block, lc) in m.h.iter().zip(layers.iter_mut()) {
            x = block.forward(x, &bias, Some(lc));
        }
        m.ln_f.forward(x).narrow(1, n_soft, t - n_soft)
    }
}

impl AdapterTarget for Gpt2LMHeadModel {
    linear_visitors!(fn visit_linears / visit_linears_mut (self) |m, f| {
        for (i, block) in (0usize..).zip(r!(m.transformer.h)) {
            let p = format!("transformer.h.{i}");
            f(&format!("{p}.attn.c_attn"), r!(block.attn.c_attn));
            f(&format!("{p}.attn.c_proj"), r!(block.attn.c_proj));
            f(&format!("{p}.mlp.c_fc"), r!(block.mlp.c_fc));
            f(&format!("{p}.mlp.c_proj"), r!(block.mlp.c_proj));
        }
        if let Some(head) = r!(m.lm_head) {
            f("lm_head", head);
        }
    });

    fn geometry(&self) -> ModelGeometry {
        let attn = &self.transformer.h[0].attn;
        ModelGeometry {
            hidden_size: self.hidden_size(),
            num_layers: self.transformer.h.len(),
            num_kv_heads: attn.num_heads,
            head_dim: attn.head_dim,
            vocab_size: self.vocab_size(),
        }
    }

    fn token_embeddings(&self) -> Tensor<2> {
        self.transformer.wte.weight.val()
    }

    prompt_encoder_methods!();

    fn has_other_biases(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "tests/gpt2.rs"]
mod tests;
