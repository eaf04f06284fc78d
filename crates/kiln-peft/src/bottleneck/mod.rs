//! Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2020).
//!
//! A small residual MLP `y + up(act(down(y)))` on the output of a sub-layer, before the residual
//! connection: after attention (its output projection) and after the feed-forward block (its
//! down projection) for **Houlsby**, after the feed-forward block only for **Pfeiffer**. The up
//! projection starts at zero, so a fresh adapter leaves the model unchanged.
//!
//! PEFT has no bottleneck adapters; they are saved in the same folder layout with
//! `peft_type = "BOTTLENECK"` and keys `<path>.adapter_down.weight` / `adapter_up.weight`
//! (PyTorch `[out, in]` layout) plus biases. Only kiln reads them.

mod layer;

pub use layer::BottleneckLayer;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::config::PeftCommon;
use crate::init::HostRng;
use crate::lora::TargetMatcher;
use crate::target::{AdapterTarget, freeze_base, train_modules_to_save};
use crate::{PeftError, Result};

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

/// The adapter's non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// ReLU.
    #[default]
    Relu,
    /// GELU (tanh approximation is not used; exact erf form).
    Gelu,
    /// SiLU / swish.
    Silu,
    /// tanh.
    Tanh,
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

/// Freezes the base model and attaches fresh bottleneck adapters. Returns the model and the
/// adapted paths.
///
/// # Errors
/// `reduction_factor` 0, or targets that match nothing.
pub fn attach_bottleneck<M: AdapterTarget + Module>(
    model: M,
    config: &BottleneckConfig,
    seed: u64,
    device: &Device,
) -> Result<(M, Vec<String>)> {
    if config.reduction_factor == 0 {
        return Err(PeftError::InvalidConfig {
            field: "reduction_factor".into(),
            reason: "must be at least 1".into(),
        });
    }
    let targets = config.targets(&model.linear_paths());
    let matcher = TargetMatcher::new(&targets)?;
    let mut model = freeze_base(model);
    let root = HostRng::new(seed);
    let mut adapted = Vec::new();
    model.visit_linears_mut(&mut |path, l| {
        if matcher.matches(path) {
            let d = l.d_out();
            let hidden = (d / config.reduction_factor).max(1);
            let mut rng = root.fork(path);
            l.bottleneck = Some(BottleneckLayer::new(
                &mut rng,
                d,
                hidden,
                config.non_linearity,
                config.init_std as f32,
                device,
            ));
            adapted.push(path.to_string());
        }
    });
    if adapted.is_empty() {
        return Err(PeftError::NoTargetMatched {
            targets,
            available: model.linear_paths().join(", "),
        });
    }
    let model = train_modules_to_save(model, config.modules_to_save.as_deref())?;
    Ok((model, adapted))
}
