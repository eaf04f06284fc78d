//! `kiln eval`: answer test questions with a model (and with its adapter), score the answers and
//! check forgetting.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kiln::data::{PrepareOptions, PromptStyle, RecordFormat};
use kiln::models::{CachedCausalLm, load_pretrained};
use kiln::prelude::*;
use kiln::recipe::{answer_config, eval_cases, general_text};
use kiln::train::harness::{compare_models, generate_answers, score_answers};

use crate::util::{DeviceArg, QuantInputs, Truncate, truncate_prompts};

/// Arguments of `kiln eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Base model: a Hugging Face directory or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// An adapter folder: the base and the adapted model are compared side by side.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Test questions: JSONL/JSON/CSV records with `prompt` and `completion` fields.
    #[arg(long)]
    pub data: PathBuf,
    /// How prompts are written: raw, qa, alpaca or chat (the model's chat template).
    #[arg(long, default_value = "chat")]
    pub style: String,
    /// System message for `--style chat`.
    #[arg(long)]
    pub system: Option<String>,
    /// General text (one passage per line) whose perplexity measures forgetting.
    #[arg(long)]
    pub general: Option<PathBuf>,
    /// Use only the first N questions (at least 1).
    #[arg(long, value_parser = at_least_one())]
    pub limit: Option<usize>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Questions answered together (at least 1).
    #[arg(long, default_value_t = 16, value_parser = at_least_one())]
    pub batch_size: usize,
    /// Folder for `report.md` and `report.json`.
    #[arg(long, default_value = "runs/eval")]
    pub out: PathBuf,
    /// Cut a prompt that with --max-new-tokens would overrun the model's context: `left` keeps
    /// its last tokens. Without it such a prompt is an error that names both numbers.
    #[arg(long, value_enum)]
    pub truncate: Option<Truncate>,
    /// How a GGUF model's quantized matrices treat their input rows: `q16` (default; greedy
    /// text equal to the unquantized product's on the checkpoints tested) or `q8` (8-bit
    /// activations as llama.cpp computes them: faster, text can differ at near-ties).
    #[arg(long, value_enum, default_value_t)]
    pub quant_inputs: QuantInputs,
}

/// A `usize` argument of at least 1.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// Runs `kiln eval`.
pub fn run(device: &DeviceArg, args: &EvalArgs) -> Result<()> {
    // Checked before the model loads: the report must have somewhere to go.
    if args.out.exists() && !args.out.is_dir() {
        bail!(
            "--out {} is a file; it must be a folder (for report.md and report.json)",
            args.out.display()
        );
    }
    let device = device.open()?;
    let mut p = load_pretrained(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    args.quant_inputs.apply(&mut p.model);
    let tok = &p.tokenizer;
    let mut style = PromptStyle::builtin(&args.style)?;
    if let PromptStyle::ChatTemplate { system } = &mut style {
        system.clone_from(&args.system);
    }
    let options = PrepareOptions {
        style,
        ..PrepareOptions::new(RecordFormat::prompt_completion())
    };
    let mut cases = eval_cases(&args.data, tok, &options, args.limit)?;
    let general = match &args.general {
        Some(path) => Some(general_text(
            tok,
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?),
        None => None,
    };
    let config = answer_config(tok, args.max_new_tokens, args.batch_size);
    let decode = |ids: &[u32]| tok.decode(ids, true).unwrap_or_default();
    eprintln!(
        "{} test questions from {}",
        cases.len(),
        args.data.display()
    );
    match &args.adapter {
        Some(dir) => {
            // Module clones share their tensors: the base stays as loaded.
            let base = p.model.clone();
            let (tuned, adapter) = load_adapter(p.model, dir, &device)
                .with_context(|| format!("loading the adapter {}", dir.display()))?;
            if let Some(how) = args.truncate {
                // The smaller context of the two (virtual tokens of an adapter take room).
                let context = match (base.max_context(), tuned.max_context()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let prompts = cases.iter_mut().map(|c| &mut c.prompt);
                truncate_prompts(how, context, args.max_new_tokens, prompts)?;
            }
            eprintln!("adapter: {} from {}", adapter.peft_type(), dir.display());
            let report =
                compare_models(&base, &tuned, &cases, general.as_deref(), &config, &decode)?;
            let (md, _) = report
                .write(&args.out)
                .with_context(|| format!("writing the report into {}", args.out.display()))?;
            print!("{}", report.to_markdown());
            eprintln!("report: {}", md.display());
        }
        None => {
            if let Some(how) = args.truncate {
                let prompts = cases.iter_mut().map(|c| &mut c.prompt);
                truncate_prompts(how, p.model.max_context(), args.max_new_tokens, prompts)?;
            }
            let (answers, lengths) = generate_answers(&p.model, &cases, &config, &decode)?;
            let references: Vec<String> = cases.iter().map(|c| c.reference.clone()).collect();
            let mut scores = score_answers(&answers, &references, config.rouge_stemmer)?;
            scores.mean_new_tokens =
                lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
            let perplexity = match &general {
                Some(g) => Some(
                    kiln::train::evaluate(&p.model, g, config.batch_size, config.pad_id)?
                        .perplexity,
                ),
                None => None,
            };
            let mut md = format!(
                "# Evaluation: {}\n\n{} test cases.\n\n| metric | value |\n|---|---:|\n",
                args.model.display(),
                cases.len()
            );
            for (name, v) in [
                ("exact match", scores.exact_match),
                ("token F1", scores.token_f1),
                ("BLEU", scores.bleu),
                ("ROUGE-1", scores.rouge1),
                ("ROUGE-2", scores.rouge2),
                ("ROUGE-L", scores.rouge_l),
                ("ROUGE-Lsum", scores.rouge_lsum),
                ("mean new tokens", scores.mean_new_tokens),
            ] {
                md.push_str(&format!("| {name} | {v:.4} |\n"));
            }
            if let Some(x) = scores.type_token_ratio {
                md.push_str(&format!("| type-token ratio | {x:.4} |\n"));
            }
            if let Some(x) = perplexity {
                md.push_str(&format!("| general-text perplexity | {x:.3} |\n"));
            }
            md.push_str("\n| prompt | reference | answer |\n|---|---|---|\n");
            for (c, a) in cases.iter().zip(&answers).take(5) {
                let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
                md.push_str(&format!(
                    "| {} | {} | {} |\n",
                    cell(&c.prompt_text),
                    cell(&c.reference),
                    cell(a)
                ));
            }
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("creating {}", args.out.display()))?;
            let path = args.out.join("report.md");
            std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
            let json = serde_json::json!({ "scores": scores, "answers": answers, "general_perplexity": perplexity });
            let json_path = args.out.join("report.json");
            std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
                .with_context(|| format!("writing {}", json_path.display()))?;
            print!("{md}");
            eprintln!("report: {}", path.display());
        }
    }
    Ok(())
}
