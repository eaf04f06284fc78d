//! `kiln bench train-step`: full training steps on random tokens, timed, with peak memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln::burn::module::Module;
use kiln::models::load_model;
use kiln::prelude::*;

use crate::presets::Method;
use crate::util::{DeviceArg, minor_faults, peak_rss_mib};

/// Arguments of `kiln bench train-step`.
#[derive(Debug, clap::Args)]
pub struct TrainStepArgs {
    /// Model path: a Hugging Face directory or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT method.
    #[arg(long, value_enum, default_value_t = Method::Lora)]
    pub method: Method,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Measured steps.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Unmeasured steps first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// LoRA rank (LoRA, rsLoRA, DoRA).
    #[arg(long, default_value_t = 8)]
    pub r: usize,
    /// Projections to adapt (LoRA family and IA3); empty = the method's default.
    #[arg(long, value_delimiter = ',', default_value = "q_proj,v_proj")]
    pub targets: Vec<String>,
    /// Build the Burn graph every step instead of using the model's fused CPU training step.
    #[arg(long)]
    pub no_fused: bool,
    /// Recompute each layer's activations in the backward pass (fused CPU step only).
    #[arg(long)]
    pub gradient_checkpointing: bool,
}

/// Runs `kiln bench train-step`.
pub fn run(device: &DeviceArg, args: &TrainStepArgs) -> Result<()> {
    if args.batch == 0 || args.seq < 2 || args.steps == 0 {
        bail!("--batch must be at least 1, --seq at least 2 and --steps at least 1");
    }
    let device = device.open()?;
    let train_device = device.clone().autodiff();
    let (_, model) = load_model(&args.model, &train_device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let vocab = model.vocab_size();
    let model = args
        .method
        .apply(model, args.r, &args.targets, &train_device)?;
    eprintln!("{}", TrainableReport::of(&model));

    // Random tokens from a fixed seed, every position labelled.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % vocab as u64) as u32
    };
    let examples: Vec<TokenizedExample> = (0..args.batch)
        .map(|_| TokenizedExample::full(&(0..args.seq).map(|_| next()).collect::<Vec<_>>()))
        .collect();
    let batch = TokenBatch::pad_right(&examples, 0)?;
    let mut trainer = Trainer::new(
        OptimizerConfig {
            lr: 1e-5,
            ..Default::default()
        },
        Schedule::Constant { warmup_steps: 0 },
        &device,
    )?;
    trainer.set_fused_kernels(!args.no_fused);
    trainer.set_gradient_checkpointing(args.gradient_checkpointing);
    let mut model = model;
    let mut measured = 0.0f64;
    let mut faults_before = minor_faults();
    for step in 0..args.warmup + args.steps {
        let start = Instant::now();
        let (m, loss) = trainer.train_step(model, &batch)?;
        model = m;
        let secs = start.elapsed().as_secs_f64();
        let kind = if step < args.warmup {
            "warm-up"
        } else {
            "step"
        };
        eprintln!("{kind} {step}: loss {loss:.4}, {secs:.2} s");
        if step + 1 == args.warmup {
            faults_before = minor_faults();
        }
        if step >= args.warmup {
            measured += secs;
        }
    }
    drop(model.valid());
    let tokens = (args.batch * args.seq * args.steps) as f64;
    println!(
        "tokens_per_s={:.1} peak_rss_mib={:.0} step_s={:.3} minor_faults_per_step={}",
        tokens / measured,
        peak_rss_mib().unwrap_or(f64::NAN),
        measured / args.steps as f64,
        match (faults_before, minor_faults()) {
            (Some(a), Some(b)) => ((b - a) / args.steps as u64).to_string(),
            _ => "n/a".into(),
        }
    );
    Ok(())
}
