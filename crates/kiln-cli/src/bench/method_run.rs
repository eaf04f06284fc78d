//! `kiln bench method-run`: one method of `kiln bench methods` in its own process (or the base
//! model, evaluated only). The recipe is `recipes/bench-methods.toml` with the method's fragment
//! on top; the row goes to `result.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln::data::PromptStyle;
use kiln::prelude::*;
use kiln::recipe::{Recipe, RecipeBuilder, answer_config, eval_cases};
use kiln::train::harness::{GenerationScores, generate_answers, score_answers};

use super::report::MethodResult;
use crate::presets::{BENCH_METHODS, Method};
use crate::util::{DeviceArg, peak_rss_mib};
use kiln::nn::write_atomic;

const SYSTEM: &str = "You are a car diagnostics assistant.";

/// Arguments of the per-method child process.
#[derive(Debug, Clone, clap::Args)]
pub struct MethodRunArgs {
    /// Base model.
    #[arg(long)]
    pub model: PathBuf,
    /// Data folder (train.jsonl, validation.jsonl, test.jsonl).
    #[arg(long)]
    pub data: PathBuf,
    /// The method; omitted: evaluate the base model only.
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub r: usize,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Prompt style.
    #[arg(long, default_value = "chat")]
    pub style: String,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (`result.json` and the run's files).
    #[arg(long)]
    pub out: PathBuf,
}

/// The run's recipe: the shared settings, the method's fragment (LoRA family: rank `--r`, alpha
/// `2r`, every linear projection), then the model, data, prompt style, seed, learning rate,
/// batch size, epochs and output folder from the arguments.
fn bench_recipe(args: &MethodRunArgs) -> Result<Recipe> {
    let mut style = PromptStyle::builtin(&args.style)?;
    if let PromptStyle::ChatTemplate { system } = &mut style {
        *system = Some(SYSTEM.to_string());
    }
    let mut recipe =
        RecipeBuilder::new().merge_toml(BENCH_METHODS, "recipes/bench-methods.toml")?;
    if let Some(method) = args.method {
        // The base model is not trained: its learning rate (0) stays out of the recipe, which
        // would refuse it.
        recipe = method
            .add_to(recipe, args.r, &["all-linear".to_string()])?
            .set("optimizer.lr", &args.lr)?;
    }
    Ok(recipe
        .set("model.path", &args.model)?
        .set("data.train", &args.data.join("train.jsonl"))?
        .set("data.validation", &args.data.join("validation.jsonl"))?
        .set("data.style", &style)?
        .set("seed", &args.seed)?
        .set("fit.batch_size", &args.batch)?
        .set("fit.epochs", &args.epochs)?
        .set("fit.seed", &args.seed)?
        .set("fit.output_dir", &args.out)?
        .build("kiln bench method-run")?)
}

/// Runs one method (or evaluates the base model) and writes `result.json`.
pub fn run(device: &DeviceArg, args: &MethodRunArgs) -> Result<()> {
    let device = device.open()?;
    let recipe = bench_recipe(args)?;
    let mut result = match args.method {
        Some(method) => {
            let out = recipe.run(&device)?;
            let rss = peak_rss_mib();
            let s = &out.report.summary;
            let saved_bytes = safetensors_bytes(&out.report.saved)?;
            let row = MethodResult {
                method: method.name().to_string(),
                lr: Some(args.lr),
                trainable_params: out.report.trainable_params,
                total_params: out.report.total_params,
                saved_bytes,
                peak_rss_mib: rss,
                steps: s.steps,
                train_secs: s.elapsed_secs,
                tokens_per_sec: s.tokens_per_sec,
                first_loss: s.losses.first().copied(),
                final_loss: s.final_loss,
                val_loss: s.last_eval.as_ref().map(|e| e.loss),
                scores: GenerationScores::default(),
                examples: Vec::new(),
            };
            (row, out.model, out.tokenizer)
        }
        None => {
            let p = load_pretrained(&args.model, &device)
                .with_context(|| format!("loading {}", args.model.display()))?;
            let (_, validation) = recipe.prepare(&p.tokenizer)?;
            let val = kiln::train::evaluate(
                &p.model,
                &validation.unwrap_or_default(),
                args.batch,
                p.tokenizer.padding_id(),
            )?;
            let total = TrainableReport::of(&p.model).total;
            let row = MethodResult {
                method: "base".into(),
                lr: None,
                trainable_params: 0,
                total_params: total,
                saved_bytes: 0,
                peak_rss_mib: peak_rss_mib(),
                steps: 0,
                train_secs: 0.0,
                tokens_per_sec: 0.0,
                first_loss: None,
                final_loss: None,
                val_loss: Some(val.loss),
                scores: GenerationScores::default(),
                examples: Vec::new(),
            };
            (row, p.model, p.tokenizer)
        }
    };
    let (row, model, tok) = &mut result;
    let test = args.data.join("test.jsonl");
    let cases = eval_cases(&test, tok, &recipe.data.prepare, None)?;
    let config = answer_config(tok, args.max_new_tokens, 16);
    let decode = |ids: &[u32]| tok.decode(ids, true).unwrap_or_default();
    eprintln!("{}: answering {} test questions", row.method, cases.len());
    let (answers, lengths) = generate_answers(model, &cases, &config, &decode)?;
    let references: Vec<String> = cases.iter().map(|c| c.reference.clone()).collect();
    row.scores = score_answers(&answers, &references, config.rouge_stemmer)?;
    row.scores.mean_new_tokens = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
    row.examples = cases
        .iter()
        .zip(&answers)
        .take(3)
        .map(|(c, a)| (c.prompt_text.clone(), c.reference.clone(), a.clone()))
        .collect();
    std::fs::create_dir_all(&args.out)?;
    write_atomic(
        &args.out.join("result.json"),
        serde_json::to_string_pretty(&row)?.as_bytes(),
    )?;
    eprintln!(
        "{}: F1 {:.3}, exact match {:.3}, validation loss {}",
        row.method,
        row.scores.token_f1,
        row.scores.exact_match,
        row.val_loss.map_or("-".into(), |v| format!("{v:.4}"))
    );
    Ok(())
}

/// Total size of the `.safetensors` files in `dir`.
fn safetensors_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "safetensors") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use kiln::data::{PrepareOptions, RecordFormat, Truncation};
    use kiln::recipe::{DataSection, ModelSection, ScheduleKind, ScheduleSection};
    use kiln::train::FitConfig;

    use super::*;

    /// The recipe the benchmark built in code before its settings moved into `recipes/`.
    fn hand_built(args: &MethodRunArgs) -> Recipe {
        let mut style = PromptStyle::builtin(&args.style).unwrap();
        if let PromptStyle::ChatTemplate { system } = &mut style {
            *system = Some(SYSTEM.to_string());
        }
        let prepare = PrepareOptions {
            style,
            max_len: Some(128),
            truncation: Truncation::Skip,
            ..PrepareOptions::new(RecordFormat::prompt_completion())
        };
        let mut recipe = Recipe {
            model: ModelSection {
                path: args.model.clone(),
            },
            data: DataSection {
                train: args.data.join("train.jsonl"),
                validation: Some(args.data.join("validation.jsonl")),
                limit_train: None,
                limit_validation: None,
                replay: None,
                packing: None,
                packing_row_len: None,
                group_by_length: false,
                prepare,
            },
            adapter: args
                .method
                .map(|m| m.config(args.r, &["all-linear".to_string()]).unwrap())
                .unwrap_or_default(),
            adapter_init_from: None,
            task: Default::default(),
            seed: args.seed,
            optimizer: OptimizerConfig {
                lr: args.lr,
                weight_decay: 0.0,
                max_grad_norm: Some(1.0),
                ..Default::default()
            },
            schedule: ScheduleSection {
                kind: ScheduleKind::Cosine,
                warmup_steps: None,
                warmup_ratio: 0.05,
            },
            fit: FitConfig {
                batch_size: args.batch,
                epochs: args.epochs,
                seed: args.seed,
                output_dir: Some(args.out.clone()),
                progress: false,
                ..Default::default()
            },
        };
        // A loaded recipe has its packing default resolved.
        recipe.data.packing = Some(recipe.packing());
        recipe
    }

    #[test]
    fn preset_recipes_match_the_hand_built_ones() {
        let methods = std::iter::once(None).chain(Method::ALL.map(Some));
        for (method, style) in methods.zip(["chat", "raw", "qa", "alpaca"].iter().cycle()) {
            let args = MethodRunArgs {
                model: PathBuf::from("models/tiny model"),
                data: PathBuf::from("/tmp/bench data"),
                method,
                lr: method.map_or(1e-3, |m| m.default_lr().unwrap()),
                epochs: 2,
                batch: 8,
                r: 4,
                max_new_tokens: 32,
                style: style.to_string(),
                seed: 7,
                out: PathBuf::from("runs/bench-methods/x"),
            };
            assert_eq!(
                bench_recipe(&args).unwrap(),
                hand_built(&args),
                "{method:?}"
            );
        }
    }
}
