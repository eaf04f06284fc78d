//! BLEU (Papineni et al., 2002) with the conventions of `sacrebleu`.
//!
//! Text is tokenized with the `13a` tokenizer of `mteval-v13a.pl` ([`tokenize_13a`]), n-grams up
//! to order 4 are matched with clipped counts against the union (per-n-gram maximum) of the
//! references, and the brevity penalty uses, for every segment, the reference length closest to
//! the hypothesis length (the shorter one on ties).
//!
//! [`corpus_bleu`] matches `sacrebleu.corpus_bleu(hyps, refs)` with its defaults: mixed case,
//! `exp` smoothing, no effective order. [`sentence_bleu`] matches `sacrebleu.sentence_bleu`,
//! which is the same computation on a single segment with the effective order enabled.
//!
//! ```
//! use kiln_metrics::{corpus_bleu, sentence_bleu};
//!
//! let hyps = ["The engine misfires at idle.", "Check the spark plugs."];
//! let refs = [
//!     vec!["The engine misfires at idle."],
//!     vec!["Inspect the spark plugs.", "Check all spark plugs."],
//! ];
//! let bleu = corpus_bleu(&hyps, &refs).unwrap();
//! assert!(bleu.score > 60.0 && bleu.score < 100.0);
//! assert_eq!(bleu.sys_len, 11);
//!
//! let exact = sentence_bleu("P0300 detected", &["P0300 detected"]).unwrap();
//! assert!((exact.score - 100.0).abs() < 1e-9);
//! ```

use std::collections::HashMap;

use crate::error::{MetricsError, Result};
use crate::text::{is_py_space, py_split};

/// Default maximum n-gram order.
pub const MAX_NGRAM_ORDER: usize = 4;

/// Smoothing of zero n-gram precisions (Chen & Cherry, 2014).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Smoothing {
    /// No smoothing: a zero precision makes the score zero.
    None,
    /// Method 1: a zero match count is replaced by the given value (`sacrebleu` uses 0.1).
    Floor(f64),
    /// Method 2: the given value is added to match and total counts of orders 2 and above
    /// (`sacrebleu` uses 1).
    AddK(f64),
    /// Method 3, the NIST `mteval-v13a.pl` smoothing: the k-th order with no match gets the
    /// precision `1 / (2^k * total)`. The default.
    #[default]
    Exp,
}

/// Settings of a BLEU computation.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuOptions {
    /// Lower-case hypotheses and references before tokenization.
    pub lowercase: bool,
    /// Smoothing of zero precisions.
    pub smoothing: Smoothing,
    /// Highest n-gram order (at least 1).
    pub max_ngram_order: usize,
    /// Average the log precisions only over the orders for which the hypotheses contain at least
    /// one n-gram (needed for meaningful sentence-level scores).
    pub effective_order: bool,
}

impl BleuOptions {
    /// The defaults of `sacrebleu.corpus_bleu`: mixed case, `exp` smoothing, order 4, no
    /// effective order.
    pub fn corpus() -> Self {
        Self {
            lowercase: false,
            smoothing: Smoothing::Exp,
            max_ngram_order: MAX_NGRAM_ORDER,
            effective_order: false,
        }
    }

    /// The defaults of `sacrebleu.sentence_bleu`: as [`BleuOptions::corpus`] but with the
    /// effective order.
    pub fn sentence() -> Self {
        Self {
            effective_order: true,
            ..Self::corpus()
        }
    }
}

impl Default for BleuOptions {
    fn default() -> Self {
        Self::corpus()
    }
}

/// A BLEU score with its sufficient statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    /// BLEU on a 0..=100 scale.
    pub score: f64,
    /// Clipped n-gram matches per order (index 0 is unigrams). These are the raw counts, also
    /// under [`Smoothing::AddK`] (`sacrebleu` reports them with `k` added from order 2 on).
    pub counts: Vec<u64>,
    /// Hypothesis n-grams per order (raw, as [`BleuScore::counts`]).
    pub totals: Vec<u64>,
    /// Smoothed n-gram precisions per order on a 0..=100 scale. All zero when no n-gram of any
    /// order matched.
    pub precisions: Vec<f64>,
    /// Brevity penalty.
    pub bp: f64,
    /// Total hypothesis length in tokens.
    pub sys_len: usize,
    /// Total effective reference length in tokens.
    pub ref_len: usize,
}

impl BleuScore {
    /// Hypothesis to reference length ratio (0 when the reference length is 0).
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }
}

/// The `13a` tokenizer of `mteval-v13a.pl`, as implemented by `sacrebleu`.
///
/// Removes `<skipped>` markers, joins lines, unescapes `&quot; &amp; &lt; &gt;`, puts spaces
/// around ASCII punctuation and symbols except `'`, `-`, `.` and `,`, splits `.` and `,` unless
/// they sit between digits on the relevant side, splits `-` after a digit, and collapses
/// whitespace.
///
/// ```
/// use kiln_metrics::tokenize_13a;
/// assert_eq!(
///     tokenize_13a("P0300 Random/Multiple Cylinder Misfire, 1,500 rpm."),
///     "P0300 Random / Multiple Cylinder Misfire , 1,500 rpm ."
/// );
/// ```
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line.replace("<skipped>", "");
    line = line.replace("-\n", "");
    line = line.replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"");
        line = line.replace("&amp;", "&");
        line = line.replace("&lt;", "<");
        line = line.replace("&gt;", ">");
    }
    tokenize_re(&format!(" {line} "))
}

/// Characters of the class `[\{-\~\[-\` -\&\(-\+\:-\@\/]`.
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// Applies a two-character pattern `([first])([second])` left to right without overlaps, like
/// `re.sub`, writing each match with `write`.
fn pair_pass(
    chars: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    write: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && first(chars[i]) && second(chars[i + 1]) {
            write(chars[i], chars[i + 1], &mut out);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The language-dependent regular-expression part of the `13a` tokenizer.
fn tokenize_re(line: &str) -> String {
    let mut chars = Vec::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_13a_symbol(c) {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let period_comma = |c: char| c == '.' || c == ',';
    // period and comma unless preceded by a digit: `([^0-9])([\.,])` -> `\1 \2 `
    let chars = pair_pass(
        &chars,
        |c| !digit(c),
        period_comma,
        |a, b, out| out.extend([a, ' ', b, ' ']),
    );
    // period and comma unless followed by a digit: `([\.,])([^0-9])` -> ` \1 \2`
    let chars = pair_pass(
        &chars,
        period_comma,
        |c| !digit(c),
        |a, b, out| out.extend([' ', a, ' ', b]),
    );
    // dash preceded by a digit: `([0-9])(-)` -> `\1 \2 `
    let chars = pair_pass(
        &chars,
        digit,
        |c| c == '-',
        |a, b, out| out.extend([a, ' ', b, ' ']),
    );
    let joined: String = chars.into_iter().collect();
    py_split(&joined).collect::<Vec<_>>().join(" ")
}

/// Lower-casing (optional), right-stripping and `13a` tokenization of one segment.
fn preprocess(segment: &str, lowercase: bool) -> String {
    let lowered;
    let segment = if lowercase {
        lowered = segment.to_lowercase();
        lowered.as_str()
    } else {
        segment
    };
    tokenize_13a(segment.trim_end_matches(is_py_space))
}

/// Counts of all n-grams of orders `1..=max_order`.
fn ngram_counts<'a>(tokens: &'a [&'a str], max_order: usize) -> HashMap<&'a [&'a str], u64> {
    let mut counts = HashMap::new();
    for n in 1..=max_order.min(tokens.len()) {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// Reference length closest to the hypothesis length; the shorter one on ties.
fn closest_ref_len(hyp_len: usize, ref_lens: &[usize]) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            Some((d, l)) if d < diff || (d == diff && l <= len) => Some((d, l)),
            _ => Some((diff, len)),
        };
    }
    best.map_or(0, |(_, l)| l)
}

/// Sufficient statistics of one segment, added into `stats`.
struct Stats {
    sys_len: usize,
    ref_len: usize,
    correct: Vec<u64>,
    total: Vec<u64>,
}

fn add_segment_stats(stats: &mut Stats, hypothesis: &str, references: &[String], max_order: usize) {
    let ref_tokens: Vec<Vec<&str>> = references
        .iter()
        .map(|r| r.split(' ').filter(|t| !t.is_empty()).collect())
        .collect();
    let mut ref_ngrams: HashMap<&[&str], u64> = HashMap::new();
    for tokens in &ref_tokens {
        for (gram, count) in ngram_counts(tokens, max_order) {
            let slot = ref_ngrams.entry(gram).or_insert(0);
            *slot = (*slot).max(count);
        }
    }
    let ref_lens: Vec<usize> = ref_tokens.iter().map(Vec::len).collect();
    let hyp_tokens: Vec<&str> = hypothesis.split(' ').filter(|t| !t.is_empty()).collect();
    stats.sys_len += hyp_tokens.len();
    stats.ref_len += closest_ref_len(hyp_tokens.len(), &ref_lens);
    for (gram, count) in ngram_counts(&hyp_tokens, max_order) {
        let n = gram.len() - 1;
        stats.total[n] += count;
        if let Some(&r) = ref_ngrams.get(gram) {
            stats.correct[n] += count.min(r);
        }
    }
}

/// `log` floored at a very low value for zero, as `sacrebleu` does.
fn floored_log(x: f64) -> f64 {
    if x == 0.0 { -9_999_999_999.0 } else { x.ln() }
}

/// BLEU from aggregated statistics (`sacrebleu`'s `BLEU.compute_bleu`).
fn compute_bleu(stats: Stats, options: &BleuOptions) -> BleuScore {
    let Stats {
        sys_len,
        ref_len,
        correct,
        total,
    } = stats;
    let max_order = options.max_ngram_order;
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = vec![0.0; max_order];
    let done = |score, precisions| BleuScore {
        score,
        counts: correct.clone(),
        totals: total.clone(),
        precisions,
        bp,
        sys_len,
        ref_len,
    };
    if correct.iter().all(|&c| c == 0) {
        return done(0.0, precisions);
    }
    let mut smooth_mteval = 1.0;
    let mut eff_order = max_order;
    for n in 0..max_order {
        let (mut c, mut t) = (correct[n] as f64, total[n] as f64);
        if let Smoothing::AddK(k) = options.smoothing
            && n > 0
        {
            c += k;
            t += k;
        }
        if t == 0.0 {
            break;
        }
        if options.effective_order {
            eff_order = n + 1;
        }
        if c == 0.0 {
            match options.smoothing {
                Smoothing::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n] = 100.0 / (smooth_mteval * t);
                }
                Smoothing::Floor(v) => precisions[n] = 100.0 * v / t,
                Smoothing::None | Smoothing::AddK(_) => {}
            }
        } else {
            precisions[n] = 100.0 * c / t;
        }
    }
    let log_sum: f64 = precisions[..eff_order]
        .iter()
        .map(|&p| floored_log(p))
        .sum();
    let score = bp * (log_sum / eff_order as f64).exp();
    done(score, precisions)
}

/// Corpus BLEU with explicit [`BleuOptions`].
///
/// `references[i]` holds the references of `hypotheses[i]`; their number may vary from one
/// hypothesis to the next (an empty string counts as a reference of length 0).
///
/// # Errors
/// [`MetricsError::LengthMismatch`] when the lists differ in length, [`MetricsError::Empty`] for
/// no hypothesis, [`MetricsError::NoReference`] for a hypothesis without reference and
/// [`MetricsError::InvalidParameter`] for a maximum order of 0.
pub fn corpus_bleu_with<H, R, S>(
    options: &BleuOptions,
    hypotheses: &[H],
    references: &[R],
) -> Result<BleuScore>
where
    H: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    crate::error::check_aligned(hypotheses.len(), references.len())?;
    if options.max_ngram_order == 0 {
        return Err(MetricsError::InvalidParameter {
            name: "max_ngram_order",
            reason: "must be at least 1".into(),
        });
    }
    let max_order = options.max_ngram_order;
    let mut stats = Stats {
        sys_len: 0,
        ref_len: 0,
        correct: vec![0; max_order],
        total: vec![0; max_order],
    };
    for (index, (hyp, refs)) in hypotheses.iter().zip(references).enumerate() {
        let refs = refs.as_ref();
        if refs.is_empty() {
            return Err(MetricsError::NoReference { index });
        }
        let refs: Vec<String> = refs
            .iter()
            .map(|r| preprocess(r.as_ref(), options.lowercase))
            .collect();
        let hyp = preprocess(hyp.as_ref(), options.lowercase);
        add_segment_stats(&mut stats, &hyp, &refs, max_order);
    }
    Ok(compute_bleu(stats, options))
}

/// Corpus BLEU with the defaults of `sacrebleu.corpus_bleu` ([`BleuOptions::corpus`]).
///
/// `references[i]` holds the references of `hypotheses[i]`.
///
/// # Errors
/// As [`corpus_bleu_with`].
pub fn corpus_bleu<H, R, S>(hypotheses: &[H], references: &[R]) -> Result<BleuScore>
where
    H: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    corpus_bleu_with(&BleuOptions::corpus(), hypotheses, references)
}

/// Sentence BLEU of one hypothesis against one or more references, with explicit options.
///
/// # Errors
/// As [`corpus_bleu_with`].
pub fn sentence_bleu_with<S: AsRef<str>>(
    options: &BleuOptions,
    hypothesis: &str,
    references: &[S],
) -> Result<BleuScore> {
    corpus_bleu_with(options, &[hypothesis], &[references])
}

/// Sentence BLEU with the defaults of `sacrebleu.sentence_bleu` ([`BleuOptions::sentence`]).
///
/// # Errors
/// [`MetricsError::NoReference`] when `references` is empty.
pub fn sentence_bleu<S: AsRef<str>>(hypothesis: &str, references: &[S]) -> Result<BleuScore> {
    sentence_bleu_with(&BleuOptions::sentence(), hypothesis, references)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_13a_rules() {
        assert_eq!(tokenize_13a("Hello, world!"), "Hello , world !");
        assert_eq!(tokenize_13a("3.14 and 1,000."), "3.14 and 1,000 .");
        assert_eq!(tokenize_13a("10-20 well-known"), "10 - 20 well-known");
        assert_eq!(tokenize_13a("don't"), "don't");
        assert_eq!(
            tokenize_13a("a&amp;b &lt;x&gt; &quot;q&quot;"),
            "a & b < x > \" q \""
        );
        assert_eq!(
            tokenize_13a("multi-\nline\ntext<skipped>"),
            "multiline text"
        );
        assert_eq!(tokenize_13a("a.."), "a . .");
        assert_eq!(tokenize_13a(".5 5."), ". 5 5 .");
        assert_eq!(tokenize_13a(""), "");
    }

    #[test]
    fn closest_reference_length_prefers_shorter_on_ties() {
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[3, 7]), 3);
        assert_eq!(closest_ref_len(5, &[9, 6, 4]), 4);
        assert_eq!(closest_ref_len(5, &[5, 4]), 5);
    }

    #[test]
    fn identical_corpus_scores_100() {
        let hyps = ["the cat sat on the mat", "a quick brown fox jumps"];
        let refs = [["the cat sat on the mat"], ["a quick brown fox jumps"]];
        let s = corpus_bleu(&hyps, &refs).unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
        assert_eq!(s.bp, 1.0);
        assert_eq!(s.counts, s.totals);
        assert_eq!((s.sys_len, s.ref_len), (11, 11));
    }

    #[test]
    fn exp_smoothing_and_brevity_penalty() {
        // hyp: 4 tokens, all unigrams and one bigram match, no trigram/4-gram match
        let s = sentence_bleu("a b x y", &["a b c d e f"]).unwrap();
        assert_eq!(s.counts, vec![2, 1, 0, 0]);
        assert_eq!(s.totals, vec![4, 3, 2, 1]);
        let p = [50.0, 100.0 / 3.0, 100.0 / (2.0 * 2.0), 100.0 / (4.0 * 1.0)];
        for (a, b) in s.precisions.iter().zip(p) {
            assert!((a - b).abs() < 1e-12);
        }
        let bp = (1.0 - 6.0 / 4.0_f64).exp();
        assert!((s.bp - bp).abs() < 1e-12);
        let expected = bp * (p.iter().map(|x| x.ln()).sum::<f64>() / 4.0).exp();
        assert!((s.score - expected).abs() < 1e-9);
    }

    #[test]
    fn no_match_and_empty_hypothesis() {
        let s = corpus_bleu(&["zzz"], &[["a b c"]]).unwrap();
        assert_eq!(s.score, 0.0);
        assert_eq!(s.precisions, vec![0.0; 4]);
        let s = corpus_bleu(&[""], &[["a b c"]]).unwrap();
        assert_eq!((s.score, s.bp, s.sys_len, s.ref_len), (0.0, 0.0, 0, 3));
    }

    #[test]
    fn short_hypothesis_needs_effective_order() {
        // two tokens: no 3-grams, so corpus BLEU without effective order is 0
        let c = corpus_bleu(&["a b"], &[["a b"]]).unwrap();
        assert_eq!(c.score, 0.0);
        let s = sentence_bleu("a b", &["a b"]).unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
    }

    #[test]
    fn errors() {
        let none: [&[&str]; 1] = [&[]];
        assert_eq!(
            corpus_bleu(&["a"], &none),
            Err(MetricsError::NoReference { index: 0 })
        );
        let empty: [[&str; 1]; 0] = [];
        let no_hyps: [&str; 0] = [];
        assert_eq!(corpus_bleu(&no_hyps, &empty), Err(MetricsError::Empty));
        assert!(matches!(
            corpus_bleu(&["a", "b"], &[["a"]]),
            Err(MetricsError::LengthMismatch { .. })
        ));
        let opts = BleuOptions {
            max_ngram_order: 0,
            ..BleuOptions::corpus()
        };
        assert!(matches!(
            sentence_bleu_with(&opts, "a", &["a"]),
            Err(MetricsError::InvalidParameter { .. })
        ));
    }
}
