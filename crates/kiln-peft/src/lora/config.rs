//! LoRA hyper-parameters, named as PEFT names them.

use serde::{Deserialize, Serialize};

use burn::tensor::{Device, Tensor};

use crate::common::PeftCommon;
use crate::{PeftError, Result};
use kiln_nn::adapter::{LoraInit, LoraLayer};
use kiln_nn::init::HostRng;

/// Which biases a LoRA run trains (PEFT's `bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraBias {
    /// No bias is trained.
    #[default]
    None,
    /// Every bias of the adapted model is trained.
    All,
    /// Only the biases of the LoRA-adapted projections are trained.
    LoraOnly,
}

/// PEFT's `init_lora_weights`: `true` (kaiming-uniform A, zero B), `"gaussian"`, or `false`
/// (both factors random, so a fresh adapter already changes the output; for tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InitLoraWeights {
    /// `true` or `false`.
    Flag(bool),
    /// A named scheme; kiln supports `"gaussian"`.
    Named(String),
}

impl Default for InitLoraWeights {
    fn default() -> Self {
        Self::Flag(true)
    }
}

/// LoRA hyper-parameters, named as in Hugging Face PEFT's `LoraConfig` (the same JSON reads and
/// writes `adapter_config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    /// Fields every PEFT config has (task type, base model).
    #[serde(flatten)]
    pub common: PeftCommon,
    /// Rank of the update.
    pub r: usize,
    /// Scaling numerator.
    pub lora_alpha: f64,
    /// Dropout probability applied to the adapter's input.
    pub lora_dropout: f64,
    /// Which projections to adapt: module names (`q_proj`, matched against the last path
    /// component), a single regex matched against the full path, or `all-linear`. Empty: the
    /// architecture's default, as in PEFT (Llama family `q_proj, v_proj`; GPT-2 `c_attn`; BERT
    /// `query, value`). In JSON a string is a regex and a list holds names, as in PEFT.
    #[serde(with = "crate::common::targets_serde")]
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by `lora_alpha / sqrt(r)` instead of `lora_alpha / r`.
    pub use_rslora: bool,
    /// DoRA: learn a per-output magnitude on top of the low-rank direction update.
    pub use_dora: bool,
    /// Which biases are trained.
    pub bias: LoraBias,
    /// Only adapt these layer indices (`None`: all layers).
    pub layers_to_transform: Option<Vec<usize>>,
    /// Projections trained fully and saved whole (e.g. `lm_head`).
    pub modules_to_save: Option<Vec<String>>,
    /// Initialization of the factors.
    pub init_lora_weights: InitLoraWeights,
    /// Written for PEFT: whether the targets store weights `[in, out]` (GPT-2). kiln knows each
    /// projection's layout and sets this when saving.
    pub fan_in_fan_out: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: Vec::new(),
            use_rslora: false,
            use_dora: false,
            bias: LoraBias::None,
            layers_to_transform: None,
            modules_to_save: None,
            init_lora_weights: InitLoraWeights::default(),
            fan_in_fan_out: false,
            common: PeftCommon::default(),
        }
    }
}

impl LoraConfig {
    /// The factor applied to `x·A·B`.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Checks value ranges.
    ///
    /// # Errors
    /// [`PeftError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(PeftError::InvalidConfig {
                field: field.into(),
                reason,
            })
        };
        if self.r == 0 {
            return bad("r", "must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad(
                "lora_dropout",
                format!("{} is not in [0, 1)", self.lora_dropout),
            );
        }
        if !self.lora_alpha.is_finite() || self.lora_alpha <= 0.0 {
            return bad(
                "lora_alpha",
                format!("{} must be positive", self.lora_alpha),
            );
        }
        if matches!(self.init()?, Some(LoraInit::Pissa { .. })) && self.use_dora {
            return bad(
                "init_lora_weights",
                "PiSSA cannot be combined with DoRA".into(),
            );
        }
        Ok(())
    }

    /// The initialization scheme.
    ///
    /// # Errors
    /// [`PeftError::InvalidConfig`] for schemes kiln does not implement (PiSSA, OLoRA, LoftQ, ...).
    pub fn init(&self) -> Result<Option<LoraInit>> {
        match &self.init_lora_weights {
            InitLoraWeights::Flag(true) => Ok(Some(LoraInit::Kaiming)),
            InitLoraWeights::Flag(false) => Ok(None),
            InitLoraWeights::Named(n) if n == "gaussian" => Ok(Some(LoraInit::Gaussian)),
            InitLoraWeights::Named(n) if n == "pissa" => Ok(Some(LoraInit::Pissa { niter: None })),
            InitLoraWeights::Named(n)
                if n.strip_prefix("pissa_niter_")
                    .is_some_and(|k| k.parse::<usize>().is_ok()) =>
            {
                let k = n.trim_start_matches("pissa_niter_").parse().unwrap_or(4);
                Ok(Some(LoraInit::Pissa { niter: Some(k) }))
            }
            InitLoraWeights::Named(n) => Err(PeftError::InvalidConfig {
                field: "init_lora_weights".into(),
                reason: format!(
                    "`{n}` is not supported (use true, false, \"gaussian\", \"pissa\" or \
                     \"pissa_niter_N\")"
                ),
            }),
        }
    }

    /// The targets for a model with these projection paths: `target_modules`, or the
    /// architecture's default when empty.
    pub fn resolved_targets(&self, paths: &[String]) -> Vec<String> {
        if !self.target_modules.is_empty() {
            return self.target_modules.clone();
        }
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        if paths.iter().any(|p| p.ends_with(".attn.c_attn")) {
            s(&["c_attn"])
        } else if paths.iter().any(|p| p.ends_with(".attention.self.query")) {
            s(&["query", "value"])
        } else {
            s(&["q_proj", "v_proj"])
        }
    }
}

impl LoraConfig {
    /// A fresh adapter for a `d_in -> d_out` projection: `A` kaiming-uniform (a = sqrt(5), the
    /// PyTorch `nn.Linear` default PEFT keeps), `B` zero.
    ///
    /// With `use_dora`, `base` (the projection's weight `[d_in, d_out]`) gives the initial
    /// magnitude. With `init_lora_weights = false` both factors are random.
    pub fn init_layer(
        &self,
        rng: &mut HostRng,
        d_in: usize,
        d_out: usize,
        base: Option<Tensor<2>>,
        device: &Device,
    ) -> LoraLayer {
        let init = self.init().ok().flatten();
        let mut layer = LoraLayer::new(
            rng,
            init.unwrap_or(LoraInit::Kaiming),
            d_in,
            d_out,
            self.r,
            self.scaling(),
            self.lora_dropout,
            if self.use_dora { base } else { None },
            device,
        );
        if init.is_none() {
            let bound = 1.0 / (self.r as f32).sqrt();
            layer.lora_b = kiln_nn::init::uniform_param(rng, [self.r, d_out], bound, device);
        }
        layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::TargetMatcher;

    fn cfg(targets: &[&str]) -> LoraConfig {
        LoraConfig {
            target_modules: targets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    impl LoraConfig {
        fn matcher(&self) -> Result<TargetMatcher> {
            TargetMatcher::new(&self.target_modules)
        }
    }

    #[test]
    fn names_match_last_component() {
        let m = cfg(&["q_proj", "v_proj"]).matcher().unwrap();
        assert!(m.matches("model.layers.0.self_attn.q_proj"));
        assert!(m.matches("model.layers.3.self_attn.v_proj"));
        assert!(!m.matches("model.layers.3.self_attn.o_proj"));
    }

    #[test]
    fn regex_matches_full_path() {
        let m = cfg(&[r"model\.layers\.[01]\.self_attn\.(q|k)_proj"])
            .matcher()
            .unwrap();
        assert!(m.matches("model.layers.1.self_attn.k_proj"));
        assert!(!m.matches("model.layers.2.self_attn.k_proj"));
    }

    #[test]
    fn all_linear_skips_the_head() {
        let m = cfg(&["all-linear"]).matcher().unwrap();
        assert!(m.matches("model.layers.0.mlp.down_proj"));
        assert!(!m.matches("lm_head"));
    }

    #[test]
    fn scaling_and_validation() {
        let mut c = LoraConfig {
            r: 16,
            lora_alpha: 32.0,
            ..Default::default()
        };
        assert_eq!(c.scaling(), 2.0);
        c.use_rslora = true;
        assert_eq!(c.scaling(), 8.0);
        c.r = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`r`"), "{err}");
        let bad = cfg(&["(unclosed"]).matcher().unwrap_err().to_string();
        assert!(bad.contains("(unclosed"), "{bad}");
    }
}
