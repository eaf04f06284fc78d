use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{DataError, Result};

pub use kiln_metrics::IGNORE_INDEX;

/// One tokenized training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Labels aligned with `input_ids`; [`IGNORE_INDEX`] where no loss is taken.
    pub labels: Vec<i64>,
}

impl TokenizedExample {
    /// A completion-only example: the prompt tokens are masked, the completion tokens carry loss.
    pub fn prompt_completion(prompt: &[u32], completion: &[u32]) -> Self {
        let mut input_ids = prompt.to_vec();
        input_ids.extend_from_slice(completion);
        let mut labels = vec![IGNORE_INDEX; prompt.len()];
        labels.extend(completion.iter().map(|&t| i64::from(t)));
        Self { input_ids, labels }
    }

    /// A full-sequence example: every token carries loss (continued pre-training).
    pub fn full(tokens: &[u32]) -> Self {
        Self {
            input_ids: tokens.to_vec(),
            labels: tokens.iter().map(|&t| i64::from(t)).collect(),
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Tokens whose label is not [`IGNORE_INDEX`].
    pub fn num_labeled(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }

    /// Applies a length limit with a policy. `path` and `line` name the record in the error.
    ///
    /// Returns `None` when the policy is [`Truncation::Skip`] and the example is too long.
    ///
    /// # Errors
    /// [`DataError::TooLong`] with [`Truncation::Error`] when the example has more than `max_len`
    /// tokens; [`DataError::Config`] for `max_len == 0`.
    pub fn limit(
        mut self,
        max_len: usize,
        policy: Truncation,
        path: &Path,
        line: usize,
    ) -> Result<Option<Self>> {
        if max_len == 0 {
            return Err(DataError::Config("the token limit must be positive".into()));
        }
        let len = self.len();
        if len <= max_len {
            return Ok(Some(self));
        }
        match policy {
            Truncation::Error => Err(DataError::TooLong {
                path: path.to_path_buf(),
                line,
                len,
                max: max_len,
            }),
            Truncation::Skip => Ok(None),
            Truncation::Right => {
                self.input_ids.truncate(max_len);
                self.labels.truncate(max_len);
                Ok(Some(self))
            }
            Truncation::Left => {
                self.input_ids.drain(..len - max_len);
                self.labels.drain(..len - max_len);
                Ok(Some(self))
            }
        }
    }
}

/// What to do with an example longer than the token limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Fail with [`DataError::TooLong`] naming the record.
    #[default]
    Error,
    /// Drop the example (counted in the cleaning report).
    Skip,
    /// Keep the first tokens (drops the end, e.g. EOS).
    Right,
    /// Keep the last tokens (drops the start of the prompt, keeps the completion).
    Left,
}

/// Batches of example indices in which lengths are similar, so dynamic padding wastes little.
///
/// The indices are shuffled with `seed`, cut into windows of `batch_size * 50`, each window is
/// sorted by length (longest first) and cut into batches, and the batch order is shuffled
/// again. Every index appears in exactly one batch; only the last batch may be smaller.
///
/// # Errors
/// [`DataError::Config`] for `batch_size == 0`.
pub fn length_grouped_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    if batch_size == 0 {
        return Err(DataError::Config("the batch size must be positive".into()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in order.chunks_mut(batch_size.saturating_mul(50)) {
        window.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    // Keep a short final batch last; shuffle the full ones.
    let short = batches
        .last()
        .is_some_and(|b| b.len() < batch_size)
        .then(|| batches.pop())
        .flatten();
    batches.shuffle(&mut rng);
    batches.extend(short);
    Ok(batches)
}

/// A padded batch on the host, `[batch, seq]` row-major rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids (padded with the pad id).
    pub input_ids: Vec<Vec<u32>>,
    /// Labels ([`IGNORE_INDEX`] on padding and masked tokens).
    pub labels: Vec<Vec<i64>>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u8>>,
    /// Explicit positions (packed rows); `None` derives them from the mask.
    pub position_ids: Option<Vec<Vec<u32>>>,
    /// Packed rows: 1-based example number per token (0 on padding); a token attends only to
    /// earlier tokens of its own example. `None`: one sequence per row.
    pub segment_ids: Option<Vec<Vec<u32>>>,
}

impl TokenBatch {
    /// Right-pads examples to the longest one (dynamic padding).
    ///
    /// # Errors
    /// An example whose labels do not match its tokens in length.
    pub fn pad_right(examples: &[TokenizedExample], pad_id: u32) -> Result<Self> {
        let len = examples
            .iter()
            .map(|e| e.input_ids.len())
            .max()
            .unwrap_or(0);
        let mut batch = Self {
            input_ids: Vec::with_capacity(examples.len()),
            labels: Vec::with_capacity(examples.len()),
            attention_mask: Vec::with_capacity(examples.len()),
            position_ids: None,
            segment_ids: None,
        };
        for (index, e) in examples.iter().enumerate() {
            check_labels(index, e)?;
            let pad = len - e.input_ids.len();
            let mut ids = e.input_ids.clone();
            ids.resize(len, pad_id);
            let mut labels = e.labels.clone();
            labels.resize(len, IGNORE_INDEX);
            let mut mask = vec![1u8; e.input_ids.len()];
            mask.resize(e.input_ids.len() + pad, 0);
            batch.input_ids.push(ids);
            batch.labels.push(labels);
            batch.attention_mask.push(mask);
        }
        Ok(batch)
    }

    /// Rows in the batch.
    pub fn batch_size(&self) -> usize {
        self.input_ids.len()
    }

    /// Columns in the batch.
    pub fn seq_len(&self) -> usize {
        self.input_ids.first().map_or(0, Vec::len)
    }

    /// Tokens whose next token carries a label (what the loss averages over).
    pub fn num_loss_tokens(&self) -> usize {
        self.labels
            .iter()
            .map(|row| row.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count())
            .sum()
    }
}

/// [`DataError::LabelLength`] unless example `index` has one label per token.
pub(crate) fn check_labels(index: usize, e: &TokenizedExample) -> Result<()> {
    if e.labels.len() == e.input_ids.len() {
        Ok(())
    } else {
        Err(DataError::LabelLength {
            index,
            got: e.input_ids.len(),
            labels: e.labels.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_are_masked_and_padding_is_ignored() {
        let a = TokenizedExample::prompt_completion(&[5, 6], &[7, 8]);
        assert_eq!(a.labels, vec![-100, -100, 7, 8]);
        let b = TokenizedExample::full(&[1, 2]);
        let batch = TokenBatch::pad_right(&[a, b], 0).unwrap();
        assert_eq!(batch.input_ids[1], vec![1, 2, 0, 0]);
        assert_eq!(batch.labels[1], vec![1, 2, -100, -100]);
        assert_eq!(batch.attention_mask[1], vec![1, 1, 0, 0]);
        assert_eq!(batch.num_loss_tokens(), 3);
    }

    #[test]
    fn truncation_policies() {
        let ex = TokenizedExample::prompt_completion(&[1, 2, 3], &[4, 5]);
        let p = Path::new("d.jsonl");
        let right = ex
            .clone()
            .limit(3, Truncation::Right, p, 9)
            .unwrap()
            .unwrap();
        assert_eq!(right.input_ids, [1, 2, 3]);
        assert_eq!(right.num_labeled(), 0);
        let left = ex
            .clone()
            .limit(3, Truncation::Left, p, 9)
            .unwrap()
            .unwrap();
        assert_eq!(left.input_ids, [3, 4, 5]);
        assert_eq!(left.labels, [IGNORE_INDEX, 4, 5]);
        assert_eq!(ex.clone().limit(3, Truncation::Skip, p, 9).unwrap(), None);
        let err = ex
            .clone()
            .limit(3, Truncation::Error, p, 9)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("d.jsonl:9: example has 5 tokens"), "{err}");
        assert_eq!(
            ex.clone().limit(5, Truncation::Error, p, 9).unwrap(),
            Some(ex.clone())
        );
        assert!(ex.limit(0, Truncation::Right, p, 9).is_err());
    }

    #[test]
    fn length_grouped_batches_cover_everything_and_group_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 500 + 1).collect();
        let batches = length_grouped_batches(&lengths, 16, 3).unwrap();
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert!(batches[..batches.len() - 1].iter().all(|b| b.len() == 16));
        assert_eq!(batches.last().unwrap().len(), 1000 % 16);
        assert_eq!(batches, length_grouped_batches(&lengths, 16, 3).unwrap());
        assert_ne!(batches, length_grouped_batches(&lengths, 16, 4).unwrap());
        // Padding waste is far below that of random batches.
        let waste = |bs: &[Vec<usize>]| -> usize {
            bs.iter()
                .map(|b| {
                    let max = b.iter().map(|&i| lengths[i]).max().unwrap();
                    b.iter().map(|&i| max - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let random: Vec<Vec<usize>> = (0..1000)
            .collect::<Vec<_>>()
            .chunks(16)
            .map(<[usize]>::to_vec)
            .collect();
        assert!(
            waste(&batches) * 5 < waste(&random),
            "{} vs {}",
            waste(&batches),
            waste(&random)
        );
        assert!(length_grouped_batches(&lengths, 0, 3).is_err());
    }

    #[test]
    fn mismatched_labels_are_an_error() {
        let bad = TokenizedExample {
            input_ids: vec![1, 2],
            labels: vec![1],
        };
        let msg = TokenBatch::pad_right(&[bad], 0).unwrap_err().to_string();
        assert!(msg.contains("example 0"), "{msg}");
    }
}
