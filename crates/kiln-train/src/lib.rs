//! Training for kiln models.
//!
//! - [`masked_lm_loss`]: next-token cross-entropy computed only at labelled positions: hidden
//!   states are gathered *before* the vocabulary projection, so prompt tokens cost no logits.
//! - [`Trainer`]: AdamW with PyTorch's defaults set explicitly, learning-rate schedules,
//!   per-group learning rates (LoRA+), gradient accumulation weighted by labelled tokens and
//!   global-norm clipping; generic over any [`kiln_models::CausalLm`] on any backend.
//! - [`Fit`]: a whole run around a [`Trainer`]: seeded data order over epochs or a step budget,
//!   evaluation every N steps ([`evaluate`]: token-weighted validation loss and perplexity),
//!   early stopping and keep-best, atomic checkpoints with rotation and exact resume
//!   ([`CheckpointManager`]), a progress bar, a JSONL metrics log, a loss-curve PNG, a
//!   [`RunSummary`] and [`Callback`]s.
//! - [`harness`]: generate answers with a base and a tuned model, score them with
//!   `kiln-metrics`, check forgetting (general-text perplexity before and after) and write a
//!   Markdown + JSON report side by side.
//! - [`Trainer::preference_step`]: preference optimization on chosen/rejected pairs (DPO, IPO,
//!   hinge, SimPO) against a reference ([`base_reference`]: the policy with its adapters
//!   disabled), with TRL's metrics ([`PreferenceStats`]).
//! - [`Trainer::reward_step`]: reward-model training with TRL's Bradley–Terry loss and metrics
//!   ([`RewardStats`]) on a [`kiln_models::RewardModel`], saved and loaded in PEFT's `SEQ_CLS`
//!   layout ([`save_reward_adapter`], [`load_reward_adapter`]).
//! - [`Trainer::ppo_step`]: RLHF with PPO (generation in the loop, a score per response, a
//!   per-token KL penalty to a reference, a value head, GAE, clipped policy and value losses).
//! - [`search`]: random, grid and TPE hyper-parameter search with median pruning of bad trials.
//! - [`dist`]: data parallelism: replicas in threads ([`dist::LocalGroup`]) or in processes on
//!   several machines ([`dist::TcpPeer`] and a [`dist::Coordinator`]) sum their trainable
//!   gradients before every step ([`Trainer::set_collective`]).
//!
//! ```no_run
//! use kiln_data::TokenizedExample;
//! use kiln_models::LlamaConfig;
//! use kiln_peft::{LoraConfig, attach_lora};
//! use kiln_train::{Fit, FitConfig, OptimizerConfig, Schedule, Trainer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = burn::tensor::Device::default().autodiff();
//! let model = LlamaConfig::default().init(0, &device);
//! let (model, _) = attach_lora(model, &LoraConfig::default(), 0, &device)?;
//! let train = vec![TokenizedExample::prompt_completion(&[1, 5], &[6, 2])];
//! let config = FitConfig {
//!     batch_size: 1,
//!     epochs: 3,
//!     output_dir: Some("runs/demo".into()),
//!     checkpoint_every: Some(10),
//!     ..Default::default()
//! };
//! let schedule = Schedule::Cosine { warmup_steps: 1, total_steps: config.total_steps(train.len()) };
//! let mut trainer = Trainer::new(OptimizerConfig::default().with_loraplus(16.0), schedule, &device)?;
//! let out = Fit::new(config, &train).run(model, &mut trainer)?;
//! println!("{:?}", out.summary.final_loss);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod callback;
pub mod checkpoint;
mod data;
pub mod dist;
mod error;
mod eval;
mod fit;
pub mod harness;
mod lock;
mod logs;
mod loss;
mod ppo;
mod preference;
mod reward;
mod schedule;
pub mod search;
pub mod text;
mod trainer;

pub use callback::{Callback, Direction, EarlyStopping, EvalLog, EvalMetric, StepLog};
pub use checkpoint::{AdapterExporter, BestMetric, CheckpointManager, PeftExporter, TrainerState};
pub use data::{DataOrder, PACKED_ROW_TOKENS, RowLayout};
pub use error::{Result, TrainError};
pub use eval::{EvalResult, evaluate, evaluate_rows};
pub use fit::{
    EvalHook, Fit, FitConfig, FitOutput, ReferenceFn, RunSummary, StopReason, check_previous_run,
    files,
};
pub use lock::{LOCK_FILE, OutputLock};
pub use logs::{LogRecord, MetricsLog, plot_curves};
pub use loss::{LOSS_CHUNK, LossInput, masked_lm_loss, masked_lm_loss_sum};
pub use ppo::{
    PpoConfig, PpoLoss, PpoStats, Rollout, ScoreFn, TokenReferenceFn, gae, ppo_losses, rollout,
    token_logps, token_rewards, whiten,
};
pub use preference::{
    PreferenceConfig, PreferenceLoss, PreferenceMicroBatch, PreferenceStats, ReferenceTable,
    base_reference, evaluate_preference, reference_logps,
};
pub use reward::{
    HEAD_MODULES, RewardConfig, RewardExporter, RewardFn, RewardMicroBatch, RewardStats, SEQ_CLS,
    batch_rewards, evaluate_reward, load_reward_adapter, reward_adapter_config,
    save_reward_adapter,
};
pub use schedule::Schedule;
pub use trainer::{LrGroup, OptimizerConfig, StepStats, Trainer, clip_grad_norm, trainable_params};
