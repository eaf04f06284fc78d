//! The fine-tuning methods the benchmarks compare, each a recipe fragment in the repository's
//! `recipes/` folder (embedded, so the binary works from any directory).

use anyhow::{Context, Result};
use kiln::burn::module::Module;
use kiln::prelude::*;
use kiln::recipe::RecipeBuilder;

/// What every method shares in `kiln bench methods` (`recipes/bench-methods.toml`).
pub const BENCH_METHODS: &str = include_str!("../../../recipes/bench-methods.toml");

/// A fine-tuning method.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every weight trains.
    Full,
    /// LoRA, `alpha = 2r`.
    Lora,
    /// Rank-stabilized LoRA.
    Rslora,
    /// Weight-decomposed LoRA.
    Dora,
    /// IA3 with the architecture's default targets.
    Ia3,
    /// Bottleneck adapters (Houlsby placement, reduction 16).
    Bottleneck,
    /// Prefix tuning, 20 virtual tokens.
    Prefix,
    /// Prompt tuning, 20 virtual tokens.
    Prompt,
}

impl Method {
    /// Every method, in the order the benchmarks list them.
    #[cfg(test)]
    pub const ALL: [Method; 8] = [
        Self::Full,
        Self::Lora,
        Self::Rslora,
        Self::Dora,
        Self::Ia3,
        Self::Bottleneck,
        Self::Prefix,
        Self::Prompt,
    ];

    /// The method's command-line name (also its file name in `recipes/`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Lora => "lora",
            Self::Rslora => "rslora",
            Self::Dora => "dora",
            Self::Ia3 => "ia3",
            Self::Bottleneck => "bottleneck",
            Self::Prefix => "prefix",
            Self::Prompt => "prompt",
        }
    }

    /// The method's recipe fragment: its `[adapter]` (none for full fine-tuning) and its
    /// learning rate.
    pub fn fragment(self) -> &'static str {
        match self {
            Self::Full => include_str!("../../../recipes/full.toml"),
            Self::Lora => include_str!("../../../recipes/lora.toml"),
            Self::Rslora => include_str!("../../../recipes/rslora.toml"),
            Self::Dora => include_str!("../../../recipes/dora.toml"),
            Self::Ia3 => include_str!("../../../recipes/ia3.toml"),
            Self::Bottleneck => include_str!("../../../recipes/bottleneck.toml"),
            Self::Prefix => include_str!("../../../recipes/prefix.toml"),
            Self::Prompt => include_str!("../../../recipes/prompt.toml"),
        }
    }

    /// Where the fragment comes from, for errors.
    fn origin(self) -> String {
        format!("recipes/{}.toml", self.name())
    }

    /// Whether the method is LoRA, rsLoRA or DoRA (the ones with a rank and targets).
    fn is_lora(self) -> bool {
        matches!(self, Self::Lora | Self::Rslora | Self::Dora)
    }

    /// Adds the method's fragment to `recipe`; for the LoRA family `r`, `lora_alpha = 2r` and
    /// `targets` (empty = the architecture's default) replace the fragment's.
    ///
    /// # Errors
    /// A fragment or value that does not fit (a bug in `recipes/`).
    pub fn add_to(
        self,
        recipe: RecipeBuilder,
        r: usize,
        targets: &[String],
    ) -> Result<RecipeBuilder> {
        let recipe = recipe.merge_toml(self.fragment(), &self.origin())?;
        if !self.is_lora() {
            return Ok(recipe);
        }
        Ok(recipe
            .set("adapter.r", &r)?
            .set("adapter.lora_alpha", &(2.0 * r as f64))?
            .set("adapter.target_modules", &targets)?)
    }

    /// The learning rate of the method's fragment: values in the ranges the methods' papers and
    /// PEFT's examples use, raised for a short run.
    ///
    /// # Errors
    /// A fragment without `optimizer.lr` (a bug in `recipes/`).
    pub fn default_lr(self) -> Result<f64> {
        RecipeBuilder::new()
            .merge_toml(self.fragment(), &self.origin())?
            .get("optimizer.lr")?
            .with_context(|| format!("{} sets no optimizer.lr", self.origin()))
    }

    /// The adapter configuration, `None` for full fine-tuning. `r` and `targets` apply to the
    /// LoRA family (empty `targets` = the architecture's default).
    ///
    /// # Errors
    /// A fragment that does not fit (a bug in `recipes/`).
    pub fn config(self, r: usize, targets: &[String]) -> Result<Option<AdapterConfig>> {
        Ok(self
            .add_to(RecipeBuilder::new(), r, targets)?
            .get("adapter")?)
    }

    /// Attaches the method to `model` (or unfreezes it for full fine-tuning).
    ///
    /// # Errors
    /// A configuration the model does not fit (e.g. a target it does not have).
    pub fn apply<M: AdapterTarget + Module>(
        self,
        model: M,
        r: usize,
        targets: &[String],
        device: &Device,
    ) -> Result<M> {
        Ok(match self.config(r, targets)? {
            None => full_fine_tuning(model),
            Some(c) => attach_adapter(model, &c, None, 0, device)?.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use kiln::peft::{Ia3Config, PrefixTuningConfig, PromptTuningConfig};

    use super::*;

    /// The adapter each method had before its settings moved into `recipes/`.
    fn expected(method: Method, r: usize, targets: &[String]) -> Option<AdapterConfig> {
        let lora = |rs: bool, dora: bool| {
            AdapterConfig::Lora(LoraConfig {
                r,
                lora_alpha: 2.0 * r as f64,
                target_modules: targets.to_vec(),
                use_rslora: rs,
                use_dora: dora,
                ..Default::default()
            })
        };
        Some(match method {
            Method::Full => return None,
            Method::Lora => lora(false, false),
            Method::Rslora => lora(true, false),
            Method::Dora => lora(false, true),
            Method::Ia3 => AdapterConfig::Ia3(Ia3Config::default()),
            Method::Bottleneck => AdapterConfig::Bottleneck(BottleneckConfig::default()),
            Method::Prefix => AdapterConfig::PrefixTuning(PrefixTuningConfig::default()),
            Method::Prompt => AdapterConfig::PromptTuning(PromptTuningConfig::default()),
        })
    }

    #[test]
    fn fragments_give_the_method_configs() {
        for method in Method::ALL {
            for (r, targets) in [
                (16, vec!["all-linear".to_string()]),
                (8, vec!["q_proj".to_string(), "v_proj".to_string()]),
                (4, vec![]),
            ] {
                assert_eq!(
                    method.config(r, &targets).unwrap(),
                    expected(method, r, &targets),
                    "{method:?} r={r} {targets:?}"
                );
            }
        }
    }

    #[test]
    fn every_method_has_a_positive_default_lr() {
        for m in Method::ALL {
            let lr = m.default_lr().unwrap();
            assert!(lr > 0.0 && lr < 1.0, "{m:?}: {lr}");
        }
    }

    #[test]
    fn fragments_keep_the_learning_rates() {
        let lrs: Vec<f64> = Method::ALL
            .iter()
            .map(|m| m.default_lr().unwrap())
            .collect();
        assert_eq!(lrs, [1e-4, 2e-3, 5e-4, 2e-3, 1e-2, 1e-3, 1e-2, 3e-2]);
    }
}
