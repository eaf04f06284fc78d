//! Prompt-learning modules a model holds and applies in its forward pass: learned virtual-token
//! embeddings (prompt tuning) and per-layer key/value prefixes (prefix tuning).

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::tanh;
use burn::tensor::module::linear;

/// Learned virtual-token embeddings.
///
/// # Shapes
/// - `embedding`: `[num_virtual_tokens, hidden]` (PEFT's `prompt_embeddings`)
/// - [`forward`](Self::forward): `[batch, num_virtual_tokens, hidden]`
#[derive(Module, Debug)]
pub struct PromptEmbedding {
    /// The virtual tokens.
    pub embedding: Param<Tensor<2>>,
}

impl PromptEmbedding {
    /// The virtual tokens for a batch.
    pub fn forward(&self, batch: usize) -> Tensor<3> {
        let [n, h] = self.embedding.dims();
        self.embedding.val().unsqueeze::<3>().expand([batch, n, h])
    }
}

/// The prompt-learning module a model holds and applies in its forward pass.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one value per model
pub enum PromptEncoder {
    /// Prompt tuning: virtual tokens prepended to the input embeddings.
    Prompt(PromptEmbedding),
    /// Prefix tuning: learned key/value prefixes in every attention layer.
    Prefix(PrefixEncoder),
}

impl PromptEncoder {
    /// Number of virtual tokens.
    pub fn num_virtual_tokens(&self) -> usize {
        match self {
            Self::Prompt(p) => p.embedding.dims()[0],
            Self::Prefix(p) => p.num_virtual_tokens(),
        }
    }

    /// The saved form, PEFT's `prompt_embeddings`: `[n, hidden]` for prompt tuning,
    /// `[n, layers·2·kv_dim]` for prefix tuning (after the reparameterization MLP, if any).
    pub fn prompt_embeddings(&self) -> Tensor<2> {
        match self {
            Self::Prompt(p) => p.embedding.val(),
            Self::Prefix(p) => p.table(),
        }
    }
}

/// The reparameterization MLP: `tanh(x·W1 + b1)·W2 + b2`.
#[derive(Module, Debug)]
pub struct PrefixMlp {
    /// `[token_dim, encoder_hidden]`.
    pub w1: Param<Tensor<2>>,
    /// `[encoder_hidden]`.
    pub b1: Param<Tensor<1>>,
    /// `[encoder_hidden, layers·2·token_dim]`.
    pub w2: Param<Tensor<2>>,
    /// `[layers·2·token_dim]`.
    pub b2: Param<Tensor<1>>,
}

/// Learned per-layer key/value prefixes.
///
/// # Shapes
/// - `embedding`: `[n, layers·2·kv_dim]`, or `[n, kv_dim]` with a `transform`
/// - [`past`](Self::past): per layer `(keys, values)`, each `[batch, kv_heads, n, head_dim]`
#[derive(Module, Debug)]
pub struct PrefixEncoder {
    /// The prefix table (or the MLP's input).
    pub embedding: Param<Tensor<2>>,
    /// Optional reparameterization MLP.
    pub transform: Option<PrefixMlp>,
    /// Layers.
    pub num_layers: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
}

impl PrefixEncoder {
    /// Number of virtual tokens.
    pub fn num_virtual_tokens(&self) -> usize {
        self.embedding.dims()[0]
    }

    /// The effective table `[n, layers·2·kv_dim]`.
    pub fn table(&self) -> Tensor<2> {
        match &self.transform {
            None => self.embedding.val(),
            Some(m) => {
                let h = tanh(linear(self.embedding.val(), m.w1.val(), Some(m.b1.val())));
                linear(h, m.w2.val(), Some(m.b2.val()))
            }
        }
    }

    /// Per-layer key/value prefixes for a batch.
    pub fn past(&self, batch: usize) -> Vec<(Tensor<4>, Tensor<4>)> {
        let (l, kvh, hd) = (self.num_layers, self.num_kv_heads, self.head_dim);
        let n = self.num_virtual_tokens();
        // [n, L·2·kvh·hd] -> [L·2, kvh, n, hd]
        let t = self
            .table()
            .reshape([n, l * 2, kvh, hd])
            .permute([1, 2, 0, 3]);
        (0..l)
            .map(|i| {
                let pick = |j: usize| t.clone().narrow(0, j, 1).expand([batch, kvh, n, hd]);
                (pick(2 * i), pick(2 * i + 1))
            })
            .collect()
    }
}
