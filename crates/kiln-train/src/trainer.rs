use std::path::Path;
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use kiln_data::TokenBatch;
use kiln_models::{CausalLm, FusedStep};

use crate::dist::{Collective, all_reduce_grads};
use crate::loss::{LossInput, host_batch, labelled_hidden, loss_slices, slice_nll};
use crate::{Result, Schedule, TrainError};

/// A learning-rate multiplier for the parameters whose path contains `pattern`.
///
/// Paths are Burn module paths such as `model.layers.0.self_attn.q_proj.lora.lora_b`. When several
/// groups match a parameter, the last one wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrGroup {
    /// Substring of the parameter path.
    pub pattern: String,
    /// Multiplier of the scheduled learning rate.
    pub scale: f64,
}

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
    /// Global-norm gradient clipping (`torch.nn.utils.clip_grad_norm_`); `None` disables it.
    pub max_grad_norm: Option<f64>,
    /// Per-parameter-group learning-rate multipliers (see [`OptimizerConfig::with_loraplus`]).
    pub lr_groups: Vec<LrGroup>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: None,
            lr_groups: Vec::new(),
        }
    }
}

impl OptimizerConfig {
    /// LoRA+ (Hayou et al., 2024): the `B` matrices learn `ratio` times faster than the rest.
    pub fn with_loraplus(mut self, ratio: f64) -> Self {
        self.lr_groups.push(LrGroup {
            pattern: "lora_b".into(),
            scale: ratio,
        });
        self
    }

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
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} must be positive", self.lr));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(name, format!("{b} is not in [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", format!("{} must be positive", self.eps));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("{} must be non-negative", self.weight_decay),
            );
        }
        if let Some(n) = self.max_grad_norm
            && !(n.is_finite() && n > 0.0)
        {
            return bad("max_grad_norm", format!("{n} must be positive"));
        }
        for g in &self.lr_groups {
            if !(g.scale.is_finite() && g.scale > 0.0) {
                return bad(
                    "lr_groups",
                    format!("scale {} of `{}` must be positive", g.scale, g.pattern),
                );
            }
            if g.pattern.is_empty() {
                return bad("lr_groups", "a pattern is empty".into());
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

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Token-weighted mean loss over all micro-batches of the step.
    pub loss: f32,
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// The base learning rate used (before group multipliers).
    pub lr: f64,
    /// Labelled tokens (the loss denominator).
    pub loss_tokens: usize,
    /// Real (non-padding) input tokens processed.
    pub input_tokens: usize,
    /// Padding tokens computed along (row slots of the micro-batches holding no token).
    #[serde(default)]
    pub padding_tokens: usize,
    /// Micro-batches that carried at least one label.
    pub micro_batches: usize,
}

/// Steps a model with AdamW on labelled batches.
///
/// The model must live on an autodiff device (`device.autodiff()`); only parameters that require
/// gradients (the adapter, after `attach_*`) are updated.
pub struct Trainer {
    pub(crate) optim: ModuleOptimizer,
    config: OptimizerConfig,
    schedule: Schedule,
    pub(crate) step: usize,
    device: Device,
    fused: bool,
    gradient_checkpointing: bool,
    collective: Option<Arc<dyn Collective>>,
    /// The flattened gradients of a data-parallel step, kept from step to step.
    flat_grads: Vec<f32>,
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
            fused: true,
            gradient_checkpointing: false,
            collective: None,
            flat_grads: Vec::new(),
        })
    }

    /// Whether steps use the model's fused CPU training step where it has one
    /// ([`CausalLm::fused_loss_grads`]; on by default). Off, every step builds the Burn graph.
    pub fn set_fused_kernels(&mut self, on: bool) {
        self.fused = on;
    }

    /// Gradient checkpointing in the fused CPU step: layers keep only their inputs in the
    /// forward pass and recompute their activations in the backward pass (off by default).
    /// The Burn graph path keeps every activation either way.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.gradient_checkpointing = on;
    }

    /// Makes every step of [`Trainer::train_step_accum`] data-parallel across `group` (see
    /// [`crate::dist`]): labelled-token counts, losses and trainable gradients are summed across
    /// the replicas before the clip and the AdamW step, so every replica takes the same step.
    /// Each replica passes its own share of the step's micro-batches.
    pub fn set_collective(&mut self, group: Arc<dyn Collective>) {
        self.collective = Some(group);
    }

    /// The data-parallel group, when there is one.
    pub fn collective(&self) -> Option<&Arc<dyn Collective>> {
        self.collective.as_ref()
    }

    /// See [`Trainer::set_fused_kernels`].
    pub fn fused_kernels(&self) -> bool {
        self.fused
    }

    /// Optimizer steps taken so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The optimizer settings.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The autodiff device batches are uploaded to.
    pub fn device(&self) -> &Device {
        &self.device
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
        let (model, stats) = self.train_step_accum(model, std::slice::from_ref(batch))?;
        Ok((model, stats.loss))
    }

    /// One optimizer step over several micro-batches (gradient accumulation).
    ///
    /// Each micro-batch's summed loss is divided by the labelled-token count of the *whole*
    /// step, so the accumulated gradient equals the gradient of one batch holding every
    /// micro-batch. Micro-batches without labels are skipped. The global gradient norm is
    /// measured (and clipped, when [`OptimizerConfig::max_grad_norm`] is set) before AdamW.
    ///
    /// # Errors
    /// No labelled token in any micro-batch, or a non-finite loss.
    pub fn train_step_accum<M>(&mut self, model: M, micro: &[TokenBatch]) -> Result<(M, StepStats)>
    where
        M: CausalLm + Module,
    {
        // Each micro-batch's host form: its labelled-token count, and the fused step's input.
        let mut hosts = Vec::with_capacity(micro.len());
        let mut input_tokens = 0usize;
        let mut slots = 0usize;
        for batch in micro {
            input_tokens += batch
                .attention_mask
                .iter()
                .flatten()
                .filter(|&&m| m != 0)
                .count();
            slots += batch.batch_size() * batch.seq_len();
            let host = host_batch(batch);
            if host.num_targets() > 0 {
                hosts.push((batch, host));
            }
        }
        let mut total: usize = hosts.iter().map(|(_, h)| h.num_targets()).sum();
        if let Some(group) = &self.collective {
            // The step's counts over every replica: each scales its loss by the whole total.
            let mut counts = [total as f64, input_tokens as f64, slots as f64];
            group.all_reduce_f64(&mut counts)?;
            [total, input_tokens, slots] = counts.map(|c| c as usize);
        }
        if total == 0 {
            return Err(TrainError::NoLabels);
        }
        let mut accum = GradientsAccumulator::<M>::new();
        let mut loss_sum = 0.0f64;
        for (batch, host) in &hosts {
            let step = FusedStep {
                scale: 1.0 / total as f32,
                recompute: self.gradient_checkpointing,
            };
            let fused = self
                .fused
                .then(|| model.fused_loss_grads(host, step))
                .flatten();
            let value = match fused {
                Some((value, grads)) => {
                    accum.accumulate(&model, grads);
                    value
                }
                // The Burn graph: the batch's tensors are uploaded only on this path.
                None => {
                    let input = LossInput::from_batch(batch, &self.device)?;
                    backward_in_chunks(&model, &input, total as f32, &mut accum)
                }
            };
            if !value.is_finite() && self.collective.is_none() {
                return Err(TrainError::NonFiniteLoss {
                    step: self.step,
                    value: value as f32,
                });
            }
            loss_sum += value;
        }
        let mut grads = accum.grads();
        let mut micro_batches = hosts.len();
        if let Some(group) = &self.collective {
            let mut sums = [loss_sum, micro_batches as f64];
            group.all_reduce_f64(&mut sums)?;
            loss_sum = sums[0];
            micro_batches = sums[1] as usize;
            if !loss_sum.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    step: self.step,
                    value: loss_sum as f32,
                });
            }
            let inner = self.device.clone().inner();
            grads = all_reduce_grads(&model, grads, group.as_ref(), &inner, &mut self.flat_grads)?;
        }
        let grad_norm = clip_grad_norm(&model, &mut grads, self.config.max_grad_norm);
        let lr = self.current_lr();
        let model = self.optim.step(self.lr_policy(lr), model, grads);
        self.step += 1;
        Ok((
            model,
            StepStats {
                loss: loss_sum as f32,
                grad_norm,
                lr,
                loss_tokens: total,
                input_tokens,
                padding_tokens: slots - input_tokens,
                micro_batches,
            },
        ))
    }

    pub(crate) fn lr_policy(&self, lr: f64) -> ModuleLearningRate {
        if self.config.lr_groups.is_empty() {
            return lr.into();
        }
        let mut scheduler = ModuleLrScheduler::new(lr);
        for g in &self.config.lr_groups {
            scheduler =
                scheduler.with_group(ParamGroup::from_predicate(g.pattern.clone()), lr * g.scale);
        }
        scheduler.step()
    }

    /// Writes the optimizer state (AdamW moments and step counts) to a burnpack file.
    ///
    /// # Errors
    /// [`TrainError::Record`] when the file cannot be written.
    pub fn save_optimizer(&self, path: &Path) -> Result<()> {
        self.optim.save(path).map_err(TrainError::record(path))
    }

    /// Restores the optimizer state written by [`Trainer::save_optimizer`] and the step counter.
    ///
    /// The state is keyed by parameter id: load the model's trainable parameters from the same
    /// checkpoint (which restores their ids) before stepping.
    ///
    /// # Errors
    /// [`TrainError::Record`] when the file cannot be read.
    pub fn load_optimizer(&mut self, path: &Path, step: usize) -> Result<()> {
        let optim = self
            .config
            .build()
            .load(path)
            .map_err(TrainError::record(path))?;
        self.optim = optim;
        self.step = step;
        Ok(())
    }
}

/// Adds the gradients of `Σ nll / denom` over one micro-batch to `accum` and returns that loss.
///
/// The body runs forward once. Its output at the labelled positions is then cut loose from the
/// graph, and the vocabulary projection, softmax and their backward pass run over
/// [`LOSS_CHUNK`](crate::LOSS_CHUNK) positions at a time, each collecting the gradient of its
/// hidden states (and of the output head, when it trains). One backward pass through the body then takes the
/// concatenated hidden-state gradient, as the gradient of `Σ hidden · grad`. The result equals
/// one backward pass over the whole loss, while only one slice of `[c, vocab]` logits and their
/// gradients is alive at a time.
fn backward_in_chunks<M>(
    model: &M,
    input: &LossInput,
    denom: f32,
    accum: &mut GradientsAccumulator<M>,
) -> f64
where
    M: CausalLm + Module,
{
    let picked = labelled_hidden(model, input); // [n, d], in the body's graph
    let values = picked.clone().detach(); // [n, d], a new lineage
    let mut loss = 0.0f64;
    let mut hidden_grads = Vec::new();
    for rows in loss_slices(input.num_targets) {
        let hidden = values.clone().slice(rows.clone()).detach().require_grad(); // [c, d]
        let part = slice_nll(model, hidden.clone(), input, rows).div_scalar(denom);
        loss += f64::from(part.clone().into_scalar::<f32>());
        let mut grads = part.backward();
        hidden_grads.push(
            hidden
                .grad_remove(&mut grads)
                .expect("the loss depends on the hidden states"),
        );
        accum.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    if !loss.is_finite() {
        return loss;
    }
    let grad = Tensor::from_inner(Tensor::cat(hidden_grads, 0)); // [n, d], not tracked
    let surrogate = (picked * grad).sum(); // ∂/∂picked = grad
    accum.accumulate(
        model,
        GradientsParams::from_grads(surrogate.backward(), model),
    );
    loss
}

/// Ids and paths of the parameters that require gradients.
pub fn trainable_params<M: Module>(model: &M) -> Vec<(ParamId, String)> {
    #[derive(Default)]
    struct Collect {
        path: Vec<String>,
        out: Vec<(ParamId, String)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.out.push((param.id, self.path.join(".")));
            }
        }
    }
    let mut c = Collect::default();
    model.visit(&mut c);
    c.out
}

/// Global L2 norm of the gradients of `model`'s parameters, scaled in place to at most
/// `max_norm` when given, with `torch.nn.utils.clip_grad_norm_` semantics: the factor is
/// `max_norm / (norm + 1e-6)`, applied only when below 1. Returns the norm before clipping.
pub fn clip_grad_norm<M: Module>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> f64 {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: f64,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let sq: f32 = g.square().sum().into_scalar::<f32>();
                self.total += f64::from(sq);
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f32,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut sum = SumSquares { grads, total: 0.0 };
    model.visit(&mut sum);
    let norm = sum.total.sqrt();
    if let Some(max) = max_norm {
        let coef = max / (norm + 1e-6);
        if coef < 1.0 {
            model.visit(&mut Scale {
                grads,
                factor: coef as f32,
            });
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::{GradientsAccumulator, GradientsParams};
    use burn::tensor::{Device, Tensor};
    use kiln_data::{TokenBatch, TokenizedExample};
    use kiln_models::{CausalLm, FusedStep, LlamaConfig, LlamaForCausalLM};
    use kiln_peft::{LoraConfig, attach_lora};

    use super::backward_in_chunks;
    use crate::loss::{LOSS_CHUNK, LossInput, masked_lm_loss_sum};

    /// Every parameter's gradient, flattened, in visiting order (`None` where it has none).
    fn flat_grads<M: Module>(model: &M, grads: &GradientsParams) -> Vec<Option<Vec<f32>>> {
        struct Flat<'a>(&'a GradientsParams, Vec<Option<Vec<f32>>>);
        impl ModuleVisitor for Flat<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let g = self.0.get::<D>(param.id);
                self.1
                    .push(g.map(|g| g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()));
            }
        }
        let mut v = Flat(grads, Vec::new());
        model.visit(&mut v);
        v.1
    }

    fn check<M: CausalLm + Module>(name: &str, model: &M, input: &LossInput) {
        let denom = 7.0;
        // Reference: one graph over all labelled positions.
        let loss = masked_lm_loss_sum(model, input).div_scalar(denom);
        let want_loss = f64::from(loss.clone().into_scalar::<f32>());
        let want = flat_grads(model, &GradientsParams::from_grads(loss.backward(), model));

        let mut accum = GradientsAccumulator::<M>::new();
        let got_loss = backward_in_chunks(model, input, denom, &mut accum);
        let got = flat_grads(model, &accum.grads());

        assert!(
            (got_loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
            "{name}: loss {got_loss} vs {want_loss}"
        );
        assert_eq!(got.len(), want.len());
        let mut compared = 0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            match (g, w) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
                    let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    assert!(
                        diff <= 1e-4 * scale,
                        "{name}: param {i}: max diff {diff} of {scale}"
                    );
                    compared += 1;
                }
                _ => panic!("{name}: param {i} has a gradient on one side only"),
            }
        }
        assert!(compared > 0, "{name}: no gradient compared");
    }

    /// The fused CPU step against the Burn graph: loss and every LoRA gradient.
    #[test]
    fn fused_step_matches_the_burn_graph() {
        let device = Device::flex().autodiff();
        // Row 0: two packed examples (positions restart, attention blocked between them) then
        // padding; row 1: one example, no padding; row 2: padding only after 5 tokens.
        let t = 37;
        let mut examples = Vec::new();
        for (r, len) in [(0u32, 30usize), (1, 37), (2, 5)] {
            examples.push(TokenizedExample::full(
                &(0..len as u32)
                    .map(|i| (i * 5 + r * 11) % 61 + 1)
                    .collect::<Vec<_>>(),
            ));
        }
        let mut batch = TokenBatch::pad_right(&examples, 0).unwrap();
        assert_eq!(batch.seq_len(), t);
        let mut positions: Vec<Vec<u32>> = (0..3).map(|_| (0..t as u32).collect()).collect();
        let mut segments: Vec<Vec<u32>> = batch
            .attention_mask
            .iter()
            .map(|m| m.iter().map(|&x| u32::from(x)).collect())
            .collect();
        for i in 12..30 {
            positions[0][i] = (i - 12) as u32;
            segments[0][i] = 2;
        }
        batch.labels[0][12] = -100; // the first token of the second example has no label
        batch.position_ids = Some(positions);
        batch.segment_ids = Some(segments);
        let input = LossInput::from_batch(&batch, &device).unwrap();
        let host = super::host_batch(&batch);
        for (heads, kv, targets) in [
            (
                6,
                2,
                vec![
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj",
                ],
            ),
            (4, 4, vec!["q_proj", "v_proj"]),
            (3, 1, vec!["down_proj"]),
        ] {
            let config = LlamaConfig {
                vocab_size: 64,
                hidden_size: 48,
                intermediate_size: 40,
                num_hidden_layers: 2,
                num_attention_heads: heads,
                num_key_value_heads: Some(kv),
                tie_word_embeddings: heads != 4,
                ..Default::default()
            };
            let lora = LoraConfig {
                r: 4,
                lora_alpha: 8.0,
                target_modules: targets.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            let mut model = attach_lora(config.init(9, &device), &lora, 3, &device)
                .unwrap()
                .0;
            // B starts at zero; give it values so every gradient path carries signal.
            model = randomize_lora_b(model, &device);
            let denom = 7.0;
            let loss = masked_lm_loss_sum(&model, &input).div_scalar(denom);
            let want_loss = f64::from(loss.clone().into_scalar::<f32>());
            let want = flat_grads(
                &model,
                &GradientsParams::from_grads(loss.backward(), &model),
            );
            let (got_loss, grads) = model
                .fused_loss_grads(
                    &host,
                    FusedStep {
                        scale: 1.0 / denom,
                        recompute: heads == 4,
                    },
                )
                .expect("the fused step applies to LoRA on the flex device");
            let got = flat_grads(&model, &grads);
            let name = format!("{heads}/{kv} heads, {targets:?}");
            assert!(
                (got_loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
                "{name}: loss {got_loss} vs {want_loss}"
            );
            let mut compared = 0;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                match (g, w) {
                    (None, None) => {}
                    (Some(g), Some(w)) => {
                        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
                        assert!(scale > 0.0, "{name}: param {i}: zero gradient");
                        let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                        assert!(
                            diff <= 1e-4 * scale,
                            "{name}: param {i}: max diff {diff} of {scale}"
                        );
                        compared += 1;
                    }
                    _ => panic!("{name}: param {i} has a gradient on one side only"),
                }
            }
            assert_eq!(compared, 2 * 2 * targets.len(), "{name}");
        }
    }

    fn randomize_lora_b(model: LlamaForCausalLM, device: &Device) -> LlamaForCausalLM {
        struct Fill<'a>(&'a Device, u64);
        impl burn::module::ModuleMapper for Fill<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let dims = param.val().dims();
                if D != 2 || !param.val().is_require_grad() {
                    return param;
                }
                self.1 += 1;
                let n: usize = dims.iter().product();
                let mut rng = kiln_nn::init::HostRng::new(self.1);
                let values = rng.uniform(n, -0.3, 0.3);
                let (id, _, _) = param.consume();
                Param::initialized(
                    id,
                    Tensor::<D>::from_data(burn::tensor::TensorData::new(values, dims), self.0)
                        .require_grad(),
                )
            }
        }
        model.map(&mut Fill(device, 0))
    }

    #[test]
    fn chunked_loss_backward_matches_one_graph() {
        let device = Device::flex().autodiff();
        // 3 rows x 200 tokens: 597 labelled positions, three chunks (the last partial).
        let examples: Vec<TokenizedExample> = (0..3u32)
            .map(|r| {
                TokenizedExample::full(
                    &(0..200)
                        .map(|i| (i * 7 + r * 3) % 61 + 1)
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let input =
            LossInput::from_batch(&TokenBatch::pad_right(&examples, 0).unwrap(), &device).unwrap();
        assert!(input.num_targets > 2 * LOSS_CHUNK);
        let config = |tie| LlamaConfig {
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            tie_word_embeddings: tie,
            ..Default::default()
        };
        // Full fine-tuning with a tied head: the embedding's gradient comes from both the chunks
        // (as the head) and the body (as the lookup).
        let full: LlamaForCausalLM = config(true).init(5, &device);
        check("full, tied head", &full, &input);
        // LoRA with the head frozen, and LoRA on the head itself.
        for targets in [
            vec!["q_proj", "v_proj"],
            vec!["q_proj", "down_proj", "lm_head"],
        ] {
            let lora = LoraConfig {
                r: 4,
                lora_alpha: 8.0,
                target_modules: targets.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            let model = attach_lora(config(false).init(9, &device), &lora, 3, &device)
                .unwrap()
                .0;
            check(&format!("lora {targets:?}"), &model, &input);
        }
    }
}
