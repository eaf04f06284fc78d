use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

use kiln_data::{PreferencePair, TokenBatch, TokenizedExample, preference_batch};
use kiln_models::CausalLm;

use crate::callback::{Callback, EarlyStopping, EvalLog, StepLog};
use crate::checkpoint::{
    AdapterExporter, BEST_PARAMS_FILE, BestMetric, CheckpointManager, DataLayout, TrainerState,
    write_json,
};
use crate::data::{DataOrder, RowLayout, mix};
use crate::eval::{EvalResult, check_lengths, check_positions, evaluate_rows};
use crate::logs::{LogRecord, MetricsLog, plot_curves, progress_bar};
use crate::preference::{PreferenceConfig, PreferenceMicroBatch, evaluate_preference};
use crate::reward::{RewardConfig, RewardFn, RewardMicroBatch, evaluate_reward};
use crate::trainer::trainable_params;
use crate::{Result, StepStats, TrainError, Trainer};

/// File names written into [`FitConfig::output_dir`].
pub mod files {
    /// JSONL metrics log, one [`crate::LogRecord`] per line.
    pub const METRICS: &str = "metrics.jsonl";
    /// Loss curves.
    pub const CURVES: &str = "loss_curve.png";
    /// The [`crate::RunSummary`] as JSON.
    pub const SUMMARY: &str = "run_summary.json";
    /// Directory of the checkpoints.
    pub const CHECKPOINTS: &str = "checkpoints";
}

/// How a [`Fit`] run batches, evaluates, stops, logs and checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitConfig {
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Examples per evaluation batch (defaults to `batch_size`).
    pub eval_batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    pub grad_accum_steps: usize,
    /// Passes over the training data (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Total optimizer steps; overrides `epochs`.
    pub max_steps: Option<usize>,
    /// Seed of the data order and of the per-step device RNG (dropout). The device RNG is
    /// reseeded from `(seed, step)` before every step, so dropout masks survive a resume; it is
    /// process-wide, so two runs in one process at the same time share it.
    pub seed: u64,
    /// Shuffle the examples every epoch.
    pub shuffle: bool,
    /// Padding token id.
    pub pad_id: u32,
    /// Evaluate every this many optimizer steps (and after the last one) when validation data
    /// is given.
    pub eval_every: Option<usize>,
    /// Stop when the validation metric stops improving.
    pub early_stopping: Option<EarlyStopping>,
    /// Return the parameters of the best evaluation instead of the last step.
    pub keep_best: bool,
    /// Where the metrics log, curve, summary and checkpoints go; nothing is written without it.
    pub output_dir: Option<PathBuf>,
    /// Write a checkpoint every this many optimizer steps (and at the end of the run).
    pub checkpoint_every: Option<usize>,
    /// Keep at most this many checkpoints (the best one is always kept).
    pub save_total_limit: Option<usize>,
    /// Continue from the newest checkpoint in `output_dir`, if there is one.
    pub resume: bool,
    /// Delete the checkpoints an earlier run left in `output_dir` and start over. Without it
    /// (and without `resume`) such checkpoints make the run fail before it changes anything.
    /// Not part of the serialized configuration: a saved recipe must not delete a run by
    /// itself; set it from code or with `kiln train --overwrite`.
    #[serde(skip)]
    pub overwrite: bool,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Draw the loss curve PNG at the end.
    pub plot: bool,
    /// Recompute each layer's activations in the backward pass instead of keeping them (less
    /// memory, about one more forward pass per step; see
    /// [`Trainer::set_gradient_checkpointing`]).
    pub gradient_checkpointing: bool,
    /// Pack each micro-batch's examples into shared rows instead of padding each example to
    /// the longest ([`RowLayout::Packed`]): positions restart at 0 for every example and
    /// `segment_ids` keep attention within it, so the loss and the optimizer steps are those of
    /// the padded batch (up to float rounding) while fewer padding tokens are computed. The
    /// micro-batches hold the same examples as without packing. The model must honour
    /// [`kiln_models::LmInput::segment_ids`] (prompt and prefix tuning do not). Validation
    /// batches are packed the same way. Off by default here; recipes turn it on for SFT data.
    /// Not part of the serialized configuration: recipes set it from their `[data]` section.
    #[serde(skip)]
    pub packing: bool,
    /// Tokens per packed row; `None` (the default) puts each micro-batch in one row of up to
    /// [`crate::PACKED_ROW_TOKENS`] tokens (rows of that budget beyond it). Every example
    /// must fit. Used only with `packing`.
    #[serde(skip)]
    pub packing_row_len: Option<usize>,
    /// Build micro-batches from examples of similar length
    /// ([`kiln_data::length_grouped_batches`], deterministic from `seed` and the epoch), so
    /// padding or packing leaves little unused. Changes the data order: a run resumes only with
    /// the same setting. Not part of the serialized configuration (see `packing`).
    #[serde(skip)]
    pub group_by_length: bool,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            eval_batch_size: None,
            grad_accum_steps: 1,
            epochs: 1,
            max_steps: None,
            seed: 42,
            shuffle: true,
            pad_id: 0,
            eval_every: None,
            early_stopping: None,
            keep_best: false,
            output_dir: None,
            checkpoint_every: None,
            save_total_limit: None,
            resume: false,
            overwrite: false,
            progress: true,
            plot: true,
            gradient_checkpointing: false,
            packing: false,
            packing_row_len: None,
            group_by_length: false,
        }
    }
}

impl FitConfig {
    /// Optimizer steps a run over `num_examples` training examples takes (what a decaying
    /// [`crate::Schedule`] needs as `total_steps`).
    pub fn total_steps(&self, num_examples: usize) -> usize {
        self.max_steps
            .unwrap_or_else(|| self.epochs * self.order(num_examples, None).steps_per_epoch())
    }

    /// How the examples of a micro-batch are laid out in rows.
    pub fn row_layout(&self) -> RowLayout {
        if self.packing {
            RowLayout::Packed {
                row_len: self.packing_row_len,
            }
        } else {
            RowLayout::Padded
        }
    }

    /// The data order of a run over `train`.
    pub fn data_order(&self, train: &[TokenizedExample]) -> DataOrder {
        let lengths = self
            .group_by_length
            .then(|| train.iter().map(TokenizedExample::len).collect());
        self.order(train.len(), lengths)
    }

    fn order(&self, num_examples: usize, lengths: Option<Arc<[usize]>>) -> DataOrder {
        DataOrder {
            num_examples,
            batch_size: self.batch_size,
            grad_accum_steps: self.grad_accum_steps,
            shuffle: self.shuffle,
            seed: self.seed,
            lengths,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| {
            Err(TrainError::InvalidConfig {
                field: field.into(),
                reason: reason.into(),
            })
        };
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.eval_batch_size == Some(0) {
            return bad("eval_batch_size", "must be at least 1");
        }
        if self.grad_accum_steps == 0 {
            return bad("grad_accum_steps", "must be at least 1");
        }
        if self.max_steps.is_none() && self.epochs == 0 {
            return bad("epochs", "must be at least 1 when max_steps is not set");
        }
        if self.eval_every == Some(0) {
            return bad("eval_every", "must be at least 1");
        }
        if self.checkpoint_every == Some(0) {
            return bad("checkpoint_every", "must be at least 1");
        }
        if self.checkpoint_every.is_some() && self.output_dir.is_none() {
            return bad("checkpoint_every", "needs output_dir");
        }
        if self.resume && self.output_dir.is_none() {
            return bad("resume", "needs output_dir");
        }
        if self.resume && self.overwrite {
            return bad("overwrite", "contradicts resume: choose one");
        }
        if self.packing_row_len == Some(0) {
            return bad("packing_row_len", "must be at least 1");
        }
        if let Some(es) = &self.early_stopping
            && !(es.min_delta.is_finite() && es.min_delta >= 0.0)
        {
            return bad(
                "early_stopping.min_delta",
                "must be finite and non-negative",
            );
        }
        Ok(())
    }
}

/// Fails when `output_dir` holds published checkpoints of an earlier run and the run neither
/// resumes nor overwrites; with `overwrite`, deletes them. Nothing is changed when it fails.
///
/// # Errors
/// [`TrainError::PreviousRun`] naming the checkpoints directory; an I/O error.
pub fn check_previous_run(
    output_dir: &std::path::Path,
    resume: bool,
    overwrite: bool,
) -> Result<()> {
    let dir = output_dir.join(files::CHECKPOINTS);
    if resume {
        return Ok(());
    }
    let published = CheckpointManager::published(&dir)?;
    let Some((step, _)) = published.last() else {
        return Ok(());
    };
    if overwrite {
        std::fs::remove_dir_all(&dir).map_err(TrainError::io(&dir))?;
        return Ok(());
    }
    Err(TrainError::PreviousRun {
        path: dir,
        step: *step,
    })
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All planned steps ran.
    Completed,
    /// Early stopping triggered.
    EarlyStopped,
    /// A callback asked to stop.
    Callback,
    /// The interrupt flag ([`Fit::interrupt`]) was raised (e.g. by Ctrl-C): the step in
    /// progress finished and a checkpoint was written.
    Interrupted,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Optimizer steps taken in total (including those before a resume).
    pub steps: usize,
    /// Planned optimizer steps.
    pub total_steps: usize,
    /// Epochs covered, fractional.
    pub epochs: f64,
    /// Labelled tokens trained on.
    pub loss_tokens: u64,
    /// Input tokens processed.
    pub input_tokens: u64,
    /// Padding tokens computed along the input tokens (what packing saves).
    #[serde(default)]
    pub padding_tokens: u64,
    /// Training wall time in seconds (including before a resume).
    pub elapsed_secs: f64,
    /// Input tokens per second.
    pub tokens_per_sec: f64,
    /// Loss of the last step.
    pub final_loss: Option<f32>,
    /// Losses of the steps run by this call, in order.
    pub losses: Vec<f32>,
    /// The last evaluation.
    pub last_eval: Option<EvalResult>,
    /// Best evaluation of the watched metric.
    pub best: Option<BestMetric>,
    /// Whether the returned model carries the best evaluation's parameters.
    pub restored_best: bool,
    /// Why the run ended.
    pub stop_reason: StopReason,
    /// The checkpoint the run resumed from.
    pub resumed_from: Option<PathBuf>,
    /// The newest checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
}

/// The trained model and what the run did.
#[derive(Debug)]
pub struct FitOutput<M> {
    /// The model after the run (or at its best evaluation with `keep_best`).
    pub model: M,
    /// The run summary.
    pub summary: RunSummary,
}

/// A training run: data, evaluation, early stopping, checkpoints, logs and callbacks around a
/// [`Trainer`].
pub struct Fit<'a, M> {
    config: FitConfig,
    train: &'a [TokenizedExample],
    val: Option<&'a [TokenizedExample]>,
    callbacks: Vec<&'a mut dyn Callback>,
    exporter: Option<&'a dyn AdapterExporter<M>>,
    eval_hook: Option<&'a mut EvalHook<'a, M>>,
    interrupt: Option<&'a AtomicBool>,
    preference: Option<PreferenceData<'a, M>>,
}

/// The reference model's summed log-probabilities of the rows of a preference batch (chosen
/// rows, then rejected), given the policy as it is at that step: usually
/// [`crate::reference_logps`] of [`crate::base_reference`] (the policy with its adapters
/// disabled) or of a frozen copy taken before training.
pub type ReferenceFn<'a, M> = dyn Fn(&M, &TokenBatch) -> Result<Vec<f32>> + 'a;

/// What a pairwise run optimizes.
enum PairObjective<'a, M> {
    /// A preference loss against a reference.
    Preference {
        config: PreferenceConfig,
        reference: &'a ReferenceFn<'a, M>,
    },
    /// A reward model's Bradley–Terry loss.
    Reward {
        config: RewardConfig,
        rewards: &'a RewardFn<'a, M>,
    },
}

/// What a pairwise run (preference optimization or reward modelling) trains on.
struct PreferenceData<'a, M> {
    train: &'a [PreferencePair],
    val: Option<&'a [PreferencePair]>,
    objective: PairObjective<'a, M>,
}

/// A batch of pairs with the reference's log-probabilities of its rows (preference losses
/// that use one) or the pairs' margins (reward models, when the data has them).
struct PairBatch {
    batch: TokenBatch,
    reference: Option<Vec<f32>>,
    margins: Option<Vec<f32>>,
}

/// What one pairwise step or evaluation reports: its loss and metrics.
struct PairOutcome {
    loss: f32,
    grad_norm: f64,
    lr: f64,
    metrics: BTreeMap<String, f64>,
}

impl<M: CausalLm + Module> PreferenceData<'_, M> {
    /// The micro-batches of `pairs` (indices into `set`) with their reference log-probabilities
    /// or margins.
    fn batches(
        &self,
        model: &M,
        set: &[PreferencePair],
        groups: &[Vec<usize>],
        pad_id: u32,
    ) -> Result<Vec<PairBatch>> {
        groups
            .iter()
            .map(|idx| {
                let pairs: Vec<PreferencePair> = idx.iter().map(|&i| set[i].clone()).collect();
                let batch = preference_batch(&pairs, pad_id)?;
                let (reference, margins) = match &self.objective {
                    PairObjective::Preference { config, reference } => (
                        config
                            .loss
                            .uses_reference()
                            .then(|| reference(model, &batch))
                            .transpose()?,
                        None,
                    ),
                    PairObjective::Reward { .. } => (
                        None,
                        pairs
                            .iter()
                            .any(|p| p.margin.is_some())
                            .then(|| pairs.iter().map(|p| p.margin.unwrap_or(0.0)).collect()),
                    ),
                };
                Ok(PairBatch {
                    batch,
                    reference,
                    margins,
                })
            })
            .collect()
    }

    /// One optimizer step on `micro`.
    fn step(
        &self,
        trainer: &mut Trainer,
        model: M,
        micro: &[PairBatch],
    ) -> Result<(M, PairOutcome)> {
        match &self.objective {
            PairObjective::Preference { config, .. } => {
                let (m, s) =
                    trainer.preference_step_accum(model, &preference_micro(micro), config)?;
                let metrics = s.metrics();
                Ok((
                    m,
                    PairOutcome {
                        loss: s.loss,
                        grad_norm: s.grad_norm,
                        lr: s.lr,
                        metrics,
                    },
                ))
            }
            PairObjective::Reward { config, rewards } => {
                let micro = reward_micro(micro);
                let (m, s) = trainer.reward_step_accum(model, &micro, config, *rewards)?;
                let metrics = s.metrics();
                Ok((
                    m,
                    PairOutcome {
                        loss: s.loss,
                        grad_norm: s.grad_norm,
                        lr: s.lr,
                        metrics,
                    },
                ))
            }
        }
    }

    /// The loss and metrics of `model` over `micro`, without a step.
    fn evaluate(&self, model: &M, micro: &[PairBatch]) -> Result<PairOutcome> {
        let (loss, metrics) = match &self.objective {
            PairObjective::Preference { config, .. } => {
                let s = evaluate_preference(model, &preference_micro(micro), config)?;
                (s.loss, s.metrics())
            }
            PairObjective::Reward { config, rewards } => {
                let s = evaluate_reward(model, &reward_micro(micro), config, *rewards)?;
                (s.loss, s.metrics())
            }
        };
        Ok(PairOutcome {
            loss,
            grad_norm: 0.0,
            lr: 0.0,
            metrics,
        })
    }

    /// The accuracy metric that progress lines show.
    fn accuracy_key(&self) -> &'static str {
        match self.objective {
            PairObjective::Preference { .. } => "rewards/accuracies",
            PairObjective::Reward { .. } => "accuracy",
        }
    }
}

fn preference_micro(batches: &[PairBatch]) -> Vec<PreferenceMicroBatch<'_>> {
    batches
        .iter()
        .map(|b| PreferenceMicroBatch {
            batch: &b.batch,
            reference: b.reference.as_deref(),
        })
        .collect()
}

fn reward_micro(batches: &[PairBatch]) -> Vec<RewardMicroBatch<'_>> {
    batches
        .iter()
        .map(|b| RewardMicroBatch {
            batch: &b.batch,
            margins: b.margins.as_deref(),
        })
        .collect()
}

/// Input tokens and padding slots of padded batches.
fn token_counts<'b>(batches: impl Iterator<Item = &'b TokenBatch>) -> (usize, usize, usize) {
    let (mut input, mut slots, mut labelled) = (0, 0, 0);
    for b in batches {
        input += b
            .attention_mask
            .iter()
            .flatten()
            .filter(|&&m| m != 0)
            .count();
        slots += b.batch_size() * b.seq_len();
        labelled += b.num_loss_tokens();
    }
    (input, slots - input, labelled)
}

/// Extra metrics computed on the model at every evaluation (e.g.
/// [`crate::harness::generation_metrics`] on a sample of prompts).
pub type EvalHook<'a, M> = dyn FnMut(&M) -> Result<BTreeMap<String, f64>> + 'a;

impl<M> std::fmt::Debug for Fit<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fit")
            .field("config", &self.config)
            .field("train", &self.train.len())
            .field("val", &self.val.map(<[_]>::len))
            .field("callbacks", &self.callbacks.len())
            .finish()
    }
}

impl<'a, M> Fit<'a, M>
where
    M: CausalLm + Module + Clone,
{
    /// A run over `train` with `config`.
    pub fn new(config: FitConfig, train: &'a [TokenizedExample]) -> Self {
        Self {
            config,
            train,
            val: None,
            callbacks: Vec::new(),
            exporter: None,
            eval_hook: None,
            interrupt: None,
            preference: None,
        }
    }

    /// A preference-optimization run over `train` pairs (DPO, IPO, hinge or SimPO, as
    /// `objective` says) with `config`: the same data order, schedule, evaluation, checkpoints,
    /// resume and logs as supervised runs, each step a
    /// [`Trainer::preference_step_accum`] whose reference log-probabilities come from
    /// `reference`. Steps and evaluations log TRL's metrics (`rewards/chosen`, ...) in their
    /// `extra` fields; the validation loss is the mean preference loss. Pairs are padded, not
    /// packed.
    pub fn preference(
        config: FitConfig,
        train: &'a [PreferencePair],
        objective: PreferenceConfig,
        reference: &'a ReferenceFn<'a, M>,
    ) -> Self {
        Self::pairwise(
            config,
            train,
            PairObjective::Preference {
                config: objective,
                reference,
            },
        )
    }

    /// A reward-model run over `train` pairs with `config`: each step a
    /// [`Trainer::reward_step_accum`] on the rewards `rewards` gives the batch's rows (for a
    /// [`kiln_models::RewardModel`], [`crate::batch_rewards`]), with the pairs' margins when
    /// the data has them. Steps and evaluations log TRL's metrics (`accuracy`, `margin`,
    /// `min_reward`, `mean_reward`, `max_reward`); the validation loss is the mean
    /// Bradley–Terry loss. Validation pairs come from [`Fit::preference_validation`].
    pub fn reward(
        config: FitConfig,
        train: &'a [PreferencePair],
        objective: RewardConfig,
        rewards: &'a RewardFn<'a, M>,
    ) -> Self {
        Self::pairwise(
            config,
            train,
            PairObjective::Reward {
                config: objective,
                rewards,
            },
        )
    }

    fn pairwise(
        config: FitConfig,
        train: &'a [PreferencePair],
        objective: PairObjective<'a, M>,
    ) -> Self {
        let mut fit = Self::new(config, &[]);
        fit.preference = Some(PreferenceData {
            train,
            val: None,
            objective,
        });
        fit
    }

    /// Validation pairs of a [`Fit::preference`] or [`Fit::reward`] run.
    pub fn preference_validation(mut self, val: &'a [PreferencePair]) -> Self {
        if let Some(p) = &mut self.preference {
            p.val = Some(val);
        }
        self
    }

    /// Stops the run cleanly when `flag` becomes true (set it from a SIGINT/SIGTERM handler):
    /// the step in progress finishes, a checkpoint is written into `output_dir` (even without
    /// `checkpoint_every`) and the run returns with [`StopReason::Interrupted`].
    pub fn interrupt(mut self, flag: &'a AtomicBool) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// Validation examples for evaluation, early stopping and keep-best.
    pub fn validation(mut self, val: &'a [TokenizedExample]) -> Self {
        self.val = Some(val);
        self
    }

    /// Adds a callback.
    pub fn callback(mut self, callback: &'a mut dyn Callback) -> Self {
        self.callbacks.push(callback);
        self
    }

    /// Computes extra metrics at every evaluation; they are logged in [`EvalLog::extra`] and can
    /// be watched with [`crate::EvalMetric::Extra`].
    pub fn eval_hook(mut self, hook: &'a mut EvalHook<'a, M>) -> Self {
        self.eval_hook = Some(hook);
        self
    }

    /// Also writes the adapter with `exporter` into every checkpoint.
    pub fn exporter(mut self, exporter: &'a dyn AdapterExporter<M>) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// Trains `model` (on an autodiff device) with `trainer`.
    ///
    /// # Errors
    /// Invalid configuration, empty training data, a batch without labels, a non-finite loss,
    /// I/O errors and checkpoints that do not match the run.
    pub fn run(mut self, model: M, trainer: &mut Trainer) -> Result<FitOutput<M>> {
        let cfg = self.config.clone();
        cfg.validate()?;
        trainer.set_gradient_checkpointing(cfg.gradient_checkpointing);
        let num_examples = self
            .preference
            .as_ref()
            .map_or(self.train.len(), |p| p.train.len());
        if num_examples == 0 {
            return Err(TrainError::InvalidConfig {
                field: "train".into(),
                reason: "no training example".into(),
            });
        }
        let group = trainer.collective().cloned();
        let (rank, world) = group
            .as_ref()
            .map_or((0, 1), |g| (g.rank(), g.world_size()));
        // Rank 0 alone writes the run's files; every replica reads checkpoints to resume.
        let writer = rank == 0;
        if group.is_some() {
            if self.preference.is_some() {
                return Err(TrainError::InvalidConfig {
                    field: "distributed".into(),
                    reason: "data-parallel runs train on examples; preference and reward runs \
                             take one process"
                        .into(),
                });
            }
            if cfg.grad_accum_steps < world {
                return Err(TrainError::InvalidConfig {
                    field: "grad_accum_steps".into(),
                    reason: format!(
                        "{} micro-batches per step cannot be shared out among {world} replicas; \
                         set it to at least {world} (a multiple of {world} keeps every replica \
                         equally busy)",
                        cfg.grad_accum_steps
                    ),
                });
            }
        }
        let rows = cfg.row_layout();
        let order = match &self.preference {
            None => {
                check_positions(&model, self.train, "training")?;
                if let Some(val) = self.val {
                    check_positions(&model, val, "validation")?;
                }
                rows.check(self.train, "packing_row_len")?;
                if let Some(val) = self.val {
                    rows.check(val, "packing_row_len")?;
                }
                cfg.data_order(self.train)
            }
            Some(p) => {
                if cfg.packing {
                    return Err(TrainError::InvalidConfig {
                        field: "packing".into(),
                        reason: "preference pairs are padded, not packed".into(),
                    });
                }
                check_lengths(&model, p.train.iter().map(PreferencePair::len), "training")?;
                if let Some(val) = p.val {
                    check_lengths(&model, val.iter().map(PreferencePair::len), "validation")?;
                }
                let lengths = cfg
                    .group_by_length
                    .then(|| p.train.iter().map(PreferencePair::len).collect());
                cfg.order(p.train.len(), lengths)
            }
        };
        let total = cfg.total_steps(num_examples);
        let layout = DataLayout {
            num_examples,
            batch_size: cfg.batch_size,
            grad_accum_steps: cfg.grad_accum_steps,
            shuffle: cfg.shuffle,
            group_by_length: cfg.group_by_length,
        };
        let watch = cfg.early_stopping.clone().unwrap_or_default();
        let device = trainer.device().clone();

        if let Some(dir) = &cfg.output_dir
            && writer
        {
            check_previous_run(dir, cfg.resume, cfg.overwrite)?;
        }
        let mut ckpt = match &cfg.output_dir {
            Some(dir) if (writer && cfg.checkpoint_every.is_some()) || cfg.resume => Some(
                CheckpointManager::new(dir.join(files::CHECKPOINTS), cfg.save_total_limit)?,
            ),
            _ => None,
        };
        let mut model = model;
        let mut state = TrainerState {
            step: trainer.step_count(),
            epoch: 0,
            seed: cfg.seed,
            optimizer: trainer.config().clone(),
            schedule: *trainer.schedule(),
            data: layout,
            best: None,
            evals_without_improvement: 0,
            loss_tokens_seen: 0,
            input_tokens_seen: 0,
            padding_tokens_seen: 0,
            elapsed_secs: 0.0,
            last_loss: None,
        };
        let mut best_record: Option<ModuleRecord> = None;
        let mut resumed_from = None;
        if cfg.resume
            && let Some(ckpt) = &ckpt
            && let Some(latest) = ckpt.latest()?
        {
            CheckpointManager::read_state(&latest)?.check_resume(&latest, layout, cfg.seed)?;
            let (m, saved) = CheckpointManager::restore(&latest, model, trainer)?;
            model = m;
            let best_path = latest.join(BEST_PARAMS_FILE);
            if cfg.keep_best && saved.best.is_some() && best_path.is_file() {
                best_record =
                    Some(ModuleRecord::load(&best_path).map_err(TrainError::record(&best_path))?);
            }
            state = saved;
            resumed_from = Some(latest);
        }
        if let Some(g) = &group {
            crate::dist::check_agreement(
                g.as_ref(),
                &[
                    ("the step to start from", state.step as f64),
                    (
                        "the number of trainable values",
                        crate::dist::trainable_len(&model) as f64,
                    ),
                    ("the number of training examples", num_examples as f64),
                    ("the number of steps", total as f64),
                    ("the seed", cfg.seed as f64),
                ],
            )?;
            model = crate::dist::sync_trainable(model, g.as_ref())?;
        }

        let (mut log, mut history) = match &cfg.output_dir {
            Some(dir) if writer => {
                std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
                let keep = resumed_from.as_ref().map(|_| state.step);
                let (log, kept) = MetricsLog::open(&dir.join(files::METRICS), keep)?;
                (Some(log), kept)
            }
            _ => (None, Vec::new()),
        };

        let bar = progress_bar(
            total,
            state.step,
            cfg.progress && std::io::stderr().is_terminal(),
        );
        let start = Instant::now();
        let elapsed_before = state.elapsed_secs;
        let mut losses = Vec::new();
        let mut last_eval = None;
        let mut last_checkpoint = None;
        let mut stop_reason = StopReason::Completed;
        let eval_bs = cfg.eval_batch_size.unwrap_or(cfg.batch_size);
        // A run that had already stopped early stays stopped when resumed.
        let stopped_before = cfg
            .early_stopping
            .as_ref()
            .is_some_and(|es| state.evals_without_improvement >= es.patience.max(1));
        if stopped_before {
            stop_reason = StopReason::EarlyStopped;
        }

        while state.step < total && !stopped_before {
            let (epoch, batches) = order.step_batches(state.step);
            // Dropout masks depend on (seed, step) only, so a resumed run draws the same ones.
            device.seed(mix(cfg.seed, state.step as u64));
            let (m, stats, extra) = match &self.preference {
                None => {
                    // This replica's share: micro-batch i goes to replica i mod world.
                    let micro = batches
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % world == rank)
                        .map(|(_, idx)| {
                            let examples: Vec<TokenizedExample> =
                                idx.iter().map(|&i| self.train[i].clone()).collect();
                            rows.batch(&examples, cfg.pad_id)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let before = group.as_ref().map(|g| g.traffic());
                    let (m, stats) = trainer.train_step_accum(model, &micro)?;
                    let mut extra = BTreeMap::new();
                    if let (Some(g), Some(before)) = (&group, before) {
                        // What this step's exchanges cost this replica (waiting for the
                        // slowest replica included).
                        let after = g.traffic();
                        extra.insert(
                            "allreduce_secs".to_string(),
                            (after.micros - before.micros) as f64 * 1e-6,
                        );
                        extra.insert(
                            "allreduce_bytes_sent".to_string(),
                            (after.sent - before.sent) as f64,
                        );
                    }
                    (m, stats, extra)
                }
                Some(p) => {
                    let micro = p.batches(&model, p.train, &batches, cfg.pad_id)?;
                    let (input_tokens, padding_tokens, loss_tokens) =
                        token_counts(micro.iter().map(|b| &b.batch));
                    let (m, ps) = p.step(trainer, model, &micro)?;
                    let stats = StepStats {
                        loss: ps.loss,
                        grad_norm: ps.grad_norm,
                        lr: ps.lr,
                        loss_tokens,
                        input_tokens,
                        padding_tokens,
                        micro_batches: micro.len(),
                    };
                    (m, stats, ps.metrics)
                }
            };
            model = m;
            state.step = trainer.step_count();
            state.epoch = order.epoch_of(state.step);
            state.loss_tokens_seen += stats.loss_tokens as u64;
            state.input_tokens_seen += stats.input_tokens as u64;
            state.padding_tokens_seen += stats.padding_tokens as u64;
            state.elapsed_secs = elapsed_before + start.elapsed().as_secs_f64();
            state.last_loss = Some(stats.loss);
            losses.push(stats.loss);
            let tokens_per_sec = state.input_tokens_seen as f64 / state.elapsed_secs.max(1e-9);
            let step_log = StepLog {
                step: state.step,
                epoch,
                loss: stats.loss,
                lr: stats.lr,
                grad_norm: stats.grad_norm,
                loss_tokens: stats.loss_tokens,
                tokens_per_sec,
                elapsed_secs: state.elapsed_secs,
                extra,
            };
            bar.set_position(state.step as u64);
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.0} tok/s",
                stats.loss, stats.lr, tokens_per_sec
            ));
            for cb in &mut self.callbacks {
                cb.on_step(&step_log);
            }
            let rec = LogRecord::Step(step_log);
            if let Some(log) = &mut log {
                log.write(&rec)?;
            }
            history.push(rec);

            let mut stop = false;
            let last = state.step >= total;
            let has_val =
                self.val.is_some() || self.preference.as_ref().is_some_and(|p| p.val.is_some());
            if has_val && (last || cfg.eval_every.is_some_and(|n| state.step.is_multiple_of(n))) {
                let (result, mut extra) = match (&self.preference, self.val) {
                    (Some(p), _) => {
                        let val = p.val.unwrap_or_default();
                        let groups: Vec<Vec<usize>> = (0..val.len())
                            .collect::<Vec<_>>()
                            .chunks(eval_bs.max(1))
                            .map(<[usize]>::to_vec)
                            .collect();
                        let micro = p.batches(&model, val, &groups, cfg.pad_id)?;
                        let ps = p.evaluate(&model, &micro)?;
                        let result = EvalResult {
                            loss: f64::from(ps.loss),
                            perplexity: 0.0,
                            tokens: token_counts(micro.iter().map(|b| &b.batch)).2,
                        };
                        (result, ps.metrics)
                    }
                    (None, Some(val)) => (
                        evaluate_rows(&model, val, eval_bs, cfg.pad_id, rows)?,
                        BTreeMap::new(),
                    ),
                    (None, None) => unreachable!("has_val"),
                };
                if let Some(hook) = &mut self.eval_hook {
                    extra.extend(hook(&model)?);
                }
                let mut eval_log = EvalLog {
                    step: state.step,
                    val_loss: result.loss,
                    val_perplexity: result.perplexity,
                    val_tokens: result.tokens,
                    is_best: false,
                    extra,
                };
                let value = watch.metric.of(&eval_log);
                if watch.improves(value, state.best.map(|b| b.value)) {
                    state.best = Some(BestMetric {
                        value,
                        step: state.step,
                    });
                    state.evals_without_improvement = 0;
                    eval_log.is_best = true;
                    if cfg.keep_best {
                        let ids = trainable_params(&model).into_iter().map(|(id, _)| id);
                        best_record = Some(
                            model
                                .clone()
                                .into_record_group(ParamGroup::from_ids(ids.collect())),
                        );
                    }
                } else {
                    state.evals_without_improvement += 1;
                }
                if let Some(es) = &cfg.early_stopping
                    && state.evals_without_improvement >= es.patience.max(1)
                {
                    stop = true;
                    stop_reason = StopReason::EarlyStopped;
                }
                for cb in &mut self.callbacks {
                    cb.on_eval(&eval_log);
                }
                let accuracy = self
                    .preference
                    .as_ref()
                    .and_then(|p| eval_log.extra.get(p.accuracy_key()));
                let detail = match accuracy {
                    Some(acc) => format!("reward accuracy {acc:.3}"),
                    None => format!("ppl {:.3}", eval_log.val_perplexity),
                };
                bar.println(format!(
                    "step {}: val loss {:.4} {detail}{}",
                    eval_log.step,
                    eval_log.val_loss,
                    if eval_log.is_best { " (best)" } else { "" }
                ));
                let rec = LogRecord::Eval(eval_log);
                if let Some(log) = &mut log {
                    log.write(&rec)?;
                }
                history.push(rec);
                last_eval = Some(result);
            }

            if !stop {
                for cb in &mut self.callbacks {
                    if cb.should_stop(state.step) {
                        stop = true;
                        stop_reason = StopReason::Callback;
                    }
                }
            }
            let mut interrupted =
                !last && !stop && self.interrupt.is_some_and(|f| f.load(Ordering::SeqCst));
            if let Some(g) = &group {
                // One replica's interrupt or callback stop stops them all at the same step.
                let mut flags = [f64::from(u8::from(stop)), f64::from(u8::from(interrupted))];
                g.all_reduce_f64(&mut flags)?;
                if flags[1] > 0.0 && !interrupted && !last && !stop {
                    interrupted = true;
                } else if flags[0] > 0.0 && !stop {
                    stop = true;
                    stop_reason = StopReason::Callback;
                }
            }
            if interrupted {
                stop = true;
                stop_reason = StopReason::Interrupted;
                if ckpt.is_none()
                    && writer
                    && let Some(dir) = &cfg.output_dir
                {
                    ckpt = Some(CheckpointManager::new(
                        dir.join(files::CHECKPOINTS),
                        cfg.save_total_limit,
                    )?);
                }
            }

            if let Some(ckpt) = &ckpt
                && writer
                && (interrupted
                    || cfg
                        .checkpoint_every
                        .is_some_and(|every| state.step.is_multiple_of(every) || last || stop))
            {
                let best = if cfg.keep_best {
                    best_record.as_ref()
                } else {
                    None
                };
                let dir = ckpt.save(&model, trainer, &state, self.exporter, best)?;
                for cb in &mut self.callbacks {
                    cb.on_checkpoint(state.step, &dir);
                }
                last_checkpoint = Some(dir);
            }
            if stop {
                break;
            }
        }
        bar.finish_and_clear();

        let mut restored_best = false;
        if cfg.keep_best
            && let Some(record) = best_record
        {
            model = model
                .try_load_record(record.allow_partial(true))
                .map_err(|e| TrainError::Record {
                    path: PathBuf::from("<best parameters>"),
                    message: e.to_string(),
                })?;
            restored_best = true;
        }

        let steps_per_epoch = order.steps_per_epoch().max(1);
        let summary = RunSummary {
            steps: state.step,
            total_steps: total,
            epochs: state.step as f64 / steps_per_epoch as f64,
            loss_tokens: state.loss_tokens_seen,
            input_tokens: state.input_tokens_seen,
            padding_tokens: state.padding_tokens_seen,
            elapsed_secs: state.elapsed_secs,
            tokens_per_sec: state.input_tokens_seen as f64 / state.elapsed_secs.max(1e-9),
            final_loss: state.last_loss,
            losses,
            last_eval,
            best: state.best,
            restored_best,
            stop_reason,
            resumed_from,
            last_checkpoint,
        };
        if let Some(dir) = &cfg.output_dir
            && writer
        {
            if cfg.plot && !history.is_empty() {
                let name = dir.file_name().map(|n| n.to_string_lossy());
                plot_curves(&dir.join(files::CURVES), &history, name.as_deref())?;
            }
            write_json(&dir.join(files::SUMMARY), &summary)?;
        }
        // The fused step's buffers are reused across steps; the run is over, so free them.
        kiln_nn::kernels::pool::clear();
        Ok(FitOutput { model, summary })
    }
}
