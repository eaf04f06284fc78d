//! `kiln bench decode`: prefill and greedy decoding throughput, with peak memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln::models::{CachedCausalLm, load_model};
use kiln::prelude::*;

use crate::util::{DeviceArg, QuantInputs, peak_rss_mib};

/// Arguments of `kiln bench decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// Model path: a Hugging Face directory or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT adapter folder, kept unmerged (LoRA computes its update next to the base).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Fold the adapter into the weights first (the merged model's speed).
    #[arg(long, requires = "adapter")]
    pub merge: bool,
    /// Prompt length in tokens: token `i` is `(7919·i + 13) mod vocab`.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// New tokens per run, decoded greedily (end-of-sequence tokens do not stop it).
    #[arg(long, default_value_t = 100)]
    pub new_tokens: usize,
    /// Measured runs (the rates are their medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// How the quantized matrices treat their input rows.
    #[arg(long, value_enum, default_value_t)]
    pub quant_inputs: QuantInputs,
}

/// Runs `kiln bench decode`.
pub fn run(device: &DeviceArg, args: &DecodeArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.new_tokens < 2 || args.runs == 0 {
        bail!("--prompt-tokens must be at least 1, --new-tokens at least 2 and --runs at least 1");
    }
    let device = device.open()?;
    let (_, mut model) = load_model(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    if let Some(dir) = &args.adapter {
        let (m, config) = load_adapter(model, dir, &device)
            .with_context(|| format!("loading the adapter {}", dir.display()))?;
        model = m;
        if args.merge {
            model.merge_adapters()?;
        }
        eprintln!(
            "adapter: {} from {} ({})",
            config.peft_type(),
            dir.display(),
            if args.merge { "merged" } else { "unmerged" }
        );
    }
    args.quant_inputs.apply(&mut model);
    let vocab = model.vocab_size() as u64;
    let prompt: Vec<u32> = (0..args.prompt_tokens as u64)
        .map(|i| ((7919 * i + 13) % vocab) as u32)
        .collect();
    let config = GenerationConfig {
        max_new_tokens: args.new_tokens,
        ..Default::default()
    };
    eprintln!(
        "path: {}",
        if model.host_decoder(&[1]).is_some() {
            "host decoder"
        } else {
            "tensor graph"
        }
    );
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    let mut text = Vec::new();
    for run in 0..args.runs + 1 {
        let start = Instant::now();
        let mut first = None;
        let out = generate(
            &model,
            std::slice::from_ref(&prompt),
            0,
            &config,
            None,
            &mut |_, _| {
                first.get_or_insert_with(Instant::now);
            },
        )?;
        let end = Instant::now();
        let first = first.context("no token generated")?;
        let p = args.prompt_tokens as f64 / (first - start).as_secs_f64();
        let d = (args.new_tokens - 1) as f64 / (end - first).as_secs_f64();
        let kind = if run == 0 { "warm-up" } else { "run" };
        eprintln!("{kind} {run}: prefill {p:.1} tokens/s, decode {d:.1} tokens/s");
        if run > 0 {
            prefill.push(p);
            decode.push(d);
        }
        text = out[0].tokens.clone();
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!("tokens: {text:?}");
    println!(
        "prefill_tokens_per_s={:.1} decode_tokens_per_s={:.1} peak_rss_mib={:.0}",
        median(&mut prefill),
        median(&mut decode),
        peak_rss_mib().unwrap_or(f64::NAN),
    );
    Ok(())
}
