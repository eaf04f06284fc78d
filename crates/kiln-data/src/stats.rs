//! Dataset statistics: counts, a token-length histogram and the share of tokens with loss.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::TokenizedExample;

/// One histogram bucket: lengths in `lo..hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LengthBucket {
    /// Smallest length in the bucket.
    pub lo: usize,
    /// One past the largest length in the bucket.
    pub hi: usize,
    /// Examples in the bucket.
    pub count: usize,
}

/// Statistics of tokenized examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    /// Number of examples.
    pub examples: usize,
    /// Number of tokens.
    pub tokens: usize,
    /// Tokens whose label is not [`crate::IGNORE_INDEX`].
    pub loss_tokens: usize,
    /// Shortest example (0 when there is none).
    pub min_len: usize,
    /// Longest example.
    pub max_len: usize,
    /// Token lengths in power-of-two buckets (`0..1`, `1..2`, `2..4`, `4..8`...), from the
    /// first to the last non-empty bucket.
    pub histogram: Vec<LengthBucket>,
}

fn bucket(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.ilog2() as usize + 1
    }
}

fn bounds(b: usize) -> (usize, usize) {
    if b == 0 {
        (0, 1)
    } else {
        (1 << (b - 1), 1 << b)
    }
}

impl DatasetStats {
    /// Statistics of some examples.
    pub fn from_examples<'a>(examples: impl IntoIterator<Item = &'a TokenizedExample>) -> Self {
        let mut s = Self {
            min_len: usize::MAX,
            ..Self::default()
        };
        let mut counts: Vec<usize> = Vec::new();
        for e in examples {
            let len = e.len();
            s.examples += 1;
            s.tokens += len;
            s.loss_tokens += e.num_labeled();
            s.min_len = s.min_len.min(len);
            s.max_len = s.max_len.max(len);
            let b = bucket(len);
            if counts.len() <= b {
                counts.resize(b + 1, 0);
            }
            counts[b] += 1;
        }
        if s.examples == 0 {
            s.min_len = 0;
        }
        let first = counts.iter().position(|&c| c > 0).unwrap_or(counts.len());
        s.histogram = (first..counts.len())
            .map(|b| {
                let (lo, hi) = bounds(b);
                LengthBucket {
                    lo,
                    hi,
                    count: counts[b],
                }
            })
            .collect();
        s
    }

    /// Mean tokens per example (0 without examples).
    pub fn mean_len(&self) -> f64 {
        if self.examples == 0 {
            0.0
        } else {
            self.tokens as f64 / self.examples as f64
        }
    }

    /// Fraction of tokens that carry loss (0 without tokens).
    pub fn loss_fraction(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.loss_tokens as f64 / self.tokens as f64
        }
    }
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} examples, {} tokens ({} to {}, mean {:.1}), {:.1}% with loss",
            self.examples,
            self.tokens,
            self.min_len,
            self.max_len,
            self.mean_len(),
            100.0 * self.loss_fraction()
        )?;
        let widest = self.histogram.iter().map(|b| b.count).max().unwrap_or(0);
        for b in &self.histogram {
            let bar = (b.count * 40).checked_div(widest).unwrap_or(0);
            writeln!(
                f,
                "{:>7}..{:<7} {:>8} {}",
                b.lo,
                b.hi,
                b.count,
                "#".repeat(bar)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_histogram_and_loss_fraction() {
        let examples = [
            TokenizedExample::prompt_completion(&[1, 2, 3], &[4]),
            TokenizedExample::full(&[1, 2, 3, 4, 5]),
            TokenizedExample::prompt_completion(&[1], &[]),
        ];
        let s = DatasetStats::from_examples(&examples);
        assert_eq!((s.examples, s.tokens, s.loss_tokens), (3, 10, 6));
        assert_eq!((s.min_len, s.max_len), (1, 5));
        assert!((s.loss_fraction() - 0.6).abs() < 1e-12);
        assert!((s.mean_len() - 10.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            s.histogram,
            [
                LengthBucket {
                    lo: 1,
                    hi: 2,
                    count: 1
                },
                LengthBucket {
                    lo: 2,
                    hi: 4,
                    count: 0
                },
                LengthBucket {
                    lo: 4,
                    hi: 8,
                    count: 2
                },
            ]
        );
        let shown = s.to_string();
        assert!(
            shown.starts_with("3 examples, 10 tokens (1 to 5, mean 3.3), 60.0% with loss"),
            "{shown}"
        );
        let empty = DatasetStats::from_examples(&[]);
        assert_eq!(
            (empty.examples, empty.min_len, empty.loss_fraction()),
            (0, 0, 0.0)
        );
        assert!(empty.histogram.is_empty());
    }
}
