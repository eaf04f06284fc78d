use crate::{DataError, Result};

/// The label value that takes no loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

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
        };
        for (index, e) in examples.iter().enumerate() {
            if e.labels.len() != e.input_ids.len() {
                return Err(DataError::LabelLength {
                    index,
                    got: e.input_ids.len(),
                    labels: e.labels.len(),
                });
            }
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
    fn mismatched_labels_are_an_error() {
        let bad = TokenizedExample {
            input_ids: vec![1, 2],
            labels: vec![1],
        };
        let msg = TokenBatch::pad_right(&[bad], 0).unwrap_err().to_string();
        assert!(msg.contains("example 0"), "{msg}");
    }
}
