//! Prefix tuning (Li & Liang, 2021): learned key/value prefixes in every attention layer.
//!
//! The prefix is one table `[n, layers·2·kv_dim]` (PEFT's `prompt_embeddings`), viewed as
//! `[n, layers·2, kv_heads, head_dim]`; layer `i` takes rows `2i` (keys) and `2i + 1` (values).
//! With grouped-query attention `kv_dim = kv_heads·head_dim`. During training an optional MLP
//! (`prefix_projection`) reparameterizes the table; it is folded away when saved.

use burn::module::{Module, Param};
use burn::tensor::activation::tanh;
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::PeftCommon;
use crate::init::{HostRng, const_param, normal_param, uniform_param};
use crate::prompt::PromptEncoder;
use crate::target::{AdapterTarget, freeze_base};
use crate::{PeftError, Result};

/// Prefix-tuning hyper-parameters, named as in PEFT's `PrefixTuningConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrefixTuningConfig {
    /// Fields every PEFT config has.
    #[serde(flatten)]
    pub common: PeftCommon,
    /// Number of virtual tokens.
    pub num_virtual_tokens: usize,
    /// Key/value width per layer, `kv_heads·head_dim` (filled in from the model).
    pub token_dim: usize,
    /// Layers (filled in from the model).
    pub num_layers: usize,
    /// Key/value heads (filled in from the model).
    pub num_attention_heads: usize,
    /// Always 1 for decoder-only models.
    pub num_transformer_submodules: usize,
    /// Reparameterize the prefix with an MLP during training.
    pub prefix_projection: bool,
    /// Hidden width of that MLP.
    pub encoder_hidden_size: usize,
}

impl Default for PrefixTuningConfig {
    fn default() -> Self {
        Self {
            common: PeftCommon::default(),
            num_virtual_tokens: 20,
            token_dim: 0,
            num_layers: 0,
            num_attention_heads: 0,
            num_transformer_submodules: 1,
            prefix_projection: false,
            encoder_hidden_size: 0,
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

/// Freezes the base model and attaches prefix tuning. Returns the model and the config with the
/// model's sizes filled in.
///
/// # Errors
/// `num_virtual_tokens` 0, or `prefix_projection` without `encoder_hidden_size`.
pub fn attach_prefix_tuning<M: AdapterTarget + Module>(
    model: M,
    config: &PrefixTuningConfig,
    seed: u64,
    device: &Device,
) -> Result<(M, PrefixTuningConfig)> {
    let n = config.num_virtual_tokens;
    if n == 0 {
        return Err(PeftError::InvalidConfig {
            field: "num_virtual_tokens".into(),
            reason: "must be at least 1".into(),
        });
    }
    if config.prefix_projection && config.encoder_hidden_size == 0 {
        return Err(PeftError::InvalidConfig {
            field: "encoder_hidden_size".into(),
            reason: "must be set with prefix_projection".into(),
        });
    }
    let mut model = freeze_base(model);
    let g = model.geometry();
    let kv_dim = g.num_kv_heads * g.head_dim;
    let out = g.num_layers * 2 * kv_dim;
    let mut rng = HostRng::new(seed).fork("prefix");
    let encoder = if config.prefix_projection {
        let e = config.encoder_hidden_size;
        let b1 = 1.0 / (kv_dim as f32).sqrt();
        let b2 = 1.0 / (e as f32).sqrt();
        PrefixEncoder {
            embedding: normal_param(&mut rng, [n, kv_dim], 1.0, device),
            transform: Some(PrefixMlp {
                w1: uniform_param(&mut rng, [kv_dim, e], b1, device),
                b1: const_param([e], 0.0, device),
                w2: uniform_param(&mut rng, [e, out], b2, device),
                b2: const_param([out], 0.0, device),
            }),
            num_layers: g.num_layers,
            num_kv_heads: g.num_kv_heads,
            head_dim: g.head_dim,
        }
    } else {
        PrefixEncoder {
            embedding: normal_param(&mut rng, [n, out], 1.0, device),
            transform: None,
            num_layers: g.num_layers,
            num_kv_heads: g.num_kv_heads,
            head_dim: g.head_dim,
        }
    };
    model.set_prompt_encoder(Some(PromptEncoder::Prefix(encoder)));
    let mut config = config.clone();
    config.token_dim = kv_dim;
    config.num_layers = g.num_layers;
    config.num_attention_heads = g.num_kv_heads;
    Ok((model, config))
}
