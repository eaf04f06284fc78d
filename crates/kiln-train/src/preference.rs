//! Preference optimization on [`PreferencePair`](kiln_data::PreferencePair) batches: DPO (the
//! sigmoid loss, with conservative label smoothing), IPO, hinge, and the reference-free SimPO,
//! with the metrics TRL's `DPOTrainer` logs (`rewards/chosen`, `rewards/rejected`,
//! `rewards/accuracies`, `rewards/margins`, `logps/chosen`, `logps/rejected`).
//!
//! A step needs the reference model's log-probabilities of the batch's rows
//! ([`reference_logps`]). The reference is usually the policy itself with its adapters disabled
//! ([`base_reference`]: no second copy of the weights), or the policy as it was before preference
//! training (a clone taken then: after an SFT adapter, DPO moves away from the SFT model; the
//! clone shares the base weights and holds only its own adapter tensors). Reference
//! log-probabilities can be computed for the whole data set once, ahead of training.
//!
//! With `s = log π(y|x)` summed over a completion's tokens, `r` the reference's, `l` the
//! completion's length and `Δ = (s_c − r_c) − (s_r − r_r)` per pair:
//!
//! | loss | per pair |
//! |---|---|
//! | sigmoid (DPO) | `−(1−ε)·log σ(βΔ) − ε·log σ(−βΔ)` |
//! | IPO | `((s_c − r_c)/l_c − (s_r − r_r)/l_r − 1/(2β))²` |
//! | hinge | `max(0, 1 − βΔ)` |
//! | SimPO | `−(1−ε)·log σ(z) − ε·log σ(−z)`, `z = β(s_c/l_c − s_r/l_r) − γ` |
//!
//! The batch loss is the mean over pairs. These are TRL's formulas (`DPOTrainer` for sigmoid,
//! IPO and hinge; `CPOTrainer` with `loss_type="simpo"` for SimPO).

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::{log_sigmoid, log_softmax, relu};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use kiln_data::TokenBatch;
use kiln_models::CausalLm;
use kiln_nn::AdapterTarget;

use crate::loss::{LossInput, host_batch, labelled_hidden, loss_slices};
use crate::{Result, TrainError, Trainer, clip_grad_norm};

/// The preference loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferenceLoss {
    /// DPO (Rafailov et al., 2023), with label smoothing (cDPO) when `label_smoothing > 0`.
    Sigmoid,
    /// IPO (Azar et al., 2023), on log-ratios averaged over the completion's tokens.
    Ipo,
    /// The hinge loss of SLiC (Zhao et al., 2023).
    Hinge,
    /// SimPO (Meng et al., 2024): reference-free, on average log-probabilities, margin `gamma`.
    Simpo,
}

impl PreferenceLoss {
    /// Whether the loss compares against a reference model.
    pub fn uses_reference(self) -> bool {
        self != PreferenceLoss::Simpo
    }

    /// The name TRL gives it (`loss_type`).
    pub fn name(self) -> &'static str {
        match self {
            PreferenceLoss::Sigmoid => "sigmoid",
            PreferenceLoss::Ipo => "ipo",
            PreferenceLoss::Hinge => "hinge",
            PreferenceLoss::Simpo => "simpo",
        }
    }
}

/// Settings of a preference step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreferenceConfig {
    /// The loss.
    pub loss: PreferenceLoss,
    /// Strength of the implicit KL penalty (DPO's β; IPO's τ = β); TRL's default 0.1.
    pub beta: f64,
    /// Probability that a pair's preference is flipped (sigmoid and SimPO), in `[0, 0.5)`.
    pub label_smoothing: f64,
    /// SimPO's target reward margin γ (TRL's `simpo_gamma`, default 0.5).
    pub simpo_gamma: f64,
}

impl Default for PreferenceConfig {
    fn default() -> Self {
        Self {
            loss: PreferenceLoss::Sigmoid,
            beta: 0.1,
            label_smoothing: 0.0,
            simpo_gamma: 0.5,
        }
    }
}

impl PreferenceConfig {
    /// Checks value ranges.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(TrainError::InvalidConfig {
                field: field.into(),
                reason,
            })
        };
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return bad("beta", format!("{} must be positive", self.beta));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return bad(
                "label_smoothing",
                format!("{} is not in [0, 0.5)", self.label_smoothing),
            );
        }
        if self.label_smoothing > 0.0
            && !matches!(self.loss, PreferenceLoss::Sigmoid | PreferenceLoss::Simpo)
        {
            return bad(
                "label_smoothing",
                format!("the {} loss has no label smoothing", self.loss.name()),
            );
        }
        if !self.simpo_gamma.is_finite() {
            return bad("simpo_gamma", format!("{} is not finite", self.simpo_gamma));
        }
        Ok(())
    }
}

/// What one preference step did: the loss and TRL's metrics, means over the batch's pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PreferenceStats {
    /// Mean loss over the pairs.
    pub loss: f32,
    /// `β·(s_c − r_c)` (SimPO: `β·s_c/l_c`), TRL's `rewards/chosen`.
    pub rewards_chosen: f64,
    /// `β·(s_r − r_r)` (SimPO: `β·s_r/l_r`), `rewards/rejected`.
    pub rewards_rejected: f64,
    /// Fraction of pairs whose chosen reward exceeds the rejected one, `rewards/accuracies`.
    pub rewards_accuracies: f64,
    /// Mean chosen minus rejected reward, `rewards/margins`.
    pub rewards_margins: f64,
    /// Mean summed log-probability of the chosen completions, `logps/chosen`.
    pub logps_chosen: f64,
    /// Mean summed log-probability of the rejected completions, `logps/rejected`.
    pub logps_rejected: f64,
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// The base learning rate used.
    pub lr: f64,
    /// Pairs in the batch.
    pub pairs: usize,
}

/// The reference [`base_reference`] builds: the policy with every adapter (and prompt encoder)
/// disabled. The clone shares the policy's tensors, so it costs no memory.
pub fn base_reference<M: AdapterTarget + Clone>(policy: &M) -> M {
    let mut reference = policy.clone();
    reference.set_adapters_enabled(false);
    reference
}

/// Which row each labelled position of `batch` belongs to, in [`LossInput`]'s order, and the
/// number of labelled positions per row.
fn labelled_rows(batch: &TokenBatch) -> (Vec<usize>, Vec<usize>) {
    let host = host_batch(batch);
    let seq = batch.seq_len().max(1);
    let mut lengths = vec![0usize; batch.batch_size()];
    let rows = host
        .targets
        .iter()
        .enumerate()
        .filter(|(_, label)| **label >= 0)
        .map(|(i, _)| {
            lengths[i / seq] += 1;
            i / seq
        })
        .collect();
    (rows, lengths)
}

/// The summed log-probability of each row's labelled tokens under `model`, `[rows]`, tracked
/// when `model` is.
///
/// `row_of[j]` is the row of the `j`-th labelled position of `input`.
fn sequence_logps<M: CausalLm>(
    model: &M,
    input: &LossInput,
    rows: usize,
    row_of: &[usize],
    device: &Device,
) -> Tensor<1> {
    let n = input.num_targets;
    let picked = labelled_hidden(model, input); // [n, d]
    let per_token: Vec<Tensor<1>> = loss_slices(n)
        .map(|range| {
            let c = range.len();
            let targets = input.targets.clone().slice(range.clone()).reshape([c, 1]);
            let logp = log_softmax(model.logits(picked.clone().slice(range)), 1); // [c, vocab]
            logp.gather(1, targets).reshape([c])
        })
        .collect();
    let per_token = Tensor::cat(per_token, 0); // [n]
    // One-hot [rows, n] row membership: the sums per row as one product.
    let mut onehot = vec![0.0f32; rows * n];
    for (j, &r) in row_of.iter().enumerate() {
        onehot[r * n + j] = 1.0;
    }
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [rows, n]), device);
    onehot.matmul(per_token.reshape([n, 1])).reshape([rows])
}

fn check_pairs(batch: &TokenBatch) -> Result<usize> {
    let rows = batch.batch_size();
    if rows == 0 || rows % 2 != 0 {
        return Err(TrainError::InvalidConfig {
            field: "batch".into(),
            reason: format!(
                "a preference batch has the chosen rows, then the rejected rows: {rows} rows"
            ),
        });
    }
    Ok(rows / 2)
}

/// The reference log-probabilities of a preference batch's rows (chosen rows, then rejected),
/// computed without gradients: pass them to [`Trainer::preference_step`]. Computing them for
/// every batch before training is TRL's `precompute_ref_log_probs`.
///
/// # Errors
/// A batch that is not a preference batch, or without labels.
pub fn reference_logps<M>(reference: &M, batch: &TokenBatch) -> Result<Vec<f32>>
where
    M: CausalLm + Module,
{
    check_pairs(batch)?;
    let reference = reference.valid();
    let device = reference.device();
    let input = LossInput::from_batch(batch, &device)?;
    let (row_of, _) = labelled_rows(batch);
    let logps = sequence_logps(&reference, &input, batch.batch_size(), &row_of, &device);
    Ok(logps
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 log-probabilities"))
}

impl Trainer {
    /// One optimizer step of preference optimization on a batch made by
    /// [`kiln_data::preference_batch`]: the policy's log-probabilities of the chosen and
    /// rejected completions, the loss of `config` against `reference` (the reference's
    /// log-probabilities of the same rows, from [`reference_logps`]; `None` for SimPO), backward,
    /// clipping and AdamW. Returns the updated model and TRL's metrics.
    ///
    /// # Errors
    /// An invalid configuration, a batch that is not a preference batch, a missing or
    /// mis-sized reference, or a non-finite loss.
    pub fn preference_step<M>(
        &mut self,
        model: M,
        batch: &TokenBatch,
        reference: Option<&[f32]>,
        config: &PreferenceConfig,
    ) -> Result<(M, PreferenceStats)>
    where
        M: CausalLm + Module,
    {
        config.validate()?;
        let pairs = check_pairs(batch)?;
        let reference = match (config.loss.uses_reference(), reference) {
            (true, None) => {
                return Err(TrainError::InvalidConfig {
                    field: "reference".into(),
                    reason: format!(
                        "the {} loss needs the reference log-probabilities",
                        config.loss.name()
                    ),
                });
            }
            (true, Some(r)) if r.len() != 2 * pairs => {
                return Err(TrainError::InvalidConfig {
                    field: "reference".into(),
                    reason: format!(
                        "{} reference log-probabilities for {} rows",
                        r.len(),
                        2 * pairs
                    ),
                });
            }
            (true, Some(r)) => r.to_vec(),
            (false, _) => vec![0.0; 2 * pairs],
        };
        let device = self.device().clone();
        let input = LossInput::from_batch(batch, &device)?;
        let (row_of, lengths) = labelled_rows(batch);
        let logps = sequence_logps(&model, &input, 2 * pairs, &row_of, &device); // [2p]
        let host = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [pairs]), &device);
        let chosen = logps.clone().slice(0..pairs); // [p]
        let rejected = logps.clone().slice(pairs..2 * pairs); // [p]
        let (ref_c, ref_r) = reference.split_at(pairs);
        let (len_c, len_r): (Vec<f32>, Vec<f32>) = (
            lengths[..pairs].iter().map(|&l| l.max(1) as f32).collect(),
            lengths[pairs..].iter().map(|&l| l.max(1) as f32).collect(),
        );
        let beta = config.beta as f32;
        let eps = config.label_smoothing as f32;
        let smoothed = |z: Tensor<1>| {
            log_sigmoid(z.clone()).mul_scalar(-(1.0 - eps)) - log_sigmoid(z.neg()).mul_scalar(eps)
        };
        let ratio_c = chosen.clone() - host(ref_c.to_vec()); // [p]
        let ratio_r = rejected.clone() - host(ref_r.to_vec()); // [p]
        let per_pair = match config.loss {
            PreferenceLoss::Sigmoid => smoothed((ratio_c - ratio_r).mul_scalar(beta)),
            PreferenceLoss::Hinge => relu((ratio_c - ratio_r).mul_scalar(-beta).add_scalar(1.0)),
            PreferenceLoss::Ipo => {
                let d = ratio_c / host(len_c.clone()) - ratio_r / host(len_r.clone());
                d.sub_scalar(1.0 / (2.0 * beta)).powi_scalar(2)
            }
            PreferenceLoss::Simpo => {
                let d = chosen / host(len_c.clone()) - rejected / host(len_r.clone());
                smoothed(d.mul_scalar(beta).sub_scalar(config.simpo_gamma as f32))
            }
        };
        let loss = per_pair.mean(); // [1]
        let value: f32 = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: self.step,
                value,
            });
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let grad_norm = clip_grad_norm(&model, &mut grads, self.config().max_grad_norm);
        let lr = self.current_lr();
        let model = self.optim.step(self.lr_policy(lr), model, grads);
        self.step += 1;

        // Metrics on the host, from the values before the step.
        let s: Vec<f32> = logps
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 log-probabilities");
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let reward = |i: usize, len: f32| -> f64 {
            let b = config.beta;
            if config.loss.uses_reference() {
                b * f64::from(s[i] - reference[i])
            } else {
                b * f64::from(s[i] / len)
            }
        };
        let rc: Vec<f64> = (0..pairs).map(|i| reward(i, len_c[i])).collect();
        let rr: Vec<f64> = (0..pairs).map(|i| reward(pairs + i, len_r[i])).collect();
        let accurate: Vec<f64> = rc
            .iter()
            .zip(&rr)
            .map(|(c, r)| f64::from(u8::from(c > r)))
            .collect();
        let margins: Vec<f64> = rc.iter().zip(&rr).map(|(c, r)| c - r).collect();
        let logps_of = |range: std::ops::Range<usize>| -> f64 {
            mean(&s[range].iter().map(|&v| f64::from(v)).collect::<Vec<_>>())
        };
        Ok((
            model,
            PreferenceStats {
                loss: value,
                rewards_chosen: mean(&rc),
                rewards_rejected: mean(&rr),
                rewards_accuracies: mean(&accurate),
                rewards_margins: mean(&margins),
                logps_chosen: logps_of(0..pairs),
                logps_rejected: logps_of(pairs..2 * pairs),
                grad_norm,
                lr,
                pairs,
            },
        ))
    }
}
