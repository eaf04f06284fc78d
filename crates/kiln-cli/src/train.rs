//! `kiln train`: run a TOML recipe.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kiln::recipe::{Recipe, RecipeError};
use kiln::train::{StopReason, TrainError};

use crate::dist::NodeArgs;
use crate::util::{DeviceArg, interrupt_flag};

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
    /// Continue from the newest checkpoint in `fit.output_dir` (`fit.resume = true`).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Delete the checkpoints an earlier run left in `fit.output_dir` and start over.
    #[arg(long)]
    pub overwrite: bool,
    /// Data-parallel training across nodes.
    #[command(flatten)]
    pub node: NodeArgs,
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
        if self.resume {
            all.push("fit.resume=true".into());
        }
        all
    }
}

/// Runs `kiln train`.
pub fn run(device: &DeviceArg, args: &TrainArgs) -> Result<()> {
    let mut recipe = Recipe::from_file(&args.recipe, &args.all_overrides())?;
    if args.print_config {
        print!("{}", recipe.to_toml());
        return Ok(());
    }
    if args.overwrite {
        if recipe.fit.resume {
            bail!(
                "--overwrite contradicts `fit.resume = true` in {}",
                args.recipe.display()
            );
        }
        recipe.fit.overwrite = true;
    }
    let device = device.open()?;
    // The first SIGINT/SIGTERM raises the flag: the step in progress finishes, a checkpoint is
    // written and the run ends; a second one exits at once.
    let interrupt = interrupt_flag()?;
    let node = args.node.join()?;
    let result = match &node {
        Some(n) => recipe.run_data_parallel(&device, Some(&interrupt), n.group.clone()),
        None => recipe.run_interruptible(&device, Some(&interrupt)),
    };
    // Leave the group first: a failed node tells the others by leaving.
    if let Some(n) = node {
        let finished = n.finish();
        if result.is_ok() {
            finished?;
        }
    }
    let out = match result {
        Ok(out) => out,
        Err(RecipeError::Train(TrainError::PreviousRun { path, step })) => bail!(
            "{} holds checkpoints of an earlier run (newest: step {step}); pass --resume to \
             continue it or --overwrite to delete them and start over",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("running {}", args.recipe.display()));
        }
    };
    let summary = &out.report.summary;
    if summary.stop_reason == StopReason::Interrupted {
        eprintln!(
            "interrupted at step {} of {}: checkpoint {}; continue with `kiln train {} --resume`",
            summary.steps,
            summary.total_steps,
            match (&summary.last_checkpoint, args.node.node_rank) {
                (Some(p), _) => p.display().to_string(),
                (None, 0) => "none".into(),
                (None, _) => "written by node 0".into(),
            },
            args.recipe.display()
        );
        std::process::exit(130);
    }
    if args.node.node_rank > 0 {
        eprintln!(
            "node {} done; node 0 wrote {}",
            args.node.node_rank,
            out.report.saved.display()
        );
        return Ok(());
    }
    print!("{}", out.report.to_markdown());
    Ok(())
}
