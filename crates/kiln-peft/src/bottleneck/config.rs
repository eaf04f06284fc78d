//! Bottleneck-adapter hyper-parameters, named as PEFT names them.

use crate::common::PeftCommon;
use kiln_nn::adapter::Activation;
use serde::{Deserialize, Serialize};

/// Where the adapters go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BottleneckPlacement {
    /// After attention and after the feed-forward block.
    #[default]
    Houlsby,
    /// After the feed-forward block only.
    Pfeiffer,
}

/// Bottleneck-adapter hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BottleneckConfig {
    /// Fields every PEFT config has.
    #[serde(flatten)]
    pub common: PeftCommon,
    /// Hidden width is `d_model / reduction_factor` (at least 1).
    pub reduction_factor: usize,
    /// The non-linearity.
    pub non_linearity: Activation,
    /// Houlsby or Pfeiffer placement.
    pub placement: BottleneckPlacement,
    /// Explicit targets, overriding `placement` (projection names or one regex).
    pub target_modules: Option<Vec<String>>,
    /// Projections trained fully and saved whole.
    pub modules_to_save: Option<Vec<String>>,
    /// Standard deviation of the down projection's initialization.
    pub init_std: f64,
}

impl Default for BottleneckConfig {
    fn default() -> Self {
        Self {
            common: PeftCommon::default(),
            reduction_factor: 16,
            non_linearity: Activation::Relu,
            placement: BottleneckPlacement::Houlsby,
            target_modules: None,
            modules_to_save: None,
            init_std: 0.01,
        }
    }
}

impl BottleneckConfig {
    /// The targets: explicit ones, or the placement's sub-layer outputs for the architecture
    /// (Llama `o_proj`/`down_proj`, GPT-2 `attn.c_proj`/`mlp.c_proj`, BERT `attention.output.dense`/
    /// `output.dense`).
    pub fn targets(&self, paths: &[String]) -> Vec<String> {
        if let Some(t) = &self.target_modules {
            return t.clone();
        }
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let gpt2 = paths.iter().any(|p| p.ends_with(".attn.c_attn"));
        let bert = paths.iter().any(|p| p.ends_with(".attention.self.query"));
        match (self.placement, gpt2, bert) {
            (BottleneckPlacement::Houlsby, true, _) => s(&["attn.c_proj", "mlp.c_proj"]),
            (BottleneckPlacement::Pfeiffer, true, _) => s(&["mlp.c_proj"]),
            // `output.dense` ends both the attention and the feed-forward sub-layer.
            (BottleneckPlacement::Houlsby, _, true) => s(&["output.dense"]),
            (BottleneckPlacement::Pfeiffer, _, true) => s(&[r".*\.layer\.\d+\.output\.dense"]),
            (BottleneckPlacement::Houlsby, ..) => s(&["o_proj", "down_proj"]),
            (BottleneckPlacement::Pfeiffer, ..) => s(&["down_proj"]),
        }
    }
}
