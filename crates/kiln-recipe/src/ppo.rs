//! Running a `[task] kind = "ppo"` recipe: RLHF with PPO on the data's prompts, scored by a
//! reward model trained by a `reward` recipe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::Device;

use kiln_data::{TokenBatch, TokenizedExample};
use kiln_models::{AnyCausalLm, AnyConfig, CausalLm, RewardModel, load_pretrained};
use kiln_peft::{AdapterConfig, TrainableReport, save_adapter};
use kiln_tokenizer::Tokenizer;
use kiln_train::checkpoint::DataLayout;
use kiln_train::{
    AdapterExporter, Callback, CheckpointManager, FitConfig, LogRecord, MetricsLog, PpoConfig,
    RunSummary, StepLog, StopReason, Trainer, TrainerState, base_reference, files,
    load_reward_adapter, plot_curves, token_logps,
};

use crate::run::RunFacts;
use crate::{Recipe, RecipeOutput, Result};

/// What a PPO run starts from.
pub(crate) struct PpoRun {
    /// The policy: the base model with the recipe's adapter attached, on the training device.
    pub model: AnyCausalLm,
    /// The adapter's configuration.
    pub adapter: AdapterConfig,
    /// The run's batching and stopping.
    pub fit: FitConfig,
    /// PPO's settings.
    pub ppo: PpoConfig,
    /// The base model's configuration and tokenizer.
    pub config: AnyConfig,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Seconds spent loading the model.
    pub load_secs: f64,
    /// Trainable parameters of the policy.
    pub trainable: TrainableReport,
    /// The inference device (the reward model lives there).
    pub device: Device,
}

/// Writes the policy's adapter (not the value head) into every checkpoint.
struct PolicyExporter {
    config: AdapterConfig,
}

impl AdapterExporter<RewardModel<AnyCausalLm>> for PolicyExporter {
    fn export(
        &self,
        model: &RewardModel<AnyCausalLm>,
        dir: &std::path::Path,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        save_adapter(&model.model, &self.config, dir)?;
        Ok(())
    }
}

/// The tokens before an example's first label: its prompt.
fn prompt_of(example: &TokenizedExample) -> Vec<u32> {
    let first = example
        .labels
        .iter()
        .position(|&l| l >= 0)
        .unwrap_or(example.input_ids.len());
    example.input_ids[..first].to_vec()
}

impl Recipe {
    /// The PPO loop: one iteration per batch of `fit.batch_size` prompts (in the seeded order
    /// of the data over `fit.epochs`, or `fit.max_steps` iterations), each a
    /// [`kiln_train::Trainer::ppo_step`]; every iteration is logged to `metrics.jsonl` with
    /// TRL's metric names. Checkpoints (every `fit.checkpoint_every` iterations, at the end and
    /// on interruption) hold the adapter, the value head and the optimizer; `fit.resume`
    /// continues from the newest one with the same rollouts (each iteration's sampling seed is
    /// a function of the seed and the iteration). The policy's adapter is saved as a causal-LM PEFT adapter (the value
    /// head only serves training). Each example's prompt (the tokens before its first label)
    /// is used; `interrupt` stops the run after the iteration in progress, and `callback` sees
    /// every iteration.
    pub(crate) fn run_ppo(
        &self,
        run: PpoRun,
        train: &[TokenizedExample],
        interrupt: Option<&AtomicBool>,
        mut callback: Option<&mut dyn Callback>,
    ) -> Result<RecipeOutput> {
        let PpoRun {
            model,
            adapter,
            fit,
            ppo,
            config,
            tokenizer,
            load_secs,
            mut trainable,
            device,
        } = run;
        let out_dir = self.fit.output_dir.clone().expect("validated");
        let prompts: Vec<Vec<u32>> = train.iter().map(prompt_of).collect();
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(kiln_data::DataError::Config(format!(
                "{}: example {} has no prompt to answer (task.kind = \"ppo\" samples responses \
                 to prompts: use prompt/completion, instruction or chat data)",
                self.data.train.display(),
                i + 1
            ))
            .into());
        }
        let pad_id = tokenizer.padding_id();
        let eos: Vec<u32> = tokenizer.eos_token_id().into_iter().collect();
        let rm_dir = self.task.reward_model.clone().expect("validated");
        let rm_base = load_pretrained(&self.model.path, &device)?;
        let (reward_model, _) = load_reward_adapter(rm_base.model, &rm_dir, &device)?;
        let score = |p: &[Vec<u32>], r: &[Vec<u32>]| -> kiln_train::Result<Vec<f32>> {
            let seqs: Vec<Vec<u32>> = p
                .iter()
                .zip(r)
                .map(|(p, r)| p.iter().chain(r).copied().collect())
                .collect();
            Ok(reward_model.score(&seqs, pad_id, fit.batch_size.max(1)))
        };

        let order = fit.data_order(train);
        let iterations = fit.total_steps(train.len());
        let updates = ppo.ppo_epochs * ppo.minibatches;
        let mut trainer = Trainer::new(
            self.optimizer.clone(),
            self.schedule.schedule(iterations * updates),
            &model.device(),
        )?;
        let mut policy = RewardModel::new(model, 0.02, self.seed);
        trainable.trainable += policy.hidden_size();
        trainable.total += policy.hidden_size();
        std::fs::create_dir_all(&out_dir).map_err(|e| crate::RecipeError::Io {
            path: out_dir.clone(),
            source: e,
        })?;
        let layout = DataLayout {
            num_examples: train.len(),
            batch_size: fit.batch_size,
            grad_accum_steps: fit.grad_accum_steps,
            shuffle: fit.shuffle,
            group_by_length: fit.group_by_length,
        };
        let mut state = TrainerState {
            step: 0,
            epoch: 0,
            seed: fit.seed,
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
        let ckpt = if fit.checkpoint_every.is_some() || fit.resume {
            Some(CheckpointManager::new(
                out_dir.join(files::CHECKPOINTS),
                fit.save_total_limit,
            )?)
        } else {
            None
        };
        let mut resumed_from = None;
        if fit.resume
            && let Some(ckpt) = &ckpt
            && let Some(latest) = ckpt.latest()?
        {
            CheckpointManager::read_state(&latest)?.check_resume(&latest, layout, fit.seed)?;
            let (p, saved) = CheckpointManager::restore(&latest, policy, &mut trainer)?;
            policy = p;
            state = saved;
            resumed_from = Some(latest);
        }
        let first = state.step / updates.max(1);
        let keep = resumed_from.as_ref().map(|_| first);
        let (mut log, mut history) = MetricsLog::open(&out_dir.join(files::METRICS), keep)?;
        let exporter = PolicyExporter {
            config: adapter.clone(),
        };
        let start = Instant::now();
        let elapsed_before = state.elapsed_secs;
        let mut losses = Vec::new();
        let mut stop_reason = StopReason::Completed;
        let mut done = first;
        let mut last_checkpoint = None;
        for iteration in first..iterations {
            let (epoch, groups) = order.step_batches(iteration);
            let batch: Vec<Vec<u32>> = groups
                .iter()
                .flatten()
                .map(|&i| prompts[i].clone())
                .collect();
            let frozen = base_reference(&policy.model);
            let reference = |b: &TokenBatch| token_logps(&frozen, b, ppo.temperature);
            let lr = trainer.current_lr();
            let (p, stats) = trainer.ppo_step(
                policy,
                &batch,
                &score,
                &reference,
                &ppo,
                pad_id,
                &eos,
                fit.seed ^ (iteration as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            )?;
            policy = p;
            done = iteration + 1;
            let loss = (stats.policy_loss + ppo.vf_coef * stats.value_loss) as f32;
            losses.push(loss);
            let tokens = (stats.response_len * batch.len() as f64).round() as u64;
            state.step = trainer.step_count();
            state.epoch = order.epoch_of(done);
            state.loss_tokens_seen += tokens;
            state.input_tokens_seen += tokens + batch.iter().map(|p| p.len() as u64).sum::<u64>();
            state.elapsed_secs = elapsed_before + start.elapsed().as_secs_f64();
            state.last_loss = Some(loss);
            let step_log = StepLog {
                step: done,
                epoch,
                loss,
                lr,
                grad_norm: 0.0,
                loss_tokens: tokens as usize,
                tokens_per_sec: state.input_tokens_seen as f64 / state.elapsed_secs.max(1e-9),
                elapsed_secs: state.elapsed_secs,
                extra: stats.metrics(),
            };
            if fit.progress {
                eprintln!(
                    "ppo iteration {done}/{iterations}: score {:.4} kl {:.4} policy loss {:.4} \
                     value loss {:.4}",
                    stats.scores, stats.kl, stats.policy_loss, stats.value_loss
                );
            }
            if let Some(cb) = callback.as_deref_mut() {
                cb.on_step(&step_log);
            }
            let record = LogRecord::Step(step_log);
            log.write(&record)?;
            history.push(record);
            let mut stop = false;
            if callback
                .as_deref_mut()
                .is_some_and(|cb| cb.should_stop(done))
            {
                stop_reason = StopReason::Callback;
                stop = true;
            }
            if interrupt.is_some_and(|f| f.load(Ordering::SeqCst)) {
                stop_reason = StopReason::Interrupted;
                stop = true;
            }
            if let Some(ckpt) = &ckpt
                && (stop
                    || done == iterations
                    || fit.checkpoint_every.is_some_and(|n| done.is_multiple_of(n)))
            {
                last_checkpoint =
                    Some(ckpt.save(&policy, &trainer, &state, Some(&exporter), None)?);
            }
            if stop {
                break;
            }
        }
        if fit.plot {
            plot_curves(&out_dir.join(files::CURVES), &history, Some("ppo"))?;
        }
        let dir = out_dir.join("adapter");
        save_adapter(&policy.model, &adapter, &dir)?;
        let steps_per_epoch = order.steps_per_epoch().max(1);
        let summary = RunSummary {
            steps: done,
            total_steps: iterations,
            epochs: done as f64 / steps_per_epoch as f64,
            loss_tokens: state.loss_tokens_seen,
            input_tokens: state.input_tokens_seen,
            padding_tokens: 0,
            elapsed_secs: state.elapsed_secs,
            tokens_per_sec: state.input_tokens_seen as f64 / state.elapsed_secs.max(1e-9),
            final_loss: state.last_loss,
            losses,
            last_eval: None,
            best: None,
            restored_best: false,
            stop_reason,
            resumed_from,
            last_checkpoint,
        };
        kiln_nn::write_atomic(
            &out_dir.join(files::SUMMARY),
            serde_json::to_string_pretty(&summary)
                .expect("a summary serializes")
                .as_bytes(),
        )?;
        self.finish(
            policy.model,
            None,
            config,
            tokenizer,
            Some(adapter),
            RunFacts {
                load_secs,
                num_train: train.len(),
                num_validation: 0,
                trainable,
                summary,
                saved: dir,
                write: true,
            },
        )
    }
}
