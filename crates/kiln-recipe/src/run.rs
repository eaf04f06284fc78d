//! Running a recipe: load, prepare, attach, train, save and report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use kiln_data::{
    Encoder, Formatter, PreferenceFields, PreferencePair, PrepareOptions, RecordFormat, SourceKind,
    TextMode, TokenBatch, TokenizedExample, prepare, prepare_path, read_preference_pairs,
    read_records,
};
use kiln_models::{
    AnyCausalLm, AnyConfig, CausalLm, RewardModel, load_pretrained, save_pretrained,
};
use kiln_peft::{AdapterConfig, TrainableReport, attach_adapter, full_fine_tuning, save_adapter};
use kiln_tokenizer::Tokenizer;
use kiln_train::dist::Collective;
use kiln_train::{
    Callback, Fit, HEAD_MODULES, OutputLock, PeftExporter, ReferenceFn, ReferenceTable,
    RewardExporter, RunSummary, Trainer, base_reference, batch_rewards, check_previous_run,
    reference_logps, save_reward_adapter,
};

use crate::{Recipe, ReferenceKind, ReplaySection, Result};

impl Recipe {
    /// Runs the recipe: loads the model, prepares the data, attaches the method, trains, and
    /// writes into `fit.output_dir`:
    /// - `adapter/`: the adapter in Hugging Face PEFT format (full fine-tuning: `model/`, a
    ///   Hugging Face directory with the tokenizer);
    /// - `recipe.toml`: the resolved recipe;
    /// - `report.md`: what was trained and how it went;
    /// - the [`Fit`] files: `metrics.jsonl`, `loss_curve.png`, `run_summary.json`, `checkpoints/`.
    ///
    /// The run holds `fit.output_dir`'s lock ([`OutputLock`]) from start to end, and refuses
    /// before writing anything when the directory holds an earlier run's checkpoints and the
    /// recipe neither resumes (`fit.resume`) nor overwrites (`fit.overwrite`).
    ///
    /// # Errors
    /// Any loading, data, adapter, training or I/O error, naming the file, key or tensor; a
    /// directory locked by another run or holding an earlier run.
    pub fn run(&self, device: &Device) -> Result<RecipeOutput> {
        self.run_interruptible(device, None)
    }

    /// [`Recipe::run`], stopping cleanly when `interrupt` becomes true (see
    /// [`Fit::interrupt`]): the adapter and report are written as at the end of a run, and the
    /// summary's `stop_reason` is `Interrupted`.
    ///
    /// # Errors
    /// As [`Recipe::run`].
    pub fn run_interruptible(
        &self,
        device: &Device,
        interrupt: Option<&AtomicBool>,
    ) -> Result<RecipeOutput> {
        self.run_with(device, interrupt, None)
    }

    /// [`Recipe::run_interruptible`] with a [`Callback`] that sees every step and evaluation
    /// and may end the run early ([`Callback::should_stop`]; the summary's `stop_reason` is
    /// then `Callback`). Hyper-parameter search passes its [`kiln_train::search::TrialPruner`]
    /// here.
    ///
    /// # Errors
    /// As [`Recipe::run`].
    pub fn run_with(
        &self,
        device: &Device,
        interrupt: Option<&AtomicBool>,
        callback: Option<&mut dyn Callback>,
    ) -> Result<RecipeOutput> {
        self.run_inner(device, interrupt, callback, None)
    }

    /// [`Recipe::run_interruptible`] as one replica of a data-parallel group (see
    /// [`kiln_train::dist`]): every replica runs the same recipe, takes its share of each
    /// step's micro-batches and the same optimizer steps. Rank 0 alone holds the output
    /// directory and writes the adapter, report, logs and checkpoints; the others read its
    /// checkpoints to resume, so on several machines `fit.output_dir` must be one shared
    /// directory. Supervised tasks only (`kind = "sft"`).
    ///
    /// # Errors
    /// As [`Recipe::run`]; a pairwise or PPO task; a group failure (a peer missing, dead or
    /// disagreeing), naming the peer.
    pub fn run_data_parallel(
        &self,
        device: &Device,
        interrupt: Option<&AtomicBool>,
        group: Arc<dyn Collective>,
    ) -> Result<RecipeOutput> {
        if self.task.is_pairwise() || self.task.ppo_config().is_some() {
            return Err(crate::RecipeError::Invalid {
                origin: "[task]".into(),
                message: format!(
                    "kind = \"{}\" runs in one process; data-parallel training takes \
                     supervised recipes (kind = \"sft\")",
                    self.task.kind.name()
                ),
            });
        }
        self.run_inner(device, interrupt, None, Some(group))
    }

    fn run_inner(
        &self,
        device: &Device,
        interrupt: Option<&AtomicBool>,
        callback: Option<&mut dyn Callback>,
        group: Option<Arc<dyn Collective>>,
    ) -> Result<RecipeOutput> {
        let out_dir = self.fit.output_dir.clone().expect("validated");
        let writer = group.as_ref().is_none_or(|g| g.rank() == 0);
        let _lock = match writer {
            true => Some(OutputLock::acquire(&out_dir)?),
            false => None,
        };
        if writer {
            check_previous_run(&out_dir, self.fit.resume, self.fit.overwrite)?;
        }

        let train_device = device.clone().autodiff();
        let start = Instant::now();
        let pretrained = load_pretrained(&self.model.path, &train_device)?;
        let load_secs = start.elapsed().as_secs_f64();
        let tokenizer = pretrained.tokenizer;
        let preference = self.task.preference();
        let (train, validation) = match self.task.is_pairwise() {
            true => (Vec::new(), None),
            false => self.prepare(&tokenizer)?,
        };
        let pairs = match self.task.is_pairwise() {
            true => Some(self.prepare_preference(&tokenizer)?),
            false => None,
        };
        let pad_id = tokenizer.padding_id();

        let mut head = None;
        let (model, adapter) = match &self.adapter {
            Some(c) => {
                let mut c = c.clone();
                c.common_mut().base_model_name_or_path =
                    Some(self.model.path.display().to_string());
                // A reward model's head is outside the decoder the adapter attaches to (PEFT
                // lists it in modules_to_save); the saved configuration names it again.
                c.remove_modules_to_save(&HEAD_MODULES);
                c.common_mut().task_type = Some("CAUSAL_LM".into());
                let (mut m, c) =
                    attach_adapter(pretrained.model, &c, None, self.seed, &train_device)?;
                if let Some(dir) = &self.adapter_init_from {
                    head = init_adapter_from(&mut m, &c, dir, &train_device)?;
                    if head.is_some() && self.task.reward().is_none() {
                        return Err(crate::RecipeError::Invalid {
                            origin: dir.join("adapter_config.json").display().to_string(),
                            message: format!(
                                "adapter.init_from holds a reward model (PEFT task type \
                                 SEQ_CLS); continue it with [task] kind = \"reward\", or \
                                 start {} from a causal-LM adapter",
                                self.task.kind.name()
                            ),
                        });
                    }
                }
                (m, Some(c))
            }
            None => (full_fine_tuning(pretrained.model), None),
        };
        let mut trainable = TrainableReport::of(&model);

        let mut fit_config = self.fit_config();
        fit_config.pad_id = pad_id;
        let num_train = pairs.as_ref().map_or(train.len(), |(t, _)| t.len());
        let num_validation = match &pairs {
            Some((_, v)) => v.as_ref().map_or(0, Vec::len),
            None => validation.as_ref().map_or(0, Vec::len),
        };
        if let (Some(ppo), Some(config)) = (self.task.ppo_config(), &adapter) {
            let run = crate::ppo::PpoRun {
                model,
                adapter: config.clone(),
                fit: fit_config,
                ppo,
                config: pretrained.config,
                tokenizer,
                load_secs,
                trainable,
                device: device.clone(),
            };
            return self.run_ppo(run, &train, interrupt, callback);
        }
        let total_steps = fit_config.total_steps(num_train);
        let mut trainer = Trainer::new(
            self.optimizer.clone(),
            self.schedule.schedule(total_steps),
            &train_device,
        )?;
        if let Some(g) = group {
            trainer.set_collective(g);
        }
        if let (Some(objective), Some((train_pairs, val_pairs)), Some(config)) =
            (self.task.reward(), &pairs, &adapter)
        {
            // The head: the one saved with `adapter.init_from` (a reward model), else drawn as
            // transformers draws a new classifier head.
            let model = match head.take() {
                Some(h) => RewardModel::with_head(model, h),
                None => RewardModel::new(model, REWARD_HEAD_STD, self.seed),
            };
            trainable.trainable += model.hidden_size();
            trainable.total += model.hidden_size();
            let rewards = move |m: &RewardModel<AnyCausalLm>, b: &TokenBatch| {
                batch_rewards(m, b, Some(pad_id))
            };
            let exporter = RewardExporter {
                config: config.clone(),
            };
            let mut fit =
                Fit::reward(fit_config, train_pairs, objective, &rewards).exporter(&exporter);
            if let Some(v) = val_pairs {
                fit = fit.preference_validation(v);
            }
            if let Some(flag) = interrupt {
                fit = fit.interrupt(flag);
            }
            if let Some(callback) = callback {
                fit = fit.callback(callback);
            }
            let output = fit.run(model, &mut trainer)?;
            let dir = out_dir.join("adapter");
            save_reward_adapter(&output.model, config, &dir)?;
            let reward_head = Some(output.model.head());
            return self.finish(
                output.model.model,
                reward_head,
                pretrained.config,
                tokenizer,
                adapter,
                RunFacts {
                    load_secs,
                    num_train,
                    num_validation,
                    trainable,
                    summary: output.summary,
                    saved: dir,
                    write: true,
                },
            );
        }
        let exporter = adapter.clone().map(|config| PeftExporter { config });
        // The reference of a preference task: the policy with its adapter disabled, or the
        // model as it is now (a clone shares the frozen base weights).
        let reference: Box<ReferenceFn<'_, AnyCausalLm>> = match (&pairs, self.reference()) {
            // Once, before training: the reference as it is now (the base, or the model itself
            // before its first step).
            (Some((train_pairs, val_pairs)), kind) if self.task.precompute_ref_log_probs => {
                let mut sets: Vec<&[PreferencePair]> = vec![train_pairs];
                if let Some(v) = val_pairs {
                    sets.push(v);
                }
                let bs = fit_config.eval_batch_size.unwrap_or(fit_config.batch_size);
                let table = match kind {
                    ReferenceKind::Base => {
                        ReferenceTable::compute(&base_reference(&model), &sets, pad_id, bs)?
                    }
                    ReferenceKind::Initial => ReferenceTable::compute(&model, &sets, pad_id, bs)?,
                };
                Box::new(move |_: &AnyCausalLm, b: &TokenBatch| table.logps(b))
            }
            (_, ReferenceKind::Base) => {
                Box::new(|m: &AnyCausalLm, b: &TokenBatch| reference_logps(&base_reference(m), b))
            }
            (_, ReferenceKind::Initial) => {
                let initial = model.clone();
                Box::new(move |_: &AnyCausalLm, b: &TokenBatch| reference_logps(&initial, b))
            }
        };
        let mut fit = match (&pairs, preference) {
            (Some((train_pairs, val_pairs)), Some(objective)) => {
                let fit = Fit::preference(fit_config, train_pairs, objective, &*reference);
                match val_pairs {
                    Some(v) => fit.preference_validation(v),
                    None => fit,
                }
            }
            _ => {
                let fit = Fit::new(fit_config, &train);
                match &validation {
                    Some(v) => fit.validation(v),
                    None => fit,
                }
            }
        };
        if let Some(e) = &exporter {
            fit = fit.exporter(e);
        }
        if let Some(flag) = interrupt {
            fit = fit.interrupt(flag);
        }
        if let Some(callback) = callback {
            fit = fit.callback(callback);
        }
        let output = fit.run(model, &mut trainer)?;
        let model = output.model;

        let saved = match &adapter {
            Some(_) if !writer => out_dir.join("adapter"),
            None if !writer => out_dir.join("model"),
            Some(c) => {
                let dir = out_dir.join("adapter");
                save_adapter(&model, c, &dir)?;
                dir
            }
            None => {
                let dir = out_dir.join("model");
                save_pretrained(
                    &model.clone().valid(),
                    &pretrained.config,
                    Some(&tokenizer),
                    &dir,
                )?;
                dir
            }
        };
        self.finish(
            model,
            None,
            pretrained.config,
            tokenizer,
            adapter,
            RunFacts {
                load_secs,
                num_train,
                num_validation,
                trainable,
                summary: output.summary,
                saved,
                write: writer,
            },
        )
    }

    /// Writes `recipe.toml` and `report.md` beside the saved adapter or model, and returns the
    /// run's output.
    pub(crate) fn finish(
        &self,
        model: AnyCausalLm,
        reward_head: Option<Vec<f32>>,
        config: AnyConfig,
        tokenizer: Tokenizer,
        adapter: Option<AdapterConfig>,
        facts: RunFacts,
    ) -> Result<RecipeOutput> {
        let out_dir = self.fit.output_dir.clone().expect("validated");
        // Written with the adapter, so that it describes the adapter beside it.
        if facts.write {
            kiln_nn::write_atomic(&out_dir.join("recipe.toml"), self.to_toml().as_bytes())?;
        }
        let model = model.valid();
        let report = RunReport {
            recipe: self.clone(),
            model_type: config.model_type().to_string(),
            load_secs: facts.load_secs,
            train_examples: facts.num_train,
            validation_examples: facts.num_validation,
            trainable_params: facts.trainable.trainable,
            total_params: facts.trainable.total,
            summary: facts.summary,
            saved: facts.saved,
        };
        if facts.write {
            kiln_nn::write_atomic(&out_dir.join("report.md"), report.to_markdown().as_bytes())?;
        }
        Ok(RecipeOutput {
            model,
            reward_head,
            config,
            tokenizer,
            adapter,
            report,
        })
    }

    /// Tokenizes the training and validation data with the recipe's options.
    ///
    /// # Errors
    /// Data errors naming the file and line.
    pub fn prepare(
        &self,
        tokenizer: &Tokenizer,
    ) -> Result<(Vec<TokenizedExample>, Option<Vec<TokenizedExample>>)> {
        let load = |path: &Path, limit: Option<usize>| -> Result<Vec<TokenizedExample>> {
            // Preference pairs read as supervised data would fail on a missing field: say what
            // they are instead.
            if let Some(Ok(first)) = read_records(path, SourceKind::from_path(path)?)?.next()
                && PreferenceFields::default().matches(&first)
                && self.data.prepare.format.preference_fields().is_none()
            {
                return Err(kiln_data::DataError::Config(format!(
                    "{}:{}: a preference record (`chosen` and `rejected`); train on it with \
                     [task] kind = \"dpo\" (or ipo, hinge, simpo, reward)",
                    first.path.display(),
                    first.line
                ))
                .into());
            }
            let mut p = prepare_path(path, tokenizer, &self.data.prepare)?.examples;
            if let Some(n) = limit {
                p.truncate(n);
            }
            Ok(p)
        };
        let mut train = load(&self.data.train, self.data.limit_train)?;
        if let Some(replay) = &self.data.replay {
            let extra = self.replay_examples(replay, tokenizer, train.len())?;
            train.extend(extra);
        }
        let validation = match &self.data.validation {
            Some(v) => Some(load(v, self.data.limit_validation)?),
            None => None,
        };
        Ok((train, validation))
    }
}

/// What a run measured, for its report.
pub(crate) struct RunFacts {
    pub(crate) load_secs: f64,
    pub(crate) num_train: usize,
    pub(crate) num_validation: usize,
    pub(crate) trainable: TrainableReport,
    pub(crate) summary: RunSummary,
    pub(crate) saved: PathBuf,
    /// Whether this process writes the run's files (false on data-parallel ranks above 0).
    pub(crate) write: bool,
}

/// The standard deviation of a new reward head (transformers' usual `initializer_range`).
const REWARD_HEAD_STD: f32 = 0.02;

/// Fills the attached adapter with the tensors of the PEFT adapter saved in `dir`
/// (`adapter.init_from`), strictly: the method must be the same and every tensor must be there
/// with its shape. A reward model's head (`score.weight`, PEFT's `SEQ_CLS` layout) is returned
/// rather than loaded.
fn init_adapter_from(
    model: &mut AnyCausalLm,
    config: &AdapterConfig,
    dir: &Path,
    device: &Device,
) -> Result<Option<Vec<f32>>> {
    let saved = kiln_peft::read_adapter_config(dir)?;
    if saved.peft_type() != config.peft_type() {
        return Err(kiln_peft::PeftError::InFile {
            path: dir.join("adapter_config.json"),
            source: Box::new(kiln_peft::PeftError::InvalidConfig {
                field: "peft_type".into(),
                reason: format!(
                    "adapter.init_from holds a {} adapter, the recipe's [adapter] is {}",
                    saved.peft_type(),
                    config.peft_type()
                ),
            }),
        }
        .into());
    }
    let file = dir.join("adapter_model.safetensors");
    let mut tensors = kiln_nn::safetensors::read_safetensors(&file)?;
    let head = tensors
        .remove("base_model.model.score.weight")
        .map(|t| t.data);
    if let Some(h) = &head
        && h.len() != model.hidden_size()
    {
        return Err(kiln_peft::PeftError::InFile {
            path: file,
            source: Box::new(kiln_peft::PeftError::InvalidConfig {
                field: "base_model.model.score.weight".into(),
                reason: format!(
                    "{} values; a reward head for this model holds {}",
                    h.len(),
                    model.hidden_size()
                ),
            }),
        }
        .into());
    }
    kiln_peft::io::set_adapter_state(model, config, tensors, &file, device)?;
    Ok(head)
}

impl Recipe {
    /// Reads the preference pairs of `data.train` and `data.validation` for a preference task:
    /// the field names of `data.format` when it is `preference` (TRL's otherwise), the prompt
    /// style of `data.style`, `data.max_len` with `data.truncation`, and the limits.
    ///
    /// # Errors
    /// Data errors naming the file, line and field.
    #[allow(clippy::type_complexity)]
    pub fn prepare_preference(
        &self,
        tokenizer: &Tokenizer,
    ) -> Result<(Vec<PreferencePair>, Option<Vec<PreferencePair>>)> {
        let options = &self.data.prepare;
        let fields = options.format.preference_fields().unwrap_or_default();
        let formatter = Formatter::new(RecordFormat::prompt_completion(), options.style.clone())?;
        let encoder = Encoder::new(tokenizer, options.encode);
        let load = |path: &Path, limit: Option<usize>| -> Result<Vec<PreferencePair>> {
            let mut pairs = read_preference_pairs(
                path,
                &formatter,
                &encoder,
                &fields,
                options.max_len,
                options.truncation,
            )?;
            if let Some(n) = limit {
                pairs.truncate(n);
            }
            Ok(pairs)
        };
        let train = load(&self.data.train, self.data.limit_train)?;
        let validation = match &self.data.validation {
            Some(v) => Some(load(v, self.data.limit_validation)?),
            None => None,
        };
        Ok((train, validation))
    }

    /// The replay examples for `train_len` training examples: `ratio / (1 - ratio)` per
    /// training example, rounded, drawn in a seeded order (repeating only when the file has too
    /// few), prepared with the file's own format, the raw prompt style and the data's length
    /// limits.
    fn replay_examples(
        &self,
        replay: &ReplaySection,
        tokenizer: &Tokenizer,
        train_len: usize,
    ) -> Result<Vec<TokenizedExample>> {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;

        let n = (replay.ratio / (1.0 - replay.ratio) * train_len as f64).round() as usize;
        if n == 0 {
            return Ok(Vec::new());
        }
        let path = &replay.path;
        let kind = match SourceKind::from_path(path)? {
            SourceKind::Text { .. } => SourceKind::Text {
                mode: TextMode::Lines,
            },
            other => other,
        };
        let mut options = PrepareOptions::new(replay.format.clone());
        options.max_len = self.data.prepare.max_len;
        options.truncation = self.data.prepare.truncation;
        let pool = prepare(read_records(path, kind)?, path, tokenizer, &options)?.examples;
        if pool.is_empty() {
            return Err(kiln_data::DataError::Config(format!(
                "{}: data.replay holds no example",
                path.display()
            ))
            .into());
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ 0x007e_91a7);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut order: Vec<usize> = (0..pool.len()).collect();
            order.shuffle(&mut rng);
            out.extend(
                order
                    .into_iter()
                    .take(n - out.len())
                    .map(|i| pool[i].clone()),
            );
        }
        Ok(out)
    }
}

/// A trained model and what the run did.
#[derive(Debug)]
pub struct RecipeOutput {
    /// The trained model on the inference device (no autodiff); for a reward task, the decoder
    /// under the head.
    pub model: AnyCausalLm,
    /// A reward task's head (`score.weight`, `[1, hidden]`): with `model`, a
    /// [`RewardModel::with_head`].
    pub reward_head: Option<Vec<f32>>,
    /// Its configuration.
    pub config: AnyConfig,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The adapter's resolved configuration (`None` after full fine-tuning).
    pub adapter: Option<AdapterConfig>,
    /// The run's report (also in `report.md`).
    pub report: RunReport,
}

/// What a recipe run did, written as `report.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The resolved recipe.
    pub recipe: Recipe,
    /// The base model's `model_type`.
    pub model_type: String,
    /// Seconds spent loading the model.
    pub load_secs: f64,
    /// Training examples.
    pub train_examples: usize,
    /// Validation examples.
    pub validation_examples: usize,
    /// Parameters that trained.
    pub trainable_params: usize,
    /// All parameters.
    pub total_params: usize,
    /// The training run.
    pub summary: RunSummary,
    /// Where the adapter (or the full model) was saved.
    pub saved: PathBuf,
}

impl RunReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let s = &self.summary;
        let method = self
            .recipe
            .adapter
            .as_ref()
            .map_or("full fine-tuning", AdapterConfig::peft_type);
        let mut md = format!(
            "# Training run\n\n| | |\n|---|---|\n\
             | base model | `{}` ({}) |\n| method | {} |\n\
             | trainable parameters | {} of {} ({:.4}%) |\n\
             | examples | {} train, {} validation |\n\
             | steps | {} of {} ({:.2} epochs, stopped: {:?}) |\n\
             | tokens | {} input, {} with loss, {} padding ({}) |\n\
             | time | {:.1} s training ({:.1} tokens/s), {:.1} s loading |\n",
            self.recipe.model.path.display(),
            self.model_type,
            method,
            self.trainable_params,
            self.total_params,
            100.0 * self.trainable_params as f64 / self.total_params.max(1) as f64,
            self.train_examples,
            self.validation_examples,
            s.steps,
            s.total_steps,
            s.epochs,
            s.stop_reason,
            s.input_tokens,
            s.loss_tokens,
            s.padding_tokens,
            if self.recipe.packing() {
                "packed rows"
            } else {
                "padded rows"
            },
            s.elapsed_secs,
            s.tokens_per_sec,
            self.load_secs,
        );
        if let (Some(first), Some(last)) = (s.losses.first(), s.final_loss) {
            md.push_str(&format!(
                "| training loss | {first:.4} (first step) → {last:.4} (last step) |\n"
            ));
        }
        if let Some(e) = &s.last_eval {
            if self.recipe.task.is_pairwise() {
                md.push_str(&format!(
                    "| validation | {} loss {:.4} |\n",
                    self.recipe.task.kind.name(),
                    e.loss
                ));
            } else {
                md.push_str(&format!(
                    "| validation | loss {:.4}, perplexity {:.3} |\n",
                    e.loss, e.perplexity
                ));
            }
        }
        let curve = if self.recipe.fit.plot {
            "The curve is in `loss_curve.png`, every step in `metrics.jsonl`."
        } else {
            "Every step is in `metrics.jsonl` (no plot: `fit.plot = false`)."
        };
        md.push_str(&format!(
            "| saved | `{}` |\n\n{curve}\n",
            self.saved.display()
        ));
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer over a few words, written into `dir`.
    fn tokenizer(dir: &Path) -> Tokenizer {
        let words = [
            "<unk>", "</s>", "a", "b", "c", "d", "e", "the", "sun", "is", "hot",
        ];
        let vocab: serde_json::Map<String, serde_json::Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i.into()))
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"eos_token": "</s>", "add_bos_token": false}"#,
        )
        .unwrap();
        Tokenizer::from_hf_dir(dir).unwrap()
    }

    fn recipe(dir: &Path, ratio: f64, replay: &str) -> Recipe {
        let text = format!(
            "[model]\npath = \"m\"\n[data]\ntrain = \"{t}\"\nformat = {{ format = \"prompt_completion\" }}\n\
             [data.replay]\npath = \"{r}\"\nratio = {ratio}\n[fit]\noutput_dir = \"{o}\"\n",
            t = dir.join("train.jsonl").display(),
            r = dir.join(replay).display(),
            o = dir.join("out").display(),
        );
        Recipe::parse(&text, "recipe.toml", &[]).unwrap()
    }

    #[test]
    fn replay_mixes_general_lines_by_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let tok = tokenizer(dir.path());
        let train: String = (0..6)
            .map(|i| format!("{{\"prompt\": \"a b\", \"completion\": \"c {i}\"}}\n"))
            .collect();
        std::fs::write(dir.path().join("train.jsonl"), train).unwrap();
        std::fs::write(dir.path().join("general.txt"), "the sun is hot\n\nd e\n").unwrap();
        // 0.25 of the mix: 6 × 1/3 = 2 replay lines, both lines once.
        let (mixed, _) = recipe(dir.path(), 0.25, "general.txt")
            .prepare(&tok)
            .unwrap();
        assert_eq!(mixed.len(), 8);
        let mut replayed: Vec<Vec<u32>> = mixed[6..].iter().map(|e| e.input_ids.clone()).collect();
        replayed.sort();
        assert_eq!(replayed, vec![vec![5, 6, 1], vec![7, 8, 9, 10, 1]]);
        // Loss on every token of a replay line.
        assert!(mixed[6..].iter().all(|e| e.labels.iter().all(|&l| l >= 0)));
        // 0.5: as many replay lines as training examples; the two lines repeat.
        let (mixed, _) = recipe(dir.path(), 0.5, "general.txt")
            .prepare(&tok)
            .unwrap();
        assert_eq!(mixed.len(), 12);
        // 0: no replay.
        let (mixed, _) = recipe(dir.path(), 0.0, "general.txt")
            .prepare(&tok)
            .unwrap();
        assert_eq!(mixed.len(), 6);
        // A bad ratio names the key; an empty file names the file.
        let bad = Recipe::parse(
            "[model]\npath = \"m\"\n[data]\ntrain = \"t.jsonl\"\nformat = { format = \"text\" }\n[data.replay]\npath = \"g.txt\"\n\
             ratio = 1.0\n[fit]\noutput_dir = \"o\"\n",
            "recipe.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("data.replay.ratio"), "{bad}");
        std::fs::write(dir.path().join("empty.txt"), "\n").unwrap();
        let err = recipe(dir.path(), 0.5, "empty.txt")
            .prepare(&tok)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty.txt"), "{err}");
    }
}
