//! The configuration of GPT-2 (`config.json`, or a GGUF file's `gpt2.*` metadata), as
//! transformers' `GPT2Config`, and its MLP activation; the model itself is in `gpt2.rs`.

use burn::tensor::activation::{gelu, gelu_approximate, relu, sigmoid, silu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{invalid_config, parse_json, positive_sizes};
use crate::gpt2::Gpt2LMHeadModel;
use crate::{ModelError, Result};

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
        cfg.validate().map_err(|e| e.in_file(path))?;
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
        cfg.validate().map_err(|e| e.in_file(file.path()))?;
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
        positive_sizes(&[
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.inner_size()),
        ])?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return invalid_config(
                "n_head",
                format!("{} does not divide n_embd {}", self.n_head, self.n_embd),
            );
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return invalid_config(
                "layer_norm_epsilon",
                format!("{} must be positive", self.layer_norm_epsilon),
            );
        }
        if self.add_cross_attention {
            return invalid_config(
                "add_cross_attention",
                "cross-attention blocks are not supported",
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
