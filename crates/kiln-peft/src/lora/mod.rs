//! LoRA: Low-Rank Adaptation (Hu et al., 2021), with rsLoRA scaling.
//!
//! `y = x·W + (dropout(x)·A·B)·s` where `A: [d_in, r]`, `B: [r, d_out]` and
//! `s = lora_alpha / r` (or `lora_alpha / sqrt(r)` with rsLoRA). `B` starts at zero, so a fresh
//! adapter leaves the model's output unchanged.

mod config;
mod layer;

pub use config::LoraConfig;
pub use layer::LoraLayer;

use burn::module::Module;
use burn::tensor::Device;

use crate::init::HostRng;
use crate::target::AdapterTarget;
use crate::{PeftError, Result};

/// Freezes the model's base weights and attaches a fresh LoRA adapter to every projection that
/// `config.target_modules` selects. Returns the model and the names of the adapted projections.
///
/// # Errors
/// An invalid configuration, or targets that match no projection of the model.
pub fn attach_lora<M: AdapterTarget + Module>(
    model: M,
    config: &LoraConfig,
    seed: u64,
    device: &Device,
) -> Result<(M, Vec<String>)> {
    config.validate()?;
    let matcher = config.matcher()?;
    let mut model = model.no_grad();
    let root = HostRng::new(seed);
    let mut adapted = Vec::new();
    let mut seen = Vec::new();
    model.visit_linears_mut(&mut |path, linear| {
        seen.push(path.to_string());
        if matcher.matches(path) {
            let mut rng = root.fork(path);
            linear.lora = Some(config.init_layer(&mut rng, linear.d_in(), linear.d_out(), device));
            adapted.push(path.to_string());
        }
    });
    if adapted.is_empty() {
        let available = seen.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        return Err(PeftError::NoTargetMatched {
            targets: config.target_modules.clone(),
            available,
        });
    }
    Ok((model, adapted))
}
