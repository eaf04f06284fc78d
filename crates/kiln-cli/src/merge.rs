//! `kiln merge`: fold an adapter into the base weights and write a Hugging Face directory.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kiln::models::{load_pretrained, save_pretrained};
use kiln::prelude::*;

use crate::util::DeviceArg;

/// Arguments of `kiln merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Base model: a Hugging Face directory or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// Adapter folder in Hugging Face PEFT format (LoRA, DoRA or IA3).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Output folder (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Runs `kiln merge`.
pub fn run(device: &DeviceArg, args: &MergeArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.out.display());
    }
    let device = device.open()?;
    let p = load_pretrained(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let (mut model, config) = load_adapter(p.model, &args.adapter, &device)
        .with_context(|| format!("loading the adapter {}", args.adapter.display()))?;
    model.merge_adapters().with_context(|| {
        format!(
            "merging {} ({})",
            args.adapter.display(),
            config.peft_type()
        )
    })?;
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("removing {}", args.out.display()))?;
    }
    save_pretrained(&model, &p.config, Some(&p.tokenizer), &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "merged {} ({}) into {}: {}",
        args.adapter.display(),
        config.peft_type(),
        args.model.display(),
        args.out.display()
    );
    Ok(())
}
