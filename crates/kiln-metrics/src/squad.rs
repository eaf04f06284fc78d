//! SQuAD-style answer metrics: exact match and bag-of-tokens F1.
//!
//! Answers are normalized as in the SQuAD v1.1 evaluation script (lower case, ASCII punctuation
//! removed, the articles `a`/`an`/`the` dropped, whitespace collapsed) before comparison.

use std::collections::HashMap;

use crate::error::{Result, check_aligned};

/// SQuAD answer normalization: lower case, drop ASCII punctuation and the articles a/an/the,
/// collapse whitespace.
///
/// ```
/// assert_eq!(kiln_metrics::normalize_answer("The  Misfire, detected!"), "misfire detected");
/// ```
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1.0 when the normalized strings are equal, 0.0 otherwise.
pub fn exact_match(hypothesis: &str, reference: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(hypothesis) == normalize_answer(reference),
    ))
}

/// SQuAD token F1 between a hypothesis and a reference (bag-of-tokens overlap of the
/// normalized strings).
///
/// When either side normalizes to no token at all, the score is 1.0 if both are empty and 0.0
/// otherwise.
pub fn token_f1(hypothesis: &str, reference: &str) -> f64 {
    let h = normalize_answer(hypothesis);
    let r = normalize_answer(reference);
    let h: Vec<&str> = h.split_whitespace().collect();
    let r: Vec<&str> = r.split_whitespace().collect();
    if h.is_empty() || r.is_empty() {
        return f64::from(u8::from(h == r));
    }
    let mut counts = HashMap::<&str, i64>::new();
    for t in &r {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0i64;
    for t in &h {
        if let Some(c) = counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let p = common as f64 / h.len() as f64;
    let rc = common as f64 / r.len() as f64;
    2.0 * p * rc / (p + rc)
}

/// Means of [`exact_match`] and [`token_f1`] over aligned lists.
///
/// # Errors
/// [`MetricsError::LengthMismatch`](crate::MetricsError::LengthMismatch) for lists of different
/// lengths, [`MetricsError::Empty`](crate::MetricsError::Empty) for empty lists.
pub fn mean_em_f1(hypotheses: &[String], references: &[String]) -> Result<(f64, f64)> {
    check_aligned(hypotheses.len(), references.len())?;
    let n = hypotheses.len() as f64;
    let (em, f1) = hypotheses
        .iter()
        .zip(references)
        .fold((0.0, 0.0), |(e, f), (h, r)| {
            (e + exact_match(h, r), f + token_f1(h, r))
        });
    Ok((em / n, f1 / n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricsError;

    #[test]
    fn squad_normalization_and_scores() {
        assert_eq!(
            normalize_answer("The  Misfire, detected!"),
            "misfire detected"
        );
        assert_eq!(exact_match("the misfire", "Misfire."), 1.0);
        // 2 common tokens, precision 2/3, recall 2/2 -> F1 0.8
        let f1 = token_f1("random cylinder misfire", "cylinder misfire");
        assert!((f1 - 0.8).abs() < 1e-12);
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("x", ""), 0.0);
        assert_eq!(token_f1("a", "the"), 1.0);
        let (em, f1) =
            mean_em_f1(&["a b".into(), "c".into()], &["a b".into(), "d".into()]).unwrap();
        assert_eq!((em, f1), (0.5, 0.5));
    }

    #[test]
    fn mean_em_f1_errors() {
        assert_eq!(mean_em_f1(&[], &[]), Err(MetricsError::Empty));
        assert_eq!(
            mean_em_f1(&["a".into()], &[]),
            Err(MetricsError::LengthMismatch {
                hypotheses: 1,
                references: 0
            })
        );
    }
}
