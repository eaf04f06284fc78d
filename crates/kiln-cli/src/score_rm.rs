//! `kiln score-rm`: score preference pairs with a trained reward model.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kiln::models::load_pretrained;
use kiln::recipe::Recipe;
use kiln::train::load_reward_adapter;
use serde_json::json;

use crate::util::DeviceArg;

/// Arguments of `kiln score-rm`.
#[derive(Debug, clap::Args)]
pub struct ScoreRmArgs {
    /// The reward task's recipe (`[task] kind = "reward"`): its model, and how its data is
    /// formatted and tokenized.
    pub recipe: PathBuf,
    /// Preference pairs to score (`{"prompt", "chosen", "rejected"}` records, as the recipe's
    /// data).
    #[arg(long)]
    pub data: PathBuf,
    /// The reward model's adapter (PEFT `SEQ_CLS`); default `fit.output_dir/adapter`.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

/// Runs `kiln score-rm`: one JSON line per pair on stdout (`chosen`, `rejected` rewards), and
/// the accuracy and mean margin on stderr.
pub fn run(device: &DeviceArg, args: &ScoreRmArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut recipe = Recipe::from_file(&args.recipe, &[])?;
    if recipe.task.reward().is_none() {
        bail!(
            "{}: task.kind is \"{}\"; score-rm needs a reward model's recipe ([task] kind = \
             \"reward\")",
            args.recipe.display(),
            recipe.task.kind.name()
        );
    }
    let adapter = match &args.adapter {
        Some(a) => a.clone(),
        None => recipe
            .fit
            .output_dir
            .as_ref()
            .expect("validated")
            .join("adapter"),
    };
    let device = device.open()?;
    let p = load_pretrained(&recipe.model.path, &device)
        .with_context(|| format!("loading {}", recipe.model.path.display()))?;
    recipe.data.train = args.data.clone();
    recipe.data.validation = None;
    recipe.data.limit_train = None;
    let (pairs, _) = recipe.prepare_preference(&p.tokenizer)?;
    let (model, _) = load_reward_adapter(p.model, &adapter, &device)
        .with_context(|| format!("loading the reward model {}", adapter.display()))?;
    let pad = p.tokenizer.padding_id();
    let sequences: Vec<Vec<u32>> = pairs
        .iter()
        .flat_map(|p| {
            [&p.chosen, &p.rejected].map(|c| p.prompt.iter().chain(c.iter()).copied().collect())
        })
        .collect();
    let rewards = model.score(&sequences, pad, args.batch_size);
    let (mut wins, mut margin) = (0usize, 0.0f64);
    let mut out = std::io::stdout().lock();
    for (i, r) in rewards.chunks(2).enumerate() {
        let (c, rj) = (r[0], r[1]);
        wins += usize::from(c > rj);
        margin += f64::from(c - rj);
        use std::io::Write;
        writeln!(
            out,
            "{}",
            json!({"pair": i, "chosen": c, "rejected": rj, "margin": c - rj})
        )?;
    }
    let n = pairs.len().max(1) as f64;
    eprintln!(
        "{} pairs: accuracy {:.3} (chosen scored above rejected), mean margin {:.4}",
        pairs.len(),
        wins as f64 / n,
        margin / n
    );
    Ok(())
}
