//! A reward model: a decoder with a scalar head, as transformers'
//! `LlamaForSequenceClassification` with `num_labels = 1` (TRL's reward models).
//!
//! The sequence's reward is the head applied to the final hidden state of its last token that is
//! not padding. Like transformers, that token is the last one whose id differs from the pad id
//! when a pad id is given (so a sequence ending in tokens equal to the pad id is read before
//! them), else the last real token of the attention mask.
//!
//! The head `score` holds `[hidden, 1]` (`x·W`); a Hugging Face checkpoint or PEFT adapter stores
//! it as `score.weight`, `[1, hidden]`.

use burn::module::{Module, ModuleDisplay, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::causal_lm::{CausalLm, LmInput};
use kiln_nn::init::{HostRng, normal_param};

/// A decoder (any [`CausalLm`], adapters attached or not) and a bias-free scalar head.
///
/// # Shapes
/// - `score`: `[hidden, 1]`
#[derive(Module, Debug)]
pub struct RewardModel<M: Module> {
    /// The decoder whose final hidden states are scored.
    pub model: M,
    /// The reward head (`score.weight` transposed).
    pub score: Param<Tensor<2>>,
}

impl<M: CausalLm + Module + ModuleDisplay> RewardModel<M> {
    /// Wraps `model` with a new head drawn from `N(0, std²)` (transformers draws it with the
    /// config's `initializer_range`, 0.02 for most checkpoints).
    pub fn new(model: M, std: f32, seed: u64) -> Self {
        let device = model.device();
        let hidden = model.hidden_size();
        let score = normal_param(&mut HostRng::new(seed), [hidden, 1], std, &device);
        Self { model, score }
    }

    /// Wraps `model` with the given head, `weight` in the checkpoint layout `[1, hidden]`.
    ///
    /// # Panics
    /// When `weight` does not hold `hidden` values.
    pub fn with_head(model: M, weight: Vec<f32>) -> Self {
        let hidden = model.hidden_size();
        assert_eq!(
            weight.len(),
            hidden,
            "score.weight holds [1, hidden] values"
        );
        let score = Param::from_data(TensorData::new(weight, [hidden, 1]), &model.device());
        Self { model, score }
    }

    /// The head in the checkpoint layout (`score.weight`, `[1, hidden]`), row-major.
    pub fn head(&self) -> Vec<f32> {
        self.score
            .val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 head")
    }

    /// The reward of each row: the head on the final hidden state at `pool[row]`.
    ///
    /// # Shapes
    /// - `input.input_ids`: `[batch, seq]`
    /// - `pool`: `batch` positions below `seq`
    /// - returns `[batch]`
    pub fn rewards(&self, input: &LmInput, pool: &[usize]) -> Tensor<1> {
        let h = self.model.forward_hidden(input); // [b, t, d]
        let [b, t, d] = h.dims();
        assert_eq!(pool.len(), b, "one pooled position per row");
        let idx: Vec<i64> = pool
            .iter()
            .enumerate()
            .map(|(row, &p)| {
                assert!(p < t, "pooled position {p} is past the row's {t} tokens");
                (row * t + p) as i64
            })
            .collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [b]), &h.device());
        h.reshape([b * t, d])
            .select(0, idx) // [b, d]
            .matmul(self.score.val()) // [b, 1]
            .reshape([b])
    }

    /// The rewards of token sequences, without gradients, `batch_size` sequences at a time
    /// (right-padded with `pad_id`, read as [`pool_positions`] does).
    pub fn score(&self, sequences: &[Vec<u32>], pad_id: u32, batch_size: usize) -> Vec<f32> {
        let model = self.valid();
        let device = model.model.device();
        let mut out = Vec::with_capacity(sequences.len());
        for chunk in sequences.chunks(batch_size.max(1)) {
            let (b, len) = (
                chunk.len(),
                chunk.iter().map(Vec::len).max().unwrap_or(0).max(1),
            );
            let rows: Vec<Vec<u32>> = chunk
                .iter()
                .map(|s| {
                    s.iter()
                        .copied()
                        .chain(std::iter::repeat(pad_id))
                        .take(len)
                        .collect()
                })
                .collect();
            let masks: Vec<Vec<u8>> = chunk
                .iter()
                .map(|s| (0..len).map(|i| u8::from(i < s.len())).collect())
                .collect();
            let pool = pool_positions(&rows, &masks, Some(pad_id));
            let flat = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [b, len]), &device);
            let ids = rows.iter().flatten().map(|&x| i64::from(x)).collect();
            let mask = masks.iter().flatten().map(|&x| i64::from(x)).collect();
            let input = LmInput::new(flat(ids)).with_attention_mask(flat(mask));
            let r = model.rewards(&input, &pool);
            out.extend(
                r.into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .expect("f32"),
            );
        }
        out
    }
}

/// The position each row's reward is read at: the last real token (attention mask 1) whose id
/// is not `pad_id` (transformers' rule when the model has a pad token), or the last real token
/// when `pad_id` is `None`; 0 for a row with no such token.
pub fn pool_positions(input_ids: &[Vec<u32>], mask: &[Vec<u8>], pad_id: Option<u32>) -> Vec<usize> {
    input_ids
        .iter()
        .zip(mask)
        .map(|(ids, m)| {
            ids.iter()
                .zip(m)
                .enumerate()
                .rev()
                .find(|(_, (id, m))| **m != 0 && pad_id.is_none_or(|p| **id != p))
                .map_or(0, |(i, _)| i)
        })
        .collect()
}

impl<M: CausalLm + Module + ModuleDisplay> CausalLm for RewardModel<M> {
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn hidden_size(&self) -> usize {
        self.model.hidden_size()
    }

    fn device(&self) -> Device {
        self.model.device()
    }

    fn forward_hidden(&self, input: &LmInput) -> Tensor<3> {
        self.model.forward_hidden(input)
    }

    fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        self.model.logits(hidden)
    }

    fn max_positions(&self) -> Option<usize> {
        self.model.max_positions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_at_the_last_token_that_is_not_padding() {
        let ids = vec![vec![5, 6, 7, 0], vec![5, 0, 0, 0], vec![2, 2, 2, 2]];
        let mask = vec![vec![1, 1, 1, 0], vec![1, 0, 0, 0], vec![1, 1, 1, 1]];
        assert_eq!(pool_positions(&ids, &mask, Some(0)), vec![2, 0, 3]);
        // Tokens equal to the pad id are skipped, as transformers does.
        assert_eq!(pool_positions(&ids, &mask, Some(2)), vec![2, 0, 0]);
        assert_eq!(pool_positions(&ids, &mask, None), vec![2, 0, 3]);
        let ids = vec![vec![5, 6, 2, 2]];
        assert_eq!(pool_positions(&ids, &[vec![1, 1, 1, 0]], Some(2)), vec![1]);
    }
}
