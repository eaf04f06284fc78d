//! BPE merges: parsed from `tokenizer.ggml.merges`, or derived from the vocabulary and its
//! scores as `transformers` derives them for SentencePiece vocabularies.

use std::collections::HashMap;

use tokenizers::models::bpe::Vocab;

use super::{GgufTokenizerSpec, MERGES, SCORES, TOKENS, spec_error};
use crate::Result;

/// `{token: id}` with the last id of a repeated token, as a Python dict comprehension builds it.
pub(super) fn vocab_of<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Vocab> {
    let mut vocab = Vocab::default();
    for (id, token) in tokens.into_iter().enumerate() {
        let id = u32::try_from(id).map_err(|_| spec_error(TOKENS, "more than 2^32 tokens"))?;
        vocab.insert(token.to_owned(), id);
    }
    Ok(vocab)
}

/// The `"left right"` strings of `tokenizer.ggml.merges` as pairs.
pub(super) fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .enumerate()
        .map(|(i, merge)| {
            let mut parts = merge.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(left), Some(right), None) => Ok((left.to_owned(), right.to_owned())),
                _ => Err(spec_error(
                    MERGES,
                    format!("merge {i} ({merge:?}) is not two tokens separated by one space"),
                )),
            }
        })
        .collect()
}

/// BPE merges implied by a vocabulary: every split of a token into two vocabulary tokens, ranked
/// by `scores` (best first), then by the lengths of the two halves; ties keep vocabulary order.
/// This is `transformers`' `generate_merges(vocab, vocab_scores)`.
pub(super) fn derive_merges(vocab: &Vocab, scores: &[(&str, f64)]) -> Vec<(String, String)> {
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for &(token, score) in scores {
        let mut local: Vec<(&str, &str, u32, u32)> = Vec::new();
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                local.push((left, right, l, r));
            }
        }
        local.sort_by_key(|&(_, _, l, r)| (l, r));
        merges.extend(local.into_iter().map(|(l, r, _, _)| (l, r, score)));
    }
    merges.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| b.0.chars().count().cmp(&a.0.chars().count()))
            .then_with(|| b.1.chars().count().cmp(&a.1.chars().count()))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_owned(), r.to_owned()))
        .collect()
}

/// `(token, score)` in first-seen order with the last score of a repeated token, as
/// `dict(zip(tokens, scores))` builds it.
pub(super) fn ordered_scores<'a>(
    pairs: impl IntoIterator<Item = (&'a str, f64)>,
) -> Vec<(&'a str, f64)> {
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<(&str, f64)> = Vec::new();
    for (token, score) in pairs {
        match position.get(token) {
            Some(&i) => out[i].1 = score,
            None => {
                position.insert(token, out.len());
                out.push((token, score));
            }
        }
    }
    out
}

/// The merges of a SentencePiece vocabulary: the file's, or derived from its scores.
pub(super) fn sentencepiece_merges(
    spec: &GgufTokenizerSpec,
    vocab: &Vocab,
) -> Result<Vec<(String, String)>> {
    if let Some(merges) = &spec.merges {
        return parse_merges(merges);
    }
    let scores = spec.scores.as_ref().ok_or_else(|| {
        spec_error(
            SCORES,
            "missing; a SentencePiece vocabulary without tokenizer.ggml.merges needs scores",
        )
    })?;
    let pairs = spec
        .tokens
        .iter()
        .map(String::as_str)
        .zip(scores.iter().map(|&s| f64::from(s)));
    Ok(derive_merges(vocab, &ordered_scores(pairs)))
}
