//! Gemma 3's text decoder (`Gemma3ForCausalLM` in transformers, `gemma3` in llama.cpp).
//!
//! What sets it apart from the Llama family: embeddings scaled by `√hidden`; RMSNorm with gain
//! `1 + weight`; four norms per block (before and after attention, before and after the MLP);
//! RMSNorm of each query and key head before RoPE; a GeGLU MLP (tanh GELU); attention scaled by
//! `query_pre_attn_scalar^-0.5`; sliding-window layers with their own RoPE base between
//! full-attention layers (one in six); the output head tied to the 262k-row embedding. Field names
//! equal Hugging Face checkpoint keys: `model.layers.{i}.self_attn.q_norm`,
//! `model.layers.{i}.pre_feedforward_layernorm`, ...

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::activation::gelu_approximate;
use burn::tensor::{Device, Int, Tensor, TensorData};

use kiln_nn::AdaptableLinear;
use kiln_nn::adapter::PromptEncoder;
use kiln_nn::init::{HostRng, normal_param};
use kiln_nn::{AdapterTarget, ModelGeometry, QuantizedMatrix};

use crate::adapter::{active_prompt, linear_visitors, prompt_encoder_methods};
use crate::cache::{KvCache, LayerCache};
use crate::export::ExportTensors;
pub use crate::gemma3_config::{FULL_ATTENTION, Gemma3Config, SLIDING_ATTENTION};
use crate::layers::{RotaryEmbedding, grouped_attention};
use crate::mask::{positions_and_bias, positions_and_bias_cached, sliding_window};
use crate::prompt::{prompt_on_cache, virtual_tokens, with_prompt_encoder};
use crate::source::{GgufNames, StrictLoader, TensorSource};
use crate::{CachedCausalLm, CausalLm, LmInput, Result};

/// llama.cpp's names of the Gemma 3 tensors in GGUF files.
pub(crate) const GGUF_NAMES: GgufNames = GgufNames {
    fixed: &[
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
    ],
    layers: "model.layers",
    modules: &[
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("attn_q_norm", "self_attn.q_norm"),
        ("attn_k_norm", "self_attn.k_norm"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
        ("attn_norm", "input_layernorm"),
        ("post_attention_norm", "post_attention_layernorm"),
        ("ffn_norm", "pre_feedforward_layernorm"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ],
};

impl Gemma3Config {
    /// A freshly initialized model (HF's init: `N(0, initializer_range²)` weights, norms at
    /// zero, i.e. unit gain).
    pub fn init(&self, seed: u64, device: &Device) -> Gemma3ForCausalLM {
        Gemma3ForCausalLM::new_random(self, seed, device)
    }
}

/// Gemma's RMSNorm: `x / sqrt(mean(x²) + eps) · (1 + weight)`; the stored weight is the offset
/// from unit gain, as in Hugging Face checkpoints.
///
/// # Shapes
/// `[..., d]` → `[..., d]`
#[derive(Module, Debug)]
pub struct Gemma3RmsNorm {
    /// Gain minus one, `[d]`.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl Gemma3RmsNorm {
    /// A norm from its stored weight (gain minus one).
    pub fn from_values(weight: Vec<f32>, eps: f64, device: &Device) -> Self {
        let d = weight.len();
        Self {
            weight: Param::from_data(TensorData::new(weight, [d]), device),
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
        (x / rms) * self.weight.val().add_scalar(1.0).unsqueeze::<D>()
    }
}

/// Grouped-query self-attention with query/key norms.
#[derive(Module, Debug)]
pub struct Gemma3Attention {
    /// Query projection `[hidden, heads·head_dim]`.
    pub q_proj: AdaptableLinear,
    /// Key projection `[hidden, kv_heads·head_dim]`.
    pub k_proj: AdaptableLinear,
    /// Value projection `[hidden, kv_heads·head_dim]`.
    pub v_proj: AdaptableLinear,
    /// Output projection `[heads·head_dim, hidden]`.
    pub o_proj: AdaptableLinear,
    /// RMSNorm of each query head, `[head_dim]`.
    pub q_norm: Gemma3RmsNorm,
    /// RMSNorm of each key head, `[head_dim]`.
    pub k_norm: Gemma3RmsNorm,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Scores are multiplied by this (`query_pre_attn_scalar^-0.5`).
    pub scaling: f64,
}

impl Gemma3Attention {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`; `cos`/`sin`: `[batch, 1, seq, head_dim]`
    /// - `bias`: additive attention bias `[batch, 1, seq, past + seq]` (0 or a large negative)
    /// - output: `[batch, seq, hidden]`
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
        let q = RotaryEmbedding::apply(self.q_norm.forward(q), cos, sin);
        let k = RotaryEmbedding::apply(self.k_norm.forward(k), cos, sin);
        // [b, kvh, past + t, hd]
        let (k, v) = match cache {
            None => (k, v),
            Some(c) => c.append(k, v),
        };
        let out = grouped_attention(q, k, v, bias, self.scaling);
        self.o_proj.forward(out)
    }
}

/// GeGLU feed-forward: `down(gelu_tanh(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Gemma3Mlp {
    /// Gate projection `[hidden, intermediate]`.
    pub gate_proj: AdaptableLinear,
    /// Up projection `[hidden, intermediate]`.
    pub up_proj: AdaptableLinear,
    /// Down projection `[intermediate, hidden]`.
    pub down_proj: AdaptableLinear,
}

impl Gemma3Mlp {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = gelu_approximate(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

/// One decoder block, norms before and after each half.
#[derive(Module, Debug)]
pub struct Gemma3DecoderLayer {
    /// Attention.
    pub self_attn: Gemma3Attention,
    /// Feed-forward.
    pub mlp: Gemma3Mlp,
    /// Norm before attention.
    pub input_layernorm: Gemma3RmsNorm,
    /// Norm of the attention output.
    pub post_attention_layernorm: Gemma3RmsNorm,
    /// Norm before the MLP.
    pub pre_feedforward_layernorm: Gemma3RmsNorm,
    /// Norm of the MLP output.
    pub post_feedforward_layernorm: Gemma3RmsNorm,
    /// Attends in the sliding window (otherwise to every earlier position).
    pub sliding: bool,
}

impl Gemma3DecoderLayer {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        bias: &Tensor<4>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let attn = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            cos,
            sin,
            bias,
            cache,
        );
        let x = x + self.post_attention_layernorm.forward(attn);
        let mlp = self
            .mlp
            .forward(self.pre_feedforward_layernorm.forward(x.clone()));
        x + self.post_feedforward_layernorm.forward(mlp)
    }
}

/// The decoder stack (`model.*` in checkpoints).
#[derive(Module, Debug)]
pub struct Gemma3TextModel {
    /// Token embedding `[vocab, hidden]` (multiplied by `√hidden` on the way in).
    pub embed_tokens: Embedding,
    /// Decoder blocks.
    pub layers: Vec<Gemma3DecoderLayer>,
    /// Final norm.
    pub norm: Gemma3RmsNorm,
    /// Rotary embedding of the full-attention layers.
    pub rotary_emb: RotaryEmbedding,
    /// Rotary embedding of the sliding-window layers.
    pub rotary_emb_local: RotaryEmbedding,
    /// The sliding window in tokens.
    pub sliding_window: usize,
    /// Positions the model was trained for: the context window.
    pub max_position_embeddings: usize,
}

impl Gemma3TextModel {
    /// The embeddings of `ids`, scaled by `√hidden` (in `f32`, as transformers in `float32`).
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let d = self.embed_tokens.weight.dims()[1];
        self.embed_tokens
            .forward(ids)
            .mul_scalar(f64::from((d as f32).sqrt()))
    }
}

/// A Gemma 3 causal language model (`Gemma3ForCausalLM` in transformers).
#[derive(Module, Debug)]
pub struct Gemma3ForCausalLM {
    /// The decoder stack.
    pub model: Gemma3TextModel,
    /// Logits become `cap · tanh(logits / cap)`; 0 = no cap.
    pub final_logit_softcapping: f64,
    /// Prompt or prefix tuning, applied in every forward pass (PEFT's `prompt_encoder`).
    pub prompt_encoder: Option<PromptEncoder>,
    /// The prompt encoder is bypassed (adapters disabled).
    pub prompt_disabled: bool,
    /// The checkpoint's block-quantized copy of the tied output head, used for small-batch
    /// logits on the CPU.
    #[module(skip)]
    pub quantized_head: Option<QuantizedMatrix>,
}

/// The norms and projections of one block, before assembly.
struct Parts {
    lins: [AdaptableLinear; 7],
    norms: [Gemma3RmsNorm; 6],
}

fn assemble(cfg: &Gemma3Config, layer: usize, parts: Parts) -> Gemma3DecoderLayer {
    let [
        q_proj,
        k_proj,
        v_proj,
        o_proj,
        gate_proj,
        up_proj,
        down_proj,
    ] = parts.lins;
    let [q_norm, k_norm, input, post_attn, pre_ffw, post_ffw] = parts.norms;
    Gemma3DecoderLayer {
        self_attn: Gemma3Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            q_norm,
            k_norm,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            scaling: cfg.query_pre_attn_scalar.powf(-0.5),
        },
        mlp: Gemma3Mlp {
            gate_proj,
            up_proj,
            down_proj,
        },
        input_layernorm: input,
        post_attention_layernorm: post_attn,
        pre_feedforward_layernorm: pre_ffw,
        post_feedforward_layernorm: post_ffw,
        sliding: cfg.is_sliding(layer),
    }
}

/// `(name, d_in, d_out)` of a block's projections, in [`Parts`] order.
fn projections(cfg: &Gemma3Config) -> [(&'static str, usize, usize); 7] {
    let (d, hd, ff) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (h, kvh) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    [
        ("self_attn.q_proj", d, h * hd),
        ("self_attn.k_proj", d, kvh * hd),
        ("self_attn.v_proj", d, kvh * hd),
        ("self_attn.o_proj", h * hd, d),
        ("mlp.gate_proj", d, ff),
        ("mlp.up_proj", d, ff),
        ("mlp.down_proj", ff, d),
    ]
}

/// `(name, width)` of a block's norms, in [`Parts`] order.
fn norms(cfg: &Gemma3Config) -> [(&'static str, usize); 6] {
    let (d, hd) = (cfg.hidden_size, cfg.head_dim);
    [
        ("self_attn.q_norm", hd),
        ("self_attn.k_norm", hd),
        ("input_layernorm", d),
        ("post_attention_layernorm", d),
        ("pre_feedforward_layernorm", d),
        ("post_feedforward_layernorm", d),
    ]
}

impl Gemma3ForCausalLM {
    fn new_random(cfg: &Gemma3Config, seed: u64, device: &Device) -> Self {
        let rng = HostRng::new(seed);
        let std = cfg.initializer_range as f32;
        let eps = cfg.rms_norm_eps;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                let lins = projections(cfg).map(|(name, i, o)| {
                    let mut r = rng.fork(&format!("{p}.{name}"));
                    AdaptableLinear::init_normal(&mut r, i, o, cfg.attention_bias, std, device)
                });
                let norms =
                    norms(cfg).map(|(_, w)| Gemma3RmsNorm::from_values(vec![0.0; w], eps, device));
                assemble(cfg, l, Parts { lins, norms })
            })
            .collect();
        let d = cfg.hidden_size;
        let mut embed_tokens = EmbeddingConfig::new(cfg.vocab_size, d).init(device);
        embed_tokens.weight = normal_param(
            &mut rng.fork("model.embed_tokens"),
            [cfg.vocab_size, d],
            std,
            device,
        );
        Self::from_parts(
            cfg,
            embed_tokens,
            layers,
            Gemma3RmsNorm::from_values(vec![0.0; d], eps, device),
            device,
        )
    }

    fn from_parts(
        cfg: &Gemma3Config,
        embed_tokens: Embedding,
        layers: Vec<Gemma3DecoderLayer>,
        norm: Gemma3RmsNorm,
        device: &Device,
    ) -> Self {
        Self {
            model: Gemma3TextModel {
                embed_tokens,
                layers,
                norm,
                rotary_emb: RotaryEmbedding::new(&cfg.global_inv_freq(), device),
                rotary_emb_local: RotaryEmbedding::new(&cfg.local_inv_freq(), device),
                sliding_window: cfg.sliding_window,
                max_position_embeddings: cfg.max_position_embeddings,
            },
            final_logit_softcapping: cfg.final_logit_softcapping.unwrap_or(0.0),
            prompt_encoder: None,
            prompt_disabled: false,
            quantized_head: None,
        }
    }

    /// Builds the model from a checkpoint's tensors (Hugging Face names), strictly: a missing or
    /// unexpected tensor, or a shape mismatch, is an error naming the tensor.
    ///
    /// # Errors
    /// See above; also unsupported element types.
    pub fn from_source<S: TensorSource + ?Sized>(
        cfg: &Gemma3Config,
        source: &S,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut ld = StrictLoader::new(source);
        let eps = cfg.rms_norm_eps;
        let norm =
            |ld: &mut StrictLoader<'_, S>, name: &str, width: usize| -> Result<Gemma3RmsNorm> {
                let w = ld.take(&format!("{name}.weight"), &[width])?;
                Ok(Gemma3RmsNorm::from_values(w, eps, device))
            };
        // Grown as layers load: the configured count is not trusted with an allocation.
        let mut layers = Vec::new();
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut lins = Vec::with_capacity(7);
            for (name, d_in, d_out) in projections(cfg) {
                let name = format!("{p}.{name}");
                let w = ld.take(&format!("{name}.weight"), &[d_out, d_in])?;
                let b = if cfg.attention_bias && name.contains("self_attn") {
                    Some(ld.take(&format!("{name}.bias"), &[d_out])?)
                } else {
                    None
                };
                lins.push(AdaptableLinear::from_torch(w, d_out, d_in, b, device));
            }
            let mut ns = Vec::with_capacity(6);
            for (name, width) in norms(cfg) {
                ns.push(norm(&mut ld, &format!("{p}.{name}"), width)?);
            }
            let (Ok(lins), Ok(norms)) = (lins.try_into(), ns.try_into()) else {
                unreachable!("seven projections and six norms per block");
            };
            layers.push(assemble(cfg, l, Parts { lins, norms }));
        }
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let emb = ld.take("model.embed_tokens.weight", &[v, d])?;
        let mut embed_tokens = EmbeddingConfig::new(1, 1).init(device);
        embed_tokens.weight = Param::from_data(TensorData::new(emb, [v, d]), device);
        let final_norm = norm(&mut ld, "model.norm", d)?;
        // A tied head some checkpoints repeat; buffers recomputed here.
        ld.finish(&|n| n == "lm_head.weight" || n.ends_with("inv_freq"))?;
        Ok(Self::from_parts(
            cfg,
            embed_tokens,
            layers,
            final_norm,
            device,
        ))
    }

    fn run_layers(
        &self,
        mut x: Tensor<3>,
        positions: Tensor<2, Int>,
        bias: Tensor<4>,
        past: usize,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let global = self.model.rotary_emb.tables(positions.clone());
        let local = self.model.rotary_emb_local.tables(positions);
        let windowed = sliding_window(bias.clone(), past, self.model.sliding_window);
        let mut caches = cache.map(|c| c.layers_mut(self.model.layers.len()));
        for (i, layer) in self.model.layers.iter().enumerate() {
            let lc = caches.as_deref_mut().map(|c| &mut c[i]);
            let ((cos, sin), bias) = if layer.sliding {
                (&local, &windowed)
            } else {
                (&global, &bias)
            };
            x = layer.forward(x, cos, sin, bias, lc);
        }
        self.model.norm.forward(x)
    }

    /// Adds the tensors of a Hugging Face checkpoint of the model, by their checkpoint keys.
    pub(crate) fn export_tensors(&self, out: &mut ExportTensors) {
        out.linears(self);
        out.param("model.embed_tokens.weight", &self.model.embed_tokens.weight);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let attn = &layer.self_attn;
            for (name, norm) in [
                ("self_attn.q_norm", &attn.q_norm),
                ("self_attn.k_norm", &attn.k_norm),
                ("input_layernorm", &layer.input_layernorm),
                ("post_attention_layernorm", &layer.post_attention_layernorm),
                (
                    "pre_feedforward_layernorm",
                    &layer.pre_feedforward_layernorm,
                ),
                (
                    "post_feedforward_layernorm",
                    &layer.post_feedforward_layernorm,
                ),
            ] {
                out.param(format!("{p}.{name}.weight"), &norm.weight);
            }
        }
        out.param("model.norm.weight", &self.model.norm.weight);
    }
}

impl CausalLm for Gemma3ForCausalLM {
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
        let x = self.model.embed(input.input_ids.clone());
        let prompted = with_prompt_encoder(
            active_prompt(&self.prompt_encoder, self.prompt_disabled),
            input,
        );
        let input = prompted.as_ref().unwrap_or(input);
        if input.prefix.is_none() && input.soft_prompt.is_none() {
            let (positions, bias) = positions_and_bias(input, &device);
            return self.run_layers(x, positions, bias, 0, None);
        }
        // Prompt tuning prepends virtual-token embeddings (PEFT does not scale them); prefix
        // tuning supplies per-layer key/value prefixes, which behave like a filled cache.
        let (x, mask, mut cache, n_soft) = virtual_tokens(input, x);
        let [b, t] = input.input_ids.dims();
        let past = cache.len();
        let (positions, bias) =
            positions_and_bias_cached([b, n_soft + t], Some(&mask), past, &device);
        let h = self.run_layers(x, positions, bias, past, (past > 0).then_some(&mut cache));
        h.narrow(1, n_soft, t)
    }

    fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        let logits = match self
            .quantized_head
            .as_ref()
            .and_then(|q| q.try_forward(&hidden))
        {
            Some(y) => y,
            None => crate::causal_lm::tied_logits(self.model.embed_tokens.weight.val(), hidden),
        };
        let cap = self.final_logit_softcapping;
        if cap > 0.0 {
            logits.div_scalar(cap).tanh().mul_scalar(cap)
        } else {
            logits
        }
    }
}

impl CachedCausalLm for Gemma3ForCausalLM {
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
        let x = self.model.embed(input_ids);
        let (x, mask, n_soft) = prompt_on_cache(
            active_prompt(&self.prompt_encoder, self.prompt_disabled),
            x,
            attention_mask,
            cache,
        );
        let past = cache.len();
        let [b, t, _] = x.dims();
        let (positions, bias) = positions_and_bias_cached([b, t], Some(&mask), past, &device);
        let h = self.run_layers(x, positions, bias, past, Some(cache));
        h.narrow(1, n_soft, t - n_soft)
    }
}

impl AdapterTarget for Gemma3ForCausalLM {
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

    fn peft_model_type(&self) -> Option<&str> {
        Some("gemma3_text")
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
