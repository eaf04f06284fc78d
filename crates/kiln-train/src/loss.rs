use std::ops::Range;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use kiln_data::TokenBatch;
use kiln_models::{CausalLm, HostBatch, LmInput};

use crate::{Result, TrainError};

/// A batch on a device, with the flat indices of the positions whose next token is labelled.
#[derive(Debug, Clone)]
pub struct LossInput {
    /// Model inputs.
    pub input: LmInput,
    /// Flat indices `b·seq + t` of positions `t` whose next token `t+1` carries a label, `[n]`.
    pub positions: Tensor<1, Int>,
    /// The label (next token id) for each of those positions, `[n]`.
    pub targets: Tensor<1, Int>,
    /// `n`: how many tokens carry loss.
    pub num_targets: usize,
}

impl LossInput {
    /// Uploads a host batch. Labels follow the Hugging Face convention: aligned with
    /// `input_ids`, `-100` where no loss is taken, shifted by one inside the loss.
    ///
    /// # Errors
    /// [`TrainError::NoLabels`] when no position carries a label.
    pub fn from_batch(batch: &TokenBatch, device: &Device) -> Result<Self> {
        // The host form holds each position's next-token label (negative: none).
        let host = host_batch(batch);
        let (positions, targets): (Vec<i64>, Vec<i64>) = host
            .targets
            .iter()
            .enumerate()
            .filter(|(_, label)| **label >= 0)
            .map(|(i, &label)| (i as i64, label))
            .unzip();
        if positions.is_empty() {
            return Err(TrainError::NoLabels);
        }
        let n = positions.len();
        Ok(Self {
            input: lm_input(batch, device),
            positions: Tensor::from_data(TensorData::new(positions, [n]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
            num_targets: n,
        })
    }
}

/// The model inputs of a host batch: ids, padding mask, and the packed rows' segments and
/// positions when it has them.
pub(crate) fn lm_input(batch: &TokenBatch, device: &Device) -> LmInput {
    let (b, t) = (batch.batch_size(), batch.seq_len());
    let upload = |rows: Vec<i64>| Tensor::from_data(TensorData::new(rows, [b, t]), device);
    let ids = batch.input_ids.iter().flatten().map(|&x| i64::from(x));
    let mask = batch.attention_mask.iter().flatten().map(|&x| i64::from(x));
    let mut input = LmInput::new(upload(ids.collect())).with_attention_mask(upload(mask.collect()));
    if let Some(seg) = &batch.segment_ids {
        input = input.with_segment_ids(upload(
            seg.iter().flatten().map(|&x| i64::from(x)).collect(),
        ));
    }
    if let Some(pos) = &batch.position_ids {
        input = input.with_position_ids(upload(
            pos.iter().flatten().map(|&x| i64::from(x)).collect(),
        ));
    }
    input
}

/// The host form of a batch for a model's fused training step
/// ([`CausalLm::fused_loss_grads`]): positions from `position_ids` or counted over the real
/// tokens (as [`LmInput`] does), one attention segment per example (padding in
/// [`HostBatch::PAD_SEGMENT`]), and each position's next-token label.
pub fn host_batch(batch: &TokenBatch) -> HostBatch {
    let (b, t) = (batch.batch_size(), batch.seq_len());
    let mut host = HostBatch {
        batch: b,
        seq: t,
        input_ids: Vec::with_capacity(b * t),
        positions: Vec::with_capacity(b * t),
        segments: Vec::with_capacity(b * t),
        targets: vec![-1; b * t],
    };
    for row in 0..b {
        host.input_ids.extend(&batch.input_ids[row]);
        let mask = &batch.attention_mask[row];
        match &batch.position_ids {
            Some(p) => host.positions.extend(&p[row]),
            None => {
                let mut seen = 0u32;
                for &m in mask {
                    seen += u32::from(m != 0);
                    host.positions.push(seen.saturating_sub(1));
                }
            }
        }
        for (i, &m) in mask.iter().enumerate() {
            host.segments.push(match (&batch.segment_ids, m) {
                (_, 0) => HostBatch::PAD_SEGMENT,
                (Some(s), _) => s[row][i],
                (None, _) => 0,
            });
        }
        for (i, &label) in batch.labels[row].iter().enumerate().skip(1) {
            if label >= 0 {
                host.targets[row * t + i - 1] = label;
            }
        }
    }
    host
}

/// Mean next-token cross-entropy over the labelled positions, as a `[1]` tensor.
///
/// Hidden states are gathered at the labelled positions before the output projection, so the
/// `[n, vocab]` logits exist only for tokens that carry loss.
pub fn masked_lm_loss<M: CausalLm>(model: &M, batch: &LossInput) -> Tensor<1> {
    masked_lm_loss_sum(model, batch).div_scalar(batch.num_targets as f32)
}

/// Labelled positions per slice of the `[n, vocab]` logits that the loss functions hold at once.
///
/// A 256 x 49,152 f32 slice is 48 MiB; a batch of 4 x 256 tokens would otherwise hold four times
/// that in every intermediate of the softmax and of its backward pass.
pub const LOSS_CHUNK: usize = 256;

/// Summed next-token cross-entropy over the labelled positions, as a `[1]` tensor.
///
/// Gradient accumulation and evaluation divide sums by the token count of the whole optimizer
/// step (or validation set), so every labelled token weighs the same however the tokens are
/// split into batches. The vocabulary projection and the softmax run over [`LOSS_CHUNK`]
/// positions at a time; without autodiff only one slice of logits exists at a time.
pub fn masked_lm_loss_sum<M: CausalLm>(model: &M, batch: &LossInput) -> Tensor<1> {
    let picked = labelled_hidden(model, batch); // [n, d]
    loss_slices(batch.num_targets)
        .map(|rows| slice_nll(model, picked.clone().slice(rows.clone()), batch, rows))
        .reduce(|a, b| a + b)
        .expect("a LossInput has at least one labelled position")
}

/// The final hidden states at the labelled positions, `[n, d]`.
pub(crate) fn labelled_hidden<M: CausalLm>(model: &M, batch: &LossInput) -> Tensor<2> {
    let hidden = model.forward_hidden(&batch.input);
    let [b, t, d] = hidden.dims();
    hidden
        .reshape([b * t, d])
        .select(0, batch.positions.clone()) // [n, d]
}

/// The log-probability of each labelled token (`[n]`, tracked when `model` is) from the hidden
/// states it is predicted from (`picked`, `[n, d]`, from [`labelled_hidden`]), logits divided by
/// `temperature`, the vocabulary projected [`LOSS_CHUNK`] rows at a time.
pub(crate) fn labelled_logps<M: CausalLm>(
    model: &M,
    picked: Tensor<2>,
    batch: &LossInput,
    temperature: f32,
) -> Tensor<1> {
    let per_token: Vec<Tensor<1>> = loss_slices(batch.num_targets)
        .map(|range| {
            let c = range.len();
            let targets = batch.targets.clone().slice(range.clone()).reshape([c, 1]);
            let mut logits = model.logits(picked.clone().slice(range)); // [c, vocab]
            if temperature != 1.0 {
                logits = logits.div_scalar(temperature);
            }
            log_softmax(logits, 1).gather(1, targets).reshape([c])
        })
        .collect();
    Tensor::cat(per_token, 0)
}

/// The ranges of labelled rows, [`LOSS_CHUNK`] at a time, that cover `n` rows.
pub(crate) fn loss_slices(n: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n)
        .step_by(LOSS_CHUNK)
        .map(move |start| start..(start + LOSS_CHUNK).min(n))
}

/// Summed cross-entropy of the labelled rows `rows` of `batch`, given their hidden states
/// `hidden` (`[rows.len(), d]`), as a `[1]` tensor.
pub(crate) fn slice_nll<M: CausalLm>(
    model: &M,
    hidden: Tensor<2>,
    batch: &LossInput,
    rows: Range<usize>,
) -> Tensor<1> {
    let c = rows.len();
    let targets = batch.targets.clone().slice(rows).reshape([c, 1]);
    let logp = log_softmax(model.logits(hidden), 1); // [c, vocab]
    logp.gather(1, targets).neg().sum() // [1]
}
