//! GPT-2 (`GPT2LMHeadModel` in transformers).
//!
//! Learned absolute position embeddings, pre-norm blocks with LayerNorm, fused q/k/v projection
//! (`c_attn`), a GELU MLP and an output head tied to the token embedding. Field names equal
//! Hugging Face checkpoint keys: `transformer.h.{i}.attn.c_attn`, `transformer.ln_f`, ...
//!
//! GPT-2's projections are `Conv1D` layers whose weights are stored `[in, out]` (what PEFT calls
//! `fan_in_fan_out`); they load into [`AdaptableLinear`] without a transpose.
//!
//! The configuration ([`Gpt2Config`]) is in `gpt2_config.rs`, as transformers'
//! `configuration_gpt2.py`; [`LayerNorm`] is shared with BERT (`layers.rs`).

use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use kiln_nn::AdaptableLinear;
use kiln_nn::adapter::PromptEncoder;
use kiln_nn::init::{HostRng, normal_param};
use kiln_nn::{AdapterTarget, ModelGeometry};

use crate::adapter::{active_prompt, linear_visitors, prompt_encoder_methods};
use crate::cache::{KvCache, LayerCache};
use crate::export::ExportTensors;
pub use crate::gpt2_config::{Gpt2Activation, Gpt2Config};
pub use crate::layers::LayerNorm;
use crate::layers::embedding;
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

impl Gpt2LMHeadModel {
    pub(crate) fn new_random(cfg: &Gpt2Config, seed: u64, device: &Device) -> Self {
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
        // Grown as layers load: the configured count is not trusted with an allocation.
        let mut h = Vec::new();
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
