//! The comparison: five ways of answering (prompting, retrieval, tuning) on three test sets.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use kiln::burn::module::Module;
use kiln::data::PrepareOptions;
use kiln::data::obd::{Direction, Dtc, Judge, ObdExample};
use kiln::data::{few_shot_prompt, rag_prompt};
use kiln::models::{CachedCausalLm, CausalLm};
use kiln::prelude::*;
use kiln::recipe::eval_cases;
use kiln::train::harness::{GenerationScores, HarnessConfig, generate_answers, score_answers};

/// A test question, its reference answer and the code it is about.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    /// The question as a user asks it.
    pub prompt: String,
    /// `"<code>: <description>"`.
    pub completion: String,
    /// The code.
    pub code: String,
}

/// The forward questions of an OBD set.
pub fn questions(examples: &[ObdExample]) -> Vec<Question> {
    examples
        .iter()
        .filter(|e| e.direction == Direction::Forward)
        .map(|e| Question {
            prompt: e.prompt.clone(),
            completion: e.completion.clone(),
            code: e.code.clone(),
        })
        .collect()
}

/// The symptom questions of `symptoms.jsonl` (`{"prompt", "code"}` a line), answered with the
/// code's line of the code list.
///
/// # Errors
/// A line that is not such a record, or names a code the list does not have.
pub fn symptom_questions(text: &str, codes: &[Dtc]) -> Result<Vec<Question>> {
    #[derive(serde::Deserialize)]
    struct Line {
        prompt: String,
        code: String,
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let where_ = || format!("examples/dtc-assistant/symptoms.jsonl:{}", i + 1);
        let l: Line = serde_json::from_str(line).with_context(where_)?;
        let Some(dtc) = codes.iter().find(|c| c.code == l.code) else {
            bail!("{}: code {} is not in the code list", where_(), l.code);
        };
        out.push(Question {
            prompt: l.prompt,
            completion: format!("{}: {}", dtc.code, dtc.description),
            code: l.code,
        });
    }
    Ok(out)
}

/// `k` worked examples for few-shot prompts: plain forward training questions about `k`
/// different codes.
pub fn worked_examples(train: &[ObdExample], k: usize) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    train
        .iter()
        .filter(|e| {
            e.direction == Direction::Forward
                && !e.prompt.starts_with("Reference information:")
                && e.completion.contains(&e.code)
                && seen.insert(e.code.clone())
        })
        .take(k)
        .map(|e| (e.prompt.clone(), e.completion.clone()))
        .collect()
}

/// A named test set.
pub struct TestSet {
    /// Shown in the report.
    pub name: &'static str,
    /// In file names.
    pub slug: &'static str,
    /// The questions.
    pub cases: Vec<Question>,
}

impl TestSet {
    /// A test set.
    pub fn new(name: &'static str, slug: &'static str, cases: Vec<Question>) -> Self {
        Self { name, slug, cases }
    }
}

/// A way of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// The base model, the question alone.
    BaseZeroShot,
    /// The base model with worked examples before the question.
    BaseFewShot,
    /// The base model with retrieved passages before the question.
    BaseRetrieval,
    /// The tuned model, the question alone.
    Tuned,
    /// The tuned model with retrieved passages before the question.
    TunedRetrieval,
}

impl System {
    /// Every system, in report order.
    pub const ALL: [Self; 5] = [
        Self::BaseZeroShot,
        Self::BaseFewShot,
        Self::BaseRetrieval,
        Self::Tuned,
        Self::TunedRetrieval,
    ];

    /// Shown in the report.
    pub fn label(self) -> &'static str {
        match self {
            Self::BaseZeroShot => "base, zero-shot",
            Self::BaseFewShot => "base, few-shot",
            Self::BaseRetrieval => "base + retrieval",
            Self::Tuned => "tuned",
            Self::TunedRetrieval => "tuned + retrieval",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Self::BaseZeroShot => "base",
            Self::BaseFewShot => "base-few-shot",
            Self::BaseRetrieval => "base-rag",
            Self::Tuned => "tuned",
            Self::TunedRetrieval => "tuned-rag",
        }
    }

    /// Whether the system answers with the tuned model.
    pub fn tuned(self) -> bool {
        matches!(self, Self::Tuned | Self::TunedRetrieval)
    }

    fn retrieves(self) -> bool {
        matches!(self, Self::BaseRetrieval | Self::TunedRetrieval)
    }
}

/// One system on one test set.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The system.
    pub system: System,
    /// The test set's slug.
    pub set: &'static str,
    /// Scores against the references.
    pub scores: GenerationScores,
    /// Share of answers that state another code's description or an invented one.
    pub hallucination: f64,
    /// Mean wall time per answer, retrieval included, answering in batches, milliseconds.
    pub latency_ms: f64,
    /// The prompts as the model's user saw them.
    pub prompts: Vec<String>,
    /// The answers.
    pub answers: Vec<String>,
}

/// What every run shares.
pub struct Setup<'a> {
    /// Where the prompt files and reports go.
    pub dir: PathBuf,
    /// The tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// The recipe's data options (chat template, system prompt), as in training.
    pub prepare: &'a PrepareOptions,
    /// Greedy answering settings.
    pub harness: HarnessConfig,
    /// Worked examples of the few-shot prompt.
    pub few_shot: &'a [(String, String)],
    /// Retrieved passages for a question.
    pub retrieve: &'a dyn Fn(&str) -> Result<Vec<String>>,
    /// Judges hallucinations.
    pub judge: Judge,
}

impl Setup<'_> {
    /// Answers `set` with `model` as `system` does, and scores the answers.
    ///
    /// # Errors
    /// Retrieval, data, generation or metric errors.
    pub fn run<M>(&self, model: &M, system: System, set: &TestSet) -> Result<Row>
    where
        M: CachedCausalLm + CausalLm + Module,
    {
        let started = Instant::now();
        let mut prompts = Vec::with_capacity(set.cases.len());
        for q in &set.cases {
            prompts.push(match system {
                System::BaseFewShot => few_shot_prompt(&q.prompt, self.few_shot),
                s if s.retrieves() => rag_prompt(&q.prompt, &(self.retrieve)(&q.prompt)?),
                _ => q.prompt.clone(),
            });
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self
            .dir
            .join(format!("{}-{}.jsonl", set.slug, system.slug()));
        let lines: Vec<serde_json::Value> = prompts
            .iter()
            .zip(&set.cases)
            .map(|(p, q)| serde_json::json!({"prompt": p, "completion": q.completion, "code": q.code}))
            .collect();
        kiln::data::write_jsonl(&path, &lines)?;
        let cases = eval_cases(&path, self.tokenizer, self.prepare, None)?;
        let decode = |ids: &[u32]| self.tokenizer.decode(ids, true).unwrap_or_default();
        let (answers, lengths) = generate_answers(model, &cases, &self.harness, &decode)?;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3 / cases.len().max(1) as f64;
        let references: Vec<String> = set.cases.iter().map(|q| q.completion.clone()).collect();
        let mut scores = score_answers(&answers, &references, self.harness.rouge_stemmer)?;
        scores.mean_new_tokens = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
        let codes: Vec<String> = set.cases.iter().map(|q| q.code.clone()).collect();
        Ok(Row {
            system,
            set: set.slug,
            scores,
            hallucination: self.judge.hallucination_rate(&answers, &codes),
            latency_ms,
            prompts,
            answers,
        })
    }

    /// Perplexity of `model` on the general-text lines.
    ///
    /// # Errors
    /// An evaluation error.
    pub fn perplexity<M>(&self, model: &M, general: &[TokenizedExample]) -> Result<f64>
    where
        M: CausalLm + Module,
    {
        let batch = self.harness.batch_size.max(1);
        Ok(kiln::train::evaluate(&model.valid(), general, batch, self.harness.pad_id)?.perplexity)
    }
}

/// Every row and the forgetting check.
#[derive(Debug, Default, Serialize)]
pub struct Comparison {
    /// One row per system and test set.
    pub rows: Vec<Row>,
    /// Perplexity of the base model on general text.
    pub perplexity_base: f64,
    /// Perplexity of the tuned model on general text.
    pub perplexity_tuned: f64,
}

impl Comparison {
    /// The tables as Markdown: one per test set, then the forgetting line and example answers.
    pub fn to_markdown(&self, sets: &[TestSet]) -> String {
        let mut md = String::new();
        for set in sets {
            md.push_str(&format!(
                "\n## Test: {} ({} questions)\n\n\
                 | system | exact match | token F1 | BLEU | ROUGE-L | type-token ratio | hallucination | ms/answer |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|\n",
                set.name,
                set.cases.len()
            ));
            for r in self.rows.iter().filter(|r| r.set == set.slug) {
                let s = &r.scores;
                md.push_str(&format!(
                    "| {} | {:.3} | {:.3} | {:.2} | {:.3} | {} | {:.3} | {:.0} |\n",
                    r.system.label(),
                    s.exact_match,
                    s.token_f1,
                    s.bleu,
                    s.rouge_l,
                    s.type_token_ratio.map_or("-".into(), |t| format!("{t:.3}")),
                    r.hallucination,
                    r.latency_ms
                ));
            }
        }
        let change = self.perplexity_tuned / self.perplexity_base - 1.0;
        md.push_str(&format!(
            "\nPerplexity on general text: base {:.3}, tuned {:.3} ({:+.1}%)\n",
            self.perplexity_base,
            self.perplexity_tuned,
            change * 100.0
        ));
        for set in sets {
            md.push_str(&format!(
                "\n### Examples: {}\n\n| question | reference | base | base + retrieval | tuned | tuned + retrieval |\n|---|---|---|---|---|---|\n",
                set.name
            ));
            let answers = |system: System| {
                self.rows
                    .iter()
                    .find(|r| r.set == set.slug && r.system == system)
                    .map(|r| r.answers.as_slice())
                    .unwrap_or_default()
            };
            for (i, q) in set.cases.iter().take(4).enumerate() {
                let cell = |system| cell(answers(system).get(i).map_or("", String::as_str));
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    cell_text(&q.prompt),
                    cell_text(&q.completion),
                    cell(System::BaseZeroShot),
                    cell(System::BaseRetrieval),
                    cell(System::Tuned),
                    cell(System::TunedRetrieval),
                ));
            }
        }
        md
    }

    /// Writes `comparison.json` (every row with its prompts and answers) and `comparison.md`
    /// into `dir`.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn write(&self, dir: &Path, sets: &[TestSet]) -> Result<()> {
        let json = dir.join("comparison.json");
        let value = serde_json::json!({
            "perplexity_base": self.perplexity_base,
            "perplexity_tuned": self.perplexity_tuned,
            "sets": sets.iter().map(|s| serde_json::json!({"name": s.name, "slug": s.slug, "questions": s.cases})).collect::<Vec<_>>(),
            "rows": self.rows,
        });
        kiln::nn::write_atomic(&json, serde_json::to_string_pretty(&value)?.as_bytes())?;
        let md = dir.join("comparison.md");
        kiln::nn::write_atomic(&md, self.to_markdown(sets).as_bytes())?;
        Ok(())
    }
}

fn cell_text(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn cell(s: &str) -> String {
    let t = cell_text(s);
    if t.chars().count() > 70 {
        format!("{}...", t.chars().take(70).collect::<String>())
    } else {
        t
    }
}
