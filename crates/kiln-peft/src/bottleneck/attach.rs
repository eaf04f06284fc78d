//! Attaching bottleneck adapters to a model's projections.
use super::config::BottleneckConfig;
use crate::matching::{TargetMatcher, finish_attach};
use crate::trainable::freeze_base;
use crate::{PeftError, Result};
use burn::module::Module;
use burn::tensor::Device;
use kiln_nn::AdapterTarget;
use kiln_nn::adapter::BottleneckLayer;
use kiln_nn::init::HostRng;

/// Freezes the base model and attaches fresh bottleneck adapters. Returns the model and the
/// adapted paths.
///
/// # Errors
/// `reduction_factor` 0, or targets that match nothing.
pub fn attach_bottleneck<M: AdapterTarget + Module>(
    model: M,
    config: &BottleneckConfig,
    seed: u64,
    device: &Device,
) -> Result<(M, Vec<String>)> {
    if config.reduction_factor == 0 {
        return Err(PeftError::InvalidConfig {
            field: "reduction_factor".into(),
            reason: "must be at least 1".into(),
        });
    }
    let targets = config.targets(&model.linear_paths());
    let matcher = TargetMatcher::new(&targets)?;
    let mut model = freeze_base(model);
    let root = HostRng::new(seed);
    let mut adapted = Vec::new();
    model.visit_linears_mut(&mut |path, l| {
        if matcher.matches(path) {
            let d = l.d_out();
            let hidden = (d / config.reduction_factor).max(1);
            let mut rng = root.fork(path);
            l.bottleneck = Some(BottleneckLayer::new(
                &mut rng,
                d,
                hidden,
                config.non_linearity,
                config.init_std as f32,
                device,
            ));
            adapted.push(path.to_string());
        }
    });
    finish_attach(model, adapted, targets, config.modules_to_save.as_deref())
}
