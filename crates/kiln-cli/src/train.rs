//! `kiln train`: run a TOML recipe.

use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln::recipe::Recipe;

use crate::util::DeviceArg;

/// Arguments of `kiln train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The recipe (TOML): `[model]`, `[data]`, `[adapter]`, `[optimizer]`, `[schedule]`, `[fit]`.
    pub recipe: PathBuf,
    /// Override a key, e.g. `--set optimizer.lr=1e-4 --set fit.epochs=3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Pack the examples of each micro-batch into shared rows (`data.packing = true`; the
    /// default for prompt/completion, instruction and chat data unless the method is prompt or
    /// prefix tuning).
    #[arg(long, conflicts_with = "no_packing")]
    pub packing: bool,
    /// Pad every example to the longest of its micro-batch instead (`data.packing = false`).
    #[arg(long)]
    pub no_packing: bool,
    /// Batch examples of similar length together (`data.group_by_length = true`).
    #[arg(long)]
    pub group_by_length: bool,
    /// Print the fully resolved recipe (every default filled in) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl TrainArgs {
    /// The `--set` overrides followed by those of the data flags.
    fn all_overrides(&self) -> Vec<String> {
        let mut all = self.overrides.clone();
        if self.packing {
            all.push("data.packing=true".into());
        }
        if self.no_packing {
            all.push("data.packing=false".into());
        }
        if self.group_by_length {
            all.push("data.group_by_length=true".into());
        }
        all
    }
}

/// Runs `kiln train`.
pub fn run(device: &DeviceArg, args: &TrainArgs) -> Result<()> {
    let recipe = Recipe::from_file(&args.recipe, &args.all_overrides())?;
    if args.print_config {
        print!("{}", recipe.to_toml());
        return Ok(());
    }
    let device = device.open()?;
    let out = recipe
        .run(&device)
        .with_context(|| format!("running {}", args.recipe.display()))?;
    print!("{}", out.report.to_markdown());
    Ok(())
}
