//! The Llama family: Llama 2/3, SmolLM/SmolLM2, Mistral and Qwen2.
//!
//! Grouped-query attention, rotate-half RoPE (with llama3 / linear scaling), RMSNorm, SwiGLU MLP,
//! optional q/k/v bias (Qwen2) and optional tied embeddings. Field names equal Hugging Face
//! checkpoint keys: `model.layers.{i}.self_attn.q_proj`, `model.norm`, `lm_head`, ...

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};

use kiln_nn::AdaptableLinear;
use kiln_nn::adapter::PromptEncoder;
use kiln_nn::init::{HostRng, normal_param};
use kiln_nn::{AdapterTarget, ModelGeometry, QuantizedMatrix};

use crate::adapter::{active_prompt, linear_visitors, prompt_encoder_methods};
pub use crate::cache::{KvCache, LayerCache};
use crate::export::ExportTensors;
use crate::layers::{RmsNorm, RotaryEmbedding, grouped_attention};
pub use crate::llama_config::{LlamaConfig, RopeScaling};
use crate::mask::{positions_and_bias, positions_and_bias_cached, sliding_window};
pub use crate::prompt::ids_tensor;
use crate::prompt::{prompt_on_cache, virtual_tokens, with_prompt_encoder};
use crate::source::{GgufNames, StrictLoader, TensorSource};
use crate::{CachedCausalLm, CausalLm, LmInput, Result};

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

impl LlamaConfig {
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
        let out = grouped_attention(q, k, v, bias, 1.0 / (hd as f64).sqrt());
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
    /// Masks keys outside the sliding window in an attention bias `[b, 1, t, past + t]`.
    fn window(&self, bias: Tensor<4>, past: usize) -> Tensor<4> {
        sliding_window(bias, past, self.sliding_window)
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
        // Grown as layers load: the configured count is not trusted with an allocation.
        let mut layers = Vec::new();
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

    fn fused_loss_grads(
        &self,
        batch: &crate::HostBatch,
        step: crate::FusedStep,
    ) -> Option<(f64, burn::optim::GradientsParams)> {
        self.fused_step(batch, step)
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

    fn host_decoder(&self, capacity: &[usize]) -> Option<Box<dyn crate::HostDecoder + '_>> {
        crate::llama_decode::LlamaDecoder::of(self, capacity)
            .map(|d| Box::new(d) as Box<dyn crate::HostDecoder>)
    }

    fn multi_adapter_decoder(
        &self,
        adapters: &[&Self],
        capacity: &[usize],
    ) -> Option<Box<dyn crate::HostDecoder + '_>> {
        crate::llama_decode::LlamaDecoder::with_adapters(self, adapters, capacity)
            .map(|d| Box::new(d) as Box<dyn crate::HostDecoder>)
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

    fn set_quant_inputs(&mut self, inputs: kiln_nn::Inputs) {
        self.visit_linears_mut(&mut |_, l| l.set_quant_inputs(inputs));
        self.quantized_head = self.quantized_head.take().map(|q| q.with_inputs(inputs));
    }

    prompt_encoder_methods!();
}

#[cfg(test)]
#[path = "tests/llama.rs"]
mod tests;
