//! The Llama family: Llama 2/3, SmolLM/SmolLM2, Mistral and Qwen2.
//!
//! Grouped-query attention, rotate-half RoPE (with llama3 / linear scaling), RMSNorm, SwiGLU MLP,
//! optional q/k/v bias (Qwen2) and optional tied embeddings. Field names equal Hugging Face
//! checkpoint keys: `model.layers.{i}.self_attn.q_proj`, `model.norm`, `lm_head`, ...

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use kiln_nn::AdaptableLinear;
use kiln_nn::adapter::PromptEncoder;
use kiln_nn::init::{HostRng, normal_param};
use kiln_nn::{AdapterTarget, ModelGeometry, QuantizedMatrix};

use crate::adapter::{active_prompt, linear_visitors, prompt_encoder_methods};
pub use crate::cache::{KvCache, LayerCache};
use crate::export::ExportTensors;
use crate::gguf::GgufFile;
use crate::layers::{RmsNorm, RotaryEmbedding};
use crate::mask::{positions_and_bias, positions_and_bias_cached};
pub use crate::prompt::ids_tensor;
use crate::prompt::{prompt_on_cache, virtual_tokens, with_prompt_encoder};
use crate::source::{GgufNames, StrictLoader, TensorSource};
use crate::{CachedCausalLm, CausalLm, LmInput, ModelError, Result};

/// llama.cpp's names of the Llama-family tensors in GGUF files.
pub(crate) const GGUF_NAMES: GgufNames = GgufNames {
    fixed: &[
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ],
    layers: "model.layers",
    modules: &[
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
        ("attn_norm", "input_layernorm"),
        ("ffn_norm", "post_attention_layernorm"),
    ],
};

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
        let cfg: Self = serde_json::from_str(text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
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
        let bad = |field: &str, reason: String| {
            Err(ModelError::InvalidConfig {
                field: field.into(),
                reason,
            })
        };
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
        ] {
            if v == 0 {
                return bad(name, "must be positive".into());
            }
        }
        if self.kv_heads() == 0 || !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return bad(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.kv_heads(),
                    self.num_attention_heads
                ),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(
                "head_dim",
                format!("{} must be even for RoPE", self.head_dim()),
            );
        }
        if self.model_type == "qwen2" && self.use_sliding_window == Some(true) {
            return bad(
                "use_sliding_window",
                "Qwen2's per-layer sliding window is not supported".into(),
            );
        }
        if self.attention_window() == Some(0) {
            return bad("sliding_window", "must be positive".into());
        }
        if self.hidden_act != "silu" {
            return bad(
                "hidden_act",
                format!("`{}` is not supported (silu only)", self.hidden_act),
            );
        }
        if let Some(s) = &self.rope_scaling
            && !matches!(s.rope_type.as_str(), "llama3" | "linear" | "default")
        {
            return bad(
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
                supported: "llama, qwen2, mistral, gpt2".into(),
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
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether llama.cpp stored this model's q/k rows permuted (Llama and Mistral, not Qwen2).
    pub fn gguf_permutes_qk(&self) -> bool {
        self.model_type != "qwen2"
    }

    /// A freshly initialized model (HF's init: `N(0, initializer_range²)` weights, unit norms).
    pub fn init(&self, seed: u64, device: &Device) -> LlamaForCausalLM {
        LlamaForCausalLM::new_random(self, seed, device)
    }
}

/// Grouped-query self-attention.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// Query projection `[hidden, heads·head_dim]`.
    pub q_proj: AdaptableLinear,
    /// Key projection `[hidden, kv_heads·head_dim]`.
    pub k_proj: AdaptableLinear,
    /// Value projection `[hidden, kv_heads·head_dim]`.
    pub v_proj: AdaptableLinear,
    /// Output projection `[heads·head_dim, hidden]`.
    pub o_proj: AdaptableLinear,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

impl LlamaAttention {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`; `cos`/`sin`: `[batch, 1, seq, head_dim]`
    /// - `bias`: additive attention bias `[batch, 1, seq, seq]` (0 or a large negative)
    /// - output: `[batch, seq, hidden]`
    ///
    /// With a `cache`, the new keys/values are appended to it and the queries attend to all
    /// cached positions; `bias` is then `[batch, 1, seq, past + seq]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        bias: &Tensor<4>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // [b, t, h*hd] -> [b, h, t, hd]
        let q = self
            .q_proj
            .forward(x.clone())
            .reshape([b, t, h, hd])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([b, t, kvh, hd])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, t, kvh, hd])
            .swap_dims(1, 2);
        let q = RotaryEmbedding::apply(q, cos, sin);
        let k = RotaryEmbedding::apply(k, cos, sin);
        // [b, kvh, past + t, hd]
        let (k, v) = match cache {
            None => (k, v),
            Some(c) => c.append(k, v),
        };
        // Grouped-query attention without copying keys/values per query head: the `groups`
        // query heads of each kv head (consecutive, as in HF's `repeat_kv`) are stacked along
        // the sequence axis, so one matmul per kv head serves them all.
        let groups = h / kvh;
        let s = k.dims()[2];
        // [b, h, t, hd] -> [b, kvh, groups·t, hd]
        let q = q.reshape([b, kvh, groups * t, hd]);
        // [b, kvh, groups·t, s] -> [b, h, t, s]
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .reshape([b, h, t, s])
            .mul_scalar(1.0 / (hd as f64).sqrt())
            + bias.clone();
        let probs = softmax(scores, 3).reshape([b, kvh, groups * t, s]);
        // [b, kvh, groups·t, hd] -> [b, h, t, hd] -> [b, t, h·hd]
        let out = probs
            .matmul(v)
            .reshape([b, h, t, hd])
            .swap_dims(1, 2)
            .reshape([b, t, h * hd]);
        self.o_proj.forward(out)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// Gate projection `[hidden, intermediate]`.
    pub gate_proj: AdaptableLinear,
    /// Up projection `[hidden, intermediate]`.
    pub up_proj: AdaptableLinear,
    /// Down projection `[intermediate, hidden]`.
    pub down_proj: AdaptableLinear,
}

impl LlamaMlp {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    /// Attention.
    pub self_attn: LlamaAttention,
    /// Feed-forward.
    pub mlp: LlamaMlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        bias: &Tensor<4>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), cos, sin, bias, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// The decoder stack (`model.*` in checkpoints).
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// Decoder blocks.
    pub layers: Vec<LlamaDecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Rotary embedding (no weights).
    pub rotary_emb: RotaryEmbedding,
    /// Sliding attention window in tokens (Mistral); 0 = full causal attention.
    pub sliding_window: usize,
    /// Positions the model was trained for (`max_position_embeddings`): the context window.
    pub max_position_embeddings: usize,
}

impl LlamaModel {
    /// Masks keys outside the sliding window in an attention bias `[b, 1, t, past + t]` whose
    /// queries sit at positions `past..past + t`.
    fn window(&self, bias: Tensor<4>, past: usize) -> Tensor<4> {
        let w = self.sliding_window;
        let [_, _, t, s] = bias.dims();
        if w == 0 || s <= w {
            return bias;
        }
        let device = bias.device();
        let q = Tensor::<1, Int>::arange(past as i64..(past + t) as i64, &device).reshape([t, 1]);
        let k = Tensor::<1, Int>::arange(0..s as i64, &device).reshape([1, s]);
        // Key j is too far from query i when i - j >= w.
        let far = (q - k)
            .greater_equal_elem(w as i64)
            .float()
            .mul_scalar(-1e9)
            .reshape([1, 1, t, s]);
        (bias + far).clamp_min(-1e9)
    }
}

/// A Llama-family causal language model (`LlamaForCausalLM` in transformers).
#[derive(Module, Debug)]
pub struct LlamaForCausalLM {
    /// The decoder stack.
    pub model: LlamaModel,
    /// Output head `[hidden, vocab]`; `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<AdaptableLinear>,
    /// Prompt or prefix tuning, applied in every forward pass (PEFT's `prompt_encoder`).
    pub prompt_encoder: Option<PromptEncoder>,
    /// The prompt encoder is bypassed (adapters disabled).
    pub prompt_disabled: bool,
    /// The checkpoint's block-quantized copy of the tied output head (`model.embed_tokens`),
    /// used for small-batch logits on the CPU (see [`kiln_nn::quant`]).
    #[module(skip)]
    pub quantized_head: Option<QuantizedMatrix>,
}

impl LlamaForCausalLM {
    fn new_random(cfg: &LlamaConfig, seed: u64, device: &Device) -> Self {
        let rng = HostRng::new(seed);
        let std = cfg.initializer_range as f32;
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (h, kvh) = (cfg.num_attention_heads, cfg.kv_heads());
        let lin = |name: &str, i: usize, o: usize, bias: bool| {
            AdaptableLinear::init_normal(&mut rng.fork(name), i, o, bias, std, device)
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                LlamaDecoderLayer {
                    self_attn: LlamaAttention {
                        q_proj: lin(&format!("{p}.self_attn.q_proj"), d, h * hd, cfg.qkv_bias()),
                        k_proj: lin(
                            &format!("{p}.self_attn.k_proj"),
                            d,
                            kvh * hd,
                            cfg.qkv_bias(),
                        ),
                        v_proj: lin(
                            &format!("{p}.self_attn.v_proj"),
                            d,
                            kvh * hd,
                            cfg.qkv_bias(),
                        ),
                        o_proj: lin(
                            &format!("{p}.self_attn.o_proj"),
                            h * hd,
                            d,
                            cfg.attention_bias,
                        ),
                        num_heads: h,
                        num_kv_heads: kvh,
                        head_dim: hd,
                    },
                    mlp: LlamaMlp {
                        gate_proj: lin(
                            &format!("{p}.mlp.gate_proj"),
                            d,
                            cfg.intermediate_size,
                            cfg.mlp_bias,
                        ),
                        up_proj: lin(
                            &format!("{p}.mlp.up_proj"),
                            d,
                            cfg.intermediate_size,
                            cfg.mlp_bias,
                        ),
                        down_proj: lin(
                            &format!("{p}.mlp.down_proj"),
                            cfg.intermediate_size,
                            d,
                            cfg.mlp_bias,
                        ),
                    },
                    input_layernorm: RmsNorm::new(d, cfg.rms_norm_eps, device),
                    post_attention_layernorm: RmsNorm::new(d, cfg.rms_norm_eps, device),
                }
            })
            .collect();
        let mut embed_tokens = EmbeddingConfig::new(cfg.vocab_size, d).init(device);
        embed_tokens.weight = normal_param(
            &mut rng.fork("model.embed_tokens"),
            [cfg.vocab_size, d],
            std,
            device,
        );
        let lm_head = (!cfg.tie_word_embeddings).then(|| lin("lm_head", d, cfg.vocab_size, false));
        Self {
            model: LlamaModel {
                embed_tokens,
                layers,
                norm: RmsNorm::new(d, cfg.rms_norm_eps, device),
                rotary_emb: RotaryEmbedding::new(&cfg.inv_freq(), device),
                sliding_window: cfg.attention_window().unwrap_or(0),
                max_position_embeddings: cfg.max_position_embeddings,
            },
            lm_head,
            prompt_encoder: None,
            prompt_disabled: false,
            quantized_head: None,
        }
    }
}

impl LlamaForCausalLM {
    /// Builds the model from a checkpoint's tensors (Hugging Face names), strictly: a missing or
    /// unexpected tensor, or a shape mismatch, is an error naming the tensor.
    ///
    /// # Errors
    /// See above; also unsupported element types.
    pub fn from_source<S: TensorSource + ?Sized>(
        cfg: &LlamaConfig,
        source: &S,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut ld = StrictLoader::new(source);
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (h, kvh, ff) = (
            cfg.num_attention_heads,
            cfg.kv_heads(),
            cfg.intermediate_size,
        );
        let lin = |ld: &mut StrictLoader<'_, S>,
                   name: &str,
                   d_in: usize,
                   d_out: usize,
                   bias: bool|
         -> Result<AdaptableLinear> {
            let w = ld.take(&format!("{name}.weight"), &[d_out, d_in])?;
            let b = if bias {
                Some(ld.take(&format!("{name}.bias"), &[d_out])?)
            } else {
                None
            };
            Ok(AdaptableLinear::from_torch(w, d_out, d_in, b, device))
        };
        let norm = |ld: &mut StrictLoader<'_, S>, name: &str| -> Result<RmsNorm> {
            let w = ld.take(&format!("{name}.weight"), &[d])?;
            Ok(RmsNorm {
                weight: burn::module::Param::from_data(TensorData::new(w, [d]), device),
                eps: cfg.rms_norm_eps,
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let qkv_bias = cfg.qkv_bias();
            layers.push(LlamaDecoderLayer {
                self_attn: LlamaAttention {
                    q_proj: lin(
                        &mut ld,
                        &format!("{p}.self_attn.q_proj"),
                        d,
                        h * hd,
                        qkv_bias,
                    )?,
                    k_proj: lin(
                        &mut ld,
                        &format!("{p}.self_attn.k_proj"),
                        d,
                        kvh * hd,
                        qkv_bias,
                    )?,
                    v_proj: lin(
                        &mut ld,
                        &format!("{p}.self_attn.v_proj"),
                        d,
                        kvh * hd,
                        qkv_bias,
                    )?,
                    o_proj: lin(
                        &mut ld,
                        &format!("{p}.self_attn.o_proj"),
                        h * hd,
                        d,
                        cfg.attention_bias,
                    )?,
                    num_heads: h,
                    num_kv_heads: kvh,
                    head_dim: hd,
                },
                mlp: LlamaMlp {
                    gate_proj: lin(&mut ld, &format!("{p}.mlp.gate_proj"), d, ff, cfg.mlp_bias)?,
                    up_proj: lin(&mut ld, &format!("{p}.mlp.up_proj"), d, ff, cfg.mlp_bias)?,
                    down_proj: lin(&mut ld, &format!("{p}.mlp.down_proj"), ff, d, cfg.mlp_bias)?,
                },
                input_layernorm: norm(&mut ld, &format!("{p}.input_layernorm"))?,
                post_attention_layernorm: norm(&mut ld, &format!("{p}.post_attention_layernorm"))?,
            });
        }
        let emb = ld.take("model.embed_tokens.weight", &[cfg.vocab_size, d])?;
        let mut embed_tokens = EmbeddingConfig::new(1, 1).init(device);
        embed_tokens.weight =
            burn::module::Param::from_data(TensorData::new(emb, [cfg.vocab_size, d]), device);
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(lin(&mut ld, "lm_head", d, cfg.vocab_size, false)?)
        };
        let final_norm = norm(&mut ld, "model.norm")?;
        // llama.cpp stores llama3-style frequency factors as a tensor.
        let mut inv_freq = cfg.inv_freq();
        if let Some(f) = ld.take_optional("gguf:rope_freqs.weight", &[hd / 2])? {
            for (x, k) in inv_freq.iter_mut().zip(f) {
                *x /= f64::from(k);
            }
        }
        // Buffers some checkpoints carry; recomputed here.
        ld.finish(&|n| n.ends_with("rotary_emb.inv_freq"))?;
        Ok(Self {
            model: LlamaModel {
                embed_tokens,
                layers,
                norm: final_norm,
                rotary_emb: RotaryEmbedding::new(&inv_freq, device),
                sliding_window: cfg.attention_window().unwrap_or(0),
                max_position_embeddings: cfg.max_position_embeddings,
            },
            lm_head,
            prompt_encoder: None,
            prompt_disabled: false,
            quantized_head: None,
        })
    }
}

impl LlamaForCausalLM {
    fn run_layers(
        &self,
        mut x: Tensor<3>,
        positions: Tensor<2, Int>,
        bias: Tensor<4>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let (cos, sin) = self.model.rotary_emb.tables(positions);
        let mut caches = cache.map(|c| c.layers_mut(self.model.layers.len()));
        for (i, layer) in self.model.layers.iter().enumerate() {
            let lc = caches.as_deref_mut().map(|c| &mut c[i]);
            x = layer.forward(x, &cos, &sin, &bias, lc);
        }
        self.model.norm.forward(x)
    }
}

impl LlamaForCausalLM {
    /// Adds the tensors of a Hugging Face checkpoint of the model, by their checkpoint keys.
    pub(crate) fn export_tensors(&self, out: &mut ExportTensors) {
        out.linears(self);
        out.param("model.embed_tokens.weight", &self.model.embed_tokens.weight);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.param(
                format!("{p}.input_layernorm.weight"),
                &layer.input_layernorm.weight,
            );
            out.param(
                format!("{p}.post_attention_layernorm.weight"),
                &layer.post_attention_layernorm.weight,
            );
        }
        out.param("model.norm.weight", &self.model.norm.weight);
    }
}

impl CausalLm for LlamaForCausalLM {
    fn vocab_size(&self) -> usize {
        self.model.embed_tokens.weight.shape().dims::<2>()[0]
    }

    fn hidden_size(&self) -> usize {
        self.model.embed_tokens.weight.shape().dims::<2>()[1]
    }

    fn device(&self) -> Device {
        self.model.embed_tokens.weight.device()
    }

    fn forward_hidden(&self, input: &LmInput) -> Tensor<3> {
        let device = input.input_ids.device();
        let x = self.model.embed_tokens.forward(input.input_ids.clone());
        let prompted = with_prompt_encoder(
            active_prompt(&self.prompt_encoder, self.prompt_disabled),
            input,
        );
        let input = prompted.as_ref().unwrap_or(input);
        if input.prefix.is_none() && input.soft_prompt.is_none() {
            let (positions, bias) = positions_and_bias(input, &device);
            let bias = self.model.window(bias, 0);
            return self.run_layers(x, positions, bias, None);
        }
        // Prompt tuning prepends virtual-token embeddings; prefix tuning supplies per-layer
        // key/value prefixes, which behave exactly like an already-filled cache.
        let (x, mask, mut cache, n_soft) = virtual_tokens(input, x);
        let [b, t] = input.input_ids.dims();
        let past = cache.len();
        let (positions, bias) =
            positions_and_bias_cached([b, n_soft + t], Some(&mask), past, &device);
        let bias = self.model.window(bias, past);
        let h = self.run_layers(x, positions, bias, (past > 0).then_some(&mut cache));
        h.narrow(1, n_soft, t)
    }

    fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        if let Some(head) = &self.lm_head {
            return head.forward(hidden);
        }
        if let Some(y) = self
            .quantized_head
            .as_ref()
            .and_then(|q| q.try_forward(&hidden))
        {
            return y;
        }
        crate::causal_lm::tied_logits(self.model.embed_tokens.weight.val(), hidden)
    }
}

impl CachedCausalLm for LlamaForCausalLM {
    type Cache = KvCache;

    fn new_cache(&self) -> KvCache {
        KvCache::default()
    }

    fn max_context(&self) -> Option<usize> {
        let n = active_prompt(&self.prompt_encoder, self.prompt_disabled)
            .map_or(0, PromptEncoder::num_virtual_tokens);
        Some(self.model.max_position_embeddings.saturating_sub(n))
    }

    fn forward_cached(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let device = input_ids.device();
        let x = self.model.embed_tokens.forward(input_ids);
        let (x, mask, n_soft) = prompt_on_cache(
            active_prompt(&self.prompt_encoder, self.prompt_disabled),
            x,
            attention_mask,
            cache,
        );
        let past = cache.len();
        let [b, t, _] = x.dims();
        let (positions, bias) = positions_and_bias_cached([b, t], Some(&mask), past, &device);
        let bias = self.model.window(bias, past);
        let h = self.run_layers(x, positions, bias, Some(cache));
        h.narrow(1, n_soft, t - n_soft)
    }
}

impl AdapterTarget for LlamaForCausalLM {
    linear_visitors!(fn visit_linears / visit_linears_mut (self) |m, f| {
        for (i, layer) in (0usize..).zip(r!(m.model.layers)) {
            let p = format!("model.layers.{i}");
            f(&format!("{p}.self_attn.q_proj"), r!(layer.self_attn.q_proj));
            f(&format!("{p}.self_attn.k_proj"), r!(layer.self_attn.k_proj));
            f(&format!("{p}.self_attn.v_proj"), r!(layer.self_attn.v_proj));
            f(&format!("{p}.self_attn.o_proj"), r!(layer.self_attn.o_proj));
            f(&format!("{p}.mlp.gate_proj"), r!(layer.mlp.gate_proj));
            f(&format!("{p}.mlp.up_proj"), r!(layer.mlp.up_proj));
            f(&format!("{p}.mlp.down_proj"), r!(layer.mlp.down_proj));
        }
        if let Some(head) = r!(m.lm_head) {
            f("lm_head", head);
        }
    });

    fn geometry(&self) -> ModelGeometry {
        let attn = &self.model.layers[0].self_attn;
        ModelGeometry {
            hidden_size: self.hidden_size(),
            num_layers: self.model.layers.len(),
            num_kv_heads: attn.num_kv_heads,
            head_dim: attn.head_dim,
            vocab_size: self.vocab_size(),
        }
    }

    fn token_embeddings(&self) -> Tensor<2> {
        self.model.embed_tokens.weight.val()
    }

    fn clear_quantized(&mut self) {
        self.visit_linears_mut(&mut |_, l| {
            l.set_quantized(None)
                .expect("removing the quantized weight cannot fail");
        });
        self.quantized_head = None;
    }

    prompt_encoder_methods!();
}

#[cfg(test)]
#[path = "tests/llama.rs"]
mod tests;
