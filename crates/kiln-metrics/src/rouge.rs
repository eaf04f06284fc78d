//! ROUGE-N, ROUGE-L and ROUGE-Lsum with the conventions of Google's `rouge-score` package.
//!
//! Tokenization ([`rouge_tokenize`]) lower-cases the text, turns every run of characters other
//! than `a-z`/`0-9` into a space, optionally applies the Porter stemmer ([`porter_stem`]) to
//! tokens longer than three characters, and keeps the non-empty `[a-z0-9]+` tokens. Non-ASCII
//! letters therefore act as separators, as in `rouge-score`.
//!
//! * ROUGE-N counts clipped n-gram overlaps.
//! * ROUGE-L uses the longest common subsequence of the two token sequences.
//! * ROUGE-Lsum splits both texts into sentences on `\n` and uses the summary-level union-LCS
//!   of Lin (2004), section 3.2, counting each token at most as often as it occurs in both
//!   summaries (as ROUGE-1.5.5 does).
//!
//! Every score carries precision (against the prediction length), recall (against the
//! reference length) and their harmonic mean. Functions here take the prediction first and the
//! reference second; `rouge_score.RougeScorer.score` takes `(target, prediction)`.
//!
//! ```
//! use kiln_metrics::RougeScorer;
//!
//! let scorer = RougeScorer::new(true);
//! let s = scorer.score(
//!     "Misfires detected in cylinder 3",
//!     "Cylinder 3 misfire detected",
//! );
//! assert_eq!(s.rouge1.recall, 1.0); // "misfires" and "misfire" share the stem "misfir"
//! assert!((s.rouge1.precision - 0.8).abs() < 1e-12);
//! ```
//!
//! [`porter_stem`]: crate::porter_stem

use std::collections::{BTreeSet, HashMap};

use crate::error::{MetricsError, Result, check_aligned};
use crate::porter::porter_stem;

/// Precision, recall and F-measure of one ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RougeScore {
    /// Overlap divided by the prediction size.
    pub precision: f64,
    /// Overlap divided by the reference size.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub fmeasure: f64,
}

impl RougeScore {
    fn new(precision: f64, recall: f64) -> Self {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum of one prediction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RougeScores {
    /// Unigram overlap.
    pub rouge1: RougeScore,
    /// Bigram overlap.
    pub rouge2: RougeScore,
    /// Longest common subsequence.
    pub rouge_l: RougeScore,
    /// Summary-level union LCS over `\n`-separated sentences.
    pub rouge_lsum: RougeScore,
}

/// Corpus-level ROUGE: the mean F-measure of every variant, with the per-pair scores.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusRouge {
    /// Mean ROUGE-1 F-measure.
    pub rouge1: f64,
    /// Mean ROUGE-2 F-measure.
    pub rouge2: f64,
    /// Mean ROUGE-L F-measure.
    pub rouge_l: f64,
    /// Mean ROUGE-Lsum F-measure.
    pub rouge_lsum: f64,
    /// Scores of every (prediction, reference) pair, in input order.
    pub per_pair: Vec<RougeScores>,
}

/// Tokenizes a text the way `rouge-score`'s default tokenizer does.
///
/// ```
/// use kiln_metrics::rouge_tokenize;
/// assert_eq!(
///     rouge_tokenize("P0300: Random/Multiple Cylinder Misfire", false),
///     ["p0300", "random", "multiple", "cylinder", "misfire"]
/// );
/// assert_eq!(rouge_tokenize("Misfires detected", true), ["misfir", "detect"]);
/// ```
pub fn rouge_tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        cleaned.push(if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            ' '
        });
    }
    cleaned
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| {
            if use_stemmer && t.len() > 3 {
                porter_stem(t)
            } else {
                t.to_string()
            }
        })
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .collect()
}

/// A ROUGE scorer with `rouge-score`'s default tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RougeScorer {
    use_stemmer: bool,
}

impl RougeScorer {
    /// A scorer; `use_stemmer` applies the Porter stemmer to tokens longer than 3 characters.
    pub fn new(use_stemmer: bool) -> Self {
        Self { use_stemmer }
    }

    /// Whether tokens are stemmed.
    pub fn use_stemmer(&self) -> bool {
        self.use_stemmer
    }

    /// Tokens of a text (see [`rouge_tokenize`]).
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        rouge_tokenize(text, self.use_stemmer)
    }

    /// ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum of a prediction against a reference.
    pub fn score(&self, prediction: &str, reference: &str) -> RougeScores {
        let p = self.tokenize(prediction);
        let r = self.tokenize(reference);
        RougeScores {
            rouge1: ngram_score(&p, &r, 1),
            rouge2: ngram_score(&p, &r, 2),
            rouge_l: lcs_score(&p, &r),
            rouge_lsum: self.rouge_lsum(prediction, reference),
        }
    }

    /// Scores against several references, keeping for every variant the reference with the
    /// best F-measure (the first one on ties), like `RougeScorer.score_multi`.
    ///
    /// # Errors
    /// [`MetricsError::NoReference`] when `references` is empty.
    pub fn score_multi<S: AsRef<str>>(
        &self,
        prediction: &str,
        references: &[S],
    ) -> Result<RougeScores> {
        let scores: Vec<RougeScores> = references
            .iter()
            .map(|r| self.score(prediction, r.as_ref()))
            .collect();
        let Some(first) = scores.first() else {
            return Err(MetricsError::NoReference { index: 0 });
        };
        let best = |get: fn(&RougeScores) -> RougeScore| {
            scores.iter().map(get).fold(get(first), |best, s| {
                if s.fmeasure > best.fmeasure { s } else { best }
            })
        };
        Ok(RougeScores {
            rouge1: best(|s| s.rouge1),
            rouge2: best(|s| s.rouge2),
            rouge_l: best(|s| s.rouge_l),
            rouge_lsum: best(|s| s.rouge_lsum),
        })
    }

    /// ROUGE-N for any order `n >= 1`.
    ///
    /// # Errors
    /// [`MetricsError::InvalidParameter`] for `n == 0`.
    pub fn rouge_n(&self, prediction: &str, reference: &str, n: usize) -> Result<RougeScore> {
        if n == 0 {
            return Err(MetricsError::InvalidParameter {
                name: "n",
                reason: "ROUGE-N needs n >= 1".into(),
            });
        }
        Ok(ngram_score(
            &self.tokenize(prediction),
            &self.tokenize(reference),
            n,
        ))
    }

    /// ROUGE-L (longest common subsequence of the whole texts).
    pub fn rouge_l(&self, prediction: &str, reference: &str) -> RougeScore {
        lcs_score(&self.tokenize(prediction), &self.tokenize(reference))
    }

    /// ROUGE-Lsum: summary-level union LCS over sentences separated by `\n`.
    pub fn rouge_lsum(&self, prediction: &str, reference: &str) -> RougeScore {
        let sentences = |text: &str| -> Vec<Vec<String>> {
            text.split('\n')
                .filter(|s| !s.is_empty())
                .map(|s| self.tokenize(s))
                .collect()
        };
        summary_level_lcs(&sentences(reference), &sentences(prediction))
    }
}

/// Corpus ROUGE of aligned predictions and references (one reference per prediction): the
/// per-pair scores and the mean F-measure of each variant.
///
/// ```
/// use kiln_metrics::corpus_rouge;
/// let c = corpus_rouge(&["a b c", "x y"], &["a b c", "x z"], false).unwrap();
/// assert!((c.rouge1 - 0.75).abs() < 1e-12);
/// assert_eq!(c.per_pair.len(), 2);
/// ```
///
/// # Errors
/// [`MetricsError::LengthMismatch`] or [`MetricsError::Empty`].
pub fn corpus_rouge<P: AsRef<str>, R: AsRef<str>>(
    predictions: &[P],
    references: &[R],
    use_stemmer: bool,
) -> Result<CorpusRouge> {
    check_aligned(predictions.len(), references.len())?;
    let scorer = RougeScorer::new(use_stemmer);
    let per_pair: Vec<RougeScores> = predictions
        .iter()
        .zip(references)
        .map(|(p, r)| scorer.score(p.as_ref(), r.as_ref()))
        .collect();
    let n = per_pair.len() as f64;
    let mean = |get: fn(&RougeScores) -> f64| per_pair.iter().map(get).sum::<f64>() / n;
    Ok(CorpusRouge {
        rouge1: mean(|s| s.rouge1.fmeasure),
        rouge2: mean(|s| s.rouge2.fmeasure),
        rouge_l: mean(|s| s.rouge_l.fmeasure),
        rouge_lsum: mean(|s| s.rouge_lsum.fmeasure),
        per_pair,
    })
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

fn ngram_score(prediction: &[String], reference: &[String], n: usize) -> RougeScore {
    let pred = ngram_counts(prediction, n);
    let refs = ngram_counts(reference, n);
    let overlap: usize = refs
        .iter()
        .map(|(g, &c)| c.min(pred.get(g).copied().unwrap_or(0)))
        .sum();
    let pred_total: usize = pred.values().sum();
    let ref_total: usize = refs.values().sum();
    RougeScore::new(
        overlap as f64 / pred_total.max(1) as f64,
        overlap as f64 / ref_total.max(1) as f64,
    )
}

/// Dynamic-programming LCS table of `(a.len() + 1) x (b.len() + 1)` entries.
fn lcs_table(a: &[String], b: &[String]) -> Vec<Vec<usize>> {
    let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i][j] = if a[i - 1] == b[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    t
}

fn lcs_score(prediction: &[String], reference: &[String]) -> RougeScore {
    if prediction.is_empty() || reference.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_table(reference, prediction)[reference.len()][prediction.len()];
    RougeScore::new(
        lcs as f64 / prediction.len() as f64,
        lcs as f64 / reference.len() as f64,
    )
}

/// Indices into `reference` of one longest common subsequence with `candidate`, chosen by the
/// same backtracking as `rouge-score`.
fn lcs_indices(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let t = lcs_table(reference, candidate);
    let (mut i, mut j) = (reference.len(), candidate.len());
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == candidate[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i][j - 1] > t[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    out.reverse();
    out
}

fn summary_level_lcs(reference: &[Vec<String>], candidate: &[Vec<String>]) -> RougeScore {
    if reference.is_empty() || candidate.is_empty() {
        return RougeScore::default();
    }
    let m: usize = reference.iter().map(Vec::len).sum();
    let n: usize = candidate.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return RougeScore::default();
    }
    let mut counts_r: HashMap<&str, usize> = HashMap::new();
    let mut counts_c: HashMap<&str, usize> = HashMap::new();
    for t in reference.iter().flatten() {
        *counts_r.entry(t).or_default() += 1;
    }
    for t in candidate.iter().flatten() {
        *counts_c.entry(t).or_default() += 1;
    }
    let mut hits = 0usize;
    for r in reference {
        let union: BTreeSet<usize> = candidate.iter().flat_map(|c| lcs_indices(r, c)).collect();
        for i in union {
            let t = r[i].as_str();
            let (Some(cc), Some(cr)) = (counts_c.get_mut(t), counts_r.get_mut(t)) else {
                continue;
            };
            if *cc > 0 && *cr > 0 {
                hits += 1;
                *cc -= 1;
                *cr -= 1;
            }
        }
    }
    RougeScore::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn tokenizer_drops_non_ascii_and_punctuation() {
        assert_eq!(
            rouge_tokenize("Don't STOP—now!", false),
            ["don", "t", "stop", "now"]
        );
        assert_eq!(rouge_tokenize("café naïve", false), ["caf", "na", "ve"]);
        assert!(rouge_tokenize("  ... ", true).is_empty());
        // only tokens longer than three characters are stemmed
        assert_eq!(rouge_tokenize("was uses", true), ["was", "use"]);
    }

    #[test]
    fn rouge_n_counts_clipped_overlap() {
        let s = ngram_score(&toks("a a b"), &toks("a b b"), 1);
        assert!((s.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.recall - 2.0 / 3.0).abs() < 1e-12);
        let s = ngram_score(&toks("a"), &toks("a"), 2);
        assert_eq!(s, RougeScore::default());
        assert!(RougeScorer::new(false).rouge_n("a", "a", 0).is_err());
    }

    #[test]
    fn rouge_l_uses_the_lcs() {
        let s = lcs_score(&toks("a x b y c"), &toks("a b c d"));
        assert!((s.precision - 3.0 / 5.0).abs() < 1e-12);
        assert!((s.recall - 3.0 / 4.0).abs() < 1e-12);
        assert_eq!(lcs_score(&[], &toks("a")), RougeScore::default());
    }

    #[test]
    fn union_lcs_example_from_the_paper() {
        // Lin (2004): r = w1 w2 w3 w4 w5, c1 = w1 w2 w6 w7 w8, c2 = w1 w3 w8 w9 w5
        // union LCS = w1 w2 w3 w5, so recall = 4/5 and precision = 4/10
        let r = vec![toks("w1 w2 w3 w4 w5")];
        let c = vec![toks("w1 w2 w6 w7 w8"), toks("w1 w3 w8 w9 w5")];
        let s = summary_level_lcs(&r, &c);
        assert!((s.recall - 0.8).abs() < 1e-12);
        assert!((s.precision - 0.4).abs() < 1e-12);
    }

    #[test]
    fn lsum_ignores_blank_lines_and_single_line_equals_rouge_l() {
        let scorer = RougeScorer::new(false);
        let a = scorer.rouge_lsum("the engine stalls at idle", "engine stalls when idle");
        let b = scorer.rouge_l("the engine stalls at idle", "engine stalls when idle");
        assert_eq!(a, b);
        let c = scorer.rouge_lsum("one two\n\nthree", "one two\nthree");
        assert_eq!(c.fmeasure, 1.0);
    }

    #[test]
    fn score_multi_picks_best_reference() {
        let scorer = RougeScorer::new(false);
        let s = scorer.score_multi("a b c", &["x y z", "a b c"]).unwrap();
        assert_eq!(s.rouge1.fmeasure, 1.0);
        let none: [&str; 0] = [];
        assert!(scorer.score_multi("a", &none).is_err());
    }
}
