//! The configuration of Gemma 3's text decoder (`config.json` of `model_type` `gemma3_text`, or a
//! GGUF file's `gemma3.*` metadata), as transformers' `Gemma3TextConfig`; the model itself is in
//! `gemma3.rs`.

use serde::{Deserialize, Serialize};

use crate::error::{invalid_config, parse_json, positive_sizes};
use crate::gguf::GgufFile;
use crate::layers::RotaryEmbedding;
use crate::llama_config::RopeScaling;
use crate::{ModelError, Result};

/// The layer kind of a block whose attention sees only the last `sliding_window` positions.
pub const SLIDING_ATTENTION: &str = "sliding_attention";
/// The layer kind of a block whose attention sees every earlier position.
pub const FULL_ATTENTION: &str = "full_attention";

/// A Gemma 3 text configuration. Missing keys take transformers' `Gemma3TextConfig` defaults.
/// `config.json` files of either transformers generation read: the older `rope_theta`,
/// `rope_local_base_freq`, `rope_scaling` and `sliding_window_pattern`, or the newer
/// `rope_parameters` per layer kind and `layer_types`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gemma3Config {
    /// Always `gemma3_text`.
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
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Per-head width (not tied to `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// Activation of the gate (only `gelu_pytorch_tanh` and its synonyms are supported).
    pub hidden_activation: String,
    /// Context length the model was trained for.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base of the full-attention layers.
    pub rope_theta: f64,
    /// RoPE base of the sliding-window layers.
    pub rope_local_base_freq: f64,
    /// RoPE scaling of the full-attention layers (`linear` or `default`).
    pub rope_scaling: Option<RopeScaling>,
    /// Attention scores are multiplied by `query_pre_attn_scalar^-0.5`. Written as an integer
    /// when it is one (transformers' `Gemma3TextConfig` requires an `int`).
    #[serde(serialize_with = "integer_when_whole")]
    pub query_pre_attn_scalar: f64,
    /// A sliding-window layer's query attends to itself and the `sliding_window - 1` keys
    /// before it.
    pub sliding_window: usize,
    /// `sliding_attention` or `full_attention`, one per layer.
    pub layer_types: Vec<String>,
    /// Logits become `cap · tanh(logits / cap)`.
    pub final_logit_softcapping: Option<f64>,
    /// Read and kept, but not applied: transformers' Gemma 3 attention does not apply it
    /// either (Gemma 2 did).
    pub attn_logit_softcapping: Option<f64>,
    /// Bias on q/k/v/o.
    pub attention_bias: bool,
    /// Share the input embedding with the output head (always, in Gemma 3).
    pub tie_word_embeddings: bool,
    /// Standard deviation of fresh weights.
    pub initializer_range: f64,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s).
    pub eos_token_id: Option<serde_json::Value>,
    /// Padding token.
    pub pad_token_id: Option<u32>,
}

/// `config.json` as written, before the two generations of keys are reconciled.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_local_base_freq: Option<f64>,
    rope_scaling: Option<RopeScaling>,
    rope_parameters: Option<serde_json::Value>,
    query_pre_attn_scalar: f64,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    attention_bias: bool,
    tie_word_embeddings: bool,
    initializer_range: f64,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
    pad_token_id: Option<u32>,
    use_bidirectional_attention: Option<bool>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            model_type: "gemma3_text".into(),
            vocab_size: 262_208,
            hidden_size: 2304,
            intermediate_size: 9216,
            num_hidden_layers: 26,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            head_dim: 256,
            hidden_activation: None,
            hidden_act: None,
            max_position_embeddings: 131_072,
            rms_norm_eps: 1e-6,
            rope_theta: None,
            rope_local_base_freq: None,
            rope_scaling: None,
            rope_parameters: None,
            query_pre_attn_scalar: 256.0,
            sliding_window: None,
            sliding_window_pattern: None,
            layer_types: None,
            final_logit_softcapping: None,
            attn_logit_softcapping: None,
            attention_bias: false,
            tie_word_embeddings: true,
            initializer_range: 0.02,
            bos_token_id: Some(2),
            eos_token_id: Some(serde_json::Value::from(1)),
            pad_token_id: Some(0),
            use_bidirectional_attention: None,
        }
    }
}

fn integer_when_whole<S: serde::Serializer>(x: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        s.serialize_i64(*x as i64)
    } else {
        s.serialize_f64(*x)
    }
}

/// Gemma 3's layer pattern: every `pattern`-th layer attends globally, the others in a window.
fn pattern_layers(layers: usize, pattern: usize) -> Vec<String> {
    (0..layers)
        .map(|i| {
            if pattern == 0 || !(i + 1).is_multiple_of(pattern) {
                SLIDING_ATTENTION
            } else {
                FULL_ATTENTION
            }
            .to_string()
        })
        .collect()
}

impl Gemma3Config {
    /// Parses a `config.json` text.
    ///
    /// # Errors
    /// Malformed JSON, a multimodal `gemma3` configuration, or an invalid configuration (see
    /// [`Gemma3Config::validate`]).
    pub fn from_json_str(text: &str, path: &std::path::Path) -> Result<Self> {
        let raw: RawConfig = parse_json(text, path)?;
        Self::from_raw(raw).map_err(|e| e.in_file(path))
    }

    fn from_raw(raw: RawConfig) -> Result<Self> {
        if raw.model_type == "gemma3" {
            return invalid_config(
                "model_type",
                "`gemma3` is the multimodal model; only its text decoder (`gemma3_text`) is \
                 supported",
            );
        }
        if raw.use_bidirectional_attention == Some(true) {
            return invalid_config(
                "use_bidirectional_attention",
                "bidirectional attention is not supported",
            );
        }
        let params = |kind: &str, key: &str| {
            raw.rope_parameters
                .as_ref()
                .and_then(|p| p.get(kind))
                .and_then(|p| p.get(key))
                .cloned()
        };
        let theta = |kind: &str| params(kind, "rope_theta").and_then(|v| v.as_f64());
        let mut rope_scaling = raw.rope_scaling;
        if rope_scaling.is_none()
            && let Some(kind) =
                params(FULL_ATTENTION, "rope_type").and_then(|v| v.as_str().map(String::from))
            && kind != "default"
        {
            rope_scaling = Some(RopeScaling {
                rope_type: kind,
                factor: params(FULL_ATTENTION, "factor")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(1.0),
                low_freq_factor: None,
                high_freq_factor: None,
                original_max_position_embeddings: None,
            });
        }
        let layer_types = raw.layer_types.unwrap_or_else(|| {
            pattern_layers(
                raw.num_hidden_layers,
                raw.sliding_window_pattern.unwrap_or(6),
            )
        });
        let cfg = Self {
            model_type: "gemma3_text".into(),
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads,
            head_dim: raw.head_dim,
            hidden_activation: raw
                .hidden_activation
                .or(raw.hidden_act)
                .unwrap_or_else(|| "gelu_pytorch_tanh".into()),
            max_position_embeddings: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: theta(FULL_ATTENTION)
                .or(raw.rope_theta)
                .unwrap_or(1_000_000.0),
            rope_local_base_freq: theta(SLIDING_ATTENTION)
                .or(raw.rope_local_base_freq)
                .unwrap_or(10_000.0),
            rope_scaling,
            query_pre_attn_scalar: raw.query_pre_attn_scalar,
            sliding_window: raw.sliding_window.unwrap_or(4096),
            layer_types,
            final_logit_softcapping: raw.final_logit_softcapping,
            attn_logit_softcapping: raw.attn_logit_softcapping,
            attention_bias: raw.attention_bias,
            tie_word_embeddings: raw.tie_word_embeddings,
            initializer_range: raw.initializer_range,
            bos_token_id: raw.bos_token_id,
            eos_token_id: raw.eos_token_id,
            pad_token_id: raw.pad_token_id,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A small configuration for tests: the given sizes, Gemma 3's defaults otherwise, the layer
    /// pattern with a global layer every `pattern` layers.
    #[allow(clippy::too_many_arguments)]
    pub fn tiny(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        head_dim: usize,
        sliding_window: usize,
        pattern: usize,
    ) -> Self {
        Self::from_raw(RawConfig {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            query_pre_attn_scalar: head_dim as f64,
            sliding_window: Some(sliding_window),
            sliding_window_pattern: Some(pattern),
            max_position_embeddings: 512,
            ..RawConfig::default()
        })
        .expect("a tiny configuration of positive sizes is valid")
    }

    /// Whether layer `i` attends in a sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.layer_types[layer] == SLIDING_ATTENTION
    }

    /// Checks that the sizes fit together and that every feature is supported.
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
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("sliding_window", self.sliding_window),
        ])?;
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return invalid_config(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return invalid_config(
                "head_dim",
                format!("{} must be even for RoPE", self.head_dim),
            );
        }
        if self.layer_types.len() != self.num_hidden_layers {
            return invalid_config(
                "layer_types",
                format!(
                    "{} entries for {} layers",
                    self.layer_types.len(),
                    self.num_hidden_layers
                ),
            );
        }
        if let Some(bad) = self
            .layer_types
            .iter()
            .find(|t| *t != SLIDING_ATTENTION && *t != FULL_ATTENTION)
        {
            return invalid_config(
                "layer_types",
                format!("`{bad}` is not supported ({SLIDING_ATTENTION}, {FULL_ATTENTION})"),
            );
        }
        if !matches!(
            self.hidden_activation.as_str(),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast"
        ) {
            return invalid_config(
                "hidden_activation",
                format!(
                    "`{}` is not supported (gelu_pytorch_tanh)",
                    self.hidden_activation
                ),
            );
        }
        if let Some(s) = &self.rope_scaling
            && !matches!(s.rope_type.as_str(), "linear" | "default")
        {
            return invalid_config(
                "rope_scaling.rope_type",
                format!("`{}` is not supported (linear, default)", s.rope_type),
            );
        }
        if self.query_pre_attn_scalar.is_nan() || self.query_pre_attn_scalar <= 0.0 {
            return invalid_config("query_pre_attn_scalar", "must be positive");
        }
        if !self.tie_word_embeddings {
            return invalid_config(
                "tie_word_embeddings",
                "Gemma 3 ties its output head to the embedding",
            );
        }
        Ok(())
    }

    /// RoPE inverse frequencies of the full-attention layers, `[head_dim / 2]`.
    pub fn global_inv_freq(&self) -> Vec<f64> {
        let base = RotaryEmbedding::default_inv_freq(self.rope_theta, self.head_dim);
        match &self.rope_scaling {
            Some(s) if s.rope_type == "linear" => base.iter().map(|f| f / s.factor).collect(),
            _ => base,
        }
    }

    /// RoPE inverse frequencies of the sliding-window layers, `[head_dim / 2]`.
    pub fn local_inv_freq(&self) -> Vec<f64> {
        RotaryEmbedding::default_inv_freq(self.rope_local_base_freq, self.head_dim)
    }

    /// The configuration of a GGUF file's model from its `gemma3.*` metadata (llama.cpp keys).
    /// As llama.cpp: the sliding-window layers' RoPE base is `rope.freq_base_swa` (10000 when
    /// absent), every sixth layer attends globally, and scores are scaled by the key width.
    ///
    /// # Errors
    /// A missing key, or a file of another architecture.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?.to_string();
        if arch != "gemma3" {
            return Err(ModelError::UnsupportedArchitecture {
                path: file.path().to_path_buf(),
                architecture: arch,
                supported: "gemma3".into(),
            });
        }
        let key = |k: &str| format!("gemma3.{k}");
        let u = |k: &str| file.get_u32(&key(k)).map(|v| v as usize);
        let f = |k: &str| file.get_f32(&key(k)).map(f64::from);
        let heads = u("attention.head_count")?;
        let layers = u("block_count")?;
        let head_dim = u("attention.key_length")?;
        let rope_scaling = match file.get_str(&key("rope.scaling.type")) {
            Ok("linear") => Some(RopeScaling {
                rope_type: "linear".into(),
                factor: f("rope.scaling.factor").unwrap_or(1.0),
                low_freq_factor: None,
                high_freq_factor: None,
                original_max_position_embeddings: None,
            }),
            _ => None,
        };
        let raw = RawConfig {
            vocab_size: file.get_str_array("tokenizer.ggml.tokens")?.len(),
            hidden_size: u("embedding_length")?,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: u("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            max_position_embeddings: u("context_length").unwrap_or(32_768),
            rms_norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            rope_theta: Some(f("rope.freq_base").unwrap_or(1_000_000.0)),
            rope_local_base_freq: Some(f("rope.freq_base_swa").unwrap_or(10_000.0)),
            rope_scaling,
            query_pre_attn_scalar: head_dim as f64,
            sliding_window: Some(u("attention.sliding_window")?),
            sliding_window_pattern: Some(u("attention.sliding_window_pattern").unwrap_or(6)),
            bos_token_id: file.get_u32("tokenizer.ggml.bos_token_id").ok(),
            eos_token_id: file
                .get_u32("tokenizer.ggml.eos_token_id")
                .ok()
                .map(serde_json::Value::from),
            pad_token_id: file.get_u32("tokenizer.ggml.padding_token_id").ok(),
            ..RawConfig::default()
        };
        Self::from_raw(raw).map_err(|e| e.in_file(file.path()))
    }
}
