//! What `kiln bench methods` found: the rows (`result.json` of each child), the whole report
//! (`methods.json`), its Markdown table and chart, and the section it writes into the docs.

use std::path::Path;

use anyhow::{Context, Result};
use kiln::nn::write_atomic;
use kiln::train::harness::GenerationScores;
use serde::{Deserialize, Serialize};

use crate::chart::{Panel, bar_panels};

const DOCS_BEGIN: &str = "<!-- kiln bench methods: begin -->";
const DOCS_END: &str = "<!-- kiln bench methods: end -->";

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

/// Writes `methods.md` and `methods.png` (and the docs section) from a report.
pub fn render(report: &MethodsReport, out: &Path, docs: Option<&Path>) -> Result<()> {
    let md = to_markdown(report);
    write_atomic(&out.join("methods.md"), md.as_bytes())?;
    let png = out.join("methods.png");
    chart(report, &png)?;
    print!("{md}");
    eprintln!(
        "written: {}, methods.md, methods.png",
        out.join("methods.json").display()
    );
    if let Some(docs) = docs {
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
