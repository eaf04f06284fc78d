//! Prompt-tuning hyper-parameters, named as PEFT names them.

use crate::common::PeftCommon;
use serde::{Deserialize, Serialize};

/// How the virtual tokens start (PEFT's `prompt_tuning_init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PromptTuningInit {
    /// `N(0, 1)`, as PEFT's `nn.Embedding`.
    #[default]
    Random,
    /// The embeddings of `prompt_tuning_init_text`, repeated or cut to length.
    Text,
    /// Embeddings of tokens drawn uniformly from the vocabulary.
    SampleVocab,
}

/// Prompt-tuning hyper-parameters, named as in PEFT's `PromptTuningConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptTuningConfig {
    /// Fields every PEFT config has.
    #[serde(flatten)]
    pub common: PeftCommon,
    /// Number of virtual tokens.
    pub num_virtual_tokens: usize,
    /// Embedding width (filled in from the model when attached).
    pub token_dim: usize,
    /// Layers of the model (informational, written for PEFT).
    pub num_layers: usize,
    /// Attention heads of the model (informational, written for PEFT).
    pub num_attention_heads: usize,
    /// Always 1 for decoder-only models.
    pub num_transformer_submodules: usize,
    /// Initialization.
    pub prompt_tuning_init: PromptTuningInit,
    /// Text for [`PromptTuningInit::Text`].
    pub prompt_tuning_init_text: Option<String>,
    /// Tokenizer of the init text (informational).
    pub tokenizer_name_or_path: Option<String>,
}

impl Default for PromptTuningConfig {
    fn default() -> Self {
        Self {
            common: PeftCommon::default(),
            num_virtual_tokens: 20,
            token_dim: 0,
            num_layers: 0,
            num_attention_heads: 0,
            num_transformer_submodules: 1,
            prompt_tuning_init: PromptTuningInit::Random,
            prompt_tuning_init_text: None,
            tokenizer_name_or_path: None,
        }
    }
}
