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
    /// Print the fully resolved recipe (every default filled in) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Runs `kiln train`.
pub fn run(device: &DeviceArg, args: &TrainArgs) -> Result<()> {
    let recipe = Recipe::from_file(&args.recipe, &args.overrides)?;
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
