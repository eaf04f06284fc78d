//! `kiln bench methods`: every fine-tuning method on the same model, data, split and token budget.
//!
//! Each method trains in its own child process (`kiln bench method-run`, in `method_run`), so its
//! peak resident memory is its own. The parent collects the children's `result.json` files into
//! `methods.json`, `methods.md` and `methods.png` (in `report`). The methods' settings are the
//! recipe fragments in the repository's `recipes/` folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln::data::obd::{self, ObdConfig};
use kiln::models::{AnyConfig, load_tokenizer};
use kiln::prelude::*;

use super::report::{MethodResult, MethodsReport, render};
use crate::presets::Method;
use crate::util::{DeviceArg, kiln_command, machine, read_json, run_child, utc_date};
use kiln::nn::write_atomic;

/// The SmolLM2 checkpoint fetched by `scripts/fetch-assets.sh`.
const DEFAULT_MODEL: &str = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Arguments of `kiln bench methods`.
#[derive(Debug, Clone, clap::Args)]
pub struct MethodsArgs {
    /// Base model (Hugging Face directory or .gguf). Default: SmolLM2-135M-Instruct from
    /// assets/; with --quick, a tiny random Llama using that checkpoint's tokenizer.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A folder with train.jsonl, validation.jsonl and test.jsonl (prompt/completion records).
    /// Default: built from the `obd` package's codes (--codes training codes, seeded).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The `obd` package's codes.py, when --data is not given.
    #[arg(long, default_value = "assets/obd/codes.py")]
    pub codes_py: PathBuf,
    /// Training codes sampled from the OBD-II training split (default 6; 2 with --quick).
    #[arg(long)]
    pub codes: Option<usize>,
    /// Methods to compare, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "full,lora,rslora,dora,ia3,bottleneck,prefix,prompt"
    )]
    pub methods: Vec<Method>,
    /// Learning-rate overrides, `method=lr` (e.g. `--lr lora=1e-3`).
    #[arg(long, value_delimiter = ',')]
    pub lr: Vec<String>,
    /// Epochs over the training set (default 2; 1 with --quick).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Sequences per step (default 8; 4 with --quick).
    #[arg(long)]
    pub batch: Option<usize>,
    /// LoRA rank (LoRA, rsLoRA, DoRA; alpha = 2r, all linear projections).
    #[arg(long, default_value_t = 16)]
    pub r: usize,
    /// Most tokens per test answer (default 32; 8 with --quick).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// How prompts are written: chat (the model's chat template), qa, alpaca or raw.
    #[arg(long, default_value = "chat")]
    pub style: String,
    /// Seed of the data sample, the adapter initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A small, fast run: a tiny model unless --model is given, 2 codes, 1 epoch.
    #[arg(long)]
    pub quick: bool,
    /// Output folder.
    #[arg(long, default_value = "runs/bench-methods")]
    pub out: PathBuf,
    /// Also write the table into DIR/benchmarks.md (between the `kiln bench methods` markers)
    /// and the chart into DIR/img/.
    #[arg(long, value_name = "DIR")]
    pub docs: Option<PathBuf>,
    /// Train nothing: render methods.md, methods.png (and --docs) again from --out/methods.json.
    #[arg(long)]
    pub render_only: bool,
}

/// Runs `kiln bench methods`.
pub fn run(device: &DeviceArg, args: &MethodsArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.render_only {
        let report: MethodsReport = read_json(&args.out.join("methods.json"))?;
        return render(&report, &args.out, args.docs.as_deref());
    }
    let quick = args.quick;
    let epochs = args.epochs.unwrap_or(if quick { 1 } else { 2 });
    let batch = args.batch.unwrap_or(if quick { 4 } else { 8 });
    let max_new_tokens = args.max_new_tokens.unwrap_or(if quick { 8 } else { 32 });
    let mut lrs: Vec<(Method, f64)> = args
        .methods
        .iter()
        .map(|&m| Ok((m, m.default_lr()?)))
        .collect::<Result<_>>()?;
    for spec in &args.lr {
        let (name, value) = spec
            .split_once('=')
            .with_context(|| format!("--lr `{spec}`: expected method=value"))?;
        let method = <Method as clap::ValueEnum>::from_str(name.trim(), true)
            .map_err(|e| anyhow::anyhow!("--lr `{spec}`: {e}"))?;
        let value: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("--lr `{spec}`: not a number"))?;
        for (m, lr) in &mut lrs {
            if *m == method {
                *lr = value;
            }
        }
    }

    let model = match (&args.model, quick) {
        (Some(m), _) => m.clone(),
        (None, false) => PathBuf::from(DEFAULT_MODEL),
        (None, true) => tiny_model(Path::new(DEFAULT_MODEL), &args.out.join("tiny-model"))?,
    };
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            let codes = args.codes.unwrap_or(if quick { 2 } else { 6 });
            obd_data(&args.codes_py, codes, args.seed, &args.out.join("data"))?
        }
    };
    let count = |name: &str| -> Result<usize> {
        let path = data.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
    };
    let examples = (
        count("train.jsonl")?,
        count("validation.jsonl")?,
        count("test.jsonl")?,
    );
    eprintln!(
        "bench methods: {} on {} ({} train, {} validation, {} test examples), {epochs} epoch(s), batch {batch}",
        args.methods
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        model.display(),
        examples.0,
        examples.1,
        examples.2
    );

    let mut results = Vec::new();
    let runs: Vec<(Option<Method>, f64)> = std::iter::once((None, 0.0))
        .chain(lrs.iter().map(|&(m, lr)| (Some(m), lr)))
        .collect();
    for (method, lr) in runs {
        let name = method.map_or("base", Method::name);
        let dir = args.out.join(name);
        eprintln!("== {name} ==");
        let mut cmd = kiln_command()?;
        cmd.args([
            "--device",
            device.as_str(),
            "bench",
            "method-run",
            "--model",
        ])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&dir)
        .args(["--lr", &lr.to_string()])
        .args(["--epochs", &epochs.to_string()])
        .args(["--batch", &batch.to_string()])
        .args(["--r", &args.r.to_string()])
        .args(["--max-new-tokens", &max_new_tokens.to_string()])
        .args(["--style", &args.style])
        .args(["--seed", &args.seed.to_string()]);
        if let Some(m) = method {
            cmd.args(["--method", m.name()]);
        }
        run_child(&mut cmd, name)?;
        let result: MethodResult = read_json(&dir.join("result.json"))?;
        results.push(result);
    }

    let report = MethodsReport {
        date: utc_date(),
        machine: machine(device),
        command: std::iter::once("kiln".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        model: model.display().to_string(),
        examples,
        epochs,
        batch,
        quick,
        results,
    };
    write_atomic(
        &args.out.join("methods.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    render(&report, &args.out, args.docs.as_deref())
}

/// Builds the OBD-II task: `codes` sampled training codes; test = unseen phrasings of them.
fn obd_data(codes_py: &Path, codes: usize, seed: u64, dir: &Path) -> Result<PathBuf> {
    let list = obd::read_codes(codes_py).with_context(|| {
        format!(
            "{} (run ./scripts/fetch-assets.sh to fetch it, or pass --data)",
            codes_py.display()
        )
    })?;
    let dataset = obd::build(&list, &ObdConfig::default())?;
    let sample = dataset.sample(Some(codes), None, seed);
    sample.write_jsonl(dir)?;
    std::fs::copy(dir.join("test_phrasing.jsonl"), dir.join("test.jsonl"))
        .with_context(|| format!("writing {}", dir.join("test.jsonl").display()))?;
    Ok(dir.to_path_buf())
}

/// A tiny random Llama (2 layers, hidden 64) with the tokenizer of `tokenizer_from`, saved as a
/// Hugging Face directory in `dir`.
fn tiny_model(tokenizer_from: &Path, dir: &Path) -> Result<PathBuf> {
    let tok = load_tokenizer(tokenizer_from).with_context(|| {
        format!(
            "loading the tokenizer of {} (run ./scripts/fetch-assets.sh, or pass --model)",
            tokenizer_from.display()
        )
    })?;
    let config = LlamaConfig {
        vocab_size: tok.vocab_size(),
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        ..Default::default()
    };
    let model = config.init(0, &Device::default());
    save_pretrained(
        &AnyCausalLm::Llama(model),
        &AnyConfig::Llama(config),
        Some(&tok),
        dir,
    )
    .with_context(|| format!("saving the tiny model to {}", dir.display()))?;
    Ok(dir.to_path_buf())
}
