//! `kiln merge`: fold an adapter into the base weights and write a Hugging Face directory.

use std::path::{Path, PathBuf};

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
    /// Replace the output folder if it exists (only once the new one is complete: it is
    /// written into a temporary sibling folder and renamed).
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
    // Written beside the output and renamed into place: a merge that fails or is killed leaves
    // the old output as it was (and at most a hidden temporary folder).
    let tmp = sibling(&args.out, "tmp")?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    if let Err(e) = save_pretrained(&model, &p.config, Some(&p.tokenizer), &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("writing {}", args.out.display()));
    }
    replace_dir(&tmp, &args.out)?;
    eprintln!(
        "merged {} ({}) into {}: {}",
        args.adapter.display(),
        config.peft_type(),
        args.model.display(),
        args.out.display()
    );
    Ok(())
}

/// A hidden sibling of `out`: `.NAME.TAG-PID` in the same folder (so a rename stays on one file
/// system).
fn sibling(out: &Path, tag: &str) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("--out {} has no folder name", out.display()))?;
    let hidden = format!(".{}.{tag}-{}", name.to_string_lossy(), std::process::id());
    Ok(out.with_file_name(hidden))
}

/// Puts the complete folder `new` in place of `out` (which may not exist).
fn replace_dir(new: &Path, out: &Path) -> Result<()> {
    if !out.exists() {
        return std::fs::rename(new, out)
            .with_context(|| format!("renaming {} to {}", new.display(), out.display()));
    }
    let old = sibling(out, "old")?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    std::fs::rename(out, &old).with_context(|| format!("moving {} aside", out.display()))?;
    if let Err(e) = std::fs::rename(new, out) {
        // Put the old output back.
        let _ = std::fs::rename(&old, out);
        return Err(e).with_context(|| format!("renaming {} to {}", new.display(), out.display()));
    }
    if old.is_dir() {
        std::fs::remove_dir_all(&old)
    } else {
        std::fs::remove_file(&old)
    }
    .with_context(|| format!("removing {}", old.display()))
}
