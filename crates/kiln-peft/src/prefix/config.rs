//! Prefix-tuning hyper-parameters, named as PEFT names them.

use crate::common::PeftCommon;
use serde::{Deserialize, Serialize};

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
