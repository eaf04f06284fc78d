use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor};

/// The inputs of a causal language model forward pass.
///
/// # Shapes
/// - `input_ids`: `[batch, seq]`
/// - `attention_mask`: `[batch, seq]`, 1 for real tokens and 0 for padding
/// - `position_ids`: `[batch, seq]`; when absent, positions count real tokens from 0 (left padding
///   is handled)
#[derive(Debug, Clone)]
pub struct LmInput {
    /// Token ids.
    pub input_ids: Tensor<2, Int>,
    /// Padding mask (1 = attend).
    pub attention_mask: Option<Tensor<2, Int>>,
    /// Explicit positions (e.g. for packed rows).
    pub position_ids: Option<Tensor<2, Int>>,
    /// Virtual-token embeddings prepended to the token embeddings, `[batch, n_virtual, hidden]`
    /// (prompt tuning). Hidden states are returned for the real tokens only.
    pub soft_prompt: Option<Tensor<3>>,
    /// Per-layer key/value prefixes, `[batch, kv_heads, n_prefix, head_dim]` each (prefix
    /// tuning). Every query may attend to them; real tokens take positions `n_prefix..`.
    pub prefix: Option<Vec<(Tensor<4>, Tensor<4>)>>,
    /// Packed rows: example number per token, `[batch, seq]`; attention stays within an
    /// example (block-diagonal causal mask). Use with explicit `position_ids`.
    pub segment_ids: Option<Tensor<2, Int>>,
}

impl LmInput {
    /// Inputs with no padding and default positions.
    pub fn new(input_ids: Tensor<2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask: None,
            position_ids: None,
            soft_prompt: None,
            prefix: None,
            segment_ids: None,
        }
    }

    /// Marks packed examples: attention only within equal segment ids.
    pub fn with_segment_ids(mut self, segment_ids: Tensor<2, Int>) -> Self {
        self.segment_ids = Some(segment_ids);
        self
    }

    /// Adds a padding mask.
    pub fn with_attention_mask(mut self, mask: Tensor<2, Int>) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// Prepends virtual-token embeddings `[batch, n_virtual, hidden]`.
    pub fn with_soft_prompt(mut self, embeddings: Tensor<3>) -> Self {
        self.soft_prompt = Some(embeddings);
        self
    }

    /// Adds per-layer key/value prefixes.
    pub fn with_prefix(mut self, prefix: Vec<(Tensor<4>, Tensor<4>)>) -> Self {
        self.prefix = Some(prefix);
        self
    }

    /// Adds explicit position ids.
    pub fn with_position_ids(mut self, position_ids: Tensor<2, Int>) -> Self {
        self.position_ids = Some(position_ids);
        self
    }
}

/// A decoder-only language model, as the training and evaluation code sees it.
///
/// The split between [`CausalLm::forward_hidden`] and [`CausalLm::logits`] lets a loss compute the
/// vocabulary projection only at positions that carry a label.
pub trait CausalLm {
    /// Vocabulary size (rows of the output projection).
    fn vocab_size(&self) -> usize;

    /// Width of the final hidden states.
    fn hidden_size(&self) -> usize;

    /// The device the weights live on.
    fn device(&self) -> burn::tensor::Device;

    /// Final (normalized) hidden states, `[batch, seq, hidden]`.
    fn forward_hidden(&self, input: &LmInput) -> Tensor<3>;

    /// Projects hidden states `[n, hidden]` to logits `[n, vocab]`.
    fn logits(&self, hidden: Tensor<2>) -> Tensor<2>;

    /// The most tokens one sequence may hold (virtual tokens of an adapter excluded), for
    /// models with learned positions (GPT-2); `None` where positions are computed (rotary).
    /// Longer input makes [`CausalLm::forward_hidden`] panic: check before.
    fn max_positions(&self) -> Option<usize> {
        None
    }

    /// Logits for every position, `[batch, seq, vocab]`.
    fn forward(&self, input: &LmInput) -> Tensor<3> {
        let h = self.forward_hidden(input);
        let [b, t, d] = h.dims();
        self.logits(h.reshape([b * t, d]))
            .reshape([b, t, self.vocab_size()])
    }

    /// The summed next-token cross-entropy of `batch` times `step.scale`, and the gradients of
    /// the trainable parameters, from the model's own fused CPU training step, or `None` when
    /// the model has none for its configuration or device. Trainers call this first and build
    /// the Burn graph only on `None`; both give the same loss and gradients (to float rounding).
    fn fused_loss_grads(
        &self,
        batch: &HostBatch,
        step: FusedStep,
    ) -> Option<(f64, GradientsParams)> {
        let _ = (batch, step);
        None
    }
}

/// Settings of one [`CausalLm::fused_loss_grads`] call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedStep {
    /// Factor on the summed loss, and so on the gradients (1 / the step's labelled tokens).
    pub scale: f32,
    /// Gradient checkpointing: each layer keeps only its input during the forward pass and
    /// recomputes its activations in the backward pass (less memory, one more forward pass).
    pub recompute: bool,
}

/// A training batch on the host, for [`CausalLm::fused_loss_grads`].
///
/// # Shapes
/// Every field is `[batch · seq]`, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBatch {
    /// Rows.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// The position of each token (restarting per example in packed rows).
    pub positions: Vec<u32>,
    /// Attention segment of each token: a token attends the earlier tokens of its own segment.
    /// Padding takes a segment of its own ([`HostBatch::PAD_SEGMENT`]).
    pub segments: Vec<u32>,
    /// The label of the *next* token of each position, or a negative value where no loss is
    /// taken.
    pub targets: Vec<i64>,
}

impl HostBatch {
    /// The segment of padding tokens, which no real token attends.
    pub const PAD_SEGMENT: u32 = u32::MAX;

    /// Positions that carry a label.
    pub fn num_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t >= 0).count()
    }
}

/// A causal language model that decodes incrementally with a key/value cache.
pub trait CachedCausalLm: CausalLm + Sync {
    /// The cache type.
    type Cache: Send;

    /// An empty cache.
    fn new_cache(&self) -> Self::Cache;

    /// How many token positions a prompt and its continuation may fill together (the context
    /// window, less any virtual tokens of an active prompt encoder), or `None` without a limit.
    fn max_context(&self) -> Option<usize> {
        None
    }

    /// A decoder over host buffers for `capacity.len()` sequences of up to `capacity[i]`
    /// positions each (prompt and continuation), or `None` when the model has none for its
    /// configuration or device. [`generate`](crate::generate()) prefers it to
    /// [`forward_cached`](Self::forward_cached); both compute the same logits up to float
    /// rounding.
    fn host_decoder(&self, capacity: &[usize]) -> Option<Box<dyn HostDecoder + '_>> {
        let _ = capacity;
        None
    }

    /// A [`host_decoder`](Self::host_decoder) of this model (the base, no adapter active) that
    /// also holds `adapters` resident: each is this model with one unmerged LoRA adapter
    /// attached (the base weights shared). A sequence picks its adapter with
    /// [`HostDecoder::restart`], and sequences of different adapters decode in one step, each
    /// row adding its own adapter's update to the shared base projections. `None` when the
    /// model has no host decoder, or an adapter is anything but plain LoRA.
    fn multi_adapter_decoder(
        &self,
        adapters: &[&Self],
        capacity: &[usize],
    ) -> Option<Box<dyn HostDecoder + '_>> {
        let _ = (adapters, capacity);
        None
    }

    /// Runs `input_ids [batch, new]` after everything already in `cache`, appending to it.
    /// `attention_mask [batch, past + new]` covers all positions (1 = real, 0 = padding).
    /// Returns the final hidden states of the new positions, `[batch, new, hidden]`.
    fn forward_cached(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        cache: &mut Self::Cache,
    ) -> Tensor<3>;
}

/// Incremental decoding over host buffers, with a key/value cache per sequence (see
/// [`CachedCausalLm::host_decoder`]). Sequences need no padding: each keeps its own length.
pub trait HostDecoder: Send {
    /// Runs `tokens[i]` after everything sequence `i` has seen so far (nothing for an empty
    /// list) and returns the logits of the last new token of each sequence given tokens, in
    /// sequence order.
    ///
    /// # Shapes
    /// - `tokens`: one list per sequence; output: `[sequences with tokens, vocab]`
    fn step(&mut self, tokens: &[&[u32]]) -> Vec<f32>;

    /// How many sequences the decoder holds.
    fn sequences(&self) -> usize;

    /// How many resident adapters it holds
    /// ([`CachedCausalLm::multi_adapter_decoder`]; 0 otherwise).
    fn adapters(&self) -> usize;

    /// Empties sequence `seq` (its cache memory kept) for a new sequence decoded with resident
    /// adapter `adapter` (`None`: the model as loaded). Continuous batching restarts a
    /// finished sequence's slot for the next request.
    ///
    /// # Panics
    /// When `seq` or `adapter` is out of range.
    fn restart(&mut self, seq: usize, adapter: Option<usize>);
}

/// Logits through an output head tied to the `[vocab, hidden]` embedding table `table`.
///
/// Up to [`QUANTIZED_MAX_ROWS`](kiln_nn::quant::QUANTIZED_MAX_ROWS) rows (decoding) take `E·hᵀ`, which reads the table in its stored order. More rows
/// (prefill, training, evaluation) take `h·Eᵀ`, whose `[rows, vocab]` result is contiguous, so
/// the softmax that follows reduces along contiguous memory.
///
/// # Shapes
/// - `table`: `[vocab, hidden]`; `hidden`: `[rows, hidden]`; output: `[rows, vocab]`
pub(crate) fn tied_logits(table: Tensor<2>, hidden: Tensor<2>) -> Tensor<2> {
    if hidden.dims()[0] <= kiln_nn::quant::QUANTIZED_MAX_ROWS {
        table.matmul(hidden.transpose()).transpose()
    } else {
        hidden.matmul(table.transpose())
    }
}
