//! Preference pairs: a prompt with a chosen and a rejected completion (DPO, IPO, SimPO, reward
//! models), and their batches.

use crate::{Result, TokenBatch, TokenizedExample};

/// One tokenized preference pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferencePair {
    /// The prompt's tokens (no loss).
    pub prompt: Vec<u32>,
    /// The preferred completion's tokens (its end-of-sequence token included).
    pub chosen: Vec<u32>,
    /// The other completion's tokens.
    pub rejected: Vec<u32>,
}

impl PreferencePair {
    /// Tokens of the longer of the two sequences (prompt + completion).
    pub fn len(&self) -> usize {
        self.prompt.len() + self.chosen.len().max(self.rejected.len())
    }

    /// Whether both completions are empty.
    pub fn is_empty(&self) -> bool {
        self.chosen.is_empty() && self.rejected.is_empty()
    }
}

/// The batch of `pairs`: `2 · pairs.len()` rows, every prompt + chosen completion first, then
/// every prompt + rejected completion in the same order, right-padded with `pad_id`. Labels mark
/// the completion tokens only, so a row's labelled log-probabilities are its completion's.
///
/// # Shapes
/// `[2 · pairs, longest]`: row `i` is pair `i` chosen, row `pairs + i` pair `i` rejected.
///
/// # Errors
/// Never for well-formed pairs; shares [`TokenBatch::pad_right`]'s checks.
pub fn preference_batch(pairs: &[PreferencePair], pad_id: u32) -> Result<TokenBatch> {
    let rows: Vec<TokenizedExample> = pairs
        .iter()
        .map(|p| TokenizedExample::prompt_completion(&p.prompt, &p.chosen))
        .chain(
            pairs
                .iter()
                .map(|p| TokenizedExample::prompt_completion(&p.prompt, &p.rejected)),
        )
        .collect();
    TokenBatch::pad_right(&rows, pad_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IGNORE_INDEX;

    #[test]
    fn chosen_rows_first_then_rejected() {
        let pairs = [
            PreferencePair {
                prompt: vec![1, 2],
                chosen: vec![3],
                rejected: vec![4, 5],
            },
            PreferencePair {
                prompt: vec![6],
                chosen: vec![7, 8, 9],
                rejected: vec![10],
            },
        ];
        let b = preference_batch(&pairs, 0).unwrap();
        assert_eq!(
            b.input_ids,
            vec![
                vec![1, 2, 3, 0],
                vec![6, 7, 8, 9],
                vec![1, 2, 4, 5],
                vec![6, 10, 0, 0]
            ]
        );
        let m = IGNORE_INDEX;
        assert_eq!(b.labels[0], vec![m, m, 3, m]);
        assert_eq!(b.labels[3], vec![m, 10, m, m]);
        assert_eq!(b.attention_mask[3], vec![1, 1, 0, 0]);
        assert_eq!(pairs[1].len(), 4);
    }
}
