//! IA3: learned rescaling of activations (Liu et al., 2022, "(IA)³").
//!
//! Keys and values (and other non-feed-forward targets) are scaled on their output,
//! `y = (x·W + b) ⊙ l`; feed-forward targets on their input, `y = (x ⊙ l)·W + b`. Vectors start
//! at one, so a fresh adapter leaves the model unchanged.

mod layer;

pub use layer::Ia3Layer;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::config::PeftCommon;
use crate::lora::TargetMatcher;
use crate::target::{AdapterTarget, freeze_base, train_modules_to_save};
use crate::{PeftError, Result};

/// IA3 hyper-parameters, named as in PEFT's `IA3Config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ia3Config {
    /// Fields every PEFT config has.
    #[serde(flatten)]
    pub common: PeftCommon,
    /// Projections to scale (names, one regex, or `all-linear`). `None`: the architecture's
    /// default (PEFT's: Llama `k_proj, v_proj, down_proj`; GPT-2 `c_attn, mlp.c_proj`).
    #[serde(with = "crate::config::targets_serde::option")]
    pub target_modules: Option<Vec<String>>,
    /// The subset of targets scaled on their input. `None`: the architecture's default.
    #[serde(with = "crate::config::targets_serde::option")]
    pub feedforward_modules: Option<Vec<String>>,
    /// Projections trained fully and saved whole.
    pub modules_to_save: Option<Vec<String>>,
    /// Written for PEFT: whether the targets store weights `[in, out]` (GPT-2).
    pub fan_in_fan_out: bool,
    /// PEFT's flag: vectors start at one.
    pub init_ia3_weights: bool,
}

impl Default for Ia3Config {
    fn default() -> Self {
        Self {
            common: PeftCommon::default(),
            target_modules: None,
            feedforward_modules: None,
            modules_to_save: None,
            fan_in_fan_out: false,
            init_ia3_weights: true,
        }
    }
}

/// PEFT's default IA3 targets for an architecture, guessed from its projection names:
/// `(target_modules, feedforward_modules)`.
fn defaults(paths: &[String]) -> (Vec<String>, Vec<String>) {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    if paths.iter().any(|p| p.ends_with(".attn.c_attn")) {
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
    let (def_t, def_ff) = defaults(&model.linear_paths());
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
    if adapted.is_empty() {
        return Err(PeftError::NoTargetMatched {
            targets,
            available: model.linear_paths().join(", "),
        });
    }
    let model = train_modules_to_save(model, config.modules_to_save.as_deref())?;
    Ok((model, adapted))
}
