//! The recipe's fields: what each TOML section holds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use kiln_data::PrepareOptions;
use kiln_peft::AdapterConfig;
use kiln_train::{FitConfig, OptimizerConfig, Schedule};

/// The base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face directory or a `.gguf` file.
    pub path: PathBuf,
}

/// The training and validation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSection {
    /// Training file or folder (JSONL, JSON, CSV or text).
    pub train: PathBuf,
    /// Validation file, evaluated every `fit.eval_every` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<PathBuf>,
    /// Use only the first N training examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_train: Option<usize>,
    /// Use only the first N validation examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_validation: Option<usize>,
    /// Record format, prompt style, cleaning and length limits.
    #[serde(flatten)]
    pub prepare: PrepareOptions,
}

/// The learning-rate schedule; decaying schedules end at the run's last step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// `constant`, `linear` or `cosine`.
    pub kind: ScheduleKind,
    /// Warmup steps (overrides `warmup_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    /// Warmup as a fraction of the run's steps.
    #[serde(default)]
    pub warmup_ratio: f64,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Cosine,
            warmup_steps: None,
            warmup_ratio: 0.0,
        }
    }
}

/// Shape of the learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Warmup, then constant.
    Constant,
    /// Warmup, then linear decay to 0.
    Linear,
    /// Warmup, then half-cosine decay to 0.
    Cosine,
}

impl ScheduleSection {
    /// The schedule of a run of `total_steps` optimizer steps.
    pub fn schedule(&self, total_steps: usize) -> Schedule {
        let warmup_steps = self
            .warmup_steps
            .unwrap_or_else(|| (self.warmup_ratio * total_steps as f64).ceil() as usize);
        match self.kind {
            ScheduleKind::Constant => Schedule::Constant { warmup_steps },
            ScheduleKind::Linear => Schedule::Linear {
                warmup_steps,
                total_steps,
            },
            ScheduleKind::Cosine => Schedule::Cosine {
                warmup_steps,
                total_steps,
            },
        }
    }
}

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The base model.
    pub model: ModelSection,
    /// The data.
    pub data: DataSection,
    /// The PEFT method, as in PEFT's `adapter_config.json` (`peft_type` selects it). Without it
    /// every weight trains (full fine-tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterConfig>,
    /// Seed of the adapter initialization.
    #[serde(default)]
    pub seed: u64,
    /// AdamW.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    #[serde(default)]
    pub schedule: ScheduleSection,
    /// Batching, epochs, evaluation, early stopping, checkpoints and logs.
    #[serde(default)]
    pub fit: FitConfig,
}

impl Recipe {
    /// Checks the values serde cannot: ranges and required settings.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..1.0).contains(&self.schedule.warmup_ratio) {
            return Err(format!(
                "schedule.warmup_ratio must lie in 0..1, got {}",
                self.schedule.warmup_ratio
            ));
        }
        if self.fit.batch_size == 0 {
            return Err("fit.batch_size must be at least 1".into());
        }
        if self.fit.output_dir.is_none() {
            return Err("fit.output_dir is required (where the adapter and logs go)".into());
        }
        Ok(())
    }
}
