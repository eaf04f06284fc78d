//! `kiln merge`: fold an adapter into the base weights and write a Hugging Face directory, or a
//! GGUF file for llama.cpp.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln::models::gguf::{GgmlType, GgufFile};
use kiln::models::{load_pretrained, save_gguf, save_pretrained};
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
    /// Output: a folder (config.json, model.safetensors, tokenizer files), or a .gguf file
    /// with `--format gguf`.
    #[arg(long)]
    pub out: PathBuf,
    /// Output format: `hf` (a Hugging Face folder) or `gguf` (one file for llama.cpp, from a
    /// GGUF base of the Llama family, whose metadata, tokenizer and chat template it keeps).
    /// Default: `gguf` when `--out` ends in `.gguf`, else `hf`.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Tensor type of the GGUF weights (norms stay f32). Default: f16.
    #[arg(long, value_enum)]
    pub quant: Option<Quant>,
    /// Replace the output if it exists (only once the new one is complete: it is written under
    /// a temporary sibling name and renamed).
    #[arg(long)]
    pub force: bool,
}

/// What `kiln merge` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A Hugging Face folder.
    Hf,
    /// A GGUF file.
    Gguf,
}

/// Tensor types of a GGUF export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quant {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// 8-bit blocks of 32 with an f16 scale.
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale.
    #[value(name = "q4_0")]
    Q4_0,
}

impl Quant {
    fn ggml_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_0 => GgmlType::Q4_0,
        }
    }
}

/// Runs `kiln merge`.
pub fn run(device: &DeviceArg, args: &MergeArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.out.display());
    }
    let format = args.format.unwrap_or_else(|| {
        if args.out.extension().is_some_and(|e| e == "gguf") {
            Format::Gguf
        } else {
            Format::Hf
        }
    });
    if format == Format::Hf && args.quant.is_some() {
        bail!("--quant applies to --format gguf; a Hugging Face folder is written in f32");
    }
    let quant = args.quant.unwrap_or(Quant::F16);
    // Checked before the model is loaded: the GGUF export copies the base file's metadata.
    let base = match format {
        Format::Gguf => Some(GgufFile::open(&args.model).with_context(|| {
            format!(
                "--format gguf copies the metadata and tokenizer of a GGUF base; {} is not one",
                args.model.display()
            )
        })?),
        Format::Hf => None,
    };
    if args.out.is_dir() && format == Format::Gguf {
        bail!(
            "{} is a folder; --format gguf writes one file (e.g. --out model.gguf)",
            args.out.display()
        );
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
    if let Some(base) = base {
        // Written to a temporary sibling and renamed: a failed export leaves the old file.
        save_gguf(&model, &p.config, &base, quant.ggml_type(), &args.out)
            .with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!(
            "merged {} ({}) into {}: {} (GGUF, {})",
            args.adapter.display(),
            config.peft_type(),
            args.model.display(),
            args.out.display(),
            quant.ggml_type()
        );
        return Ok(());
    }
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
