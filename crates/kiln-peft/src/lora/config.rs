use regex::Regex;
use serde::{Deserialize, Serialize};

use burn::tensor::Device;

use super::LoraLayer;
use crate::init::HostRng;
use crate::{PeftError, Result};

/// LoRA hyper-parameters, named as in Hugging Face PEFT's `LoraConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// Scaling numerator.
    pub lora_alpha: f64,
    /// Dropout probability applied to the adapter's input.
    pub lora_dropout: f64,
    /// Which projections to adapt: module names (`q_proj`, matched against the last path
    /// component), a single regex matched against the full path, or `all-linear`.
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by `lora_alpha / sqrt(r)` instead of `lora_alpha / r`.
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            use_rslora: false,
        }
    }
}

/// Decides which projection paths a config adapts.
#[derive(Debug)]
pub(crate) enum TargetMatcher {
    Names(Vec<String>),
    Regex(Regex),
    AllLinear,
}

impl TargetMatcher {
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            // The output head is never a target of `all-linear`, as in PEFT.
            Self::AllLinear => !path.ends_with("lm_head"),
            Self::Regex(re) => re.is_match(path),
            Self::Names(names) => {
                let last = path.rsplit('.').next().unwrap_or(path);
                names
                    .iter()
                    .any(|n| n == last || n == path || path.ends_with(&format!(".{n}")))
            }
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
        if self.target_modules.is_empty() {
            return bad("target_modules", "must name at least one module".into());
        }
        Ok(())
    }

    pub(crate) fn matcher(&self) -> Result<TargetMatcher> {
        if self.target_modules.len() == 1 {
            let t = &self.target_modules[0];
            if t == "all-linear" {
                return Ok(TargetMatcher::AllLinear);
            }
            if t.chars().any(|c| "^$*+?()[]{}|\\".contains(c)) {
                let re = Regex::new(&format!("^(?:{t})$")).map_err(|source| PeftError::Regex {
                    pattern: t.clone(),
                    source,
                })?;
                return Ok(TargetMatcher::Regex(re));
            }
        }
        Ok(TargetMatcher::Names(self.target_modules.clone()))
    }

    /// A fresh adapter for a `d_in -> d_out` projection: `A` kaiming-uniform (a = sqrt(5), the
    /// PyTorch `nn.Linear` default PEFT keeps), `B` zero.
    pub fn init_layer(
        &self,
        rng: &mut HostRng,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> LoraLayer {
        LoraLayer::new_kaiming(
            rng,
            d_in,
            d_out,
            self.r,
            self.scaling(),
            self.lora_dropout,
            device,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(targets: &[&str]) -> LoraConfig {
        LoraConfig {
            target_modules: targets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
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
