//! Attaching IA3 vectors to a model's projections.

use super::config::Ia3Config;
use crate::matching::{TargetMatcher, finish_attach};
use crate::trainable::freeze_base;
use crate::{PeftError, Result};
use burn::module::Module;
use burn::tensor::Device;
use kiln_nn::AdapterTarget;
use kiln_nn::adapter::Ia3Layer;

/// PEFT's default IA3 targets for an architecture, from its model type where that decides, or
/// guessed from its projection names: `(target_modules, feedforward_modules)`.
fn defaults(model_type: Option<&str>, paths: &[String]) -> (Vec<String>, Vec<String>) {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    if model_type.is_some_and(|t| t.starts_with("gemma")) {
        (s(&["q_proj", "v_proj", "down_proj"]), s(&["down_proj"]))
    } else if paths.iter().any(|p| p.ends_with(".attn.c_attn")) {
        (s(&["c_attn", "mlp.c_proj"]), s(&["mlp.c_proj"]))
    } else if paths.iter().any(|p| p.ends_with(".attention.self.query")) {
        (s(&["key", "value", "output.dense"]), s(&["output.dense"]))
    } else {
        (s(&["k_proj", "v_proj", "down_proj"]), s(&["down_proj"]))
    }
}

/// Freezes the base model and attaches IA3 vectors (all ones) to the target projections.
/// Returns the model and the adapted paths.
///
/// # Errors
/// Targets that match nothing, a feed-forward module that is not a target, or a projection that
/// already holds LoRA/IA3.
pub fn attach_ia3<M: AdapterTarget + Module>(
    model: M,
    config: &Ia3Config,
    device: &Device,
) -> Result<(M, Vec<String>)> {
    let (def_t, def_ff) = defaults(model.peft_model_type(), &model.linear_paths());
    let targets = config.target_modules.clone().unwrap_or(def_t);
    let ff = config.feedforward_modules.clone().unwrap_or(def_ff);
    let t_match = TargetMatcher::new(&targets)?;
    let ff_match = TargetMatcher::new(&ff)?;
    let mut model = freeze_base(model);
    let mut adapted = Vec::new();
    let mut bad = None;
    model.visit_linears_mut(&mut |path, l| {
        let is_ff = ff_match.matches(path);
        if !t_match.matches(path) {
            if is_ff {
                bad.get_or_insert_with(|| PeftError::InvalidConfig {
                    field: "feedforward_modules".into(),
                    reason: format!("`{path}` is a feed-forward module but not a target"),
                });
            }
            return;
        }
        if l.lora.is_some() || l.ia3.is_some() {
            bad.get_or_insert_with(|| PeftError::AdapterConflict { path: path.into() });
            return;
        }
        l.ia3 = Some(Ia3Layer::ones(
            if is_ff { l.d_in() } else { l.d_out() },
            is_ff,
            device,
        ));
        adapted.push(path.to_string());
    });
    if let Some(e) = bad {
        return Err(e);
    }
    finish_attach(model, adapted, targets, config.modules_to_save.as_deref())
}
