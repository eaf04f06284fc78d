//! Attaching prefix tuning to a model.
use super::config::PrefixTuningConfig;
use crate::trainable::freeze_base;
use crate::{PeftError, Result};
use burn::module::Module;
use burn::tensor::Device;
use kiln_nn::AdapterTarget;
use kiln_nn::adapter::{PrefixEncoder, PrefixMlp, PromptEncoder};
use kiln_nn::init::{HostRng, const_param, normal_param, uniform_param};

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
