//! The configuration of the Llama family (`config.json`, or a GGUF file's `{arch}.*` metadata),
//! as transformers' `LlamaConfig`; the model itself is in `llama.rs`.

use serde::{Deserialize, Serialize};

use crate::error::{invalid_config, parse_json, positive_sizes};
use crate::gguf::GgufFile;
use crate::layers::RotaryEmbedding;
use crate::{ModelError, Result};

/// Rope scaling as written in `config.json` (`rope_scaling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `llama3`, `linear` or `default`.
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Scaling factor.
    #[serde(default = "one")]
    pub factor: f64,
    /// llama3: low-frequency factor.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// llama3: high-frequency factor.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// llama3: the pre-training context length.
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

fn one() -> f64 {
    1.0
}

/// A Llama-family configuration, deserialized from Hugging Face's `config.json` (unknown keys are
/// ignored; missing keys take transformers' `LlamaConfig` defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlamaConfig {
    /// `llama`, `mistral`, `qwen2`, ...
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// Context length the model was trained for.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: Option<RopeScaling>,
    /// Bias on q/k/v/o (Llama's `attention_bias`). Qwen2 always has q/k/v bias.
    pub attention_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// Share the input embedding with the output head.
    pub tie_word_embeddings: bool,
    /// Standard deviation of fresh weights.
    pub initializer_range: f64,
    /// Activation (only `silu` is supported).
    pub hidden_act: String,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s).
    pub eos_token_id: Option<serde_json::Value>,
    /// Mistral's sliding-window attention: a query attends to itself and the `sliding_window - 1`
    /// keys before it. Ignored for Qwen2 unless `use_sliding_window` is true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Qwen2's switch for `sliding_window` (not supported when true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            model_type: "llama".into(),
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling: None,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            initializer_range: 0.02,
            hidden_act: "silu".into(),
            bos_token_id: Some(1),
            eos_token_id: None,
            sliding_window: None,
            use_sliding_window: None,
        }
    }
}

impl LlamaConfig {
    /// Parses a `config.json` text.
    ///
    /// # Errors
    /// Malformed JSON or inconsistent sizes.
    pub fn from_json_str(text: &str, path: &std::path::Path) -> Result<Self> {
        let cfg: Self = parse_json(text, path)?;
        cfg.validate().map_err(|e| e.in_file(path))?;
        Ok(cfg)
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The attention window in tokens, `None` for full causal attention: Mistral's
    /// `sliding_window`; Qwen2 has a window only with `use_sliding_window`, which
    /// [`validate`](Self::validate) rejects.
    pub fn attention_window(&self) -> Option<usize> {
        if self.model_type == "qwen2" && self.use_sliding_window != Some(true) {
            return None;
        }
        self.sliding_window
    }

    /// Whether q/k/v carry a bias.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }

    /// Checks that the sizes fit together.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        positive_sizes(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
        ])?;
        if self.kv_heads() == 0 || !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return invalid_config(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.kv_heads(),
                    self.num_attention_heads
                ),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return invalid_config(
                "head_dim",
                format!("{} must be even for RoPE", self.head_dim()),
            );
        }
        if self.model_type == "qwen2" && self.use_sliding_window == Some(true) {
            return invalid_config(
                "use_sliding_window",
                "Qwen2's per-layer sliding window is not supported",
            );
        }
        if self.attention_window() == Some(0) {
            return invalid_config("sliding_window", "must be positive");
        }
        if self.hidden_act != "silu" {
            return invalid_config(
                "hidden_act",
                format!("`{}` is not supported (silu only)", self.hidden_act),
            );
        }
        if let Some(s) = &self.rope_scaling
            && !matches!(s.rope_type.as_str(), "llama3" | "linear" | "default")
        {
            return invalid_config(
                "rope_scaling.rope_type",
                format!(
                    "`{}` is not supported (llama3, linear, default)",
                    s.rope_type
                ),
            );
        }
        Ok(())
    }

    /// RoPE inverse frequencies after scaling, `[head_dim / 2]`.
    pub fn inv_freq(&self) -> Vec<f64> {
        let base = RotaryEmbedding::default_inv_freq(self.rope_theta, self.head_dim());
        let Some(s) = &self.rope_scaling else {
            return base;
        };
        match s.rope_type.as_str() {
            "linear" => base.iter().map(|f| f / s.factor).collect(),
            "llama3" => {
                let low = s.low_freq_factor.unwrap_or(1.0);
                let high = s.high_freq_factor.unwrap_or(4.0);
                let old = s.original_max_position_embeddings.unwrap_or(8192) as f64;
                let low_wavelen = old / low;
                let high_wavelen = old / high;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / s.factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / s.factor + smooth * f
                        }
                    })
                    .collect()
            }
            _ => base,
        }
    }

    /// The configuration of a GGUF file's model from its `{arch}.*` metadata (llama.cpp keys).
    ///
    /// # Errors
    /// A missing key, or an architecture outside the Llama family.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?.to_string();
        if !matches!(arch.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(ModelError::UnsupportedArchitecture {
                path: file.path().to_path_buf(),
                architecture: arch,
                supported: "llama, qwen2, mistral, gemma3, gpt2".into(),
            });
        }
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &str| file.get_u32(&key(k)).map(|v| v as usize);
        let heads = u("attention.head_count")?;
        let hidden = u("embedding_length")?;
        let vocab = match u("vocab_size") {
            Ok(v) => v,
            Err(_) => file.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = u("attention.key_length").ok();
        let cfg = Self {
            model_type: if arch == "mistral" {
                "llama".into()
            } else {
                arch.clone()
            },
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: Some(u("attention.head_count_kv").unwrap_or(heads)),
            head_dim: head_dim.filter(|&d| d != hidden / heads),
            max_position_embeddings: u("context_length").unwrap_or(2048),
            rms_norm_eps: f64::from(
                file.get_f32(&key("attention.layer_norm_rms_epsilon"))
                    .unwrap_or(1e-5),
            ),
            rope_theta: f64::from(file.get_f32(&key("rope.freq_base")).unwrap_or(10000.0)),
            rope_scaling: None,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: file.tensor_info("output.weight").is_err(),
            initializer_range: 0.02,
            hidden_act: "silu".into(),
            bos_token_id: file.get_u32("tokenizer.ggml.bos_token_id").ok(),
            eos_token_id: file
                .get_u32("tokenizer.ggml.eos_token_id")
                .ok()
                .map(serde_json::Value::from),
            sliding_window: u("attention.sliding_window").ok().filter(|&w| w > 0),
            use_sliding_window: None,
        };
        cfg.validate().map_err(|e| e.in_file(file.path()))?;
        Ok(cfg)
    }

    /// Whether llama.cpp stored this model's q/k rows permuted (Llama and Mistral, not Qwen2).
    pub fn gguf_permutes_qk(&self) -> bool {
        self.model_type != "qwen2"
    }
}
