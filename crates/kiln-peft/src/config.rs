//! `adapter_config.json`: one serde enum over the methods, tagged by PEFT's `peft_type`.

use serde::{Deserialize, Serialize};

use crate::bottleneck::BottleneckConfig;
use crate::common::PeftCommon;
use crate::ia3::Ia3Config;
use crate::lora::LoraConfig;
use crate::prefix::PrefixTuningConfig;
use crate::prompt::PromptTuningConfig;

/// An adapter configuration, as found in `adapter_config.json`.
///
/// The JSON is Hugging Face PEFT's: the `peft_type` field selects the method and unknown fields
/// are ignored, so files written by PEFT load here and files written here load in PEFT.
/// `BOTTLENECK` is kiln's own (PEFT has no bottleneck adapters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "peft_type")]
pub enum AdapterConfig {
    /// LoRA, rsLoRA and DoRA.
    #[serde(rename = "LORA")]
    Lora(LoraConfig),
    /// IA3.
    #[serde(rename = "IA3")]
    Ia3(Ia3Config),
    /// Prompt tuning.
    #[serde(rename = "PROMPT_TUNING")]
    PromptTuning(PromptTuningConfig),
    /// Prefix tuning.
    #[serde(rename = "PREFIX_TUNING")]
    PrefixTuning(PrefixTuningConfig),
    /// Bottleneck adapters (Houlsby / Pfeiffer).
    #[serde(rename = "BOTTLENECK")]
    Bottleneck(BottleneckConfig),
}

impl AdapterConfig {
    /// PEFT's name of the method (`LORA`, `IA3`, ...).
    pub fn peft_type(&self) -> &'static str {
        match self {
            Self::Lora(_) => "LORA",
            Self::Ia3(_) => "IA3",
            Self::PromptTuning(_) => "PROMPT_TUNING",
            Self::PrefixTuning(_) => "PREFIX_TUNING",
            Self::Bottleneck(_) => "BOTTLENECK",
        }
    }

    /// The common fields.
    pub fn common(&self) -> &PeftCommon {
        match self {
            Self::Lora(c) => &c.common,
            Self::Ia3(c) => &c.common,
            Self::PromptTuning(c) => &c.common,
            Self::PrefixTuning(c) => &c.common,
            Self::Bottleneck(c) => &c.common,
        }
    }

    /// The common fields, mutably.
    pub fn common_mut(&mut self) -> &mut PeftCommon {
        match self {
            Self::Lora(c) => &mut c.common,
            Self::Ia3(c) => &mut c.common,
            Self::PromptTuning(c) => &mut c.common,
            Self::PrefixTuning(c) => &mut c.common,
            Self::Bottleneck(c) => &mut c.common,
        }
    }

    /// `modules_to_save` of the methods that have it.
    pub fn modules_to_save(&self) -> Option<&[String]> {
        match self {
            Self::Lora(c) => c.modules_to_save.as_deref(),
            Self::Ia3(c) => c.modules_to_save.as_deref(),
            Self::Bottleneck(c) => c.modules_to_save.as_deref(),
            Self::PromptTuning(_) | Self::PrefixTuning(_) => None,
        }
    }

    /// Takes `names` out of `modules_to_save` (`None` when nothing is left): modules that live
    /// outside the model the adapter attaches to, such as a classifier's head.
    pub fn remove_modules_to_save(&mut self, names: &[&str]) {
        if let Some(modules) = self.modules_to_save_mut() {
            if let Some(list) = modules {
                list.retain(|m| !names.contains(&m.as_str()));
            }
            if modules.as_ref().is_some_and(Vec::is_empty) {
                *modules = None;
            }
        }
    }

    /// `modules_to_save`, mutably, for the methods that have it.
    pub fn modules_to_save_mut(&mut self) -> Option<&mut Option<Vec<String>>> {
        match self {
            Self::Lora(c) => Some(&mut c.modules_to_save),
            Self::Ia3(c) => Some(&mut c.modules_to_save),
            Self::Bottleneck(c) => Some(&mut c.modules_to_save),
            Self::PromptTuning(_) | Self::PrefixTuning(_) => None,
        }
    }
}
