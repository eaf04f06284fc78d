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

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::activation::{log_sigmoid, relu};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use kiln_data::TokenBatch;
use kiln_models::CausalLm;
use kiln_nn::AdapterTarget;

use crate::loss::{LossInput, host_batch, labelled_hidden, labelled_logps};
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
    let per_token = labelled_logps(model, picked, input, 1.0); // [n]
    // One-hot [rows, n] row membership: the sums per row as one product.
    let mut onehot = vec![0.0f32; rows * n];
    for (j, &r) in row_of.iter().enumerate() {
        onehot[r * n + j] = 1.0;
    }
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [rows, n]), device);
    onehot.matmul(per_token.reshape([n, 1])).reshape([rows])
}

/// The loss of each pair, `[pairs]`, from the summed log-probabilities of the policy (`s_*`)
/// and the reference (`r_*`, ignored by SimPO) and the completions' lengths (`l_*`).
fn pair_losses(
    config: &PreferenceConfig,
    s_c: Tensor<1>,
    s_r: Tensor<1>,
    r_c: Tensor<1>,
    r_r: Tensor<1>,
    l_c: Tensor<1>,
    l_r: Tensor<1>,
) -> Tensor<1> {
    let beta = config.beta as f32;
    let eps = config.label_smoothing as f32;
    let smoothed = |z: Tensor<1>| {
        log_sigmoid(z.clone()).mul_scalar(-(1.0 - eps)) - log_sigmoid(z.neg()).mul_scalar(eps)
    };
    match config.loss {
        PreferenceLoss::Sigmoid => smoothed((s_c - r_c - (s_r - r_r)).mul_scalar(beta)),
        PreferenceLoss::Hinge => relu((s_c - r_c - (s_r - r_r)).mul_scalar(-beta).add_scalar(1.0)),
        PreferenceLoss::Ipo => {
            let d = (s_c - r_c) / l_c - (s_r - r_r) / l_r;
            d.sub_scalar(1.0 / (2.0 * beta)).powi_scalar(2)
        }
        PreferenceLoss::Simpo => {
            let d = s_c / l_c - s_r / l_r;
            smoothed(d.mul_scalar(beta).sub_scalar(config.simpo_gamma as f32))
        }
    }
}

pub(crate) fn check_pairs(batch: &TokenBatch) -> Result<usize> {
    let rows = batch.batch_size();
    if rows == 0 || !rows.is_multiple_of(2) {
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

/// The reference's log-probabilities of every row of a set of preference pairs, computed once
/// before training (TRL's `precompute_ref_log_probs`): training then runs no reference forward
/// pass, and the reference model need not stay in memory. Rows are found by their tokens and
/// the start of their completion.
#[derive(Debug, Clone, Default)]
pub struct ReferenceTable {
    rows: std::collections::HashMap<(Vec<u32>, usize), f32>,
}

/// A row's key: its real tokens and where its labels start.
fn row_keys(batch: &TokenBatch) -> Vec<(Vec<u32>, usize)> {
    batch
        .input_ids
        .iter()
        .zip(&batch.attention_mask)
        .zip(&batch.labels)
        .map(|((ids, mask), labels)| {
            let len = mask.iter().filter(|&&m| m != 0).count();
            let start = labels
                .iter()
                .position(|&l| l != kiln_data::IGNORE_INDEX)
                .unwrap_or(len);
            (ids[..len].to_vec(), start)
        })
        .collect()
}

impl ReferenceTable {
    /// Computes `reference`'s log-probabilities of both rows of every pair of each set,
    /// `batch_size` pairs per forward pass (no gradients).
    ///
    /// # Errors
    /// As [`reference_logps`].
    pub fn compute<M: CausalLm + Module>(
        reference: &M,
        sets: &[&[kiln_data::PreferencePair]],
        pad_id: u32,
        batch_size: usize,
    ) -> Result<Self> {
        let mut rows = std::collections::HashMap::new();
        for set in sets {
            for chunk in set.chunks(batch_size.max(1)) {
                let batch = kiln_data::preference_batch(chunk, pad_id)?;
                let logps = reference_logps(reference, &batch)?;
                rows.extend(row_keys(&batch).into_iter().zip(logps));
            }
        }
        Ok(Self { rows })
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The log-probabilities of `batch`'s rows, as [`reference_logps`] returns them.
    ///
    /// # Errors
    /// [`TrainError::InvalidConfig`] for a row the table was not computed for.
    pub fn logps(&self, batch: &TokenBatch) -> Result<Vec<f32>> {
        row_keys(batch)
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                self.rows
                    .get(&key)
                    .copied()
                    .ok_or_else(|| TrainError::InvalidConfig {
                        field: "reference".into(),
                        reason: format!("row {i} of the batch is not in the precomputed table"),
                    })
            })
            .collect()
    }
}

/// One micro-batch of a preference step: a batch from [`kiln_data::preference_batch`] and the
/// reference's log-probabilities of its rows (from [`reference_logps`]; `None` for SimPO).
#[derive(Debug, Clone, Copy)]
pub struct PreferenceMicroBatch<'a> {
    /// The chosen rows, then the rejected rows.
    pub batch: &'a TokenBatch,
    /// The reference's summed log-probability of each row.
    pub reference: Option<&'a [f32]>,
}

/// A micro-batch's per-pair losses (`[pairs]`, tracked when `model` is) and each pair's
/// `(chosen, rejected)` rewards and summed log-probabilities.
#[allow(clippy::type_complexity)]
fn micro_losses<M: CausalLm>(
    model: &M,
    micro: &PreferenceMicroBatch<'_>,
    config: &PreferenceConfig,
    device: &Device,
) -> Result<(Tensor<1>, Vec<(f64, f64)>, Vec<(f64, f64)>)> {
    let pairs = check_pairs(micro.batch)?;
    let reference = match micro.reference {
        _ if !config.loss.uses_reference() => vec![0.0; 2 * pairs],
        Some(r) if r.len() == 2 * pairs => r.to_vec(),
        Some(r) => {
            return Err(TrainError::InvalidConfig {
                field: "reference".into(),
                reason: format!(
                    "{} reference log-probabilities for {} rows",
                    r.len(),
                    2 * pairs
                ),
            });
        }
        None => {
            return Err(TrainError::InvalidConfig {
                field: "reference".into(),
                reason: format!(
                    "the {} loss needs the reference log-probabilities",
                    config.loss.name()
                ),
            });
        }
    };
    let input = LossInput::from_batch(micro.batch, device)?;
    let (row_of, lengths) = labelled_rows(micro.batch);
    let s = sequence_logps(model, &input, 2 * pairs, &row_of, device); // [2p]
    let host = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [pairs]), device);
    let lens: Vec<f32> = lengths.iter().map(|&l| l.max(1) as f32).collect();
    let per_pair = pair_losses(
        config,
        s.clone().slice(0..pairs),
        s.clone().slice(pairs..2 * pairs),
        host(&reference[..pairs]),
        host(&reference[pairs..]),
        host(&lens[..pairs]),
        host(&lens[pairs..]),
    );
    let s: Vec<f32> = s
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 log-probabilities");
    let reward = |i: usize| -> f64 {
        if config.loss.uses_reference() {
            config.beta * f64::from(s[i] - reference[i])
        } else {
            config.beta * f64::from(s[i] / lens[i])
        }
    };
    let rewards = (0..pairs).map(|i| (reward(i), reward(pairs + i))).collect();
    let logps = (0..pairs)
        .map(|i| (f64::from(s[i]), f64::from(s[pairs + i])))
        .collect();
    Ok((per_pair, rewards, logps))
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
        self.preference_step_accum(model, &[PreferenceMicroBatch { batch, reference }], config)
    }

    /// [`Trainer::preference_step`] over several micro-batches (gradient accumulation): each
    /// pair's loss is divided by the pair count of the whole step, so the step equals one batch
    /// holding every pair; the metrics are means over all pairs.
    ///
    /// # Errors
    /// As [`Trainer::preference_step`].
    pub fn preference_step_accum<M>(
        &mut self,
        model: M,
        micro: &[PreferenceMicroBatch<'_>],
        config: &PreferenceConfig,
    ) -> Result<(M, PreferenceStats)>
    where
        M: CausalLm + Module,
    {
        config.validate()?;
        let total: usize = micro
            .iter()
            .map(|m| check_pairs(m.batch))
            .sum::<Result<usize>>()?;
        let device = self.device().clone();
        let mut accum = GradientsAccumulator::<M>::new();
        let mut value = 0.0f64;
        let (mut rewards, mut logps) = (Vec::with_capacity(total), Vec::with_capacity(total));
        for m in micro {
            let (per_pair, r, l) = micro_losses(&model, m, config, &device)?;
            let loss = per_pair.sum().div_scalar(total as f32); // [1]
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
            logps.extend(l);
        }
        let mut grads = accum.grads();
        let grad_norm = clip_grad_norm(&model, &mut grads, self.config().max_grad_norm);
        let lr = self.current_lr();
        let model = self.optim.step(self.lr_policy(lr), model, grads);
        self.step += 1;
        Ok((
            model,
            PreferenceStats::of(value as f32, &rewards, &logps, grad_norm, lr),
        ))
    }
}

impl PreferenceStats {
    /// Means over pairs of `(chosen, rejected)` rewards and log-probabilities.
    fn of(
        loss: f32,
        rewards: &[(f64, f64)],
        logps: &[(f64, f64)],
        grad_norm: f64,
        lr: f64,
    ) -> Self {
        let n = rewards.len().max(1) as f64;
        let mean =
            |f: &dyn Fn(&(f64, f64)) -> f64, v: &[(f64, f64)]| v.iter().map(f).sum::<f64>() / n;
        Self {
            loss,
            rewards_chosen: mean(&|r| r.0, rewards),
            rewards_rejected: mean(&|r| r.1, rewards),
            rewards_accuracies: mean(&|r| f64::from(u8::from(r.0 > r.1)), rewards),
            rewards_margins: mean(&|r| r.0 - r.1, rewards),
            logps_chosen: mean(&|l| l.0, logps),
            logps_rejected: mean(&|l| l.1, logps),
            grad_norm,
            lr,
            pairs: rewards.len(),
        }
    }

    /// The metrics under TRL's names (`rewards/chosen`, ...), for logs.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        [
            ("rewards/chosen", self.rewards_chosen),
            ("rewards/rejected", self.rewards_rejected),
            ("rewards/accuracies", self.rewards_accuracies),
            ("rewards/margins", self.rewards_margins),
            ("logps/chosen", self.logps_chosen),
            ("logps/rejected", self.logps_rejected),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The mean preference loss and TRL's metrics of `model` over `batches` (no gradients, no
/// step): validation of preference training.
///
/// # Errors
/// As [`Trainer::preference_step`].
pub fn evaluate_preference<M>(
    model: &M,
    batches: &[PreferenceMicroBatch<'_>],
    config: &PreferenceConfig,
) -> Result<PreferenceStats>
where
    M: CausalLm + Module,
{
    config.validate()?;
    let model = model.valid();
    let device = model.device();
    let mut sum = 0.0f64;
    let (mut rewards, mut logps) = (Vec::new(), Vec::new());
    for m in batches {
        let (per_pair, r, l) = micro_losses(&model, m, config, &device)?;
        sum += f64::from(per_pair.sum().into_scalar::<f32>());
        rewards.extend(r);
        logps.extend(l);
    }
    if rewards.is_empty() {
        return Err(TrainError::NoLabels);
    }
    let loss = (sum / rewards.len() as f64) as f32;
    Ok(PreferenceStats::of(loss, &rewards, &logps, 0.0, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Device::flex())
    }

    fn losses(config: &PreferenceConfig) -> Vec<f32> {
        // Two pairs: s_c, s_r, r_c, r_r, l_c, l_r.
        pair_losses(
            config,
            t(&[-10.0, -4.0]),
            t(&[-12.0, -3.0]),
            t(&[-11.0, -4.0]),
            t(&[-11.0, -4.0]),
            t(&[5.0, 2.0]),
            t(&[4.0, 1.0]),
        )
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
    }

    fn close(got: &[f32], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    /// Each loss against values computed by hand from its formula.
    #[test]
    fn losses_equal_their_formulas() {
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        // Δ = (s_c − r_c) − (s_r − r_r): pair 0: 1 − (−1) = 2; pair 1: 0 − 1 = −1.
        let base = PreferenceConfig::default(); // sigmoid, β 0.1
        close(&losses(&base), &[-(sig(0.2)).ln(), -(sig(-0.1)).ln()]);
        let smoothed = PreferenceConfig {
            label_smoothing: 0.1,
            ..base.clone()
        };
        close(
            &losses(&smoothed),
            &[
                -0.9 * sig(0.2).ln() - 0.1 * sig(-0.2).ln(),
                -0.9 * sig(-0.1).ln() - 0.1 * sig(0.1).ln(),
            ],
        );
        let hinge = PreferenceConfig {
            loss: PreferenceLoss::Hinge,
            beta: 1.0,
            ..base.clone()
        };
        close(&losses(&hinge), &[0.0, 2.0]);
        // IPO: (1/5 − (−1)/4 − 1/(2·0.1))², (0/2 − 1/1 − 5)².
        let ipo = PreferenceConfig {
            loss: PreferenceLoss::Ipo,
            ..base.clone()
        };
        close(
            &losses(&ipo),
            &[(0.2f64 + 0.25 - 5.0).powi(2), (-1.0f64 - 5.0).powi(2)],
        );
        // SimPO: z = β(s_c/l_c − s_r/l_r) − γ: 0.1·(−2 + 3) − 0.5 = −0.4; 0.1·(−2 + 3) − 0.5.
        let simpo = PreferenceConfig {
            loss: PreferenceLoss::Simpo,
            ..base
        };
        close(&losses(&simpo), &[-(sig(-0.4)).ln(), -(sig(-0.4)).ln()]);
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let err = |c: PreferenceConfig| c.validate().unwrap_err().to_string();
        assert!(
            err(PreferenceConfig {
                beta: 0.0,
                ..Default::default()
            })
            .contains("beta")
        );
        assert!(
            err(PreferenceConfig {
                label_smoothing: 0.5,
                ..Default::default()
            })
            .contains("label_smoothing")
        );
        assert!(
            err(PreferenceConfig {
                loss: PreferenceLoss::Ipo,
                label_smoothing: 0.1,
                ..Default::default()
            })
            .contains("ipo")
        );
    }
}
