//! Attaching prompt tuning to a model.
use super::config::{PromptTuningConfig, PromptTuningInit};
use crate::trainable::freeze_base;
use crate::{PeftError, Result};
use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_nn::AdapterTarget;
use kiln_nn::adapter::{PromptEmbedding, PromptEncoder};
use kiln_nn::init::{HostRng, normal_param};

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
