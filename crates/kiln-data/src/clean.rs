//! Cleaning: exact and normalized duplicate removal and length filters, with a report of what
//! was dropped and why.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::Example;

/// Which duplicates to drop (the first occurrence is kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dedup {
    /// Keep duplicates.
    Off,
    /// Drop examples whose text is identical to an earlier one.
    #[default]
    Exact,
    /// Also drop examples equal to an earlier one after lower-casing and collapsing whitespace.
    Normalized,
}

/// Cleaning settings. Character limits apply to an example's whole text (prompt and
/// completion, every turn); token limits to its tokenized length.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CleanOptions {
    /// Duplicate removal.
    pub dedup: Dedup,
    /// Drop examples with fewer characters.
    pub min_chars: Option<usize>,
    /// Drop examples with more characters.
    pub max_chars: Option<usize>,
    /// Drop examples with fewer tokens.
    pub min_tokens: Option<usize>,
    /// Drop examples with more tokens (before truncation).
    pub max_tokens: Option<usize>,
}

/// Why an example was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Same text as an earlier example.
    ExactDuplicate,
    /// Same text as an earlier example up to case and whitespace.
    NormalizedDuplicate,
    /// Fewer characters than `min_chars`.
    TooFewChars,
    /// More characters than `max_chars`.
    TooManyChars,
    /// Fewer tokens than `min_tokens`.
    TooFewTokens,
    /// More tokens than `max_tokens`, or than the sequence limit with the `skip` truncation
    /// policy.
    TooManyTokens,
    /// A malformed record skipped at the user's request.
    Malformed,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExactDuplicate => "exact duplicate",
            Self::NormalizedDuplicate => "duplicate after normalization",
            Self::TooFewChars => "too few characters",
            Self::TooManyChars => "too many characters",
            Self::TooFewTokens => "too few tokens",
            Self::TooManyTokens => "too many tokens",
            Self::Malformed => "malformed record",
        })
    }
}

/// Counts of kept and dropped examples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanReport {
    /// Examples seen.
    pub seen: usize,
    /// Examples kept.
    pub kept: usize,
    /// Dropped examples by reason.
    pub dropped: BTreeMap<DropReason, usize>,
}

impl CleanReport {
    /// Records a dropped example.
    pub fn drop_one(&mut self, reason: DropReason) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// Total dropped examples.
    pub fn total_dropped(&self) -> usize {
        self.dropped.values().sum()
    }
}

impl fmt::Display for CleanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kept {} of {} examples", self.kept, self.seen)?;
        for (reason, n) in &self.dropped {
            write!(f, "; {n} dropped: {reason}")?;
        }
        Ok(())
    }
}

/// A streaming cleaner: call [`Cleaner::check_text`] for every example in order (it remembers
/// 64-bit hashes of the texts it has seen, not the texts) and [`Cleaner::check_tokens`] once it
/// is tokenized.
#[derive(Debug, Clone, Default)]
pub struct Cleaner {
    options: CleanOptions,
    exact: HashSet<u64>,
    normalized: HashSet<u64>,
    report: CleanReport,
}

fn hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Lower-cases and collapses runs of whitespace to one space, trimming the ends.
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Cleaner {
    /// A cleaner.
    pub fn new(options: CleanOptions) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    /// The text-level verdict on an example: `None` to keep it (it then counts as seen for
    /// duplicates), else why it is dropped (counted in the report).
    pub fn check_text(&mut self, example: &Example) -> Option<DropReason> {
        self.report.seen += 1;
        let text = example.content.joined_text();
        let chars = example.content.char_count();
        let reason = if self.options.min_chars.is_some_and(|m| chars < m) {
            Some(DropReason::TooFewChars)
        } else if self.options.max_chars.is_some_and(|m| chars > m) {
            Some(DropReason::TooManyChars)
        } else if self.options.dedup != Dedup::Off && !self.exact.insert(hash(&text)) {
            Some(DropReason::ExactDuplicate)
        } else if self.options.dedup == Dedup::Normalized
            && !self.normalized.insert(hash(&normalize(&text)))
        {
            Some(DropReason::NormalizedDuplicate)
        } else {
            None
        };
        match reason {
            Some(r) => self.report.drop_one(r),
            None => self.report.kept += 1,
        }
        reason
    }

    /// The token-level verdict on an example that passed [`Self::check_text`].
    pub fn check_tokens(&mut self, len: usize) -> Option<DropReason> {
        let reason = if self.options.min_tokens.is_some_and(|m| len < m) {
            Some(DropReason::TooFewTokens)
        } else if self.options.max_tokens.is_some_and(|m| len > m) {
            Some(DropReason::TooManyTokens)
        } else {
            None
        };
        if let Some(r) = reason {
            self.drop_kept(r);
        }
        reason
    }

    /// Moves an example counted as kept to the dropped counts (e.g. skipped as too long later).
    pub fn drop_kept(&mut self, reason: DropReason) {
        self.report.kept = self.report.kept.saturating_sub(1);
        self.report.drop_one(reason);
    }

    /// Counts a record that was skipped before it became an example.
    pub fn skip_malformed(&mut self) {
        self.report.seen += 1;
        self.report.drop_one(DropReason::Malformed);
    }

    /// The report so far.
    pub fn report(&self) -> &CleanReport {
        &self.report
    }

    /// The final report.
    pub fn into_report(self) -> CleanReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Content;
    use std::path::Path;

    fn text(t: &str) -> Example {
        Example {
            path: Path::new("x").into(),
            line: 1,
            content: Content::Text { text: t.into() },
        }
    }

    #[test]
    fn character_limits_count_the_text_only() {
        let mut c = Cleaner::new(CleanOptions {
            max_chars: Some(4),
            ..CleanOptions::default()
        });
        let ex = |p: &str, q: &str| Example {
            path: Path::new("x").into(),
            line: 1,
            content: Content::Completion {
                prompt: p.into(),
                completion: q.into(),
            },
        };
        assert_eq!(c.check_text(&ex("ab", "cd")), None);
        assert_eq!(
            c.check_text(&ex("ab", "cde")),
            Some(DropReason::TooManyChars)
        );
        // The same text split differently is not a duplicate.
        assert_eq!(c.check_text(&ex("a", "bcd")), None);
    }

    fn run(options: CleanOptions, texts: &[&str]) -> (Vec<String>, CleanReport) {
        let mut c = Cleaner::new(options);
        let kept = texts
            .iter()
            .filter(|t| c.check_text(&text(t)).is_none())
            .map(|t| t.to_string())
            .collect();
        (kept, c.into_report())
    }

    const TEXTS: [&str; 5] = [
        "Engine misfire",
        "Engine misfire",
        "engine   MISFIRE ",
        "Lean",
        "x",
    ];

    #[test]
    fn exact_and_normalized_dedup() {
        let (kept, report) = run(CleanOptions::default(), &TEXTS);
        assert_eq!(kept, ["Engine misfire", "engine   MISFIRE ", "Lean", "x"]);
        assert_eq!(report.dropped[&DropReason::ExactDuplicate], 1);
        let (kept, report) = run(
            CleanOptions {
                dedup: Dedup::Normalized,
                ..CleanOptions::default()
            },
            &TEXTS,
        );
        assert_eq!(kept, ["Engine misfire", "Lean", "x"]);
        assert_eq!(report.dropped[&DropReason::NormalizedDuplicate], 1);
        assert_eq!(
            (report.seen, report.kept, report.total_dropped()),
            (5, 3, 2)
        );
        let (kept, _) = run(
            CleanOptions {
                dedup: Dedup::Off,
                ..CleanOptions::default()
            },
            &TEXTS,
        );
        assert_eq!(kept.len(), 5);
    }

    #[test]
    fn length_filters_and_report() {
        let (kept, report) = run(
            CleanOptions {
                min_chars: Some(2),
                max_chars: Some(14),
                ..CleanOptions::default()
            },
            &TEXTS,
        );
        assert_eq!(kept, ["Engine misfire", "Lean"]);
        assert_eq!(report.dropped[&DropReason::TooFewChars], 1);
        assert_eq!(report.dropped[&DropReason::TooManyChars], 1);
        assert_eq!(report.dropped[&DropReason::ExactDuplicate], 1);
        let shown = report.to_string();
        assert!(shown.starts_with("kept 2 of 5 examples"), "{shown}");
        assert!(shown.contains("1 dropped: too few characters"), "{shown}");

        let mut c = Cleaner::new(CleanOptions {
            min_tokens: Some(2),
            max_tokens: Some(4),
            ..CleanOptions::default()
        });
        for (t, len) in [("a", 1), ("b", 3), ("c", 5)] {
            if c.check_text(&text(t)).is_none() {
                c.check_tokens(len);
            }
        }
        let r = c.into_report();
        assert_eq!(r.kept, 1);
        assert_eq!(r.dropped[&DropReason::TooFewTokens], 1);
        assert_eq!(r.dropped[&DropReason::TooManyTokens], 1);
    }
}
