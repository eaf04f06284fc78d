use burn::module::Module;
use serde::{Deserialize, Serialize};

use kiln_data::TokenizedExample;
use kiln_models::CausalLm;

use crate::data::RowLayout;
use crate::loss::{LossInput, masked_lm_loss_sum};
use crate::{Result, TrainError};

/// Token-weighted validation loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean next-token cross-entropy over every labelled token.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Labelled tokens.
    pub tokens: usize,
}

/// Evaluates the masked LM loss of `model` over `examples` in batches of `batch_size`.
///
/// The model is switched to validation mode (`Module::valid`: no autodiff graph, dropout off),
/// so nothing is kept alive between batches. The loss is the sum over all labelled tokens divided
/// by their count (not a mean of batch means).
///
/// # Errors
/// No labelled token at all, a bad batch, or a non-finite loss.
pub fn evaluate<M>(
    model: &M,
    examples: &[TokenizedExample],
    batch_size: usize,
    pad_id: u32,
) -> Result<EvalResult>
where
    M: CausalLm + Module,
{
    evaluate_rows(model, examples, batch_size, pad_id, RowLayout::Padded)
}

/// Fails when an example is longer than the model's learned positions
/// ([`CausalLm::max_positions`]), naming it; `set` says which examples these are.
pub(crate) fn check_positions<M: CausalLm>(
    model: &M,
    examples: &[TokenizedExample],
    set: &str,
) -> Result<()> {
    check_lengths(model, examples.iter().map(TokenizedExample::len), set)
}

/// [`check_positions`] over sequence lengths (a preference pair's is its longer side).
pub(crate) fn check_lengths<M: CausalLm>(
    model: &M,
    lengths: impl Iterator<Item = usize>,
    set: &str,
) -> Result<()> {
    let Some(positions) = model.max_positions() else {
        return Ok(());
    };
    for (index, tokens) in lengths.enumerate() {
        if tokens > positions {
            return Err(TrainError::TooLong {
                set: set.into(),
                index,
                tokens,
                positions,
            });
        }
    }
    Ok(())
}

/// [`evaluate`] with the batches' examples laid out by `rows` (packed rows give the same loss).
///
/// # Errors
/// As [`evaluate`]; with a fixed packed row length, an example longer than it.
pub fn evaluate_rows<M>(
    model: &M,
    examples: &[TokenizedExample],
    batch_size: usize,
    pad_id: u32,
    rows: RowLayout,
) -> Result<EvalResult>
where
    M: CausalLm + Module,
{
    if batch_size == 0 {
        return Err(TrainError::InvalidConfig {
            field: "eval_batch_size".into(),
            reason: "must be at least 1".into(),
        });
    }
    check_positions(model, examples, "evaluation")?;
    let model = model.valid();
    let device = model.device();
    let mut sum = 0.0f64;
    let mut tokens = 0usize;
    for chunk in examples.chunks(batch_size) {
        let batch = rows.batch(chunk, pad_id)?;
        let input = match LossInput::from_batch(&batch, &device) {
            Ok(input) => input,
            Err(TrainError::NoLabels) => continue,
            Err(e) => return Err(e),
        };
        let value = masked_lm_loss_sum(&model, &input).into_scalar::<f32>();
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss { step: 0, value });
        }
        sum += f64::from(value);
        tokens += input.num_targets;
    }
    if tokens == 0 {
        return Err(TrainError::NoLabels);
    }
    let loss = sum / tokens as f64;
    Ok(EvalResult {
        loss,
        perplexity: loss.exp(),
        tokens,
    })
}
