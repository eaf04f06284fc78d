//! Training recipes: one TOML file describes the model, the data, the method and the training
//! run, as the YAML recipes of axolotl or torchtune do. `kiln train RECIPE.toml` runs one.
//!
//! ```toml
//! [model]
//! path = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
//!
//! [data]
//! train = "data/obd/train.jsonl"
//! validation = "data/obd/validation.jsonl"
//! max_len = 128
//! format = { format = "prompt_completion" }
//! style = { style = "chat_template", system = "You are a car diagnostics assistant." }
//!
//! [adapter]            # Hugging Face PEFT's adapter_config.json fields; omit for full fine-tuning
//! peft_type = "LORA"
//! r = 16
//! lora_alpha = 32
//! target_modules = "all-linear"
//!
//! [optimizer]
//! lr = 2e-3
//!
//! [schedule]
//! kind = "cosine"
//! warmup_ratio = 0.05
//!
//! [fit]
//! batch_size = 8
//! epochs = 1
//! output_dir = "runs/dtc"
//! ```
//!
//! Unknown keys anywhere are errors that name the key ([`Recipe::from_toml`]); `--set
//! key=value` overrides ([`Recipe::parse`]) use the same dotted paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use kiln_data::{
    IGNORE_INDEX, PrepareOptions, RecordFormat, SourceKind, TokenizedExample, prepare_path,
    read_records,
};
use kiln_models::{AnyCausalLm, AnyConfig, GenerationConfig, load_pretrained, save_pretrained};
use kiln_peft::{AdapterConfig, TrainableReport, attach_adapter, full_fine_tuning, save_adapter};
use kiln_tokenizer::Tokenizer;
use kiln_train::harness::{EvalCase, HarnessConfig};
use kiln_train::{Fit, FitConfig, OptimizerConfig, PeftExporter, RunSummary, Schedule, Trainer};

/// Errors of reading or running a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the recipe's fields.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file, or `--set`.
        origin: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A model error.
    #[error(transparent)]
    Model(#[from] kiln_models::ModelError),
    /// A data error.
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    /// A PEFT error.
    #[error(transparent)]
    Peft(#[from] kiln_peft::PeftError),
    /// A training error.
    #[error(transparent)]
    Train(#[from] kiln_train::TrainError),
    /// A tokenizer error.
    #[error(transparent)]
    Tokenizer(#[from] kiln_tokenizer::TokenizerError),
}

type Result<T> = std::result::Result<T, RecipeError>;

/// The base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face directory or a `.gguf` file.
    pub path: PathBuf,
}

/// The training and validation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSection {
    /// Training file or folder (JSONL, JSON, CSV or text).
    pub train: PathBuf,
    /// Validation file, evaluated every `fit.eval_every` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<PathBuf>,
    /// Use only the first N training examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_train: Option<usize>,
    /// Use only the first N validation examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_validation: Option<usize>,
    /// Record format, prompt style, cleaning and length limits.
    #[serde(flatten)]
    pub prepare: PrepareOptions,
}

/// The learning-rate schedule; decaying schedules end at the run's last step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// `constant`, `linear` or `cosine`.
    pub kind: ScheduleKind,
    /// Warmup steps (overrides `warmup_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    /// Warmup as a fraction of the run's steps.
    #[serde(default)]
    pub warmup_ratio: f64,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Cosine,
            warmup_steps: None,
            warmup_ratio: 0.0,
        }
    }
}

/// Shape of the learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Warmup, then constant.
    Constant,
    /// Warmup, then linear decay to 0.
    Linear,
    /// Warmup, then half-cosine decay to 0.
    Cosine,
}

impl ScheduleSection {
    /// The schedule of a run of `total_steps` optimizer steps.
    pub fn schedule(&self, total_steps: usize) -> Schedule {
        let warmup_steps = self
            .warmup_steps
            .unwrap_or_else(|| (self.warmup_ratio * total_steps as f64).ceil() as usize);
        match self.kind {
            ScheduleKind::Constant => Schedule::Constant { warmup_steps },
            ScheduleKind::Linear => Schedule::Linear {
                warmup_steps,
                total_steps,
            },
            ScheduleKind::Cosine => Schedule::Cosine {
                warmup_steps,
                total_steps,
            },
        }
    }
}

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The base model.
    pub model: ModelSection,
    /// The data.
    pub data: DataSection,
    /// The PEFT method, as in PEFT's `adapter_config.json` (`peft_type` selects it). Without it
    /// every weight trains (full fine-tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterConfig>,
    /// Seed of the adapter initialization.
    #[serde(default)]
    pub seed: u64,
    /// AdamW.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    #[serde(default)]
    pub schedule: ScheduleSection,
    /// Batching, epochs, evaluation, early stopping, checkpoints and logs.
    #[serde(default)]
    pub fit: FitConfig,
}

impl Recipe {
    /// Parses a recipe from TOML text; `origin` names it in errors (a file path).
    ///
    /// # Errors
    /// [`RecipeError::Invalid`] for TOML syntax errors, wrong types or values and unknown keys,
    /// each naming the key.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        Self::parse(text, origin, &[])
    }

    /// Parses a recipe and applies `key=value` overrides (dotted keys such as
    /// `optimizer.lr=1e-4` or `adapter.target_modules=["q_proj","v_proj"]`; a value that is not
    /// TOML is taken as a string).
    ///
    /// # Errors
    /// As [`Recipe::from_toml`]; an override without `=` or into a non-table.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let invalid = |message: String| RecipeError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let mut value: toml::Table = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for o in overrides {
            apply_override(&mut value, o).map_err(|message| RecipeError::Invalid {
                origin: format!("--set {o}"),
                message,
            })?;
        }
        let recipe: Recipe = serde_path_to_error::deserialize(toml::Value::Table(value.clone()))
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let message = inner.message();
                if path == "." || message.contains(&format!("`{path}`")) {
                    invalid(message.to_string())
                } else {
                    invalid(format!("`{path}`: {message}"))
                }
            })?;
        // Sections such as `[adapter]` accept PEFT's files, which carry fields kiln does not
        // use; a recipe is written by hand, so every key must mean something. A key that does
        // not survive a round trip through the recipe's fields was ignored: report it.
        let back = toml::Value::try_from(&recipe).map_err(|e| invalid(e.to_string()))?;
        let mut unknown = BTreeSet::new();
        unknown_keys(&toml::Value::Table(value), &back, "", &mut unknown);
        if let Some(key) = unknown.into_iter().next() {
            return Err(invalid(format!("unknown key `{key}`")));
        }
        recipe.validate().map_err(invalid)?;
        Ok(recipe)
    }

    /// Reads and parses a recipe file with overrides.
    ///
    /// # Errors
    /// [`RecipeError::Io`] when the file cannot be read, else as [`Recipe::parse`].
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// The fully resolved recipe as TOML (every default written out).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..1.0).contains(&self.schedule.warmup_ratio) {
            return Err(format!(
                "schedule.warmup_ratio must lie in 0..1, got {}",
                self.schedule.warmup_ratio
            ));
        }
        if self.fit.batch_size == 0 {
            return Err("fit.batch_size must be at least 1".into());
        }
        if self.fit.output_dir.is_none() {
            return Err("fit.output_dir is required (where the adapter and logs go)".into());
        }
        Ok(())
    }

    /// Runs the recipe: loads the model, prepares the data, attaches the method, trains, and
    /// writes into `fit.output_dir`:
    /// - `adapter/`: the adapter in Hugging Face PEFT format (full fine-tuning: `model/`, a
    ///   Hugging Face directory with the tokenizer);
    /// - `recipe.toml`: the resolved recipe;
    /// - `report.md`: what was trained and how it went;
    /// - the [`Fit`] files: `metrics.jsonl`, `loss_curve.png`, `run_summary.json`, `checkpoints/`.
    ///
    /// # Errors
    /// Any loading, data, adapter, training or I/O error, naming the file, key or tensor.
    pub fn run(&self, device: &Device) -> Result<RecipeOutput> {
        let out_dir = self.fit.output_dir.clone().expect("validated");
        std::fs::create_dir_all(&out_dir).map_err(|source| RecipeError::Io {
            path: out_dir.clone(),
            source,
        })?;
        write_atomic(&out_dir.join("recipe.toml"), self.to_toml().as_bytes())?;

        let train_device = device.clone().autodiff();
        let start = Instant::now();
        let pretrained = load_pretrained(&self.model.path, &train_device)?;
        let load_secs = start.elapsed().as_secs_f64();
        let tokenizer = pretrained.tokenizer;
        let (train, validation) = self.prepare(&tokenizer)?;
        let pad_id = tokenizer.padding_id();

        let (model, adapter) = match &self.adapter {
            Some(c) => {
                let mut c = c.clone();
                c.common_mut().base_model_name_or_path =
                    Some(self.model.path.display().to_string());
                let (m, c) = attach_adapter(pretrained.model, &c, None, self.seed, &train_device)?;
                (m, Some(c))
            }
            None => (full_fine_tuning(pretrained.model), None),
        };
        let trainable = TrainableReport::of(&model);

        let mut fit_config = self.fit.clone();
        fit_config.pad_id = pad_id;
        let total_steps = fit_config.total_steps(train.len());
        let mut trainer = Trainer::new(
            self.optimizer.clone(),
            self.schedule.schedule(total_steps),
            &train_device,
        )?;
        let exporter = adapter.clone().map(|config| PeftExporter { config });
        let mut fit = Fit::new(fit_config, &train);
        if let Some(v) = &validation {
            fit = fit.validation(v);
        }
        if let Some(e) = &exporter {
            fit = fit.exporter(e);
        }
        let output = fit.run(model, &mut trainer)?;
        let model = output.model;

        let saved = match &adapter {
            Some(c) => {
                let dir = out_dir.join("adapter");
                save_adapter(&model, c, &dir)?;
                dir
            }
            None => {
                let dir = out_dir.join("model");
                save_pretrained(
                    &model.clone().valid(),
                    &pretrained.config,
                    Some(&tokenizer),
                    &dir,
                )?;
                dir
            }
        };
        let model = model.valid();
        let report = RunReport {
            recipe: self.clone(),
            model_type: pretrained.config.model_type().to_string(),
            load_secs,
            train_examples: train.len(),
            validation_examples: validation.as_ref().map_or(0, Vec::len),
            trainable_params: trainable.trainable,
            total_params: trainable.total,
            summary: output.summary,
            saved: saved.clone(),
        };
        write_atomic(&out_dir.join("report.md"), report.to_markdown().as_bytes())?;
        Ok(RecipeOutput {
            model,
            config: pretrained.config,
            tokenizer,
            adapter,
            report,
        })
    }

    /// Tokenizes the training and validation data with the recipe's options.
    ///
    /// # Errors
    /// Data errors naming the file and line.
    pub fn prepare(
        &self,
        tokenizer: &Tokenizer,
    ) -> Result<(Vec<TokenizedExample>, Option<Vec<TokenizedExample>>)> {
        let load = |path: &Path, limit: Option<usize>| -> Result<Vec<TokenizedExample>> {
            let mut p = prepare_path(path, tokenizer, &self.data.prepare)?.examples;
            if let Some(n) = limit {
                p.truncate(n);
            }
            Ok(p)
        };
        let train = load(&self.data.train, self.data.limit_train)?;
        let validation = match &self.data.validation {
            Some(v) => Some(load(v, self.data.limit_validation)?),
            None => None,
        };
        Ok((train, validation))
    }
}

/// A trained model and what the run did.
#[derive(Debug)]
pub struct RecipeOutput {
    /// The trained model on the inference device (no autodiff).
    pub model: AnyCausalLm,
    /// Its configuration.
    pub config: AnyConfig,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The adapter's resolved configuration (`None` after full fine-tuning).
    pub adapter: Option<AdapterConfig>,
    /// The run's report (also in `report.md`).
    pub report: RunReport,
}

/// What a recipe run did, written as `report.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The resolved recipe.
    pub recipe: Recipe,
    /// The base model's `model_type`.
    pub model_type: String,
    /// Seconds spent loading the model.
    pub load_secs: f64,
    /// Training examples.
    pub train_examples: usize,
    /// Validation examples.
    pub validation_examples: usize,
    /// Parameters that trained.
    pub trainable_params: usize,
    /// All parameters.
    pub total_params: usize,
    /// The training run.
    pub summary: RunSummary,
    /// Where the adapter (or the full model) was saved.
    pub saved: PathBuf,
}

impl RunReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let s = &self.summary;
        let method = self
            .recipe
            .adapter
            .as_ref()
            .map_or("full fine-tuning", AdapterConfig::peft_type);
        let mut md = format!(
            "# Training run\n\n| | |\n|---|---|\n\
             | base model | `{}` ({}) |\n| method | {} |\n\
             | trainable parameters | {} of {} ({:.4}%) |\n\
             | examples | {} train, {} validation |\n\
             | steps | {} of {} ({:.2} epochs, stopped: {:?}) |\n\
             | tokens | {} input, {} with loss |\n\
             | time | {:.1} s training ({:.1} tokens/s), {:.1} s loading |\n",
            self.recipe.model.path.display(),
            self.model_type,
            method,
            self.trainable_params,
            self.total_params,
            100.0 * self.trainable_params as f64 / self.total_params.max(1) as f64,
            self.train_examples,
            self.validation_examples,
            s.steps,
            s.total_steps,
            s.epochs,
            s.stop_reason,
            s.input_tokens,
            s.loss_tokens,
            s.elapsed_secs,
            s.tokens_per_sec,
            self.load_secs,
        );
        if let (Some(first), Some(last)) = (s.losses.first(), s.final_loss) {
            md.push_str(&format!(
                "| training loss | {first:.4} (first step) → {last:.4} (last step) |\n"
            ));
        }
        if let Some(e) = &s.last_eval {
            md.push_str(&format!(
                "| validation | loss {:.4}, perplexity {:.3} |\n",
                e.loss, e.perplexity
            ));
        }
        md.push_str(&format!(
            "| saved | `{}` |\n\nThe curve is in `loss_curve.png`, every step in `metrics.jsonl`.\n",
            self.saved.display()
        ));
        md
    }
}

/// Test cases from a prompt/completion file, rendered exactly as in training: the prompt is the
/// example's unlabelled prefix (template applied), the reference its completion text without
/// end-of-sequence tokens. The report text of a case is the question as written in the file.
///
/// # Errors
/// Data errors naming the file and line; a record whose completion is empty.
pub fn eval_cases(
    path: &Path,
    tokenizer: &Tokenizer,
    options: &PrepareOptions,
    limit: Option<usize>,
) -> Result<Vec<EvalCase>> {
    let mut options = options.clone();
    let RecordFormat::PromptCompletion {
        prompt: prompt_field,
        ..
    } = &options.format
    else {
        return Err(kiln_data::DataError::Config(format!(
            "{}: test cases need the prompt_completion format",
            path.display()
        ))
        .into());
    };
    // The question as written in the file, for reports.
    let mut questions = std::collections::HashMap::new();
    for record in read_records(path, SourceKind::from_path(path)?)? {
        let record = record?;
        if let Ok(q) = record.text(prompt_field) {
            questions.insert(record.line, q);
        }
    }
    // Every record is a case: no dedup, no length filter.
    options.clean = Default::default();
    options.max_len = None;
    let prepared = prepare_path(path, tokenizer, &options)?;
    let mut cases = Vec::new();
    for (ex, (file, line)) in prepared.examples.iter().zip(&prepared.origins) {
        let Some(split) = ex.labels.iter().position(|&l| l != IGNORE_INDEX) else {
            return Err(kiln_data::DataError::Config(format!(
                "{}:{line}: the completion is empty",
                file.display()
            ))
            .into());
        };
        let prompt = ex.input_ids[..split].to_vec();
        let reference = tokenizer.decode(&ex.input_ids[split..], true)?;
        cases.push(EvalCase {
            prompt_text: match questions.remove(line) {
                Some(q) => q,
                None => tokenizer.decode(&prompt, false)?,
            },
            prompt,
            reference: reference.trim().to_string(),
        });
        if limit.is_some_and(|n| cases.len() >= n) {
            break;
        }
    }
    Ok(cases)
}

/// Greedy answering settings for [`eval_cases`]: stop at the tokenizer's end-of-sequence token
/// or at the end of the first line, `batch_size` prompts at a time.
pub fn answer_config(
    tokenizer: &Tokenizer,
    max_new_tokens: usize,
    batch_size: usize,
) -> HarnessConfig {
    HarnessConfig {
        generation: GenerationConfig {
            max_new_tokens,
            eos_token_ids: tokenizer.eos_token_id().into_iter().collect(),
            stop_strings: vec!["\n".into()],
            ..Default::default()
        },
        pad_id: tokenizer.padding_id(),
        batch_size: batch_size.max(1),
        ..Default::default()
    }
}

/// General text for the forgetting check: every non-empty line of `text` is one example with
/// loss on every token.
///
/// # Errors
/// A tokenizer error.
pub fn general_text(tokenizer: &Tokenizer, text: &str) -> Result<Vec<TokenizedExample>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(TokenizedExample::full(&tokenizer.encode(l, true)?)))
        .collect()
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Sets `key=value` (dotted key) in `table`.
fn apply_override(table: &mut toml::Table, spec: &str) -> std::result::Result<(), String> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| "expected key=value".to_string())?;
    let key = key.trim();
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad key `{key}`"));
    }
    let mut cur = table;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is not a table", parts[..=i].join(".")))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Keys of `given` that do not appear in `parsed` (dotted paths).
fn unknown_keys(
    given: &toml::Value,
    parsed: &toml::Value,
    prefix: &str,
    out: &mut BTreeSet<String>,
) {
    if let (toml::Value::Table(g), toml::Value::Table(p)) = (given, parsed) {
        for (k, v) in g {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match p.get(k) {
                Some(pv) => unknown_keys(v, pv, &path, out),
                None => {
                    out.insert(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPE: &str = r#"
[model]
path = "m.gguf"

[data]
train = "train.jsonl"
format = { format = "prompt_completion" }
style = { style = "chat_template" }
max_len = 64

[adapter]
peft_type = "LORA"
r = 4
lora_alpha = 8
target_modules = ["q_proj", "v_proj"]

[optimizer]
lr = 2e-3

[schedule]
kind = "linear"
warmup_ratio = 0.1

[fit]
batch_size = 4
output_dir = "runs/x"
"#;

    #[test]
    fn parses_and_round_trips() {
        let r = Recipe::from_toml(RECIPE, "r.toml").unwrap();
        assert_eq!(r.optimizer.lr, 2e-3);
        assert_eq!(r.fit.batch_size, 4);
        let Some(AdapterConfig::Lora(l)) = &r.adapter else {
            panic!("{:?}", r.adapter)
        };
        assert_eq!((l.r, l.lora_alpha), (4, 8.0));
        let again = Recipe::from_toml(&r.to_toml(), "printed").unwrap();
        assert_eq!(again, r);
        assert_eq!(
            r.schedule.schedule(100),
            Schedule::Linear {
                warmup_steps: 10,
                total_steps: 100
            }
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        for (section, bad, key) in [
            (
                "[optimizer]",
                "learning_rate = 1.0",
                "optimizer.learning_rate",
            ),
            ("[adapter]", "rank = 4", "adapter.rank"),
            ("[data]", "maxlen = 3", "data.maxlen"),
            ("[fit]", "epoch = 3", "epoch"),
        ] {
            let text = RECIPE.replace(section, &format!("{section}\n{bad}"));
            let err = Recipe::from_toml(&text, "r.toml").unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
            assert!(err.starts_with("r.toml"), "{err}");
        }
        let err = Recipe::from_toml(&format!("epochs = 3\n{RECIPE}"), "r.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochs"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = Recipe::parse(RECIPE, "r.toml", &["fit.batch_size=\"x\"".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_size"), "{err}");
        let err = Recipe::parse(RECIPE, "r.toml", &["schedule.kind=\"zigzag\"".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("zigzag"), "{err}");
        let err = Recipe::parse(RECIPE, "r.toml", &["fit.batch_size=0".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_size"), "{err}");
    }

    #[test]
    fn overrides_apply() {
        let r = Recipe::parse(
            RECIPE,
            "r.toml",
            &[
                "optimizer.lr=1e-4".into(),
                "adapter.target_modules=[\"q_proj\"]".into(),
                "fit.output_dir=elsewhere".into(),
                "seed=7".into(),
            ],
        )
        .unwrap();
        assert_eq!(r.optimizer.lr, 1e-4);
        assert_eq!(r.fit.output_dir, Some(PathBuf::from("elsewhere")));
        assert_eq!(r.seed, 7);
        let Some(AdapterConfig::Lora(l)) = &r.adapter else {
            panic!()
        };
        assert_eq!(l.target_modules, vec!["q_proj".to_string()]);
        let err = Recipe::parse(RECIPE, "r.toml", &["optimizer".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key=value"), "{err}");
    }
}
