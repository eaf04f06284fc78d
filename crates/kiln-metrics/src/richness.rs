//! Vocabulary richness of generated text: type-token ratio, distinct-n and MTLD.
//!
//! # Tokenization
//!
//! [`richness_tokenize`] lower-cases the text, splits it on Unicode whitespace and removes from
//! both ends of every piece the characters that are neither alphabetic nor numeric (Unicode
//! `Alphabetic`/`Numeric` properties, see [`char::is_alphanumeric`]); pieces left empty are
//! dropped. Punctuation inside a token is kept: `"don't"`, `"p0300"`, `"v6-engine"` and
//! `"3.5"` are single tokens, while `"(misfire),"` becomes `"misfire"`.
//!
//! # Corpus conventions
//!
//! All counts are over the whole set of texts: the type-token ratio is distinct tokens over
//! tokens, distinct-n is distinct n-grams over n-grams (n-grams never cross text boundaries),
//! and MTLD runs over the concatenation of the token sequences of all texts, in order.
//!
//! ```
//! use kiln_metrics::vocabulary_richness;
//!
//! let texts = ["The engine misfires.", "The engine stalls at idle!"];
//! let r = vocabulary_richness(&texts).unwrap();
//! assert_eq!((r.tokens, r.types), (8, 6));
//! assert!((r.distinct_2 - 5.0 / 6.0).abs() < 1e-12);
//! ```

use std::collections::HashSet;

use crate::error::{MetricsError, Result};

/// The MTLD factor threshold recommended by McCarthy & Jarvis (2010).
pub const MTLD_THRESHOLD: f64 = 0.72;

/// Vocabulary statistics of a set of texts.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabularyRichness {
    /// Number of tokens.
    pub tokens: usize,
    /// Number of distinct tokens.
    pub types: usize,
    /// `types / tokens`.
    pub type_token_ratio: f64,
    /// Distinct unigrams over unigrams (equal to the type-token ratio).
    pub distinct_1: f64,
    /// Distinct bigrams over bigrams (0 when no text has two tokens).
    pub distinct_2: f64,
    /// Bidirectional MTLD with the threshold [`MTLD_THRESHOLD`].
    pub mtld: f64,
}

/// Tokens of a text for the richness measures (see the [module docs](self)).
///
/// ```
/// use kiln_metrics::richness_tokenize;
/// assert_eq!(
///     richness_tokenize("P0300: Random/Multiple misfire (don't drive)!"),
///     ["p0300", "random/multiple", "misfire", "don't", "drive"]
/// );
/// ```
pub fn richness_tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split_whitespace()
        .map(|t| t.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Distinct tokens over tokens of one token sequence (0 for no token).
pub fn type_token_ratio<S: AsRef<str>>(tokens: &[S]) -> f64 {
    if tokens.is_empty() {
        return 0.0;
    }
    let types: HashSet<&str> = tokens.iter().map(AsRef::as_ref).collect();
    types.len() as f64 / tokens.len() as f64
}

/// Distinct n-grams over n-grams across several texts, tokenized with [`richness_tokenize`].
/// N-grams do not cross text boundaries. Returns 0 when there is no n-gram (or `n == 0`).
///
/// ```
/// use kiln_metrics::distinct_n;
/// assert_eq!(distinct_n(&["a b a b"], 2), 2.0 / 3.0);
/// assert_eq!(distinct_n(&["a b", "a b"], 1), 0.5);
/// ```
pub fn distinct_n<S: AsRef<str>>(texts: &[S], n: usize) -> f64 {
    let tokenized: Vec<Vec<String>> = texts
        .iter()
        .map(|t| richness_tokenize(t.as_ref()))
        .collect();
    distinct_n_tokens(&tokenized, n)
}

fn distinct_n_tokens(texts: &[Vec<String>], n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let mut total = 0usize;
    let mut unique: HashSet<&[String]> = HashSet::new();
    for tokens in texts.iter().filter(|t| t.len() >= n) {
        for gram in tokens.windows(n) {
            total += 1;
            unique.insert(gram);
        }
    }
    if total == 0 {
        0.0
    } else {
        unique.len() as f64 / total as f64
    }
}

/// One directional MTLD pass: tokens divided by the (partial) factor count.
fn mtld_pass<'a>(
    tokens: impl Iterator<Item = &'a str>,
    len: usize,
    overall_ttr: f64,
    threshold: f64,
) -> f64 {
    let mut terms: HashSet<&str> = HashSet::new();
    let mut count = 0usize;
    let mut factors = 0.0;
    let mut ttr = 1.0;
    for token in tokens {
        count += 1;
        terms.insert(token);
        ttr = terms.len() as f64 / count as f64;
        if ttr <= threshold {
            count = 0;
            terms.clear();
            factors += 1.0;
        }
    }
    if count > 0 {
        factors += (1.0 - ttr) / (1.0 - threshold);
    }
    if factors == 0.0 {
        factors = if overall_ttr == 1.0 {
            1.0
        } else {
            (1.0 - overall_ttr) / (1.0 - threshold)
        };
    }
    len as f64 / factors
}

/// Measure of Textual Lexical Diversity (McCarthy & Jarvis, 2010) of a token sequence.
///
/// Tokens are read in order while the running type-token ratio of the current segment stays
/// above `threshold`; when it drops to the threshold or below, a factor is complete and a new
/// segment starts. The remaining segment counts as the partial factor
/// `(1 - ttr) / (1 - threshold)`. The text length divided by the factor count is computed
/// forwards and backwards and the two are averaged. A text whose factor count is zero (every
/// token distinct) scores its own length.
///
/// ```
/// use kiln_metrics::{MTLD_THRESHOLD, mtld};
/// // every token distinct: MTLD is the token count
/// assert_eq!(mtld(&["a", "b", "c"], MTLD_THRESHOLD).unwrap(), 3.0);
/// ```
///
/// # Errors
/// [`MetricsError::Empty`] for no token, [`MetricsError::InvalidParameter`] for a threshold
/// outside `(0, 1)`.
pub fn mtld<S: AsRef<str>>(tokens: &[S], threshold: f64) -> Result<f64> {
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(MetricsError::InvalidParameter {
            name: "threshold",
            reason: format!("{threshold} is not in (0, 1)"),
        });
    }
    if tokens.is_empty() {
        return Err(MetricsError::Empty);
    }
    let ttr = type_token_ratio(tokens);
    let forward = mtld_pass(
        tokens.iter().map(AsRef::as_ref),
        tokens.len(),
        ttr,
        threshold,
    );
    let backward = mtld_pass(
        tokens.iter().rev().map(AsRef::as_ref),
        tokens.len(),
        ttr,
        threshold,
    );
    Ok((forward + backward) / 2.0)
}

/// Type-token ratio, distinct-1, distinct-2 and MTLD of a set of texts (see the
/// [module docs](self) for tokenization and conventions).
///
/// # Errors
/// [`MetricsError::Empty`] when the texts contain no token.
pub fn vocabulary_richness<S: AsRef<str>>(texts: &[S]) -> Result<VocabularyRichness> {
    let tokenized: Vec<Vec<String>> = texts
        .iter()
        .map(|t| richness_tokenize(t.as_ref()))
        .collect();
    let all: Vec<&str> = tokenized.iter().flatten().map(String::as_str).collect();
    if all.is_empty() {
        return Err(MetricsError::Empty);
    }
    let types = all.iter().collect::<HashSet<_>>().len();
    Ok(VocabularyRichness {
        tokens: all.len(),
        types,
        type_token_ratio: types as f64 / all.len() as f64,
        distinct_1: distinct_n_tokens(&tokenized, 1),
        distinct_2: distinct_n_tokens(&tokenized, 2),
        mtld: mtld(&all, MTLD_THRESHOLD)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenization_strips_edge_punctuation() {
        assert_eq!(
            richness_tokenize("  \"Hello,\" — said O'Brien… (3.5L V6-engine). 🚗"),
            ["hello", "said", "o'brien", "3.5l", "v6-engine"]
        );
        assert!(richness_tokenize("... !!").is_empty());
    }

    #[test]
    fn ttr_and_distinct() {
        assert_eq!(type_token_ratio(&["a", "b", "a", "c"]), 0.75);
        assert_eq!(type_token_ratio::<&str>(&[]), 0.0);
        assert_eq!(distinct_n(&["a"], 2), 0.0);
        assert_eq!(distinct_n(&["a b"], 0), 0.0);
        // bigrams do not cross texts: "b c" is never formed
        assert_eq!(distinct_n(&["a b", "c a"], 2), 1.0);
    }

    #[test]
    fn mtld_factors_by_hand() {
        // forward: a b a -> ttr 2/3 <= 0.72, one factor; remainining "b" has ttr 1 -> partial 0
        // so forward = 4 / 1; backward: b a b -> factor, "a" -> 0, also 4.
        let t = ["a", "b", "a", "b"];
        assert!((mtld(&t, 0.72).unwrap() - 4.0).abs() < 1e-12);
        // "a a": first token ttr 1, second 1/2 -> a factor; both directions give 2 / 1
        assert_eq!(mtld(&["a", "a"], 0.72).unwrap(), 2.0);
        // partial factor: "a b c a" -> ttr 3/4 > 0.72, partial (1 - 0.75) / 0.28
        let f = 4.0 / ((1.0 - 0.75) / (1.0 - 0.72));
        assert!((mtld(&["a", "b", "c", "a"], 0.72).unwrap() - f).abs() < 1e-12);
    }

    #[test]
    fn errors() {
        assert_eq!(mtld::<&str>(&[], 0.72), Err(MetricsError::Empty));
        assert!(mtld(&["a"], 1.0).is_err());
        assert!(mtld(&["a"], f64::NAN).is_err());
        assert_eq!(vocabulary_richness(&["", "!!"]), Err(MetricsError::Empty));
    }
}
