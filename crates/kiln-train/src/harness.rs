//! Evaluation harness: generate answers with a base and a tuned model, score them against
//! references with `kiln-metrics`, measure forgetting, and write a side-by-side report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::module::Module;
use serde::{Deserialize, Serialize};

use kiln_data::TokenizedExample;
use kiln_models::{CachedCausalLm, CausalLm, GenerationConfig, generate};

use crate::checkpoint::write_json;
use crate::eval::evaluate;
use crate::{Result, TrainError};

/// One test question: the tokenized prompt and the reference answer text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalCase {
    /// The prompt as the model sees it (chat template applied), token ids.
    pub prompt: Vec<u32>,
    /// The prompt as text, for the report.
    pub prompt_text: String,
    /// The expected answer.
    pub reference: String,
}

/// How answers are generated and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HarnessConfig {
    /// Decoding settings (greedy by default).
    pub generation: GenerationConfig,
    /// Padding token id (prompts are left-padded for generation, right-padded for perplexity).
    pub pad_id: u32,
    /// Prompts generated together.
    pub batch_size: usize,
    /// Example outputs shown in the Markdown report.
    pub examples_in_report: usize,
    /// Porter-stem tokens for ROUGE.
    pub rouge_stemmer: bool,
}

impl Default for HarnessConfig {
    fn default() -> Self {
        Self {
            generation: GenerationConfig::default(),
            pad_id: 0,
            batch_size: 8,
            examples_in_report: 5,
            rouge_stemmer: true,
        }
    }
}

/// Scores of a set of generated answers against their references.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationScores {
    /// SQuAD exact match, mean over cases, 0..=1.
    pub exact_match: f64,
    /// SQuAD token F1, mean over cases, 0..=1.
    pub token_f1: f64,
    /// Corpus BLEU (sacrebleu, 13a), 0..=100.
    pub bleu: f64,
    /// Mean ROUGE-1 F-measure.
    pub rouge1: f64,
    /// Mean ROUGE-2 F-measure.
    pub rouge2: f64,
    /// Mean ROUGE-L F-measure.
    pub rouge_l: f64,
    /// Mean ROUGE-Lsum F-measure.
    pub rouge_lsum: f64,
    /// Type-token ratio of all answers (`None` when they hold no word).
    pub type_token_ratio: Option<f64>,
    /// Distinct bigrams over bigrams.
    pub distinct_2: Option<f64>,
    /// Mean generated tokens per answer.
    pub mean_new_tokens: f64,
}

/// One model's answers and scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// Label in the report.
    pub name: String,
    /// Scores against the references.
    pub scores: GenerationScores,
    /// The answers, in case order.
    pub answers: Vec<String>,
    /// Perplexity on the general-text set (forgetting check).
    pub general_perplexity: Option<f64>,
}

/// Base and tuned model side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// The test cases.
    pub cases: Vec<EvalCase>,
    /// The model before tuning.
    pub base: ModelReport,
    /// The model after tuning.
    pub tuned: ModelReport,
    /// `tuned / base - 1` of the general-text perplexity: how much general language modelling
    /// got worse (positive) or better (negative).
    pub forgetting: Option<f64>,
    /// How answers were generated.
    pub config: HarnessConfig,
}

/// Generates one answer per case with `model` in validation mode (no autodiff, no dropout).
/// End-of-sequence tokens are dropped and the text is cut at the first stop string.
///
/// # Errors
/// A generation error (empty prompt, invalid configuration).
pub fn generate_answers<M>(
    model: &M,
    cases: &[EvalCase],
    config: &HarnessConfig,
    decode: &dyn Fn(&[u32]) -> String,
) -> Result<(Vec<String>, Vec<usize>)>
where
    M: CachedCausalLm + Module,
{
    let model = model.valid();
    let mut answers = Vec::with_capacity(cases.len());
    let mut lengths = Vec::with_capacity(cases.len());
    for chunk in cases.chunks(config.batch_size.max(1)) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|c| c.prompt.clone()).collect();
        let out = generate(
            &model,
            &prompts,
            config.pad_id,
            &config.generation,
            Some(decode),
            &mut |_, _| {},
        )?;
        for g in out {
            lengths.push(g.tokens.len());
            let kept: Vec<u32> = g
                .tokens
                .into_iter()
                .filter(|t| !config.generation.eos_token_ids.contains(t))
                .collect();
            let mut text = decode(&kept);
            for stop in &config.generation.stop_strings {
                if let Some(i) = text.find(stop.as_str()) {
                    text.truncate(i);
                }
            }
            answers.push(text.trim().to_string());
        }
    }
    Ok((answers, lengths))
}

/// An evaluation hook for [`crate::Fit::eval_hook`]: answers `cases` with the model being trained
/// and returns `exact_match`, `token_f1`, `bleu`, `rouge1` and `rouge_l`.
pub fn generation_metrics<'c, M>(
    cases: &'c [EvalCase],
    config: &'c HarnessConfig,
    decode: &'c dyn Fn(&[u32]) -> String,
) -> impl FnMut(&M) -> Result<BTreeMap<String, f64>> + 'c
where
    M: CachedCausalLm + Module,
{
    move |model: &M| {
        let (answers, _) = generate_answers(model, cases, config, decode)?;
        let references: Vec<String> = cases.iter().map(|c| c.reference.clone()).collect();
        let s = score_answers(&answers, &references, config.rouge_stemmer)?;
        Ok(BTreeMap::from([
            ("exact_match".to_string(), s.exact_match),
            ("token_f1".to_string(), s.token_f1),
            ("bleu".to_string(), s.bleu),
            ("rouge1".to_string(), s.rouge1),
            ("rouge_l".to_string(), s.rouge_l),
        ]))
    }
}

/// Scores answers against references with the `kiln-metrics` implementations.
///
/// # Errors
/// Empty or misaligned inputs.
pub fn score_answers(
    answers: &[String],
    references: &[String],
    rouge_stemmer: bool,
) -> Result<GenerationScores> {
    let (exact_match, token_f1) = kiln_metrics::mean_em_f1(answers, references)?;
    let refs: Vec<Vec<String>> = references.iter().map(|r| vec![r.clone()]).collect();
    let bleu = kiln_metrics::corpus_bleu(answers, &refs)?.score;
    let rouge = kiln_metrics::corpus_rouge(answers, references, rouge_stemmer)?;
    let richness = kiln_metrics::vocabulary_richness(answers).ok();
    Ok(GenerationScores {
        exact_match,
        token_f1,
        bleu,
        rouge1: rouge.rouge1,
        rouge2: rouge.rouge2,
        rouge_l: rouge.rouge_l,
        rouge_lsum: rouge.rouge_lsum,
        type_token_ratio: richness.as_ref().map(|r| r.type_token_ratio),
        distinct_2: richness.as_ref().map(|r| r.distinct_2),
        mean_new_tokens: 0.0,
    })
}

fn report_for<M>(
    name: &str,
    model: &M,
    cases: &[EvalCase],
    general: Option<&[TokenizedExample]>,
    config: &HarnessConfig,
    decode: &dyn Fn(&[u32]) -> String,
) -> Result<ModelReport>
where
    M: CachedCausalLm + CausalLm + Module,
{
    let (answers, lengths) = generate_answers(model, cases, config, decode)?;
    let references: Vec<String> = cases.iter().map(|c| c.reference.clone()).collect();
    let mut scores = score_answers(&answers, &references, config.rouge_stemmer)?;
    scores.mean_new_tokens = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
    let general_perplexity = match general {
        Some(g) => Some(evaluate(model, g, config.batch_size.max(1), config.pad_id)?.perplexity),
        None => None,
    };
    Ok(ModelReport {
        name: name.into(),
        scores,
        answers,
        general_perplexity,
    })
}

/// Runs the same test set through `base` and `tuned`, scores both, and (with `general`)
/// measures forgetting as the change of perplexity on general text.
///
/// `decode` turns token ids into text (e.g. the tokenizer's `decode`).
///
/// # Errors
/// No case, a generation, metric or evaluation error.
pub fn compare_models<B, T>(
    base: &B,
    tuned: &T,
    cases: &[EvalCase],
    general: Option<&[TokenizedExample]>,
    config: &HarnessConfig,
    decode: &dyn Fn(&[u32]) -> String,
) -> Result<ComparisonReport>
where
    B: CachedCausalLm + CausalLm + Module,
    T: CachedCausalLm + CausalLm + Module,
{
    if cases.is_empty() {
        return Err(TrainError::InvalidConfig {
            field: "cases".into(),
            reason: "no test case".into(),
        });
    }
    let base = report_for("base", base, cases, general, config, decode)?;
    let tuned = report_for("tuned", tuned, cases, general, config, decode)?;
    let forgetting = match (base.general_perplexity, tuned.general_perplexity) {
        (Some(b), Some(t)) => Some(t / b - 1.0),
        _ => None,
    };
    Ok(ComparisonReport {
        cases: cases.to_vec(),
        base,
        tuned,
        forgetting,
        config: config.clone(),
    })
}

impl ComparisonReport {
    /// The report as Markdown: a score table (base, tuned, change), the forgetting check and
    /// example outputs side by side.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let (b, t) = (&self.base.scores, &self.tuned.scores);
        let _ = writeln!(md, "# Evaluation: base vs tuned\n");
        let _ = writeln!(
            md,
            "{} test cases, decoding: temperature {}, at most {} new tokens.\n",
            self.cases.len(),
            self.config.generation.temperature,
            self.config.generation.max_new_tokens
        );
        let _ = writeln!(
            md,
            "| metric | base | tuned | change |\n|---|---:|---:|---:|"
        );
        let mut row = |name: &str, x: f64, y: f64| {
            let _ = writeln!(md, "| {name} | {x:.4} | {y:.4} | {:+.4} |", y - x);
        };
        row("exact match", b.exact_match, t.exact_match);
        row("token F1", b.token_f1, t.token_f1);
        row("BLEU", b.bleu, t.bleu);
        row("ROUGE-1", b.rouge1, t.rouge1);
        row("ROUGE-2", b.rouge2, t.rouge2);
        row("ROUGE-L", b.rouge_l, t.rouge_l);
        row("ROUGE-Lsum", b.rouge_lsum, t.rouge_lsum);
        if let (Some(x), Some(y)) = (b.type_token_ratio, t.type_token_ratio) {
            row("type-token ratio", x, y);
        }
        if let (Some(x), Some(y)) = (b.distinct_2, t.distinct_2) {
            row("distinct-2", x, y);
        }
        row("mean new tokens", b.mean_new_tokens, t.mean_new_tokens);
        if let (Some(x), Some(y), Some(f)) = (
            self.base.general_perplexity,
            self.tuned.general_perplexity,
            self.forgetting,
        ) {
            let _ = writeln!(
                md,
                "\n## Forgetting check\n\nPerplexity on general text: base {x:.3}, tuned {y:.3} \
                 ({:+.1}%).",
                f * 100.0
            );
        }
        let shown = self.cases.len().min(self.config.examples_in_report);
        if shown > 0 {
            let _ = writeln!(md, "\n## Examples\n");
            let _ = writeln!(
                md,
                "| prompt | reference | base | tuned |\n|---|---|---|---|"
            );
            for i in 0..shown {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    cell(&self.cases[i].prompt_text),
                    cell(&self.cases[i].reference),
                    cell(&self.base.answers[i]),
                    cell(&self.tuned.answers[i])
                );
            }
        }
        md
    }

    /// Writes `report.md` and `report.json` into `dir` (created if missing) and returns their
    /// paths.
    ///
    /// # Errors
    /// An I/O error.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.to_markdown()).map_err(TrainError::io(&md))?;
        let json = dir.join("report.json");
        write_json(&json, self)?;
        Ok((md, json))
    }
}

/// Text made safe for one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_metric_definitions() {
        let refs = vec![
            "the cat sat".to_string(),
            "a dog ran in the park".to_string(),
        ];
        let perfect = score_answers(&refs, &refs, false).unwrap();
        assert_eq!(perfect.exact_match, 1.0);
        assert_eq!(perfect.token_f1, 1.0);
        // Corpus BLEU counts 4-grams over the corpus: the second pair provides them.
        assert!((perfect.bleu - 100.0).abs() < 1e-9, "{perfect:?}");
        assert_eq!(perfect.rouge1, 1.0);
        let answers = vec!["the cat".to_string(), "nothing".to_string()];
        let s = score_answers(&answers, &refs, false).unwrap();
        assert_eq!(s.exact_match, 0.0);
        // "the cat" vs "the cat sat": SQuAD drops "the"; F1 of {cat} vs {cat, sat} = 2/3.
        assert!((s.token_f1 - (2.0 / 3.0) / 2.0).abs() < 1e-12, "{s:?}");
        assert!(score_answers(&answers, &refs[..1], false).is_err());
    }

    #[test]
    fn markdown_escapes_cells_and_shows_changes() {
        let scores = |em| GenerationScores {
            exact_match: em,
            token_f1: em,
            bleu: 0.0,
            rouge1: 0.0,
            rouge2: 0.0,
            rouge_l: 0.0,
            rouge_lsum: 0.0,
            type_token_ratio: None,
            distinct_2: None,
            mean_new_tokens: 3.0,
        };
        let report = ComparisonReport {
            cases: vec![EvalCase {
                prompt: vec![1],
                prompt_text: "a|b".into(),
                reference: "x\ny".into(),
            }],
            base: ModelReport {
                name: "base".into(),
                scores: scores(0.25),
                answers: vec!["no".into()],
                general_perplexity: Some(10.0),
            },
            tuned: ModelReport {
                name: "tuned".into(),
                scores: scores(0.75),
                answers: vec!["yes".into()],
                general_perplexity: Some(11.0),
            },
            forgetting: Some(0.1),
            config: HarnessConfig::default(),
        };
        let md = report.to_markdown();
        assert!(
            md.contains("| exact match | 0.2500 | 0.7500 | +0.5000 |"),
            "{md}"
        );
        assert!(md.contains("| a\\|b | x y | no | yes |"), "{md}");
        assert!(md.contains("(+10.0%)"), "{md}");
    }
}
