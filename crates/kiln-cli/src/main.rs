//! The `kiln` executable.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use kiln::models::{CachedCausalLm, CausalLm, GenerationConfig, generate, load_pretrained};
use kiln::prelude::*;
use kiln::tokenizer::ChatMessage;

mod bench;
mod chart;
mod data;
mod dist;
mod eval;
mod index;
mod inspect;
mod merge;
mod presets;
mod score;
mod score_rm;
mod search;
mod serve;
mod train;
mod util;

use util::{DeviceArg, QuantInputs, Truncate, truncate_prompts};

/// Customize small language models to a domain.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    /// Backend to run on: cpu, flex, ndarray, wgpu, wgpu:cpu, wgpu:N, cuda, cuda:N.
    #[arg(long, global = true, default_value = "cpu")]
    device: DeviceArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the backends compiled into this build and check that DEVICE works.
    ///
    /// Example: `kiln --device wgpu:cpu devices`
    Devices,
    /// Generate text with a model (a Hugging Face directory or a .gguf file).
    ///
    /// Prints only the generated text on stdout (streamed); logs go to stderr.
    ///
    /// Examples:
    ///   kiln generate --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt "What does P0300 mean?"
    ///   kiln generate --model ./my-model --file prompts.txt --temperature 0.7 --top-p 0.9 --seed 1
    ///   kiln generate --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --chat --rag runs/obd-index --prompt "My engine shakes at idle"
    #[command(verbatim_doc_comment)]
    Generate(GenerateArgs),
    /// Train with a TOML recipe: model, data, PEFT method and training settings.
    ///
    /// Writes the adapter in Hugging Face PEFT format (`adapter/`), checkpoints, `metrics.jsonl`,
    /// `loss_curve.png`, `run_summary.json` and `report.md` into `fit.output_dir`.
    ///
    /// Examples:
    ///   kiln train examples/dtc-assistant/recipe.toml
    ///   kiln train recipe.toml --set optimizer.lr=1e-4 --set fit.epochs=3
    ///   kiln train recipe.toml --print-config
    ///   kiln train recipe.toml --nodes 2 --node-rank 0 --coordinator 10.0.0.1:29517   (on node 0)
    ///   kiln train recipe.toml --nodes 2 --node-rank 1 --coordinator 10.0.0.1:29517   (on node 1)
    #[command(verbatim_doc_comment)]
    Train(train::TrainArgs),
    /// Gather the nodes of a data-parallel `kiln train` and sum their gradients.
    ///
    /// Node 0 of `kiln train --nodes N` runs one itself; start this one instead (and pass
    /// --external-coordinator to every node) to keep it apart from the training nodes. It
    /// exits when every node has left, and fails, telling the others, when one dies, hangs
    /// past --peer-timeout or disagrees.
    ///
    /// Example:
    ///   kiln coordinator --nodes 2 --listen 0.0.0.0:29517
    #[command(verbatim_doc_comment)]
    Coordinator(dist::CoordinatorArgs),
    /// Search hyper-parameters: train the recipe once per trial with sampled values.
    ///
    /// Each --param is a recipe key and a range: a comma list (one of these values),
    /// log:LO:HI (log-uniform), uniform:LO:HI or int:LO:HI. Trial N trains into
    /// OUT/trial-NNN; from its second evaluation on, a trial whose validation loss is worse
    /// than the median of earlier trials at the same evaluation is stopped early (pruned;
    /// --no-prune turns this off), and a failing one is recorded while the search goes on.
    /// --objective validation_exact_match (or validation_token_f1) scores a trial by its
    /// greedy answers to the validation questions (prompt/completion data) after training,
    /// larger is better; such trials are not pruned (validation losses need not rank answers
    /// alike).
    /// Writes search.md (also printed), search.json and best_recipe.toml (the recipe with the
    /// best trial's values, for `kiln train`) into OUT, which must be new or empty.
    ///
    /// Examples:
    ///   kiln search recipe.toml --trials 20 --param adapter.r=4,8,16 --param optimizer.lr=log:1e-4:3e-3
    ///   kiln search recipe.toml --trials 8 --param fit.epochs=int:1:3 --param adapter.lora_dropout=uniform:0:0.2 --sampler random --seed 1 --out runs/search
    ///   kiln search recipe.toml --trials 6 --param optimizer.lr=log:5e-4:3e-3 --objective validation_exact_match
    ///   kiln train runs/search/best_recipe.toml
    #[command(verbatim_doc_comment)]
    Search(search::SearchArgs),
    /// Answer test questions with a model (and its adapter) and score the answers.
    ///
    /// With --adapter the base and the adapted model are compared side by side. The table goes
    /// to stdout; report.md and report.json to --out.
    ///
    /// Example:
    ///   kiln eval --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --adapter runs/dtc-assistant/adapter --data runs/dtc-assistant/data/test_phrasing.jsonl --limit 32
    #[command(verbatim_doc_comment)]
    Eval(eval::EvalArgs),
    /// Score preference pairs with a reward model trained by a `[task] kind = "reward"` recipe.
    ///
    /// Prints one JSON line per pair (`chosen` and `rejected` rewards, `margin`) and, on
    /// stderr, the accuracy (chosen scored above rejected) and the mean margin. The pairs are
    /// read as the recipe reads its data (format, chat template, max_len with truncation, so
    /// with `truncation = "skip"` a pair over max_len gets no line).
    ///
    /// Example:
    ///   kiln score-rm examples/dtc-assistant/reward.toml --data runs/dtc-assistant/reward-data/test.jsonl
    #[command(verbatim_doc_comment)]
    ScoreRm(score_rm::ScoreRmArgs),
    /// Score line-aligned texts: exact match, F1, BLEU, ROUGE-1/2/L/Lsum, vocabulary richness.
    ///
    /// Example:
    ///   kiln score --hyp answers.txt --ref references.txt
    #[command(verbatim_doc_comment)]
    Score(score::ScoreArgs),
    /// Merge an adapter into its base model and save a Hugging Face directory or a GGUF file.
    ///
    /// Example:
    ///   kiln merge --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --adapter runs/dtc-assistant/adapter --out runs/merged
    #[command(verbatim_doc_comment)]
    Merge(merge::MergeArgs),
    /// Describe a model (architecture, sizes, parameters, tokenizer, chat template) or an adapter
    /// (method, targets, trainable parameters).
    ///
    /// Examples:
    ///   kiln inspect assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    ///   kiln inspect runs/dtc-assistant/adapter
    #[command(verbatim_doc_comment)]
    Inspect(inspect::InspectArgs),
    /// Build, split and inspect datasets (including the OBD-II one).
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Build and query retrieval indexes (BM25 + MiniLM embeddings, reciprocal rank fusion),
    /// for `kiln generate --rag`.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Serve a model and its adapters over an OpenAI-compatible HTTP API.
    ///
    /// Example:
    ///   kiln serve --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --adapter dtc=runs/dtc/adapter --port 8080
    Serve(serve::ServeArgs),
    /// Benchmarks: training-step throughput and peak memory; PEFT methods compared.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Model path: a Hugging Face directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// Adapter folders in Hugging Face PEFT format, applied in order (all but the last are
    /// merged into the weights, so they must be LoRA, DoRA or IA3).
    #[arg(long)]
    adapter: Vec<PathBuf>,
    /// The prompt.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    prompt: Option<String>,
    /// A file with one prompt per line (decoded together as a batch).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Wrap each prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message before the user message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling mass.
    #[arg(long)]
    top_p: Option<f32>,
    /// Penalty for repeating tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Cut a prompt that with --max-new-tokens would overrun the model's context: `left` keeps
    /// its last tokens. Without it such a prompt is an error that names both numbers.
    #[arg(long, value_enum)]
    truncate: Option<Truncate>,
    /// Retrieve passages for each prompt from this index (from `kiln index build`) and put
    /// them before it: "Reference information:\n- {passage}\n...\n\nQuestion: {prompt}"
    /// (the user message with --chat). The retrieved ids are logged to stderr.
    #[arg(long)]
    rag: Option<PathBuf>,
    /// Passages to retrieve with --rag.
    #[arg(long, default_value_t = 3, requires = "rag")]
    rag_top_k: usize,
    /// Embedder folder for --rag, instead of the one recorded in the index's meta.json.
    #[arg(long, requires = "rag")]
    rag_embedder: Option<PathBuf>,
    /// How a GGUF model's quantized matrices treat their input rows: `q16` (default; greedy
    /// text equal to the unquantized product's on the checkpoints tested) or `q8` (8-bit
    /// activations as llama.cpp computes them: faster, text can differ at near-ties).
    #[arg(long, value_enum, default_value_t)]
    quant_inputs: QuantInputs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Devices => {
            println!("compiled backends: {}", compiled_backends().join(", "));
            let device = cli.device.open()?;
            let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device);
            let sum: f32 = x.sum().into_scalar::<f32>();
            anyhow::ensure!(
                (sum - 6.0).abs() < 1e-6,
                "device {} computed 1+2+3 = {sum}",
                cli.device
            );
            println!("{}: ok ({device:?})", cli.device);
        }
        Command::Generate(args) => run_generate(&cli.device, &args)?,
        Command::Bench(command) => bench::run(&cli.device, &command)?,
        Command::Train(args) => train::run(&cli.device, &args)?,
        Command::Coordinator(args) => dist::run_coordinator(&args)?,
        Command::Search(args) => search::run(&cli.device, &args)?,
        Command::Eval(args) => eval::run(&cli.device, &args)?,
        Command::Score(args) => score::run(&args)?,
        Command::ScoreRm(args) => score_rm::run(&cli.device, &args)?,
        Command::Merge(args) => merge::run(&cli.device, &args)?,
        Command::Inspect(args) => inspect::run(&cli.device, &args)?,
        Command::Data(command) => data::run(&command)?,
        Command::Index(command) => index::run(&cli.device, &command)?,
        Command::Serve(args) => serve::run(&cli.device, &args)?,
    }
    Ok(())
}

fn run_generate(device: &DeviceArg, args: &GenerateArgs) -> Result<()> {
    let device = device.open()?;
    let prompts: Vec<String> = match (&args.prompt, &args.file) {
        (Some(p), _) => vec![p.clone()],
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
        (None, None) => bail!("give --prompt or --file"),
    };
    if prompts.is_empty() {
        bail!("no prompt to generate from");
    }
    if args.rag.is_some() && args.rag_top_k == 0 {
        bail!("--rag-top-k must be at least 1");
    }
    // Retrieval first: a bad index fails before the model is loaded.
    let prompts: Vec<String> = match &args.rag {
        None => prompts,
        Some(dir) => {
            let index = index::open_index(dir, args.rag_embedder.as_deref(), &device)?;
            let mut out = Vec::with_capacity(prompts.len());
            for (i, prompt) in prompts.iter().enumerate() {
                let hits = index
                    .query(prompt, args.rag_top_k)
                    .with_context(|| format!("retrieving for prompt {}", i + 1))?;
                let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                eprintln!("retrieved for prompt {}: {}", i + 1, ids.join(", "));
                out.push(kiln::rag::rag_prompt(prompt, &hits));
            }
            out
        }
    };
    let start = std::time::Instant::now();
    let p = load_pretrained(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    eprintln!(
        "loaded {} ({}, vocab {}) in {:.1?}",
        args.model.display(),
        p.config.model_type(),
        p.model.vocab_size(),
        start.elapsed()
    );
    let mut model = p.model;
    for (i, dir) in args.adapter.iter().enumerate() {
        let (m, config) = load_adapter(model, dir, &device)
            .with_context(|| format!("loading the adapter {}", dir.display()))?;
        model = m;
        if i + 1 < args.adapter.len() {
            model
                .merge_adapters()
                .with_context(|| format!("merging {} before the next adapter", dir.display()))?;
        }
        eprintln!("adapter: {} from {}", config.peft_type(), dir.display());
    }
    args.quant_inputs.apply(&mut model);
    let mut batch = Vec::with_capacity(prompts.len());
    for prompt in &prompts {
        let text = if args.chat {
            {
                let mut messages = Vec::new();
                if let Some(system) = &args.system {
                    messages.push(ChatMessage::system(system.as_str()));
                }
                messages.push(ChatMessage::user(prompt.as_str()));
                p.tokenizer
                    .apply_chat_template(&messages, true)
                    .context("--chat")?
            }
        } else {
            prompt.clone()
        };
        let ids = p.tokenizer.encode(&text, !args.chat)?;
        if ids.is_empty() {
            bail!("prompt {prompt:?} encodes to no token");
        }
        batch.push(ids);
    }
    if let Some(how) = args.truncate {
        truncate_prompts(
            how,
            model.max_context(),
            args.max_new_tokens,
            batch.iter_mut(),
        )?;
    }
    let eos: Vec<u32> = p.tokenizer.eos_token_id().into_iter().collect();
    let pad = p.tokenizer.padding_id();
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        eos_token_ids: eos.clone(),
        stop_strings: Vec::new(),
    };
    let start = std::time::Instant::now();
    let single = batch.len() == 1;
    let mut printed = String::new();
    let mut so_far: Vec<u32> = Vec::new();
    let mut stdout = std::io::stdout();
    let out = generate(&model, &batch, pad, &config, None, &mut |_, tok| {
        // Stream the single-prompt case; batches are printed at the end, one line each.
        if single && !eos.contains(&tok) {
            so_far.push(tok);
            if let Ok(text) = p.tokenizer.decode(&so_far, true)
                && let Some(new) = text.get(printed.len()..)
            {
                let _ = write!(stdout, "{new}");
                let _ = stdout.flush();
                printed = text;
            }
        }
    })?;
    let n: usize = out.iter().map(|g| g.tokens.len()).sum();
    if single {
        println!();
    } else {
        for g in &out {
            println!(
                "{}",
                p.tokenizer.decode(&g.tokens, true)?.replace('\n', " ")
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{n} tokens in {secs:.1}s ({:.1} tokens/s)", n as f64 / secs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_device_is_reported() {
        let err = parse_device("tpu").context("--device").unwrap_err();
        assert!(format!("{err:#}").contains("unknown device"));
    }

    #[test]
    fn rag_options_need_an_index() {
        let err = Cli::try_parse_from([
            "kiln",
            "generate",
            "--model",
            "m.gguf",
            "--prompt",
            "p",
            "--rag-top-k",
            "2",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--rag"), "{err}");
        let cli = Cli::try_parse_from([
            "kiln", "generate", "--model", "m.gguf", "--prompt", "p", "--rag", "idx",
        ])
        .unwrap();
        let Command::Generate(args) = cli.command else {
            panic!("generate")
        };
        assert_eq!(
            (args.rag_top_k, args.rag.unwrap()),
            (3, PathBuf::from("idx"))
        );
    }

    #[test]
    fn generate_needs_a_prompt() {
        let err = Cli::try_parse_from(["kiln", "generate", "--model", "m.gguf"]).unwrap_err();
        assert!(err.to_string().contains("--prompt"), "{err}");
    }
}
