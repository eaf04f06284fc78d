//! IA3 hyper-parameters, named as PEFT names them.

use crate::common::PeftCommon;
use serde::{Deserialize, Serialize};

/// IA3 hyper-parameters, named as in PEFT's `IA3Config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ia3Config {
    /// Fields every PEFT config has.
    #[serde(flatten)]
    pub common: PeftCommon,
    /// Projections to scale (names, one regex, or `all-linear`). `None`: the architecture's
    /// default (PEFT's: Llama `k_proj, v_proj, down_proj`; GPT-2 `c_attn, mlp.c_proj`).
    #[serde(with = "crate::common::targets_serde::option")]
    pub target_modules: Option<Vec<String>>,
    /// The subset of targets scaled on their input. `None`: the architecture's default.
    #[serde(with = "crate::common::targets_serde::option")]
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
