//! RLHF with PPO, as TRL's `PPOTrainer` computes it: generation in the loop, a score per
//! response (a reward model, or any function of the tokens), a per-token KL penalty to a
//! reference, a value head, generalized advantage estimation (GAE), and clipped policy and value
//! losses over a few epochs of minibatches.
//!
//! The policy and its value head share the decoder: a [`RewardModel`] whose head estimates, at
//! each response token, the return still to come (TRL's older `AutoModelForCausalLMWithValueHead`
//! layout; with an adapter, only the adapter and the head train).
//!
//! One iteration ([`Trainer::ppo_step`]) on a batch of prompts:
//!
//! 1. [`rollout`]: sample a response to each prompt from the policy (temperature
//!    [`PpoConfig::temperature`], up to [`PpoConfig::max_new_tokens`], ending at an
//!    end-of-sequence token); compute each response token's log-probability under the policy
//!    (`logp`) and the reference (`ref`), the value `V_t` of the state before it, and the
//!    response's score `s`.
//! 2. Per-token rewards ([`token_rewards`]): `r_t = −β·(logp_t − ref_t)`, plus `s` on the last
//!    token; β is [`PpoConfig::kl_coef`].
//! 3. [`gae`]: `δ_t = r_t + γ·V_{t+1} − V_t` (`V` after the last token is 0),
//!    `A_t = δ_t + γλ·A_{t+1}`, returns `R_t = A_t + V_t`; advantages are whitened over the batch
//!    ([`whiten`]).
//! 4. [`PpoConfig::ppo_epochs`] passes over [`PpoConfig::minibatches`] minibatches, each an
//!    optimizer step on [`ppo_losses`]: with `ρ = exp(logp' − logp)`,
//!    `L_pg = mean(max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)))`, and with the clipped value
//!    `V^c = V + clip(V' − V, −ε_v, ε_v)`, `L_v = ½·mean(max((V' − R)², (V^c − R)²))`; the loss is
//!    `L_pg + c_v·L_v`. Means are over the minibatch's response tokens.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleDisplay};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use kiln_data::{TokenBatch, TokenizedExample};
use kiln_models::{CachedCausalLm, CausalLm, GenerationConfig, RewardModel, generate};

use crate::loss::{LossInput, labelled_hidden, labelled_logps};
use crate::{Result, TrainError, Trainer, clip_grad_norm};

/// PPO settings; the defaults are TRL's `PPOConfig`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// β of the per-token KL penalty to the reference.
    pub kl_coef: f64,
    /// Discount γ.
    pub gamma: f64,
    /// GAE's λ.
    pub lam: f64,
    /// ε of the clipped policy ratio.
    pub cliprange: f64,
    /// ε_v of the clipped value.
    pub cliprange_value: f64,
    /// Weight c_v of the value loss.
    pub vf_coef: f64,
    /// Passes over each rollout.
    pub ppo_epochs: usize,
    /// Minibatches per pass (each an optimizer step).
    pub minibatches: usize,
    /// Most response tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature of the rollouts (also applied to the logits whose log-probabilities
    /// the losses use, as TRL does).
    pub temperature: f32,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            kl_coef: 0.05,
            gamma: 1.0,
            lam: 0.95,
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
            ppo_epochs: 4,
            minibatches: 1,
            max_new_tokens: 53,
            temperature: 1.0,
        }
    }
}

impl PpoConfig {
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
        for (name, v) in [
            ("kl_coef", self.kl_coef),
            ("cliprange", self.cliprange),
            ("cliprange_value", self.cliprange_value),
            ("vf_coef", self.vf_coef),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, format!("{v} must be non-negative"));
            }
        }
        for (name, v) in [("gamma", self.gamma), ("lam", self.lam)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(name, format!("{v} is not in [0, 1]"));
            }
        }
        if self.ppo_epochs == 0 {
            return bad("ppo_epochs", "must be at least 1".into());
        }
        if self.minibatches == 0 {
            return bad("minibatches", "must be at least 1".into());
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(
                "temperature",
                format!("{} must be positive (PPO samples)", self.temperature),
            );
        }
        Ok(())
    }
}

/// The score of each response given its prompt (`prompts[i]`, `responses[i]`): a reward
/// model's, or a known function of the tokens.
pub type ScoreFn<'a> = dyn Fn(&[Vec<u32>], &[Vec<u32>]) -> Result<Vec<f32>> + 'a;

/// The reference's log-probability of each response token of a batch (rows in order, tokens in
/// order: as [`token_logps`] returns them).
pub type TokenReferenceFn<'a> = dyn Fn(&TokenBatch) -> Result<Vec<f32>> + 'a;

/// One batch of generated responses with everything the update needs, per response token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The prompts.
    pub prompts: Vec<Vec<u32>>,
    /// The sampled responses (an end-of-sequence token included when one ended it).
    pub responses: Vec<Vec<u32>>,
    /// The score of each response.
    pub scores: Vec<f32>,
    /// The policy's log-probability of each response token when it was sampled.
    pub logprobs: Vec<Vec<f32>>,
    /// The reference's log-probability of each response token.
    pub ref_logprobs: Vec<Vec<f32>>,
    /// The value of the state before each response token.
    pub values: Vec<Vec<f32>>,
    /// The whitened advantage of each response token.
    pub advantages: Vec<Vec<f32>>,
    /// The return of each response token.
    pub returns: Vec<Vec<f32>>,
}

/// What one PPO iteration did, under TRL's metric names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoStats {
    /// Mean score of the responses (`objective/scores`).
    pub scores: f64,
    /// Mean over responses of the summed `logp − ref` (`objective/kl`).
    pub kl: f64,
    /// Mean over responses of the summed KL penalty (`objective/non_score_reward`).
    pub non_score_reward: f64,
    /// Mean policy loss over the updates (`loss/policy_avg`).
    pub policy_loss: f64,
    /// Mean value loss over the updates (`loss/value_avg`).
    pub value_loss: f64,
    /// Fraction of tokens whose ratio was clipped (`policy/clipfrac_avg`).
    pub clipfrac: f64,
    /// Fraction of tokens whose value was clipped (`val/clipfrac_avg`).
    pub value_clipfrac: f64,
    /// `½·mean((logp' − logp)²)` (`policy/approxkl_avg`).
    pub approx_kl: f64,
    /// Mean response length in tokens.
    pub response_len: f64,
    /// Optimizer steps taken.
    pub updates: usize,
}

impl PpoStats {
    /// The metrics under TRL's names, for logs.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        [
            ("objective/scores", self.scores),
            ("objective/kl", self.kl),
            ("objective/non_score_reward", self.non_score_reward),
            ("objective/rlhf_reward", self.scores + self.non_score_reward),
            ("loss/policy_avg", self.policy_loss),
            ("loss/value_avg", self.value_loss),
            ("policy/clipfrac_avg", self.clipfrac),
            ("val/clipfrac_avg", self.value_clipfrac),
            ("policy/approxkl_avg", self.approx_kl),
            ("response_len", self.response_len),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The per-token rewards of one response: `−kl_coef·(logp_t − ref_t)`, and the score added to
/// the last token.
pub fn token_rewards(logp: &[f32], ref_logp: &[f32], score: f32, kl_coef: f64) -> Vec<f32> {
    let mut r: Vec<f32> = logp
        .iter()
        .zip(ref_logp)
        .map(|(l, r)| (-kl_coef * f64::from(l - r)) as f32)
        .collect();
    if let Some(last) = r.last_mut() {
        *last += score;
    }
    r
}

/// Generalized advantage estimation over one response: `(advantages, returns)` from its
/// per-token rewards and values (the value after the last token is 0).
pub fn gae(rewards: &[f32], values: &[f32], gamma: f64, lam: f64) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0.0f32; n];
    let mut last = 0.0f64;
    for t in (0..n).rev() {
        let next = if t + 1 < n {
            f64::from(values[t + 1])
        } else {
            0.0
        };
        let delta = f64::from(rewards[t]) + gamma * next - f64::from(values[t]);
        last = delta + gamma * lam * last;
        adv[t] = last as f32;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// Whitens values over all tokens: `(x − mean) / sqrt(var + 1e-8)`, the variance unbiased (TRL's
/// `masked_whiten` of advantages).
pub fn whiten(rows: &mut [Vec<f32>]) {
    let n = rows.iter().map(Vec::len).sum::<usize>();
    if n < 2 {
        return;
    }
    let mean = rows.iter().flatten().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let var = rows
        .iter()
        .flatten()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / (n - 1) as f64;
    let scale = 1.0 / (var + 1e-8).sqrt();
    for x in rows.iter_mut().flatten() {
        *x = ((f64::from(*x) - mean) * scale) as f32;
    }
}

/// The loss terms of one minibatch, tracked when the inputs are, and their statistics.
#[derive(Debug, Clone)]
pub struct PpoLoss {
    /// `L_pg + c_v·L_v`, `[1]`.
    pub loss: Tensor<1>,
    /// `L_pg`.
    pub policy_loss: f64,
    /// `L_v`.
    pub value_loss: f64,
    /// Fraction of tokens whose clipped policy term was the larger.
    pub clipfrac: f64,
    /// Fraction of tokens whose clipped value term was the larger.
    pub value_clipfrac: f64,
    /// `½·mean((logp' − logp)²)`.
    pub approx_kl: f64,
}

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 values")
}

/// PPO's clipped losses over `n` response tokens: the new log-probabilities and values
/// (`logp`, `vpred`, tracked) against the rollout's (`old_logp`, `old_values`), with its
/// advantages and returns.
///
/// # Shapes
/// Every tensor is `[n]`.
#[allow(clippy::too_many_arguments)]
pub fn ppo_losses(
    logp: Tensor<1>,
    vpred: Tensor<1>,
    old_logp: Tensor<1>,
    old_values: Tensor<1>,
    advantages: Tensor<1>,
    returns: Tensor<1>,
    config: &PpoConfig,
) -> PpoLoss {
    let n = logp.dims()[0].max(1) as f64;
    let log_ratio = logp - old_logp;
    let ratio = log_ratio.clone().exp();
    let pg1 = advantages.clone().neg() * ratio.clone();
    let pg2 = advantages.neg()
        * ratio.clamp(
            (1.0 - config.cliprange) as f32,
            (1.0 + config.cliprange) as f32,
        );
    let pg = pg1.clone().max_pair(pg2.clone());
    let vclipped = old_values.clone()
        + (vpred.clone() - old_values).clamp(
            -config.cliprange_value as f32,
            config.cliprange_value as f32,
        );
    let v1 = (vpred - returns.clone()).powf_scalar(2.0);
    let v2 = (vclipped - returns).powf_scalar(2.0);
    let vf = v1.clone().max_pair(v2.clone());
    let policy_loss = pg.mean();
    let value_loss = vf.mean().mul_scalar(0.5);
    let loss = policy_loss.clone() + value_loss.clone().mul_scalar(config.vf_coef as f32);
    let frac =
        |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).filter(|(x, y)| y > x).count() as f64 / n;
    let lr = host(log_ratio);
    PpoLoss {
        loss,
        policy_loss: f64::from(host(policy_loss)[0]),
        value_loss: f64::from(host(value_loss)[0]),
        clipfrac: frac(host(pg1), host(pg2)),
        value_clipfrac: frac(host(v1), host(v2)),
        approx_kl: lr.iter().map(|&x| 0.5 * f64::from(x).powi(2)).sum::<f64>() / n,
    }
}

/// The prompts and responses as a batch whose labels are the response tokens.
fn response_batch(prompts: &[Vec<u32>], responses: &[Vec<u32>], pad_id: u32) -> Result<TokenBatch> {
    let rows: Vec<TokenizedExample> = prompts
        .iter()
        .zip(responses)
        .map(|(p, r)| TokenizedExample::prompt_completion(p, r))
        .collect();
    Ok(TokenBatch::pad_right(&rows, pad_id)?)
}

/// Per-token log-probabilities (`[n]`) of `model`'s labelled tokens of `input`, and the hidden
/// states they were predicted from (`[n, d]`), logits divided by `temperature`.
fn logps_and_hidden<M: CausalLm>(
    model: &M,
    input: &LossInput,
    temperature: f32,
) -> (Tensor<1>, Tensor<2>) {
    let picked = labelled_hidden(model, input); // [n, d]
    (
        labelled_logps(model, picked.clone(), input, temperature),
        picked,
    )
}

/// The log-probability of each labelled token of `batch` under `model` (rows in order, tokens in
/// order), logits divided by `temperature`, without gradients: a reference for
/// [`TokenReferenceFn`].
///
/// # Errors
/// A batch without labels.
pub fn token_logps<M: CausalLm + Module>(
    model: &M,
    batch: &TokenBatch,
    temperature: f32,
) -> Result<Vec<f32>> {
    let model = model.valid();
    let input = LossInput::from_batch(batch, &model.device())?;
    Ok(host(logps_and_hidden(&model, &input, temperature).0))
}

/// Splits a flat per-token list into rows of the given lengths.
fn split_rows(flat: &[f32], lengths: &[usize]) -> Vec<Vec<f32>> {
    let mut at = 0;
    lengths
        .iter()
        .map(|&l| {
            let row = flat[at..at + l].to_vec();
            at += l;
            row
        })
        .collect()
}

/// Samples responses to `prompts` from `policy` and computes everything an update needs (steps
/// 1–3 of the module's description). `eos_token_ids` end a response; `seed` seeds the sampler.
///
/// # Errors
/// An invalid configuration, a generation error, a score or reference of the wrong length.
#[allow(clippy::too_many_arguments)]
pub fn rollout<M>(
    policy: &RewardModel<M>,
    prompts: &[Vec<u32>],
    score: &ScoreFn<'_>,
    reference: &TokenReferenceFn<'_>,
    config: &PpoConfig,
    pad_id: u32,
    eos_token_ids: &[u32],
    seed: u64,
) -> Result<Rollout>
where
    M: CachedCausalLm + Module + ModuleDisplay,
{
    config.validate()?;
    let policy = policy.valid();
    let generation = GenerationConfig {
        max_new_tokens: config.max_new_tokens,
        temperature: config.temperature,
        seed,
        eos_token_ids: eos_token_ids.to_vec(),
        ..Default::default()
    };
    let responses: Vec<Vec<u32>> = generate(
        &policy.model,
        prompts,
        pad_id,
        &generation,
        None,
        &mut |_, _| {},
    )?
    .into_iter()
    .map(|g| g.tokens)
    .collect();
    let batch = response_batch(prompts, &responses, pad_id)?;
    let lengths: Vec<usize> = responses.iter().map(Vec::len).collect();
    let total: usize = lengths.iter().sum();
    let input = LossInput::from_batch(&batch, &policy.device())?;
    let (logp, hidden) = logps_and_hidden(&policy.model, &input, config.temperature);
    let values = hidden.matmul(policy.score.val()).reshape([total]);
    let logprobs = split_rows(&host(logp), &lengths);
    let values = split_rows(&host(values), &lengths);
    let ref_flat = reference(&batch)?;
    if ref_flat.len() != total {
        return Err(TrainError::InvalidConfig {
            field: "reference".into(),
            reason: format!(
                "{} reference log-probabilities for {total} response tokens",
                ref_flat.len()
            ),
        });
    }
    let ref_logprobs = split_rows(&ref_flat, &lengths);
    let scores = score(prompts, &responses)?;
    if scores.len() != prompts.len() {
        return Err(TrainError::InvalidConfig {
            field: "score".into(),
            reason: format!("{} scores for {} responses", scores.len(), prompts.len()),
        });
    }
    let (mut advantages, mut returns) = (Vec::new(), Vec::new());
    for i in 0..prompts.len() {
        let r = token_rewards(&logprobs[i], &ref_logprobs[i], scores[i], config.kl_coef);
        let (a, ret) = gae(&r, &values[i], config.gamma, config.lam);
        advantages.push(a);
        returns.push(ret);
    }
    whiten(&mut advantages);
    Ok(Rollout {
        prompts: prompts.to_vec(),
        responses,
        scores,
        logprobs,
        ref_logprobs,
        values,
        advantages,
        returns,
    })
}

impl Trainer {
    /// One PPO iteration: a [`rollout`] on `prompts`, then [`Trainer::ppo_update`].
    ///
    /// # Errors
    /// As [`rollout`] and [`Trainer::ppo_update`].
    #[allow(clippy::too_many_arguments)]
    pub fn ppo_step<M>(
        &mut self,
        policy: RewardModel<M>,
        prompts: &[Vec<u32>],
        score: &ScoreFn<'_>,
        reference: &TokenReferenceFn<'_>,
        config: &PpoConfig,
        pad_id: u32,
        eos_token_ids: &[u32],
        seed: u64,
    ) -> Result<(RewardModel<M>, PpoStats)>
    where
        M: CachedCausalLm + Module + ModuleDisplay,
    {
        let rollout = rollout(
            &policy,
            prompts,
            score,
            reference,
            config,
            pad_id,
            eos_token_ids,
            seed,
        )?;
        self.ppo_update(policy, &rollout, config, pad_id)
    }

    /// PPO's update on a rollout: [`PpoConfig::ppo_epochs`] passes, each over
    /// [`PpoConfig::minibatches`] consecutive groups of responses, one optimizer step (with
    /// clipping) per group on [`ppo_losses`].
    ///
    /// # Errors
    /// An invalid configuration or a non-finite loss.
    pub fn ppo_update<M>(
        &mut self,
        policy: RewardModel<M>,
        rollout: &Rollout,
        config: &PpoConfig,
        pad_id: u32,
    ) -> Result<(RewardModel<M>, PpoStats)>
    where
        M: CausalLm + Module + ModuleDisplay,
    {
        config.validate()?;
        let rows = rollout.prompts.len();
        let mb = rows.div_ceil(config.minibatches).max(1);
        let device = self.device().clone();
        let flat = |v: &[Vec<f32>], idx: &[usize]| -> Tensor<1> {
            let data: Vec<f32> = idx.iter().flat_map(|&i| v[i].iter().copied()).collect();
            let n = data.len();
            Tensor::from_data(TensorData::new(data, [n]), &device)
        };
        let mut policy = policy;
        let (mut pl, mut vl, mut cf, mut vcf, mut akl, mut updates) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0usize);
        for _ in 0..config.ppo_epochs {
            for start in (0..rows).step_by(mb) {
                let idx: Vec<usize> = (start..(start + mb).min(rows)).collect();
                let prompts: Vec<Vec<u32>> =
                    idx.iter().map(|&i| rollout.prompts[i].clone()).collect();
                let responses: Vec<Vec<u32>> =
                    idx.iter().map(|&i| rollout.responses[i].clone()).collect();
                let batch = response_batch(&prompts, &responses, pad_id)?;
                let input = LossInput::from_batch(&batch, &device)?;
                let n = input.num_targets;
                let (logp, hidden) = logps_and_hidden(&policy.model, &input, config.temperature);
                let vpred = hidden.matmul(policy.score.val()).reshape([n]);
                let terms = ppo_losses(
                    logp,
                    vpred,
                    flat(&rollout.logprobs, &idx),
                    flat(&rollout.values, &idx),
                    flat(&rollout.advantages, &idx),
                    flat(&rollout.returns, &idx),
                    config,
                );
                let value = terms.loss.clone().into_scalar::<f32>();
                if !value.is_finite() {
                    return Err(TrainError::NonFiniteLoss {
                        step: self.step,
                        value,
                    });
                }
                let mut grads = GradientsParams::from_grads(terms.loss.backward(), &policy);
                clip_grad_norm(&policy, &mut grads, self.config().max_grad_norm);
                let lr = self.current_lr();
                policy = self.optim.step(self.lr_policy(lr), policy, grads);
                self.step += 1;
                pl += terms.policy_loss;
                vl += terms.value_loss;
                cf += terms.clipfrac;
                vcf += terms.value_clipfrac;
                akl += terms.approx_kl;
                updates += 1;
            }
        }
        let u = updates.max(1) as f64;
        let r = rows.max(1) as f64;
        let kl: f64 = (0..rows)
            .map(|i| {
                rollout.logprobs[i]
                    .iter()
                    .zip(&rollout.ref_logprobs[i])
                    .map(|(l, r)| f64::from(l - r))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / r;
        Ok((
            policy,
            PpoStats {
                scores: rollout.scores.iter().map(|&s| f64::from(s)).sum::<f64>() / r,
                kl,
                non_score_reward: -config.kl_coef * kl,
                policy_loss: pl / u,
                value_loss: vl / u,
                clipfrac: cf / u,
                value_clipfrac: vcf / u,
                approx_kl: akl / u,
                response_len: rollout.responses.iter().map(Vec::len).sum::<usize>() as f64 / r,
                updates,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn t(v: &[f32]) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Device::flex())
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    /// Rewards, GAE and whitening against values worked out by hand.
    #[test]
    fn rewards_and_advantages_by_hand() {
        // KL terms: −0.1·(−1 − −1.5) = −0.05; −0.1·(−2 − −1) = 0.1; score 1 on the last.
        let r = token_rewards(&[-1.0, -2.0], &[-1.5, -1.0], 1.0, 0.1);
        close(f64::from(r[0]), -0.05);
        close(f64::from(r[1]), 1.1);
        // γ = 1, λ = 0.5, V = [0.2, 0.4]: δ_1 = 1.1 − 0.4 = 0.7; δ_0 = −0.05 + 0.4 − 0.2 = 0.15;
        // A_1 = 0.7, A_0 = 0.15 + 0.5·0.7 = 0.5; R = A + V = [0.7, 1.1].
        let (a, ret) = gae(&r, &[0.2, 0.4], 1.0, 0.5);
        close(f64::from(a[0]), 0.5);
        close(f64::from(a[1]), 0.7);
        close(f64::from(ret[0]), 0.7);
        close(f64::from(ret[1]), 1.1);
        // γ = 0.9, λ = 1: A_1 = 0.7; A_0 = −0.05 + 0.9·0.4 − 0.2 + 0.9·0.7 = 0.74.
        let (a, _) = gae(&r, &[0.2, 0.4], 0.9, 1.0);
        close(f64::from(a[0]), 0.74);
        // Whitening [1, 2] and [3]: mean 2, unbiased variance 1.
        let mut rows = vec![vec![1.0, 2.0], vec![3.0]];
        whiten(&mut rows);
        close(f64::from(rows[0][0]), -1.0);
        close(f64::from(rows[0][1]), 0.0);
        close(f64::from(rows[1][0]), 1.0);
    }

    /// The clipped policy and value losses against values worked out by hand.
    #[test]
    fn clipped_losses_by_hand() {
        let config = PpoConfig {
            cliprange: 0.2,
            cliprange_value: 0.1,
            vf_coef: 0.5,
            ..Default::default()
        };
        // Token 0: ratio e^0.5 ≈ 1.6487, A = 1: max(−1.6487, −1.2) = −1.2 (clipped).
        // Token 1: ratio 1, A = −2: max(2, 2) = 2. L_pg = (−1.2 + 2)/2 = 0.4.
        // Values: V' = [1.0, 0.0], V = [0.5, 0.0], R = [2.0, 1.0]:
        // token 0: (1 − 2)² = 1, clipped V^c = 0.6: (0.6 − 2)² = 1.96 → 1.96;
        // token 1: (0 − 1)² = 1 either way. L_v = ½·(1.96 + 1)/2 = 0.74.
        let l = ppo_losses(
            t(&[-0.5, -1.0]),
            t(&[1.0, 0.0]),
            t(&[-1.0, -1.0]),
            t(&[0.5, 0.0]),
            t(&[1.0, -2.0]),
            t(&[2.0, 1.0]),
            &config,
        );
        close(l.policy_loss, 0.4);
        close(l.value_loss, 0.74);
        close(f64::from(host(l.loss)[0]), 0.4 + 0.5 * 0.74);
        close(l.clipfrac, 0.5);
        close(l.value_clipfrac, 0.5);
        close(l.approx_kl, 0.5 * 0.25 / 2.0);
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let err = |c: PpoConfig| c.validate().unwrap_err().to_string();
        assert!(
            err(PpoConfig {
                lam: 1.5,
                ..Default::default()
            })
            .contains("lam")
        );
        assert!(
            err(PpoConfig {
                temperature: 0.0,
                ..Default::default()
            })
            .contains("temperature")
        );
    }
}
