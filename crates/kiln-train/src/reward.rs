//! Reward-model training on preference pairs: the Bradley–Terry loss of TRL's `RewardTrainer`,
//! its metrics (`accuracy`, `margin`, `min_reward`, `mean_reward`, `max_reward`), and the PEFT
//! `SEQ_CLS` layout for saving and loading a reward model (the adapter of the decoder, plus the
//! head `score.weight` listed in `modules_to_save`).
//!
//! With `r_c`, `r_r` the rewards of a pair's chosen and rejected sequences (prompt and
//! completion, read by [`RewardModel::rewards`]) and `m` an optional per-pair margin:
//!
//! `loss = mean(−log σ(r_c − r_r − m)) + c · mean((r_c + r_r)²)`
//!
//! where `c` is `center_rewards_coefficient` (Eisenstein et al., 2023: keeps rewards centred on
//! zero), off by default.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleDisplay};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use kiln_data::TokenBatch;
use kiln_models::reward::pool_positions;
use kiln_models::{CausalLm, RewardModel};
use kiln_nn::AdapterTarget;
use kiln_nn::safetensors::HostTensor;
use kiln_peft::AdapterConfig;

use crate::{Result, TrainError, Trainer, clip_grad_norm};

/// The PEFT task type of a reward model.
pub const SEQ_CLS: &str = "SEQ_CLS";
/// The head names PEFT adds to `modules_to_save` for a `SEQ_CLS` task.
pub const HEAD_MODULES: [&str; 2] = ["classifier", "score"];
const HEAD_KEY: &str = "base_model.model.score.weight";

/// Settings of reward-model training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// Weight of `mean((r_c + r_r)²)` added to the loss (TRL's `center_rewards_coefficient`);
    /// `None` adds nothing.
    pub center_rewards_coefficient: Option<f64>,
}

impl RewardConfig {
    /// Checks value ranges.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(c) = self.center_rewards_coefficient
            && !(c.is_finite() && c >= 0.0)
        {
            return Err(TrainError::InvalidConfig {
                field: "center_rewards_coefficient".into(),
                reason: format!("{c} must be non-negative"),
            });
        }
        Ok(())
    }
}

/// One micro-batch of a reward step: a batch from [`kiln_data::preference_batch`] (chosen rows,
/// then rejected rows) and optional per-pair margins.
#[derive(Debug, Clone, Copy)]
pub struct RewardMicroBatch<'a> {
    /// The chosen rows, then the rejected rows.
    pub batch: &'a TokenBatch,
    /// How much the chosen reward should exceed the rejected one, per pair (TRL's `margin`).
    pub margins: Option<&'a [f32]>,
}

/// The rewards of a batch's rows, tracked when the model is (`[rows]`).
pub type RewardFn<'a, M> = dyn Fn(&M, &TokenBatch) -> Result<Tensor<1>> + 'a;

/// What one reward step did: the loss and TRL's `RewardTrainer` metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RewardStats {
    /// The loss (mean over pairs, with the centring term).
    pub loss: f32,
    /// Fraction of pairs whose chosen reward exceeds the rejected one (`accuracy`).
    pub accuracy: f64,
    /// Mean chosen minus rejected reward (`margin`).
    pub margin: f64,
    /// Smallest reward of any row (`min_reward`).
    pub min_reward: f64,
    /// Mean reward over all rows (`mean_reward`).
    pub mean_reward: f64,
    /// Largest reward of any row (`max_reward`).
    pub max_reward: f64,
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// The base learning rate used.
    pub lr: f64,
    /// Pairs in the step.
    pub pairs: usize,
}

impl RewardStats {
    fn of(loss: f32, rewards: &[(f64, f64)], grad_norm: f64, lr: f64) -> Self {
        let n = rewards.len().max(1) as f64;
        let all = rewards.iter().flat_map(|&(c, r)| [c, r]);
        Self {
            loss,
            accuracy: rewards.iter().filter(|(c, r)| c > r).count() as f64 / n,
            margin: rewards.iter().map(|(c, r)| c - r).sum::<f64>() / n,
            min_reward: all.clone().fold(f64::INFINITY, f64::min),
            mean_reward: all.clone().sum::<f64>() / (2.0 * n),
            max_reward: all.fold(f64::NEG_INFINITY, f64::max),
            grad_norm,
            lr,
            pairs: rewards.len(),
        }
    }

    /// The metrics under TRL's names, for logs.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        [
            ("accuracy", self.accuracy),
            ("margin", self.margin),
            ("min_reward", self.min_reward),
            ("mean_reward", self.mean_reward),
            ("max_reward", self.max_reward),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The rewards of a batch's rows (`[rows]`, tracked when the model is), each read at its last
/// real token that is not `pad_id` ([`pool_positions`]).
///
/// # Errors
/// An empty batch.
pub fn batch_rewards<M>(
    model: &RewardModel<M>,
    batch: &TokenBatch,
    pad_id: Option<u32>,
) -> Result<Tensor<1>>
where
    M: CausalLm + Module + ModuleDisplay,
{
    let (b, t) = (batch.batch_size(), batch.seq_len());
    if b == 0 || t == 0 {
        return Err(TrainError::InvalidConfig {
            field: "batch".into(),
            reason: "no sequence to score".into(),
        });
    }
    let input = crate::loss::lm_input(batch, &model.device());
    let pool = pool_positions(&batch.input_ids, &batch.attention_mask, pad_id);
    Ok(model.rewards(&input, &pool))
}

fn check_pairs(batch: &TokenBatch, margins: Option<&[f32]>) -> Result<usize> {
    let pairs = crate::preference::check_pairs(batch)?;
    if let Some(m) = margins
        && m.len() != pairs
    {
        return Err(TrainError::InvalidConfig {
            field: "margin".into(),
            reason: format!("{} margins for {pairs} pairs", m.len()),
        });
    }
    Ok(pairs)
}

/// A micro-batch's summed loss terms (`[1]`, tracked when the model is) and each pair's
/// `(chosen, rejected)` rewards. The sum is over pairs; divide by the step's pair count.
fn micro_loss<M>(
    model: &M,
    micro: &RewardMicroBatch<'_>,
    config: &RewardConfig,
    rewards_of: &RewardFn<'_, M>,
) -> Result<(Tensor<1>, Vec<(f64, f64)>)> {
    let pairs = check_pairs(micro.batch, micro.margins)?;
    let r = rewards_of(model, micro.batch)?; // [2p]
    let device = &r.device();
    let chosen = r.clone().slice(0..pairs);
    let rejected = r.clone().slice(pairs..2 * pairs);
    let mut diff = chosen.clone() - rejected.clone();
    if let Some(m) = micro.margins {
        diff = diff - Tensor::<1>::from_data(TensorData::new(m.to_vec(), [pairs]), device);
    }
    let mut loss = log_sigmoid(diff).neg().sum();
    if let Some(c) = config.center_rewards_coefficient {
        loss = loss
            + (chosen + rejected)
                .powf_scalar(2.0)
                .sum()
                .mul_scalar(c as f32);
    }
    let host: Vec<f32> = r
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 rewards");
    let rewards = (0..pairs)
        .map(|i| (f64::from(host[i]), f64::from(host[pairs + i])))
        .collect();
    Ok((loss, rewards))
}

impl Trainer {
    /// One optimizer step of reward-model training on a batch made by
    /// [`kiln_data::preference_batch`]: the rewards of the chosen and rejected rows, the
    /// Bradley–Terry loss (with `margins` and the centring term of `config`), backward, clipping
    /// and AdamW. `pad_id` is the batch's padding token, skipped when reading each row's reward.
    ///
    /// # Errors
    /// An invalid configuration, a batch that is not a preference batch, or a non-finite loss.
    pub fn reward_step<M>(
        &mut self,
        model: RewardModel<M>,
        batch: &TokenBatch,
        margins: Option<&[f32]>,
        pad_id: u32,
        config: &RewardConfig,
    ) -> Result<(RewardModel<M>, RewardStats)>
    where
        M: CausalLm + Module + ModuleDisplay,
    {
        self.reward_step_accum(
            model,
            &[RewardMicroBatch { batch, margins }],
            config,
            &|m, b| batch_rewards(m, b, Some(pad_id)),
        )
    }

    /// [`Trainer::reward_step`] over several micro-batches (gradient accumulation), for any
    /// model whose rows `rewards_of` scores: each term is divided by the pair count of the whole
    /// step, so the step equals one batch holding every pair.
    ///
    /// # Errors
    /// As [`Trainer::reward_step`].
    pub fn reward_step_accum<M: Module>(
        &mut self,
        model: M,
        micro: &[RewardMicroBatch<'_>],
        config: &RewardConfig,
        rewards_of: &RewardFn<'_, M>,
    ) -> Result<(M, RewardStats)> {
        config.validate()?;
        let total: usize = micro
            .iter()
            .map(|m| check_pairs(m.batch, m.margins))
            .sum::<Result<usize>>()?;
        let mut accum = GradientsAccumulator::<M>::new();
        let mut value = 0.0f64;
        let mut rewards = Vec::with_capacity(total);
        for m in micro {
            let (loss, r) = micro_loss(&model, m, config, rewards_of)?;
            let loss = loss.div_scalar(total as f32);
            let part = f64::from(loss.clone().into_scalar::<f32>());
            if !part.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    step: self.step,
                    value: part as f32,
                });
            }
            value += part;
            accum.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
            rewards.extend(r);
        }
        let mut grads = accum.grads();
        let grad_norm = clip_grad_norm(&model, &mut grads, self.config().max_grad_norm);
        let lr = self.current_lr();
        let model = self.optim.step(self.lr_policy(lr), model, grads);
        self.step += 1;
        Ok((
            model,
            RewardStats::of(value as f32, &rewards, grad_norm, lr),
        ))
    }
}

/// The mean loss and TRL's metrics of a reward model over `batches` (no gradients, no step):
/// validation of reward-model training.
///
/// # Errors
/// As [`Trainer::reward_step`]; no pair at all.
pub fn evaluate_reward<M: Module>(
    model: &M,
    batches: &[RewardMicroBatch<'_>],
    config: &RewardConfig,
    rewards_of: &RewardFn<'_, M>,
) -> Result<RewardStats> {
    config.validate()?;
    let model = model.valid();
    let mut sum = 0.0f64;
    let mut rewards = Vec::new();
    for m in batches {
        let (loss, r) = micro_loss(&model, m, config, rewards_of)?;
        sum += f64::from(loss.into_scalar::<f32>());
        rewards.extend(r);
    }
    if rewards.is_empty() {
        return Err(TrainError::NoLabels);
    }
    let loss = (sum / rewards.len() as f64) as f32;
    Ok(RewardStats::of(loss, &rewards, 0.0, 0.0))
}

/// Writes a reward model in PEFT's `SEQ_CLS` layout ([`save_reward_adapter`]) into every
/// checkpoint.
#[derive(Debug, Clone)]
pub struct RewardExporter {
    /// The decoder's adapter configuration (as returned by `kiln_peft::attach_adapter`).
    pub config: AdapterConfig,
}

impl<M> crate::AdapterExporter<RewardModel<M>> for RewardExporter
where
    M: CausalLm + AdapterTarget + Module + ModuleDisplay,
{
    fn export(
        &self,
        model: &RewardModel<M>,
        dir: &Path,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        save_reward_adapter(model, &self.config, dir)?;
        Ok(())
    }
}

/// The configuration a reward model's adapter is saved with: `config` with PEFT's task type
/// `SEQ_CLS` and the head names in `modules_to_save` (as PEFT's
/// `PeftModelForSequenceClassification` writes it).
///
/// # Errors
/// [`TrainError::InvalidConfig`] for a method without `modules_to_save` (prompt and prefix
/// tuning), which could not name the head.
pub fn reward_adapter_config(config: &AdapterConfig) -> Result<AdapterConfig> {
    let mut config = config.clone();
    let method = config.peft_type();
    let Some(modules) = config.modules_to_save_mut() else {
        return Err(TrainError::InvalidConfig {
            field: "peft_type".into(),
            reason: format!(
                "a reward model's head is saved in modules_to_save, which {method} does not have"
            ),
        });
    };
    let list = modules.get_or_insert_with(Vec::new);
    for name in HEAD_MODULES {
        if !list.iter().any(|m| m == name) {
            list.push(name.into());
        }
    }
    config.common_mut().task_type = Some(SEQ_CLS.into());
    Ok(config)
}

/// Saves a reward model's adapter in PEFT's `SEQ_CLS` layout: `adapter_config.json` with the
/// task type and the head in `modules_to_save`, and `adapter_model.safetensors` with the
/// decoder's adapter tensors and `base_model.model.score.weight` (`[1, hidden]`).
///
/// # Errors
/// As [`reward_adapter_config`]; I/O errors naming the file.
pub fn save_reward_adapter<M>(
    model: &RewardModel<M>,
    config: &AdapterConfig,
    dir: &Path,
) -> Result<()>
where
    M: CausalLm + AdapterTarget + Module + ModuleDisplay,
{
    let config = reward_adapter_config(config)?;
    let head = HostTensor {
        shape: vec![1, model.hidden_size()],
        data: model.head(),
    };
    let extra = BTreeMap::from([(HEAD_KEY.to_string(), head)]);
    Ok(kiln_peft::save_adapter_with(
        &model.model,
        &config,
        dir,
        extra,
    )?)
}

/// Loads a reward model saved in PEFT's `SEQ_CLS` layout (by kiln or by PEFT) onto `model`, the
/// base decoder: attaches and fills the adapter, and reads the head.
///
/// # Errors
/// As [`kiln_peft::load_adapter`]; a missing head or one of the wrong shape, naming the file
/// and key.
pub fn load_reward_adapter<M>(
    model: M,
    dir: &Path,
    device: &Device,
) -> Result<(RewardModel<M>, AdapterConfig)>
where
    M: CausalLm + AdapterTarget + Module + ModuleDisplay,
{
    let hidden = model.hidden_size();
    let (model, config, mut extra) =
        kiln_peft::load_adapter_with(model, dir, device, &HEAD_MODULES)?;
    let file = dir.join(kiln_peft::io::WEIGHTS_FILE);
    let head = extra.remove(HEAD_KEY).ok_or_else(|| TrainError::Corrupt {
        path: file.clone(),
        reason: format!("no `{HEAD_KEY}`: not a reward model (PEFT task type SEQ_CLS)"),
    })?;
    if head.shape != [1, hidden] {
        return Err(TrainError::Corrupt {
            path: file,
            reason: format!(
                "`{HEAD_KEY}` has shape {:?}; a reward head for this model is [1, {hidden}]",
                head.shape
            ),
        });
    }
    if let Some((key, _)) = extra.into_iter().next() {
        return Err(TrainError::Corrupt {
            path: file,
            reason: format!("`{key}`: a reward model has one head, `score` with no bias"),
        });
    }
    Ok((RewardModel::with_head(model, head.data), config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_follow_trl() {
        let s = RewardStats::of(0.5, &[(1.0, -1.0), (0.0, 2.0)], 0.0, 0.0);
        assert_eq!(s.accuracy, 0.5);
        assert_eq!(s.margin, (2.0 - 2.0) / 2.0);
        assert_eq!((s.min_reward, s.max_reward), (-1.0, 2.0));
        assert_eq!(s.mean_reward, 0.5);
        assert_eq!(s.metrics().len(), 5);
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let err = RewardConfig {
            center_rewards_coefficient: Some(-1.0),
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("center_rewards_coefficient"));
    }

    #[test]
    fn saved_config_names_the_head() {
        let lora = AdapterConfig::Lora(kiln_peft::LoraConfig::default());
        let c = reward_adapter_config(&lora).unwrap();
        assert_eq!(c.common().task_type.as_deref(), Some(SEQ_CLS));
        assert_eq!(
            c.modules_to_save().unwrap(),
            &["classifier".to_string(), "score".to_string()]
        );
        let prompt = AdapterConfig::PromptTuning(Default::default());
        assert!(
            reward_adapter_config(&prompt)
                .unwrap_err()
                .to_string()
                .contains("modules_to_save")
        );
    }
}
