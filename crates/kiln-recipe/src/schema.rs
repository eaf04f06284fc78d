//! The recipe's fields: what each TOML section holds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use kiln_data::{PrepareOptions, RecordFormat};
use kiln_peft::AdapterConfig;
use kiln_train::{
    FitConfig, OptimizerConfig, PpoConfig, PreferenceConfig, PreferenceLoss, RewardConfig, Schedule,
};

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
    /// Pack the examples of each micro-batch into shared rows, without cross-example attention
    /// and with positions restarting per example ([`FitConfig::packing`]): the loss is that of
    /// the padded batch, with less padding computed. When absent, [`Recipe::default_packing`]
    /// decides: on for supervised fine-tuning data (the `prompt_completion`, `instruction` and
    /// `chat` formats), off for `text` and for prompt and prefix tuning, whose virtual tokens
    /// would be shared by the whole row. A loaded recipe always has it set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing: Option<bool>,
    /// Tokens per packed row; absent: each micro-batch in one row of up to 2,048 tokens
    /// ([`kiln_train::PACKED_ROW_TOKENS`], [`FitConfig::packing_row_len`]). Must be at least `max_len` when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing_row_len: Option<usize>,
    /// Micro-batches of examples of similar length, seeded by `fit.seed`
    /// ([`FitConfig::group_by_length`]).
    #[serde(default)]
    pub group_by_length: bool,
    /// General data mixed into training against forgetting (`[data.replay]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySection>,
    /// Record format, prompt style, cleaning and length limits.
    #[serde(flatten)]
    pub prepare: PrepareOptions,
}

/// Replay: examples of general data mixed into the training set, so that tuning on a narrow
/// task forgets less of what the model knew.
///
/// ```toml
/// [data.replay]
/// path = "general.txt"   # .txt: one example per non-blank line
/// ratio = 0.2            # replay examples are 20% of the training mix
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    /// The general data: a `.txt` file (one example per non-blank line) or any data file the
    /// `format` reads.
    pub path: PathBuf,
    /// Share of replay examples in the training mix, in `0..1`: `ratio / (1 - ratio)` replay
    /// examples per training example, drawn (seeded by `seed`) without repeats while the file
    /// has enough, then again.
    pub ratio: f64,
    /// Record format of the file (default: plain text with loss on every token, field `text`).
    #[serde(default = "text_format")]
    pub format: RecordFormat,
}

fn text_format() -> RecordFormat {
    RecordFormat::Text {
        text: "text".into(),
    }
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
    /// `[adapter] init_from = "DIR"`: continue training the PEFT adapter saved in `DIR` (an
    /// earlier SFT or preference run's `adapter/`), with a fresh optimizer: its tensors replace
    /// the new adapter's initialization. With no other `[adapter]` key the method's settings
    /// come from `DIR/adapter_config.json`; otherwise they must describe the same tensors.
    #[serde(skip)]
    pub adapter_init_from: Option<PathBuf>,
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
    /// What the run optimizes: supervised fine-tuning (the default), a preference objective or
    /// a reward model.
    #[serde(default)]
    pub task: TaskSection,
}

/// The objective (`[task]`):
///
/// ```toml
/// [task]
/// kind = "dpo"          # sft (default), dpo, ipo, hinge, simpo, reward or ppo
/// beta = 0.1
/// label_smoothing = 0.0 # dpo and simpo
/// reference = "base"   # base: the model with its adapter disabled; initial: the model before
///                       # training (an adapter loaded with `adapter.init_from`, or full FT)
/// ```
///
/// Preference tasks (and `reward`) read `{"prompt", "chosen", "rejected"}` records (TRL's plain
/// or conversational form; `data.format = { format = "preference", ... }` renames the fields);
/// a `reward` task also reads a record's optional `margin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// The objective.
    #[serde(default)]
    pub kind: TaskKind,
    /// Preference tasks: β, the strength of the pull toward the reference (TRL's default 0.1).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// `dpo` and `simpo`: probability that a pair's preference is flipped, in `[0, 0.5)`.
    #[serde(default)]
    pub label_smoothing: f64,
    /// `simpo`: the target reward margin γ (TRL's default 0.5).
    #[serde(default = "default_simpo_gamma")]
    pub simpo_gamma: f64,
    /// The reference model of `dpo`, `ipo` and `hinge`; default `base` with an adapter and
    /// `initial` for full fine-tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceKind>,
    /// `reward`: weight of `mean((r_c + r_r)²)`, which keeps rewards centred on zero (TRL's
    /// `center_rewards_coefficient`; off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_rewards_coefficient: Option<f64>,
    /// `dpo`, `ipo` and `hinge`: compute the reference's log-probabilities of every pair once,
    /// before training (TRL's `precompute_ref_log_probs`), instead of a reference forward pass
    /// per step.
    #[serde(default)]
    pub precompute_ref_log_probs: bool,
    /// `ppo`: the reward model, a reward task's saved adapter (PEFT `SEQ_CLS`, e.g.
    /// `runs/rm/adapter`) on the recipe's base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_model: Option<PathBuf>,
    /// `ppo`: PPO's settings (`[task.ppo]`: `kl_coef`, `gamma`, `lam`, `cliprange`,
    /// `cliprange_value`, `vf_coef`, `ppo_epochs`, `minibatches`, `max_new_tokens`,
    /// `temperature`; TRL's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppo: Option<PpoConfig>,
}

fn default_beta() -> f64 {
    0.1
}

fn default_simpo_gamma() -> f64 {
    0.5
}

impl Default for TaskSection {
    fn default() -> Self {
        Self {
            kind: TaskKind::Sft,
            beta: default_beta(),
            label_smoothing: 0.0,
            simpo_gamma: default_simpo_gamma(),
            reference: None,
            center_rewards_coefficient: None,
            precompute_ref_log_probs: false,
            reward_model: None,
            ppo: None,
        }
    }
}

impl TaskSection {
    /// The preference objective, `None` for supervised fine-tuning and reward models.
    pub fn preference(&self) -> Option<PreferenceConfig> {
        let loss = match self.kind {
            TaskKind::Sft | TaskKind::Reward | TaskKind::Ppo => return None,
            TaskKind::Dpo => PreferenceLoss::Sigmoid,
            TaskKind::Ipo => PreferenceLoss::Ipo,
            TaskKind::Hinge => PreferenceLoss::Hinge,
            TaskKind::Simpo => PreferenceLoss::Simpo,
        };
        Some(PreferenceConfig {
            loss,
            beta: self.beta,
            label_smoothing: self.label_smoothing,
            simpo_gamma: self.simpo_gamma,
        })
    }

    /// The reward-model objective, `None` for the other kinds.
    pub fn reward(&self) -> Option<RewardConfig> {
        (self.kind == TaskKind::Reward).then_some(RewardConfig {
            center_rewards_coefficient: self.center_rewards_coefficient,
        })
    }

    /// Whether the task trains on preference pairs (every kind but `sft` and `ppo`).
    pub fn is_pairwise(&self) -> bool {
        !matches!(self.kind, TaskKind::Sft | TaskKind::Ppo)
    }

    /// PPO's settings (`[task.ppo]`, else TRL's defaults), `None` for the other kinds.
    pub fn ppo_config(&self) -> Option<PpoConfig> {
        (self.kind == TaskKind::Ppo).then(|| self.ppo.clone().unwrap_or_default())
    }
}

/// `task.kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Supervised fine-tuning: next-token loss on completions (or every token of text).
    #[default]
    Sft,
    /// DPO: the sigmoid preference loss against a reference.
    Dpo,
    /// IPO: the squared preference loss on length-normalized log-ratios.
    Ipo,
    /// SLiC's hinge loss against a reference.
    Hinge,
    /// SimPO: reference-free, on average log-probabilities.
    Simpo,
    /// A reward model: the decoder with a scalar head, trained with the Bradley–Terry loss
    /// (TRL's `RewardTrainer`); saved in PEFT's `SEQ_CLS` layout.
    Reward,
    /// RLHF with PPO: responses to the data's prompts sampled from the policy, scored by
    /// `task.reward_model`, with a KL penalty to the base (the adapter disabled).
    Ppo,
}

/// `task.reference`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceKind {
    /// The policy with its adapter disabled: the base model, with no second copy of the weights.
    Base,
    /// The model as it was when training started (shares the base weights; holds its own copy
    /// of what trains).
    Initial,
}

impl Recipe {
    /// Whether the data is for supervised fine-tuning: prompts or conversations whose
    /// completions alone carry loss (every format but `text`).
    pub fn is_sft(&self) -> bool {
        self.task.kind == TaskKind::Sft
            && !matches!(self.data.prepare.format, RecordFormat::Text { .. })
    }

    /// The reference model of a preference task: `task.reference`, else `base` with an adapter
    /// and `initial` for full fine-tuning.
    pub fn reference(&self) -> ReferenceKind {
        self.task.reference.unwrap_or(if self.adapter.is_some() {
            ReferenceKind::Base
        } else {
            ReferenceKind::Initial
        })
    }

    /// Whether the method feeds virtual tokens to the model (prompt and prefix tuning): they
    /// are prepended once per row, so packed examples would share them and see each other.
    pub fn uses_virtual_tokens(&self) -> bool {
        matches!(
            self.adapter,
            Some(AdapterConfig::PromptTuning(_) | AdapterConfig::PrefixTuning(_))
        )
    }

    /// What `data.packing` is when the recipe does not set it: on for supervised fine-tuning
    /// ([`Recipe::is_sft`]) unless the method uses virtual tokens.
    pub fn default_packing(&self) -> bool {
        self.is_sft() && !self.uses_virtual_tokens()
    }

    /// Whether the run packs micro-batches: `data.packing`, else [`Recipe::default_packing`].
    pub fn packing(&self) -> bool {
        self.data.packing.unwrap_or_else(|| self.default_packing())
    }

    /// The `[fit]` settings with the batching of the `[data]` section.
    pub fn fit_config(&self) -> FitConfig {
        FitConfig {
            packing: self.packing(),
            packing_row_len: self.data.packing_row_len,
            group_by_length: self.data.group_by_length,
            ..self.fit.clone()
        }
    }

    /// Checks the values serde cannot: ranges and required settings.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..1.0).contains(&self.schedule.warmup_ratio) {
            return Err(format!(
                "schedule.warmup_ratio must lie in 0..1, got {}",
                self.schedule.warmup_ratio
            ));
        }
        if let Some(r) = &self.data.replay
            && !(0.0..1.0).contains(&r.ratio)
        {
            return Err(format!(
                "data.replay.ratio must lie in 0..1 (the replay share of the mix), got {}",
                r.ratio
            ));
        }
        if self.fit.batch_size == 0 {
            return Err("fit.batch_size must be at least 1".into());
        }
        if self.data.packing == Some(true) && self.uses_virtual_tokens() {
            return Err(format!(
                "data.packing = true does not work with {}: its virtual tokens are shared by \
                 every example of a packed row; set data.packing = false",
                self.adapter.as_ref().map_or("", AdapterConfig::peft_type)
            ));
        }
        if let Some(n) = self.data.packing_row_len {
            if n == 0 {
                return Err("data.packing_row_len must be at least 1".into());
            }
            if let Some(max) = self.data.prepare.max_len
                && max > n
            {
                return Err(format!(
                    "data.packing_row_len ({n}) is below data.max_len ({max}): an example of \
                     max_len tokens would not fit a row"
                ));
            }
        }
        // The [task] values are checked whatever the kind, so that every recipe that reads
        // prints back to itself.
        let checked = self.task.preference().unwrap_or(PreferenceConfig {
            loss: PreferenceLoss::Sigmoid,
            beta: self.task.beta,
            label_smoothing: self.task.label_smoothing,
            simpo_gamma: self.task.simpo_gamma,
        });
        checked.validate().map_err(|e| format!("[task] {e}"))?;
        RewardConfig {
            center_rewards_coefficient: self.task.center_rewards_coefficient,
        }
        .validate()
        .map_err(|e| format!("[task] {e}"))?;
        if let Some(ppo) = self.task.ppo_config() {
            ppo.validate().map_err(|e| format!("[task.ppo] {e}"))?;
            if self.task.reward_model.is_none() {
                return Err(
                    "task.kind = \"ppo\" needs task.reward_model, a reward task's \
                            saved adapter (e.g. \"runs/rm/adapter\")"
                        .into(),
                );
            }
            if self.adapter.is_none() {
                return Err(
                    "task.kind = \"ppo\" needs an [adapter]: the reference is the \
                            model with its adapter disabled"
                        .into(),
                );
            }
            for (set, key) in [
                (self.data.replay.is_some(), "data.replay"),
                (self.data.packing == Some(true), "data.packing = true"),
                (self.data.validation.is_some(), "data.validation"),
            ] {
                if set {
                    return Err(format!(
                        "{key} does not work with task.kind = \"ppo\" (PPO samples its \
                         responses to the training prompts)"
                    ));
                }
            }
        } else if self.task.ppo.is_some() || self.task.reward_model.is_some() {
            return Err(format!(
                "[task.ppo] and task.reward_model are for task.kind = \"ppo\", not \"{}\"",
                self.task.kind.name()
            ));
        }
        if self.task.precompute_ref_log_probs
            && !self
                .task
                .preference()
                .is_some_and(|p| p.loss.uses_reference())
        {
            return Err(format!(
                "task.precompute_ref_log_probs is for the losses with a reference (dpo, ipo, \
                 hinge), not \"{}\"",
                self.task.kind.name()
            ));
        }
        if self.task.reward().is_some() && self.adapter.is_none() {
            return Err(
                "task.kind = \"reward\" needs an [adapter]: a reward model is saved as a PEFT \
                 SEQ_CLS adapter (full fine-tuning of a reward model is not supported by recipes)"
                    .into(),
            );
        }
        if self.task.is_pairwise() {
            if self.data.packing == Some(true) {
                return Err(format!(
                    "data.packing = true does not work with task.kind = \"{}\": preference \
                     pairs are padded, not packed",
                    self.task.kind.name()
                ));
            }
            if self.data.replay.is_some() {
                return Err(format!(
                    "data.replay mixes general text into supervised fine-tuning; task.kind = \
                     \"{}\" trains on preference pairs only",
                    self.task.kind.name()
                ));
            }
            if self
                .task
                .preference()
                .is_some_and(|p| p.loss.uses_reference())
                && self.adapter.is_none()
                && self.task.reference == Some(ReferenceKind::Base)
            {
                return Err(
                    "task.reference = \"base\" needs an [adapter] (the base is the \
                            model with its adapter disabled); full fine-tuning compares with \
                            the initial model (task.reference = \"initial\")"
                        .into(),
                );
            }
        } else if matches!(self.data.prepare.format, RecordFormat::Preference { .. }) {
            return Err(
                "data.format \"preference\" holds chosen/rejected pairs: set [task] \
                        kind = \"dpo\" (or ipo, hinge, simpo, reward)"
                    .into(),
            );
        }
        if self.fit.output_dir.is_none() {
            return Err("fit.output_dir is required (where the adapter and logs go)".into());
        }
        // Ranges the optimizer and the adapter check later, checked here so that a recipe with
        // `lr = nan` or `lora_alpha = -1` fails when it is read, naming its section.
        self.optimizer
            .validate()
            .map_err(|e| format!("[optimizer] {e}"))?;
        if let Some(AdapterConfig::Lora(c)) = &self.adapter {
            c.validate().map_err(|e| format!("[adapter] {e}"))?;
        }
        Ok(())
    }
}

impl TaskKind {
    /// The name recipes use.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Sft => "sft",
            TaskKind::Dpo => "dpo",
            TaskKind::Ipo => "ipo",
            TaskKind::Hinge => "hinge",
            TaskKind::Simpo => "simpo",
            TaskKind::Reward => "reward",
            TaskKind::Ppo => "ppo",
        }
    }
}
