//! [`AdapterTarget`]: what a model exposes so adapters can find its projections.

use burn::tensor::Tensor;

use crate::adapter::PromptEncoder;
use crate::{AdaptableLinear, Result};

/// The sizes prompt-learning methods need from a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelGeometry {
    /// Width of the token embeddings.
    pub hidden_size: usize,
    /// Decoder (or encoder) layers.
    pub num_layers: usize,
    /// Key/value heads per layer.
    pub num_kv_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Rows of the token-embedding table.
    pub vocab_size: usize,
}

/// What a model exposes so PEFT methods can attach to it.
///
/// Paths are the Hugging Face checkpoint paths of the projections (without `.weight`), e.g.
/// `model.layers.0.self_attn.q_proj`, so adapter keys need no renaming table.
pub trait AdapterTarget {
    /// Calls `f` on every linear projection, in checkpoint order, with its path.
    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut AdaptableLinear));

    /// Calls `f` on every linear projection, in checkpoint order, with its path.
    fn visit_linears(&self, f: &mut dyn FnMut(&str, &AdaptableLinear));

    /// Sizes of the model, for prompt and prefix tuning.
    fn geometry(&self) -> ModelGeometry;

    /// The token-embedding table `[vocab, hidden]` (prompt-tuning initialization from text or
    /// sampled vocabulary).
    fn token_embeddings(&self) -> Tensor<2>;

    /// The attached prompt-learning module (prompt or prefix tuning), if any.
    fn prompt_encoder(&self) -> Option<&PromptEncoder>;

    /// Attaches or removes a prompt-learning module; the model's forward pass then uses it.
    fn set_prompt_encoder(&mut self, encoder: Option<PromptEncoder>);

    /// The Hugging Face `model_type` where PEFT's default targets for it differ from those its
    /// projection names imply (Gemma 3's `gemma3_text`); `None` otherwise.
    fn peft_model_type(&self) -> Option<&str> {
        None
    }

    /// Whether the model has biases outside its linear projections (e.g. LayerNorm biases),
    /// which LoRA's `bias = "all"` would train in PEFT.
    fn has_other_biases(&self) -> bool {
        false
    }

    /// Drops every block-quantized copy of a base weight (see [`AdaptableLinear::set_quantized`]),
    /// before the base weights change. Models that keep other quantized tables (a tied output
    /// head) drop those too.
    fn clear_quantized(&mut self) {
        self.visit_linears_mut(&mut |_, l| {
            l.set_quantized(None)
                .expect("removing the quantized weight cannot fail");
        });
    }

    /// Sets how every block-quantized matrix treats its input rows (see
    /// [`QuantizedMatrix::with_inputs`](crate::QuantizedMatrix::with_inputs)): 16-bit inputs
    /// by default, or 8-bit ones as llama.cpp computes. Models that keep other quantized tables
    /// (a tied output head) set those too.
    fn set_quant_inputs(&mut self, inputs: crate::Inputs) {
        self.visit_linears_mut(&mut |_, l| l.set_quant_inputs(inputs));
    }

    /// The paths of all projections, in checkpoint order.
    fn linear_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit_linears(&mut |p, _| out.push(p.to_string()));
        out
    }

    /// Merges LoRA/DoRA/IA3 into the base weights of every projection.
    ///
    /// # Errors
    /// See [`AdaptableLinear::merge`].
    fn merge_adapters(&mut self) -> Result<()> {
        let mut res = Ok(());
        self.visit_linears_mut(&mut |_, l| {
            if res.is_ok() {
                res = l.merge();
            }
        });
        res
    }

    /// Undoes [`merge_adapters`](Self::merge_adapters).
    ///
    /// # Errors
    /// See [`AdaptableLinear::unmerge`].
    fn unmerge_adapters(&mut self) -> Result<()> {
        let mut res = Ok(());
        self.visit_linears_mut(&mut |_, l| {
            if res.is_ok() {
                res = l.unmerge();
            }
        });
        res
    }

    /// Turns every adapter on or off (base-model outputs while off); prompt encoders are kept
    /// but only applied while enabled by the model's forward pass.
    fn set_adapters_enabled(&mut self, enabled: bool) {
        self.visit_linears_mut(&mut |_, l| l.set_adapters_enabled(enabled));
    }

    /// Removes every adapter and prompt encoder, giving back the base model.
    ///
    /// # Errors
    /// See [`AdaptableLinear::unmerge`].
    fn remove_adapters(&mut self) -> Result<()> {
        let mut res = Ok(());
        self.visit_linears_mut(&mut |_, l| {
            if res.is_ok() {
                res = l.remove_adapters();
            }
        });
        self.set_prompt_encoder(None);
        res
    }
}

/// The layer index in a projection path (`model.layers.3.mlp.up_proj` → 3,
/// `transformer.h.1.attn.c_attn` → 1): the first purely numeric path component.
pub fn layer_index(path: &str) -> Option<usize> {
    path.split('.').find_map(|c| c.parse().ok())
}
