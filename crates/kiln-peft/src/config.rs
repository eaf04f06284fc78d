//! `adapter_config.json`: one serde enum over the methods, tagged by PEFT's `peft_type`.

use serde::{Deserialize, Serialize};

use crate::bottleneck::BottleneckConfig;
use crate::ia3::Ia3Config;
use crate::lora::LoraConfig;
use crate::prefix::PrefixTuningConfig;
use crate::prompt::PromptTuningConfig;

/// Fields every PEFT config carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeftCommon {
    /// `CAUSAL_LM`, `SEQ_CLS`, ...
    pub task_type: Option<String>,
    /// Where the base model came from (informational).
    pub base_model_name_or_path: Option<String>,
    /// PEFT marks saved adapters `true`.
    pub inference_mode: bool,
}

impl Default for PeftCommon {
    fn default() -> Self {
        Self {
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: None,
            inference_mode: false,
        }
    }
}

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
}

/// `target_modules` in PEFT's JSON: a list of names, a string (one regex or `all-linear`), or
/// `null`.
pub(crate) mod targets_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub(crate) fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [] => s.serialize_none(),
            [one] if is_pattern(one) => one.serialize(s),
            many => many.serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match Option::<OneOrMany>::deserialize(d)? {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) => v,
        })
    }

    /// A regex or `all-linear` (PEFT takes these as a plain string).
    pub(crate) fn is_pattern(t: &str) -> bool {
        t == "all-linear" || t.chars().any(|c| "^$*+?()[]{}|\\".contains(c))
    }

    /// The same for `Option<Vec<String>>` fields.
    pub(crate) mod option {
        use serde::{Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            v: &Option<Vec<String>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            super::serialize(v.as_deref().unwrap_or(&[]), s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Vec<String>>, D::Error> {
            let v = super::deserialize(d)?;
            Ok((!v.is_empty()).then_some(v))
        }
    }
}
