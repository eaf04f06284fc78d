//! What every method's configuration shares: PEFT's common fields and the JSON form of
//! `target_modules`.

use serde::{Deserialize, Serialize};

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
