//! Prompt tuning (Lester et al., 2021): learned virtual-token embeddings prepended to the input.
//!
//! Also home of [`PromptEncoder`], the prompt-learning module a model holds (prompt or prefix
//! tuning) and applies in its forward pass.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::PeftCommon;
use crate::init::{HostRng, normal_param};
use crate::prefix::PrefixEncoder;
use crate::target::{AdapterTarget, freeze_base};
use crate::{PeftError, Result};

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

/// Freezes the base model and attaches prompt tuning. `init_ids` are the token ids of
/// `prompt_tuning_init_text` (required for [`PromptTuningInit::Text`]; kiln-peft does not
/// tokenize). Returns the model and the config with the model's sizes filled in.
///
/// # Errors
/// `num_virtual_tokens` 0, or text initialization without ids.
pub fn attach_prompt_tuning<M: AdapterTarget + Module>(
    model: M,
    config: &PromptTuningConfig,
    init_ids: Option<&[u32]>,
    seed: u64,
    device: &Device,
) -> Result<(M, PromptTuningConfig)> {
    let n = config.num_virtual_tokens;
    if n == 0 {
        return Err(PeftError::InvalidConfig {
            field: "num_virtual_tokens".into(),
            reason: "must be at least 1".into(),
        });
    }
    let mut model = freeze_base(model);
    let g = model.geometry();
    let mut rng = HostRng::new(seed).fork("prompt_embeddings");
    let embedding = match config.prompt_tuning_init {
        PromptTuningInit::Random => normal_param(&mut rng, [n, g.hidden_size], 1.0, device),
        PromptTuningInit::Text | PromptTuningInit::SampleVocab => {
            let ids: Vec<u32> = if config.prompt_tuning_init == PromptTuningInit::Text {
                let ids =
                    init_ids
                        .filter(|i| !i.is_empty())
                        .ok_or_else(|| PeftError::InvalidConfig {
                            field: "prompt_tuning_init_text".into(),
                            reason: "TEXT initialization needs the token ids of a non-empty text"
                                .into(),
                        })?;
                ids.iter().copied().cycle().take(n).collect()
            } else {
                (0..n)
                    .map(|_| (rng.next_u64() % g.vocab_size as u64) as u32)
                    .collect()
            };
            if let Some(&bad) = ids.iter().find(|&&i| i as usize >= g.vocab_size) {
                return Err(PeftError::InvalidConfig {
                    field: "prompt_tuning_init_text".into(),
                    reason: format!(
                        "token id {bad} is outside the vocabulary ({})",
                        g.vocab_size
                    ),
                });
            }
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(ids.iter().map(|&i| i64::from(i)).collect(), [n]),
                device,
            );
            let rows = model.token_embeddings().select(0, idx).detach();
            Param::from_tensor(rows)
        }
    };
    model.set_prompt_encoder(Some(PromptEncoder::Prompt(PromptEmbedding { embedding })));
    let mut config = config.clone();
    config.token_dim = g.hidden_size;
    config.num_layers = g.num_layers;
    config.num_attention_heads = g.num_kv_heads;
    Ok((model, config))
}
