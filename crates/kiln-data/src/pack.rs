//! Packing of short examples into fixed-length rows, with per-example positions and segment ids
//! so that tokens never attend across example boundaries.

use std::collections::BTreeMap;

use crate::{DataError, IGNORE_INDEX, Result, TokenBatch, TokenizedExample};

/// One packed row of examples.
///
/// # Layout
///
/// A row of length `row_len` holds examples `e_1 .. e_m` back to back, then padding:
///
/// - `input_ids`: the examples' tokens, then `pad_id` up to `row_len`.
/// - `labels`: each example's labels, **except its first token, which is set to
///   [`IGNORE_INDEX`]**; padding is [`IGNORE_INDEX`]. With the Hugging Face convention (the model
///   compares the logits at `t` with `labels[t + 1]`) this stops the last token of one example
///   from being trained to predict the first token of the next; an unpacked example's first
///   label is never used either, so the loss terms are exactly those of the unpacked examples.
/// - `position_ids`: `0, 1, .., len(e_j) - 1` for every example (restarting at 0); 0 on padding.
/// - `segment_ids`: `j` (1-based) on the tokens of `e_j`, 0 on padding.
/// - Attention: query `q` may attend key `k` iff `segment_ids[q] == segment_ids[k] != 0` and
///   `k <= q` (a block-diagonal causal mask, [`PackedRow::attends`]). Padding attends nothing.
///
/// With that mask and those positions, a causal LM computes for every token of `e_j` the same
/// logits as for `e_j` alone, so the summed loss over packed rows equals the summed loss over
/// the unpacked, padded examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedRow {
    /// Token ids, padded to the row length.
    pub input_ids: Vec<u32>,
    /// Labels; each example's first token and the padding are [`IGNORE_INDEX`].
    pub labels: Vec<i64>,
    /// Positions, restarting at 0 for every example; 0 on padding.
    pub position_ids: Vec<u32>,
    /// 1-based example number within the row; 0 on padding.
    pub segment_ids: Vec<u32>,
    /// Indices (into the packed slice) of the examples in the row, in row order.
    pub examples: Vec<usize>,
}

impl PackedRow {
    /// Whether query position `q` may attend key position `k`.
    pub fn attends(&self, q: usize, k: usize) -> bool {
        k <= q
            && q < self.segment_ids.len()
            && self.segment_ids[q] != 0
            && self.segment_ids[q] == self.segment_ids[k]
    }

    /// The `[row_len, row_len]` attention mask, `true` where [`Self::attends`].
    pub fn attention_mask(&self) -> Vec<Vec<bool>> {
        let n = self.segment_ids.len();
        (0..n)
            .map(|q| (0..n).map(|k| self.attends(q, k)).collect())
            .collect()
    }

    /// Lengths of the examples in the row, in order (for variable-length attention kernels,
    /// whose cumulative sums are the `cu_seqlens`).
    pub fn segment_lengths(&self) -> Vec<usize> {
        let mut lens: Vec<usize> = Vec::new();
        for &s in &self.segment_ids {
            if s == 0 {
                break;
            }
            if lens.len() < s as usize {
                lens.push(0);
            }
            if let Some(last) = lens.last_mut() {
                *last += 1;
            }
        }
        lens
    }

    /// Tokens that are not padding.
    pub fn num_tokens(&self) -> usize {
        self.segment_ids.iter().filter(|&&s| s != 0).count()
    }
}

/// Packs examples into [`PackedRow`]s of `row_len` tokens by best-fit decreasing: longest example first,
/// each into the fullest row it fits in (ties: the earliest row). Deterministic. Examples
/// without tokens are left out.
///
/// # Errors
/// [`DataError::Config`] for `row_len == 0` or an example longer than `row_len` (naming its
/// index; truncate first); [`DataError::LabelLength`] for an example whose labels do not match its tokens.
pub fn pack(examples: &[TokenizedExample], row_len: usize, pad_id: u32) -> Result<Vec<PackedRow>> {
    if row_len == 0 {
        return Err(DataError::Config(
            "the packed row length must be positive".into(),
        ));
    }
    for (index, e) in examples.iter().enumerate() {
        crate::batch::check_labels(index, e)?;
        if e.len() > row_len {
            return Err(DataError::Config(format!(
                "example {index} has {} tokens, more than the packed row length {row_len}; truncate it first",
                e.len()
            )));
        }
    }
    let mut order: Vec<usize> = (0..examples.len())
        .filter(|&i| !examples[i].is_empty())
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(examples[i].len()));
    // Free space -> rows with that much space, earliest first.
    let mut free: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut rows: Vec<(Vec<usize>, usize)> = Vec::new();
    for i in order {
        let len = examples[i].len();
        let found = free
            .range_mut(len..)
            .next()
            .map(|(&space, ids)| (space, ids.remove(0), ids.is_empty()));
        let row = match found {
            Some((space, row, emptied)) => {
                if emptied {
                    free.remove(&space);
                }
                row
            }
            None => {
                rows.push((Vec::new(), row_len));
                rows.len() - 1
            }
        };
        rows[row].0.push(i);
        rows[row].1 -= len;
        let ids = free.entry(rows[row].1).or_default();
        let at = ids.partition_point(|&r| r < row);
        ids.insert(at, row);
    }
    Ok(rows
        .into_iter()
        .map(|(members, _)| build_row(examples, members, row_len, pad_id))
        .collect())
}

fn build_row(
    examples: &[TokenizedExample],
    members: Vec<usize>,
    row_len: usize,
    pad_id: u32,
) -> PackedRow {
    let mut row = PackedRow {
        input_ids: Vec::with_capacity(row_len),
        labels: Vec::with_capacity(row_len),
        position_ids: Vec::with_capacity(row_len),
        segment_ids: Vec::with_capacity(row_len),
        examples: members,
    };
    for (j, &i) in row.examples.iter().enumerate() {
        let e = &examples[i];
        row.input_ids.extend(&e.input_ids);
        row.labels.push(IGNORE_INDEX);
        row.labels.extend(&e.labels[1..]);
        row.position_ids.extend(0..e.len() as u32);
        row.segment_ids
            .extend(std::iter::repeat_n(j as u32 + 1, e.len()));
    }
    let pad = row_len - row.input_ids.len();
    row.input_ids.extend(std::iter::repeat_n(pad_id, pad));
    row.labels.extend(std::iter::repeat_n(IGNORE_INDEX, pad));
    row.position_ids.extend(std::iter::repeat_n(0, pad));
    row.segment_ids.extend(std::iter::repeat_n(0, pad));
    row
}

/// Packed rows as a [`TokenBatch`] with explicit `position_ids` and an attention mask of 1 on
/// real tokens. The batch does not carry the segment ids: a model that attends with it alone
/// sees across example boundaries; use [`PackedRow::segment_ids`] for the block mask.
pub fn packed_token_batch(rows: &[PackedRow]) -> TokenBatch {
    TokenBatch {
        input_ids: rows.iter().map(|r| r.input_ids.clone()).collect(),
        labels: rows.iter().map(|r| r.labels.clone()).collect(),
        attention_mask: rows
            .iter()
            .map(|r| r.segment_ids.iter().map(|&s| u8::from(s != 0)).collect())
            .collect(),
        position_ids: Some(rows.iter().map(|r| r.position_ids.clone()).collect()),
        segment_ids: Some(rows.iter().map(|r| r.segment_ids.clone()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(tokens: &[u32], prompt: usize) -> TokenizedExample {
        TokenizedExample::prompt_completion(&tokens[..prompt], &tokens[prompt..])
    }

    #[test]
    fn rows_have_the_documented_layout() {
        let examples = [ex(&[1, 2, 3], 1), ex(&[4, 5], 0), ex(&[6, 7, 8, 9], 2)];
        let rows = pack(&examples, 6, 0).unwrap();
        assert_eq!(rows.len(), 2);
        // Longest first: [6 7 8 9] + [4 5]; then [1 2 3].
        let r = &rows[0];
        assert_eq!(r.examples, [2, 1]);
        assert_eq!(r.input_ids, [6, 7, 8, 9, 4, 5]);
        assert_eq!(r.labels, [-100, -100, 8, 9, -100, 5]);
        assert_eq!(r.position_ids, [0, 1, 2, 3, 0, 1]);
        assert_eq!(r.segment_ids, [1, 1, 1, 1, 2, 2]);
        assert_eq!(r.segment_lengths(), [4, 2]);
        let r = &rows[1];
        assert_eq!(r.input_ids, [1, 2, 3, 0, 0, 0]);
        assert_eq!(r.labels, [-100, 2, 3, -100, -100, -100]);
        assert_eq!(r.position_ids, [0, 1, 2, 0, 0, 0]);
        assert_eq!(r.segment_ids, [1, 1, 1, 0, 0, 0]);
        assert_eq!(r.num_tokens(), 3);
        assert!(r.attends(2, 0) && !r.attends(0, 2) && !r.attends(4, 4));
        let m = rows[0].attention_mask();
        assert!(m[5][4] && !m[5][3] && m[3][0] && !m[4][3]);
    }

    #[test]
    fn packing_keeps_every_loss_token_and_every_example() {
        let examples: Vec<TokenizedExample> = (0..40u32)
            .map(|i| {
                let len = (i * 37 % 23 + 2) as usize;
                let toks: Vec<u32> = (0..len as u32).map(|t| 10 + i * 100 + t).collect();
                ex(&toks, len / 3)
            })
            .collect();
        let rows = pack(&examples, 32, 0).unwrap();
        let mut seen: Vec<usize> = rows.iter().flat_map(|r| r.examples.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        // The loss terms (a label at t > 0 of each segment) match the padded batch's.
        let padded = TokenBatch::pad_right(&examples, 0).unwrap();
        let packed = packed_token_batch(&rows);
        let loss = |b: &TokenBatch| {
            let mut v: Vec<i64> = b
                .labels
                .iter()
                .flat_map(|r| r.iter().skip(1).copied().filter(|&l| l != IGNORE_INDEX))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(loss(&padded), loss(&packed));
        assert_eq!(padded.num_loss_tokens(), packed.num_loss_tokens());
        // Best fit leaves less padding than one example per row.
        let tokens: usize = examples.iter().map(TokenizedExample::len).sum();
        assert!(rows.len() * 32 < tokens + tokens / 4, "{} rows", rows.len());
        assert!(rows.iter().all(|r| r.input_ids.len() == 32));
        for r in &rows {
            // Positions restart at every segment start.
            for t in 0..32 {
                let start = t == 0 || r.segment_ids[t] != r.segment_ids[t - 1];
                if r.segment_ids[t] != 0 {
                    assert_eq!(r.position_ids[t] == 0, start);
                }
            }
        }
        assert_eq!(rows, pack(&examples, 32, 0).unwrap());
    }

    #[test]
    fn packing_errors() {
        let err = pack(&[ex(&[1, 2, 3], 1)], 2, 0).unwrap_err().to_string();
        assert!(err.contains("example 0 has 3 tokens"), "{err}");
        assert!(pack(&[], 0, 0).is_err());
        assert_eq!(pack(&[], 4, 0).unwrap(), []);
    }
}
