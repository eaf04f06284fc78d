//! Judging an answer about a code: right, an admitted "I do not know", another code's
//! description, or invented. The last two are hallucinations.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Dtc;
use super::augment::UNKNOWN_ANSWER;

/// What an answer about a code turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The answer holds the code's own description.
    Correct,
    /// The answer says it does not know.
    Unknown,
    /// The answer holds the description of another code.
    OtherCode,
    /// The answer holds neither: a made-up description.
    Invented,
}

impl Verdict {
    /// Whether the answer states something false about the code.
    pub fn is_hallucination(self) -> bool {
        matches!(self, Self::OtherCode | Self::Invented)
    }
}

/// Judges answers against the code list.
#[derive(Debug, Clone)]
pub struct Judge {
    /// Normalized description of each code.
    own: HashMap<String, String>,
    /// Normalized descriptions long enough to be recognised inside an answer.
    descriptions: Vec<String>,
}

/// Lower case, every run of non-alphanumeric characters one space, trimmed.
fn normalized(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out.trim().to_string()
}

const ADMISSIONS: [&str; 4] = [
    "do not know",
    "don t know",
    "not sure what",
    "no information",
];

impl Judge {
    /// A judge over `codes`.
    pub fn new(codes: &[Dtc]) -> Self {
        let mut descriptions: Vec<String> = codes
            .iter()
            .map(|c| normalized(&c.description))
            .filter(|d| d.len() >= 8)
            .collect();
        descriptions.sort_unstable();
        descriptions.dedup();
        Self {
            own: codes
                .iter()
                .map(|c| (c.code.to_uppercase(), normalized(&c.description)))
                .collect(),
            descriptions,
        }
    }

    /// The verdict on `answer` to a question about `code`. A code the judge does not know is
    /// judged by the other rules only (never [`Verdict::Correct`]).
    pub fn verdict(&self, answer: &str, code: &str) -> Verdict {
        let a = normalized(answer);
        let own = self.own.get(&code.to_uppercase());
        if own.is_some_and(|d| !d.is_empty() && a.contains(d.as_str())) {
            return Verdict::Correct;
        }
        let unknown = normalized(UNKNOWN_ANSWER);
        if a.contains(&unknown) || ADMISSIONS.iter().any(|p| a.contains(p)) {
            return Verdict::Unknown;
        }
        if self
            .descriptions
            .iter()
            .any(|d| Some(d) != own && a.contains(d.as_str()))
        {
            return Verdict::OtherCode;
        }
        Verdict::Invented
    }

    /// The share of hallucinated answers ([`Verdict::is_hallucination`]) among `answers` to
    /// questions about `codes` (0 without answers).
    pub fn hallucination_rate(&self, answers: &[String], codes: &[String]) -> f64 {
        let n = answers.len().min(codes.len());
        if n == 0 {
            return 0.0;
        }
        let bad = answers
            .iter()
            .zip(codes)
            .filter(|(a, c)| self.verdict(a, c).is_hallucination())
            .count();
        bad as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::super::augment::unknown_answer;
    use super::*;

    #[test]
    fn verdicts() {
        let dtc = |c: &str, d: &str| Dtc {
            code: c.into(),
            description: d.into(),
            line: 1,
        };
        let judge = Judge::new(&[
            dtc("P0300", "Random/Multiple Cylinder Misfire Detected"),
            dtc(
                "P0420",
                "Catalyst System Efficiency Below Threshold (Bank 1)",
            ),
        ]);
        let v = |a: &str| judge.verdict(a, "P0300");
        assert_eq!(
            v("P0300: Random/Multiple Cylinder Misfire Detected"),
            Verdict::Correct
        );
        assert_eq!(
            v("It means random multiple cylinder misfire detected."),
            Verdict::Correct
        );
        assert_eq!(v(&unknown_answer("P0300")), Verdict::Unknown);
        assert_eq!(v("Sorry, I don't know."), Verdict::Unknown);
        assert_eq!(
            v("P0300: Catalyst System Efficiency Below Threshold (Bank 1)"),
            Verdict::OtherCode
        );
        assert_eq!(v("P0300: Fuel Pump Relay Stuck"), Verdict::Invented);
        assert_eq!(judge.verdict("anything", "B1234"), Verdict::Invented);
        let answers = vec![
            "P0300: Random/Multiple Cylinder Misfire Detected".into(),
            "x".into(),
        ];
        let codes = vec!["P0300".into(), "P0420".into()];
        assert!((judge.hallucination_rate(&answers, &codes) - 0.5).abs() < 1e-12);
        assert_eq!(judge.hallucination_rate(&[], &[]), 0.0);
    }
}
