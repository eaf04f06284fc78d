use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use kiln_data::{TokenBatch, TokenizedExample, length_grouped_batches, pack, packed_token_batch};

use crate::{Result, TrainError};

/// The order in which a run visits its training examples.
///
/// Every epoch is a permutation drawn from `(seed, epoch)` alone, and an optimizer step is a
/// fixed run of consecutive micro-batches of that epoch. So the data position of a run is a
/// function of its step count: resuming at step `s` needs nothing but `s`.
///
/// With `lengths`, an epoch's micro-batches group examples of similar length
/// ([`kiln_data::length_grouped_batches`] seeded from `(seed, epoch)`, or from `(seed, 0)` in
/// every epoch without `shuffle`); the number of micro-batches per epoch is the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOrder {
    /// Training examples.
    pub num_examples: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum_steps: usize,
    /// Shuffle each epoch (otherwise the file order).
    pub shuffle: bool,
    /// Seed of the permutations.
    pub seed: u64,
    /// Token count of every example, to group examples of similar length into micro-batches;
    /// `None` cuts the epoch's permutation into consecutive micro-batches.
    pub lengths: Option<Arc<[usize]>>,
}

impl DataOrder {
    /// Micro-batches per epoch (the last one may be short).
    pub fn batches_per_epoch(&self) -> usize {
        self.num_examples.div_ceil(self.batch_size.max(1))
    }

    /// Optimizer steps per epoch (the last one may accumulate fewer micro-batches).
    pub fn steps_per_epoch(&self) -> usize {
        self.batches_per_epoch()
            .div_ceil(self.grad_accum_steps.max(1))
    }

    /// The permutation of example indices for `epoch`.
    pub fn epoch_permutation(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.num_examples).collect();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, epoch as u64));
            order.shuffle(&mut rng);
        }
        order
    }

    /// The epoch of optimizer step `step` (0-based).
    pub fn epoch_of(&self, step: usize) -> usize {
        step / self.steps_per_epoch().max(1)
    }

    /// The micro-batches (example indices) of `epoch`, in order.
    pub fn epoch_batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let bs = self.batch_size.max(1);
        match &self.lengths {
            Some(lengths) => {
                let stream = if self.shuffle { epoch as u64 } else { 0 };
                length_grouped_batches(&lengths[..self.num_examples], bs, mix(self.seed, stream))
                    .expect("the batch size is positive")
            }
            None => self
                .epoch_permutation(epoch)
                .chunks(bs)
                .map(<[usize]>::to_vec)
                .collect(),
        }
    }

    /// The epoch of optimizer step `step` (0-based) and the example indices of each of its
    /// micro-batches.
    pub fn step_batches(&self, step: usize) -> (usize, Vec<Vec<usize>>) {
        let epoch = self.epoch_of(step);
        let in_epoch = step % self.steps_per_epoch().max(1);
        let batches = self.epoch_batches(epoch);
        let accum = self.grad_accum_steps.max(1);
        let first = (in_epoch * accum).min(batches.len());
        let last = (first + accum).min(batches.len());
        (epoch, batches[first..last].to_vec())
    }
}

/// How a micro-batch's examples are laid out in rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowLayout {
    /// One example per row, right-padded to the longest ([`TokenBatch::pad_right`]).
    Padded,
    /// Examples packed into rows ([`kiln_data::pack`]): positions restart at 0 for every
    /// example and `segment_ids` keep attention within it. `row_len` is the row's token budget;
    /// `None` puts the whole micro-batch in one row when it holds at most
    /// [`PACKED_ROW_TOKENS`] tokens, and otherwise fills rows of that many tokens (or of the
    /// longest example, when longer).
    Packed {
        /// Tokens per row; `None`: see above.
        row_len: Option<usize>,
    },
}

/// The default token budget of a packed row: one row holds a whole micro-batch of up to this
/// many tokens, with no padding. The fused CPU attention skips the blocks between examples, so
/// a long row costs no more attention there than the examples apart; the Burn graph computes the
/// whole `[row, row]` score matrix, which this bound keeps small.
pub const PACKED_ROW_TOKENS: usize = 2048;

impl RowLayout {
    /// The rows of `examples` as a host batch.
    ///
    /// Packed rows carry the same labelled tokens as the padded batch, and with the
    /// block-diagonal attention of `segment_ids` a causal LM gives every token the logits it has
    /// in the padded batch, so the summed loss is the same up to float rounding.
    ///
    /// # Errors
    /// An example whose labels do not match its tokens; with a fixed `row_len`, an example
    /// longer than it.
    pub fn batch(&self, examples: &[TokenizedExample], pad_id: u32) -> Result<TokenBatch> {
        match *self {
            Self::Padded => Ok(TokenBatch::pad_right(examples, pad_id)?),
            Self::Packed { row_len } => {
                let longest = examples.iter().map(TokenizedExample::len).max();
                let total: usize = examples.iter().map(TokenizedExample::len).sum();
                let row_len = match (row_len, longest) {
                    (Some(n), _) => n,
                    (None, Some(n)) if n > 0 => n.max(total.min(PACKED_ROW_TOKENS)),
                    // Nothing to pack: the batch has no row.
                    _ => return Ok(packed_token_batch(&[])),
                };
                Ok(packed_token_batch(&pack(examples, row_len, pad_id)?))
            }
        }
    }

    /// Checks a fixed row length against every example; `field` names the setting.
    pub(crate) fn check(&self, examples: &[TokenizedExample], field: &str) -> Result<()> {
        if let Self::Packed { row_len: Some(n) } = *self {
            if n == 0 {
                return Err(TrainError::InvalidConfig {
                    field: field.into(),
                    reason: "must be at least 1".into(),
                });
            }
            if let Some((i, e)) = examples.iter().enumerate().find(|(_, e)| e.len() > n) {
                return Err(TrainError::InvalidConfig {
                    field: field.into(),
                    reason: format!(
                        "example {i} has {} tokens, more than the packed row length {n}",
                        e.len()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// SplitMix64 of `seed` and `stream`: decorrelated seeds for per-epoch and per-step generators.
pub(crate) fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_once_per_epoch_and_reproducible() {
        let order = DataOrder {
            num_examples: 10,
            batch_size: 3,
            grad_accum_steps: 2,
            shuffle: true,
            seed: 4,
            lengths: None,
        };
        assert_eq!(order.batches_per_epoch(), 4);
        assert_eq!(order.steps_per_epoch(), 2);
        let mut seen: Vec<usize> = (0..2)
            .flat_map(|s| order.step_batches(s).1.into_iter().flatten())
            .collect();
        let (_, second) = order.step_batches(1);
        assert_eq!(second.len(), 2);
        assert_eq!(second[1].len(), 1, "last micro-batch holds the remainder");
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(order.step_batches(2).0, 1);
        assert_ne!(order.epoch_permutation(0), order.epoch_permutation(1));
        assert_eq!(order.step_batches(3), order.step_batches(3));
        let plain = DataOrder {
            shuffle: false,
            ..order.clone()
        };
        assert_eq!(plain.step_batches(0).1, vec![vec![0, 1, 2], vec![3, 4, 5]]);
    }

    #[test]
    fn grouped_epochs_cover_everything_with_the_same_step_count() {
        let lengths: Vec<usize> = (0..23).map(|i| 1 + (i * 7) % 11).collect();
        let order = DataOrder {
            num_examples: 23,
            batch_size: 4,
            grad_accum_steps: 2,
            shuffle: true,
            seed: 1,
            lengths: Some(lengths.clone().into()),
        };
        assert_eq!(order.steps_per_epoch(), 3);
        for epoch in 0..2 {
            let steps: Vec<Vec<Vec<usize>>> = (0..3)
                .map(|s| order.step_batches(epoch * 3 + s).1)
                .collect();
            assert_eq!(steps.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
            let mut seen: Vec<usize> = steps.iter().flatten().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..23).collect::<Vec<_>>());
            // Every full micro-batch spans a short range of lengths.
            for b in steps.iter().flatten().filter(|b| b.len() == 4) {
                let (lo, hi) = (
                    b.iter().map(|&i| lengths[i]).min().unwrap(),
                    b.iter().map(|&i| lengths[i]).max().unwrap(),
                );
                assert!(hi - lo <= 2, "{b:?}");
            }
        }
        assert_ne!(order.epoch_batches(0), order.epoch_batches(1));
        assert_eq!(order.epoch_batches(1), order.clone().epoch_batches(1));
        let fixed = DataOrder {
            shuffle: false,
            ..order
        };
        assert_eq!(fixed.epoch_batches(0), fixed.epoch_batches(1));
    }

    #[test]
    fn packed_rows_restart_positions_and_keep_labels() {
        let examples = [
            TokenizedExample::prompt_completion(&[1, 2], &[3, 4]),
            TokenizedExample::full(&[5, 6]),
            TokenizedExample::prompt_completion(&[7], &[8]),
        ];
        let padded = RowLayout::Padded.batch(&examples, 0).unwrap();
        assert_eq!((padded.batch_size(), padded.seq_len()), (3, 4));
        let packed = RowLayout::Packed { row_len: None }
            .batch(&examples, 0)
            .unwrap();
        // One row of the whole micro-batch (8 tokens), no padding.
        assert_eq!(packed.input_ids, [[1, 2, 3, 4, 5, 6, 7, 8]]);
        assert_eq!(packed.labels, [[-100, -100, 3, 4, -100, 6, -100, 8]]);
        assert_eq!(
            packed.position_ids.as_ref().unwrap(),
            &[[0, 1, 2, 3, 0, 1, 0, 1]]
        );
        assert_eq!(
            packed.segment_ids.as_ref().unwrap(),
            &[[1, 1, 1, 1, 2, 2, 3, 3]]
        );
        assert_eq!(packed.attention_mask, [[1, 1, 1, 1, 1, 1, 1, 1]]);
        // A fixed budget of the longest example: [1 2 3 4] and [5 6 7 8].
        let rows = RowLayout::Packed { row_len: Some(4) }
            .batch(&examples, 0)
            .unwrap();
        assert_eq!(rows.input_ids, [[1, 2, 3, 4], [5, 6, 7, 8]]);
        assert_eq!(
            rows.segment_ids.as_ref().unwrap(),
            &[[1, 1, 1, 1], [1, 1, 2, 2]]
        );
        assert_eq!(packed.num_loss_tokens(), padded.num_loss_tokens());

        let wide = RowLayout::Packed { row_len: Some(10) }
            .batch(&examples, 0)
            .unwrap();
        assert_eq!(wide.input_ids, [[1, 2, 3, 4, 5, 6, 7, 8, 0, 0]]);
        assert_eq!(wide.segment_ids.unwrap(), [[1, 1, 1, 1, 2, 2, 3, 3, 0, 0]]);
        assert_eq!(
            wide.labels,
            [[-100, -100, 3, 4, -100, 6, -100, 8, -100, -100]]
        );

        let narrow = RowLayout::Packed { row_len: Some(3) };
        let err = narrow.check(&examples, "packing_row_len").unwrap_err();
        assert!(err.to_string().contains("example 0 has 4 tokens"), "{err}");
        assert!(narrow.batch(&examples, 0).is_err());
        let empty = RowLayout::Packed { row_len: None }.batch(&[], 0).unwrap();
        assert_eq!(empty.batch_size(), 0);
    }
}
