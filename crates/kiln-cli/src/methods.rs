//! `kiln bench methods`: every fine-tuning method on the same model, data, split and token budget.
//!
//! Each method trains in its own child process (`kiln bench method-run`), so its peak resident
//! memory is its own. The parent collects the children's `result.json` files into
//! `methods.json`, `methods.md` and `methods.png`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use kiln::data::obd::{self, ObdConfig};
use kiln::data::{PrepareOptions, PromptStyle, RecordFormat, Truncation};
use kiln::models::{AnyConfig, load_tokenizer};
use kiln::prelude::*;
use kiln::recipe::{
    DataSection, ModelSection, Recipe, ScheduleKind, ScheduleSection, answer_config, eval_cases,
};
use kiln::train::FitConfig;
use kiln::train::harness::{GenerationScores, generate_answers, score_answers};
use serde::{Deserialize, Serialize};

use crate::bench::peak_rss_mib;
use crate::chart::{Panel, bar_panels};
use crate::method::Method;

/// The SmolLM2 checkpoint fetched by `scripts/fetch-assets.sh`.
const DEFAULT_MODEL: &str = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const SYSTEM: &str = "You are a car diagnostics assistant.";
const DOCS_BEGIN: &str = "<!-- kiln bench methods: begin -->";
const DOCS_END: &str = "<!-- kiln bench methods: end -->";

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

/// One row of the comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodResult {
    /// `base` (no training) or the method's name.
    pub method: String,
    /// Peak learning rate (`None` for the base model).
    pub lr: Option<f64>,
    /// Parameters that trained.
    pub trainable_params: usize,
    /// All parameters, adapters included.
    pub total_params: usize,
    /// Bytes of the saved adapter's `.safetensors` files (the whole model for full fine-tuning).
    pub saved_bytes: u64,
    /// Peak resident memory of the process after training, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Optimizer steps.
    pub steps: usize,
    /// Training wall time, seconds.
    pub train_secs: f64,
    /// Input tokens per second of training.
    pub tokens_per_sec: f64,
    /// Loss of the first training step.
    pub first_loss: Option<f32>,
    /// Loss of the last training step.
    pub final_loss: Option<f32>,
    /// Validation loss after training (of the base model for `base`).
    pub val_loss: Option<f64>,
    /// Scores of the greedy answers to the test questions.
    pub scores: GenerationScores,
    /// The first few `(question, reference, answer)` triples.
    pub examples: Vec<(String, String, String)>,
}

/// What the comparison ran and found (`methods.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodsReport {
    /// UTC date of the run.
    pub date: String,
    /// CPU model and logical cores (or the device).
    pub machine: String,
    /// The command line.
    pub command: String,
    /// Base model path.
    pub model: String,
    /// Training, validation and test examples.
    pub examples: (usize, usize, usize),
    /// Epochs, batch size, LoRA rank.
    pub epochs: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Whether this was a `--quick` run.
    #[serde(default)]
    pub quick: bool,
    /// The base model, then each method.
    pub results: Vec<MethodResult>,
}

/// The learning rate a method gets unless `--lr` says otherwise: values in the ranges the
/// methods' papers and PEFT's examples use, raised for a short run.
pub fn default_lr(method: Method) -> f64 {
    match method {
        Method::Full => 1e-4,
        Method::Lora | Method::Dora => 2e-3,
        Method::Rslora => 5e-4,
        Method::Ia3 => 1e-2,
        Method::Bottleneck => 1e-3,
        Method::Prefix => 1e-2,
        Method::Prompt => 3e-2,
    }
}

/// Runs `kiln bench methods`.
pub fn run(device: &str, args: &MethodsArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.render_only {
        let path = args.out.join("methods.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let report: MethodsReport =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        return render(&report, args);
    }
    let quick = args.quick;
    let epochs = args.epochs.unwrap_or(if quick { 1 } else { 2 });
    let batch = args.batch.unwrap_or(if quick { 4 } else { 8 });
    let max_new_tokens = args.max_new_tokens.unwrap_or(if quick { 8 } else { 32 });
    let mut lrs: Vec<(Method, f64)> = args.methods.iter().map(|&m| (m, default_lr(m))).collect();
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

    let exe = std::env::current_exe().context("locating the kiln executable")?;
    let mut results = Vec::new();
    let runs: Vec<(Option<Method>, f64)> = std::iter::once((None, 0.0))
        .chain(lrs.iter().map(|&(m, lr)| (Some(m), lr)))
        .collect();
    for (method, lr) in runs {
        let name = method.map_or("base", Method::name);
        let dir = args.out.join(name);
        eprintln!("== {name} ==");
        let mut cmd = Command::new(&exe);
        cmd.args(["--device", device, "bench", "method-run", "--model"])
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
        let status = cmd
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        if !status.success() {
            bail!("{name}: the run failed ({status}); its output is above");
        }
        let path = dir.join("result.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let result: MethodResult =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
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
    render(&report, args)
}

/// Writes `methods.md` and `methods.png` (and the docs section) from a report.
fn render(report: &MethodsReport, args: &MethodsArgs) -> Result<()> {
    let md = to_markdown(report);
    write_atomic(&args.out.join("methods.md"), md.as_bytes())?;
    let png = args.out.join("methods.png");
    chart(report, &png)?;
    print!("{md}");
    eprintln!(
        "written: {}, methods.md, methods.png",
        args.out.join("methods.json").display()
    );
    if let Some(docs) = &args.docs {
        let name = if report.quick {
            "methods-quick.png"
        } else {
            "methods.png"
        };
        let img = docs.join("img");
        std::fs::create_dir_all(&img)?;
        std::fs::copy(&png, img.join(name))
            .with_context(|| format!("copying the chart into {}", img.display()))?;
        let bench = docs.join("benchmarks.md");
        let text = std::fs::read_to_string(&bench)
            .with_context(|| format!("reading {}", bench.display()))?;
        let section = format!("{DOCS_BEGIN}\n{md}\n![methods](img/{name})\n{DOCS_END}");
        let updated = match (text.find(DOCS_BEGIN), text.find(DOCS_END)) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{section}{}", &text[..a], &text[b + DOCS_END.len()..])
            }
            _ => format!("{}\n{section}\n", text.trim_end()),
        };
        write_atomic(&bench, updated.as_bytes())?;
        eprintln!(
            "updated {} and {}",
            bench.display(),
            img.join(name).display()
        );
    }
    Ok(())
}

/// Runs one method (or evaluates the base model) and writes `result.json`.
pub fn method_run(device: &str, args: &MethodRunArgs) -> Result<()> {
    let device = parse_device(device)?;
    let mut style = PromptStyle::builtin(&args.style)?;
    if let PromptStyle::ChatTemplate { system } = &mut style {
        *system = Some(SYSTEM.to_string());
    }
    let prepare = PrepareOptions {
        style,
        max_len: Some(128),
        truncation: Truncation::Skip,
        ..PrepareOptions::new(RecordFormat::prompt_completion())
    };
    let recipe = Recipe {
        model: ModelSection {
            path: args.model.clone(),
        },
        data: DataSection {
            train: args.data.join("train.jsonl"),
            validation: Some(args.data.join("validation.jsonl")),
            limit_train: None,
            limit_validation: None,
            prepare,
        },
        adapter: args
            .method
            .and_then(|m| m.config(args.r, &["all-linear".to_string()])),
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

/// The comparison as Markdown: settings, then one row per method.
pub fn to_markdown(r: &MethodsReport) -> String {
    let mut md = format!(
        "Run on {}, {}:\n\n```bash\n{}\n```\n\n\
         Model `{}`; {} training, {} validation and {} test examples; {} epoch(s), batch {}, \
         cosine schedule with 5% warm-up, gradient clipping at 1.0, no weight decay, loss on the \
         answer only; greedy answers of at most the configured length.\n\n\
         | method | lr | trainable params | saved MiB | peak RSS MiB | s/step | train tokens/s | val loss | exact match | token F1 | BLEU | ROUGE-L |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        r.date,
        r.machine,
        r.command,
        r.model,
        r.examples.0,
        r.examples.1,
        r.examples.2,
        r.epochs,
        r.batch
    );
    for x in &r.results {
        let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
        let trained = x.steps > 0;
        md.push_str(&format!(
            "| {} | {} | {} ({:.3}%) | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.1} | {:.3} |\n",
            x.method,
            x.lr.map_or("-".into(), |v| format!("{v:.0e}")),
            x.trainable_params,
            100.0 * x.trainable_params as f64 / x.total_params.max(1) as f64,
            if trained {
                format!("{:.2}", x.saved_bytes as f64 / (1 << 20) as f64)
            } else {
                "-".into()
            },
            opt(x.peak_rss_mib, 0),
            if trained {
                format!("{:.2}", x.train_secs / x.steps as f64)
            } else {
                "-".into()
            },
            if trained {
                format!("{:.1}", x.tokens_per_sec)
            } else {
                "-".into()
            },
            opt(x.val_loss, 4),
            x.scores.exact_match,
            x.scores.token_f1,
            x.scores.bleu,
            x.scores.rouge_l,
        ));
    }
    md
}

fn chart(r: &MethodsReport, path: &Path) -> Result<()> {
    let bars = |f: &dyn Fn(&MethodResult) -> Option<f64>| -> Vec<(String, Option<f64>)> {
        r.results.iter().map(|x| (x.method.clone(), f(x))).collect()
    };
    let trained = |x: &MethodResult| x.steps > 0;
    let panels = vec![
        Panel {
            title: "token F1 on held-out questions".into(),
            bars: bars(&|x| Some(x.scores.token_f1)),
            format: |v| format!("{v:.3}"),
        },
        Panel {
            title: "validation loss".into(),
            bars: bars(&|x| x.val_loss),
            format: |v| format!("{v:.3}"),
        },
        Panel {
            title: "training tokens/s".into(),
            bars: bars(&|x| trained(x).then_some(x.tokens_per_sec)),
            format: |v| format!("{v:.1}"),
        },
        Panel {
            title: "peak RSS (MiB)".into(),
            bars: bars(&|x| x.peak_rss_mib),
            format: |v| format!("{v:.0}"),
        },
        Panel {
            title: "trainable parameters (log10)".into(),
            bars: bars(&|x| trained(x).then(|| (x.trainable_params.max(1) as f64).log10())),
            format: |v| format!("1e{v:.1}"),
        },
        Panel {
            title: "saved file (MiB)".into(),
            bars: bars(&|x| trained(x).then(|| x.saved_bytes as f64 / (1 << 20) as f64)),
            format: |v| format!("{v:.2}"),
        },
    ];
    bar_panels(
        path,
        &format!(
            "kiln bench methods: {} ({})",
            Path::new(&r.model)
                .file_name()
                .map_or(r.model.clone(), |n| n.to_string_lossy().into_owned()),
            r.date
        ),
        &panels,
        2,
    )
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

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `YYYY-MM-DD` in UTC.
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The CPU model and core count (for CPU devices), else the device string.
fn machine(device: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpu}, {cores} logical cores, device {device}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_date_is_well_formed() {
        let d = utc_date();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
        assert_eq!(&d[4..5], "-");
    }

    #[test]
    fn every_method_has_a_positive_default_lr() {
        for m in [
            Method::Full,
            Method::Lora,
            Method::Rslora,
            Method::Dora,
            Method::Ia3,
            Method::Bottleneck,
            Method::Prefix,
            Method::Prompt,
        ] {
            assert!(default_lr(m) > 0.0 && default_lr(m) < 1.0);
        }
    }
}
