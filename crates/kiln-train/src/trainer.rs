use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use kiln_data::TokenBatch;
use kiln_models::CausalLm;

use crate::loss::{LossInput, masked_lm_loss};
use crate::{Result, Schedule, TrainError};

/// AdamW settings. Defaults are PyTorch's `torch.optim.AdamW` (Burn's own defaults differ:
/// eps 1e-5 and weight decay 1e-4), so runs compare with PyTorch + PEFT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl OptimizerConfig {
    fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(TrainError::InvalidConfig {
                field: field.into(),
                reason,
            })
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} must be positive", self.lr));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(name, format!("{b} is not in [0, 1)"));
            }
        }
        Ok(())
    }

    fn build(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_epsilon(self.eps)
            .with_weight_decay(self.weight_decay)
            .init()
    }
}

/// Steps a model with AdamW on labelled batches.
///
/// The model must live on an autodiff device (`device.autodiff()`); only parameters that require
/// gradients (the adapter, after `attach_*`) are updated.
pub struct Trainer {
    optim: ModuleOptimizer,
    config: OptimizerConfig,
    schedule: Schedule,
    step: usize,
    device: Device,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("schedule", &self.schedule)
            .field("step", &self.step)
            .finish()
    }
}

impl Trainer {
    /// A trainer on `device` (made autodiff if it is not).
    ///
    /// # Errors
    /// An invalid optimizer configuration.
    pub fn new(config: OptimizerConfig, schedule: Schedule, device: &Device) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            optim: config.build(),
            config,
            schedule,
            step: 0,
            device: device.clone().autodiff(),
        })
    }

    /// Optimizer steps taken so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The learning rate the next step uses.
    pub fn current_lr(&self) -> f64 {
        self.config.lr * self.schedule.factor(self.step)
    }

    /// One optimizer step on a batch: forward, masked loss, backward, AdamW. Returns the updated
    /// model and the batch loss.
    ///
    /// # Errors
    /// A batch without labels, or a non-finite loss.
    pub fn train_step<M>(&mut self, model: M, batch: &TokenBatch) -> Result<(M, f32)>
    where
        M: CausalLm + Module,
    {
        let input = LossInput::from_batch(batch, &self.device)?;
        let loss = masked_lm_loss(&model, &input);
        let value: f32 = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: self.step,
                value,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = self.current_lr();
        let model = self.optim.step(lr, model, grads);
        self.step += 1;
        Ok((model, value))
    }
}
