//! PEFT methods by name, with the defaults the benchmarks use.

use anyhow::Result;
use kiln::burn::module::Module;
use kiln::peft::{Ia3Config, PrefixTuningConfig, PromptTuningConfig};
use kiln::prelude::*;

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
    /// The method's command-line name.
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

    /// The adapter configuration, `None` for full fine-tuning. `targets` applies to the LoRA
    /// family (empty = the architecture's default).
    pub fn config(self, r: usize, targets: &[String]) -> Option<AdapterConfig> {
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
        Some(match self {
            Self::Full => return None,
            Self::Lora => lora(false, false),
            Self::Rslora => lora(true, false),
            Self::Dora => lora(false, true),
            Self::Ia3 => AdapterConfig::Ia3(Ia3Config::default()),
            Self::Bottleneck => AdapterConfig::Bottleneck(BottleneckConfig::default()),
            Self::Prefix => AdapterConfig::PrefixTuning(PrefixTuningConfig::default()),
            Self::Prompt => AdapterConfig::PromptTuning(PromptTuningConfig::default()),
        })
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
        Ok(match self.config(r, targets) {
            None => full_fine_tuning(model),
            Some(c) => attach_adapter(model, &c, None, 0, device)?.0,
        })
    }
}
