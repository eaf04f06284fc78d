//! `kiln search`: hyper-parameter search over a recipe, one training run per trial.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use kiln::recipe::RecipeBuilder;
use kiln::train::search::{
    MedianPruner, Param, Sampler, SearchConfig, SearchReport, SearchSpace, TrialParams,
    TrialPruner, TrialResult, planned_trials, search,
};
use kiln::train::{Callback, Direction, EvalLog, EvalMetric, StepLog, TrainError};
use serde_json::{Value, json};

use crate::util::{DeviceArg, interrupt_flag};
use kiln::recipe::{answer_config, eval_cases};
use kiln::train::harness::generation_metrics;

/// Arguments of `kiln search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// The recipe (TOML) every trial runs, with its sampled values applied.
    pub recipe: PathBuf,
    /// Number of trials.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// A hyper-parameter and its range (repeatable): `KEY=A,B,C` (one of these values, kept as
    /// TOML values), `KEY=log:LO:HI` (log-uniform), `KEY=uniform:LO:HI` or `KEY=int:LO:HI`.
    #[arg(long = "param", value_name = "KEY=RANGE", required = true)]
    pub params: Vec<String>,
    /// What a trial is scored by: the best validation loss of its evaluations, the training
    /// loss of its last step, or the exact match or token F1 of its greedy answers to the
    /// validation questions after training.
    #[arg(long, value_enum, default_value = "validation_loss")]
    pub objective: Objective,
    /// Whether a smaller or a larger objective is better [default: minimize for the losses,
    /// maximize for exact match and token F1].
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
    /// How the next trial's values are chosen: TPE (random for the first 10 trials), random, or
    /// grid (every combination of the comma lists once, at most --trials of them).
    #[arg(long, value_enum, default_value = "tpe")]
    pub sampler: SamplerArg,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the trials (`trial-000`, ...), `search.md`, `search.json` and `best_recipe.toml`
    /// go; must not exist or be empty [default: the recipe's `fit.output_dir` + `-search`].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a key of the recipe for every trial, e.g. `--set fit.epochs=2` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run every trial to its end: no median pruning.
    #[arg(long)]
    pub no_prune: bool,
}

/// The metric a trial is scored by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Objective {
    /// The best validation loss of the trial's evaluations (needs `data.validation`).
    #[value(name = "validation_loss")]
    ValidationLoss,
    /// The training loss of the trial's last step.
    #[value(name = "train_loss")]
    TrainLoss,
    /// Exact match of the trained model's greedy answers to the validation questions
    /// (prompt/completion data; the completion is the reference).
    #[value(name = "validation_exact_match")]
    ValidationExactMatch,
    /// Token F1 of the trained model's greedy answers to the validation questions.
    #[value(name = "validation_token_f1")]
    ValidationTokenF1,
}

impl Objective {
    fn name(self) -> &'static str {
        match self {
            Objective::ValidationLoss => "validation_loss",
            Objective::TrainLoss => "train_loss",
            Objective::ValidationExactMatch => "validation_exact_match",
            Objective::ValidationTokenF1 => "validation_token_f1",
        }
    }

    /// Whether the objective is scored from generated answers.
    fn generates(self) -> bool {
        matches!(
            self,
            Objective::ValidationExactMatch | Objective::ValidationTokenF1
        )
    }

    /// Smaller is better for losses, larger for answer scores.
    fn default_direction(self) -> DirectionArg {
        if self.generates() {
            DirectionArg::Maximize
        } else {
            DirectionArg::Minimize
        }
    }
}

impl SearchArgs {
    /// Whether trials are pruned: not with `--no-prune`, and not for objectives scored from
    /// answers (the pruner compares validation losses, which need not rank answers alike).
    fn prunes(&self) -> bool {
        !self.no_prune && !self.objective.generates()
    }

    /// `--direction`, or the objective's natural one.
    fn direction(&self) -> DirectionArg {
        self.direction
            .unwrap_or_else(|| self.objective.default_direction())
    }
}

/// `--direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DirectionArg {
    /// Smaller is better.
    Minimize,
    /// Larger is better.
    Maximize,
}

/// `--sampler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerArg {
    /// Tree-structured Parzen Estimator.
    Tpe,
    /// Independent uniform draws.
    Random,
    /// Every combination of the `--param` lists once (each must be a comma list); at most
    /// `--trials` of them.
    Grid,
}

/// The range of one `--param`.
#[derive(Debug, Clone, PartialEq)]
enum Range {
    /// One of these values.
    Choice(Vec<Value>),
    /// Log-uniform real.
    Log(f64, f64),
    /// Uniform real.
    Uniform(f64, f64),
    /// Uniform integer, both ends included.
    Int(i64, i64),
}

/// One `--param`: the recipe key, the argument as given and the range.
#[derive(Debug, Clone, PartialEq)]
struct ParamSpec {
    key: String,
    given: String,
    range: Range,
}

impl ParamSpec {
    /// Parses `KEY=A,B,C`, `KEY=log:LO:HI`, `KEY=uniform:LO:HI` or `KEY=int:LO:HI`.
    fn parse(given: &str) -> Result<Self> {
        let fail = |why: String| anyhow!("--param {given}: {why}");
        let (key, spec) = given.split_once('=').ok_or_else(|| {
            fail("expected KEY=RANGE, e.g. adapter.r=4,8,16 or optimizer.lr=log:1e-4:3e-3".into())
        })?;
        let (key, spec) = (key.trim(), spec.trim());
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(fail(format!("`{key}` is not a recipe key")));
        }
        let kinds = ["log", "uniform", "int"];
        let range = match spec.split_once(':') {
            Some((kind, rest)) if kinds.contains(&kind) => {
                let (lo, hi) = rest
                    .split_once(':')
                    .filter(|(_, h)| !h.contains(':'))
                    .ok_or_else(|| fail(format!("expected {kind}:LO:HI, got `{spec}`")))?;
                if kind == "int" {
                    let int = |s: &str| {
                        s.trim()
                            .parse::<i64>()
                            .map_err(|_| fail(format!("`{s}` is not an integer")))
                    };
                    let (lo, hi) = (int(lo)?, int(hi)?);
                    if lo >= hi {
                        return Err(fail(format!(
                            "the low end {lo} is not below the high end {hi}"
                        )));
                    }
                    Range::Int(lo, hi)
                } else {
                    let real = |s: &str| {
                        s.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| fail(format!("`{s}` is not a number")))
                    };
                    let (l, h) = (real(lo)?, real(hi)?);
                    if l >= h {
                        return Err(fail(format!(
                            "the low end {} is not below the high end {}",
                            lo.trim(),
                            hi.trim()
                        )));
                    }
                    if kind == "log" {
                        if l <= 0.0 {
                            return Err(fail(format!(
                                "a log scale needs a positive low end, not {}",
                                lo.trim()
                            )));
                        }
                        Range::Log(l, h)
                    } else {
                        Range::Uniform(l, h)
                    }
                }
            }
            _ => {
                let mut values = Vec::new();
                for item in spec.split(',') {
                    let item = item.trim();
                    if item.is_empty() {
                        return Err(fail(format!("an empty value in `{spec}`")));
                    }
                    let value = scalar(item);
                    if values.contains(&value) {
                        return Err(fail(format!("`{item}` is listed twice")));
                    }
                    values.push(value);
                }
                Range::Choice(values)
            }
        };
        Ok(Self {
            key: key.to_string(),
            given: given.to_string(),
            range,
        })
    }

    /// The search engine's view: choices by index, integers as a real rounded afterwards.
    fn param(&self) -> Param {
        match &self.range {
            Range::Choice(values) => Param::Choice {
                values: (0..values.len()).map(|i| i as f64).collect(),
            },
            Range::Log(low, high) => Param::LogUniform {
                low: *low,
                high: *high,
            },
            Range::Uniform(low, high) => Param::Uniform {
                low: *low,
                high: *high,
            },
            Range::Int(low, high) => Param::Uniform {
                low: *low as f64 - 0.4999,
                high: *high as f64 + 0.4999,
            },
        }
    }

    /// The recipe value for the engine's `x`; reals are rounded to 6 significant digits, so
    /// that the value run, reported and written into the best recipe is the same.
    fn value(&self, x: f64) -> Value {
        match &self.range {
            Range::Choice(values) => {
                values[(x.round().max(0.0) as usize).min(values.len() - 1)].clone()
            }
            Range::Log(..) | Range::Uniform(..) => {
                let rounded: f64 = format!("{x:.5e}").parse().unwrap_or(x);
                json!(rounded)
            }
            Range::Int(lo, hi) => json!((x.round() as i64).clamp(*lo, *hi)),
        }
    }

    /// Values that span the range (every choice, both ends), to check against the recipe.
    fn extremes(&self) -> Vec<Value> {
        match &self.range {
            Range::Choice(values) => values.clone(),
            Range::Log(lo, hi) | Range::Uniform(lo, hi) => vec![json!(lo), json!(hi)],
            Range::Int(lo, hi) => vec![json!(lo), json!(hi)],
        }
    }
}

/// A comma-list item as a TOML scalar: integer, real, boolean, or string (quotes optional).
fn scalar(item: &str) -> Value {
    if let Ok(i) = item.parse::<i64>() {
        return json!(i);
    }
    if let Ok(f) = item.parse::<f64>()
        && f.is_finite()
        && item.chars().any(|c| c.is_ascii_digit())
    {
        return json!(f);
    }
    match item {
        "true" => return json!(true),
        "false" => return json!(false),
        _ => {}
    }
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| item.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)));
    json!(unquoted.unwrap_or(item))
}

/// A value as shown in the table and the summary: strings without quotes.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs `kiln search`.
pub fn run(device: &DeviceArg, args: &SearchArgs) -> Result<()> {
    // Everything is checked before anything is written.
    if args.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let mut specs: Vec<ParamSpec> = Vec::new();
    for given in &args.params {
        let spec = ParamSpec::parse(given)?;
        if let Some(other) = specs.iter().find(|s| s.key == spec.key) {
            bail!(
                "--param {given}: `{}` is already searched by --param {}",
                spec.key,
                other.given
            );
        }
        specs.push(spec);
    }
    let text = std::fs::read_to_string(&args.recipe)
        .with_context(|| format!("reading {}", args.recipe.display()))?;
    let origin = args.recipe.display().to_string();
    let base = RecipeBuilder::new()
        .merge_toml(&text, &origin)?
        .overrides(&args.overrides)?;
    let recipe = base.clone().build(&origin)?;
    for spec in &specs {
        if spec.key == "fit.output_dir" {
            bail!(
                "--param {}: each trial has its own output directory",
                spec.given
            );
        }
        if args.sampler == SamplerArg::Grid && !matches!(spec.range, Range::Choice(_)) {
            bail!(
                "--param {}: the grid sampler needs a comma list of values, not a range",
                spec.given
            );
        }
        for value in spec.extremes() {
            base.clone()
                .set(&spec.key, &value)
                .map_err(|e| anyhow!("--param {}: {e}", spec.given))?
                .build(&format!("--param {}", spec.given))
                .map_err(|e| anyhow!("{e} (value {value})"))?;
        }
    }
    if args.objective != Objective::TrainLoss && recipe.data.validation.is_none() {
        bail!(
            "--objective {}: {} has no validation data (`data.validation`)",
            args.objective.name(),
            args.recipe.display()
        );
    }
    if args.objective.generates()
        && !matches!(
            recipe.data.prepare.format,
            kiln::data::RecordFormat::PromptCompletion { .. }
        )
    {
        bail!(
            "--objective {}: answers are scored against completions, and {} does not use the \
             prompt_completion data format",
            args.objective.name(),
            args.recipe.display()
        );
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => {
            let run_dir = recipe.fit.output_dir.clone().expect("validated");
            let mut name = run_dir.file_name().unwrap_or_default().to_os_string();
            name.push("-search");
            run_dir.with_file_name(name)
        }
    };
    if out.is_file() {
        bail!("--out {}: is a file", out.display());
    }
    if out.is_dir()
        && std::fs::read_dir(&out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "--out {}: exists and is not empty; choose another directory or remove it",
            out.display()
        );
    }
    let device = device.open()?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let interrupt = interrupt_flag()?;

    let space: SearchSpace = specs.iter().map(|s| (s.key.clone(), s.param())).collect();
    let direction = match args.direction() {
        DirectionArg::Minimize => Direction::Minimize,
        DirectionArg::Maximize => Direction::Maximize,
    };
    let config = SearchConfig {
        trials: args.trials,
        seed: args.seed,
        sampler: match args.sampler {
            SamplerArg::Tpe => Sampler::tpe(),
            SamplerArg::Random => Sampler::Random,
            SamplerArg::Grid => Sampler::Grid,
        },
        direction,
        pruner: args.prunes().then_some(MedianPruner {
            warmup_evals: 1,
            min_trials: 2,
        }),
        metric: EvalMetric::ValLoss,
    };
    let values_of = |params: &TrialParams| -> BTreeMap<String, Value> {
        specs
            .iter()
            .map(|s| (s.key.clone(), s.value(params[&s.key])))
            .collect()
    };
    let trial_dir = |id: usize| out.join(format!("trial-{id:03}"));
    let planned = planned_trials(&space, &config);
    let mut records: Vec<TrialRecord> = Vec::new();
    let report = search(&space, &config, |params, pruner| {
        let id = records.len();
        let values = values_of(params);
        let dir = trial_dir(id);
        let shown_values: Vec<String> = values
            .iter()
            .map(|(k, v)| format!("{k}={}", shown(v)))
            .collect();
        eprintln!(
            "trial {id} ({} of {}): {}",
            id + 1,
            planned,
            shown_values.join(" ")
        );
        let mut record = TrialRecord::default();
        let outcome = run_trial(
            &base,
            &origin,
            &values,
            &dir,
            &device,
            &interrupt,
            pruner,
            &mut record,
            args.objective.generates(),
        )
        .and_then(|answers| {
            let value = match args.objective {
                Objective::ValidationExactMatch | Objective::ValidationTokenF1 => {
                    let metric = if args.objective == Objective::ValidationExactMatch {
                        "exact_match"
                    } else {
                        "token_f1"
                    };
                    answers
                        .and_then(|m| m.get(metric).copied())
                        .ok_or_else(|| anyhow!("no validation answers"))?
                }
                Objective::ValidationLoss => record
                    .evaluations
                    .iter()
                    .copied()
                    .filter(|v| v.is_finite())
                    .min_by(|a, b| match direction {
                        Direction::Minimize => a.total_cmp(b),
                        Direction::Maximize => b.total_cmp(a),
                    })
                    .ok_or_else(|| anyhow!("no finite validation loss"))?,
                Objective::TrainLoss => record
                    .last_loss
                    .map(f64::from)
                    .ok_or_else(|| anyhow!("no training step"))?,
            };
            Ok(value)
        });
        match &outcome {
            Ok(v) => eprintln!(
                "trial {id}: {} {v:.5}{}",
                args.objective.name(),
                if pruner.pruned() { " (pruned)" } else { "" }
            ),
            Err(e) => {
                eprintln!("trial {id}: failed: {e:#}");
                record.error = Some(format!("{e:#}"));
            }
        }
        records.push(record);
        outcome.map_err(|e| TrainError::InvalidConfig {
            field: format!("trial {id}"),
            reason: format!("{e:#}"),
        })
    })?;

    // The results: table, JSON, best recipe.
    let trials: Vec<Value> = report
        .trials
        .iter()
        .zip(&records)
        .map(|(t, r)| {
            json!({
                "trial": t.id,
                "dir": trial_dir(t.id),
                "values": values_of(&t.params),
                "value": t.value,
                "status": status(&report, &records, t.id),
                "pruned": t.pruned,
                "error": r.error,
                "steps": r.steps,
                "evaluations": r.evaluations,
            })
        })
        .collect();
    let best = report.best_trial();
    let best_path = out.join("best_recipe.toml");
    let summary = json!({
        "recipe": args.recipe,
        "objective": args.objective.name(),
        "direction": match direction { Direction::Minimize => "minimize", Direction::Maximize => "maximize" },
        "sampler": match args.sampler { SamplerArg::Tpe => "tpe", SamplerArg::Random => "random", SamplerArg::Grid => "grid" },
        "seed": args.seed,
        "pruning": args.prunes(),
        "params": specs.iter().map(|s| (s.key.clone(), s.given.clone())).collect::<BTreeMap<_, _>>(),
        "overrides": args.overrides,
        "best": best.map(|t| json!({
            "trial": t.id,
            "value": t.value,
            "values": values_of(&t.params),
            "recipe": best_path,
        })),
        "trials": trials,
    });
    let md = markdown(args, &specs, &report, &records, &best_path);
    write(&out.join("search.json"), &format!("{summary:#}\n"))?;
    write(&out.join("search.md"), &md)?;
    print!("{md}");
    let Some(best) = best else {
        bail!(
            "no trial finished (see {}); nothing to write as best_recipe.toml",
            out.join("search.md").display()
        );
    };
    let values = values_of(&best.params);
    let mut builder = base.clone();
    for (key, value) in &values {
        builder = builder.set(key, value)?;
    }
    let best_recipe = builder.build(&origin)?;
    let header = format!(
        "# Best of {} trials of `kiln search {}` (trial {}, {} {:.5}): {}\n# Relative paths are \
         relative to the directory the search ran in.\n\n",
        report.trials.len(),
        args.recipe.display(),
        best.id,
        args.objective.name(),
        best.value.unwrap_or(f64::NAN),
        values
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    write(&best_path, &format!("{header}{}", best_recipe.to_toml()))?;
    eprintln!("best recipe: {}", best_path.display());
    if interrupt.load(Ordering::SeqCst) {
        std::process::exit(130);
    }
    Ok(())
}

/// What a trial's run did, beyond its objective value.
#[derive(Debug, Default)]
struct TrialRecord {
    /// Validation loss of every evaluation.
    evaluations: Vec<f64>,
    /// Loss of the last step.
    last_loss: Option<f32>,
    /// Optimizer steps run.
    steps: usize,
    /// Why the trial failed.
    error: Option<String>,
}

/// Forwards evaluations to the pruner and records them.
struct Watch<'a, 'p> {
    pruner: &'a mut TrialPruner<'p>,
    record: &'a mut TrialRecord,
}

impl Callback for Watch<'_, '_> {
    fn on_step(&mut self, log: &StepLog) {
        self.record.last_loss = Some(log.loss);
        self.record.steps = log.step;
    }

    fn on_eval(&mut self, log: &EvalLog) {
        self.record.evaluations.push(log.val_loss);
        self.pruner.on_eval(log);
    }

    fn should_stop(&mut self, step: usize) -> bool {
        self.pruner.should_stop(step)
    }
}

/// Runs one trial's recipe into `dir`; with `answer`, then scores the trained model's greedy
/// answers to the validation questions.
#[allow(clippy::too_many_arguments)]
fn run_trial(
    base: &RecipeBuilder,
    origin: &str,
    values: &BTreeMap<String, Value>,
    dir: &Path,
    device: &kiln::prelude::Device,
    interrupt: &AtomicBool,
    pruner: &mut TrialPruner<'_>,
    record: &mut TrialRecord,
    answer: bool,
) -> Result<Option<BTreeMap<String, f64>>> {
    if interrupt.load(Ordering::SeqCst) {
        bail!("not run: the search was interrupted");
    }
    let mut builder = base.clone();
    for (key, value) in values {
        builder = builder.set(key, value)?;
    }
    let recipe = builder
        .set("fit.output_dir", &dir.display().to_string())?
        .build(origin)?;
    let mut watch = Watch { pruner, record };
    let output = recipe
        .run_with(
            device,
            Some(interrupt),
            Some(&mut watch as &mut dyn Callback),
        )
        .with_context(|| format!("running {}", dir.display()))?;
    if interrupt.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    if !answer {
        return Ok(None);
    }
    let path = recipe.data.validation.as_ref().expect("checked");
    let tok = &output.tokenizer;
    let cases = eval_cases(path, tok, &recipe.data.prepare, None)?;
    // Room for the longest reference and a little more; answers also stop at a new line.
    let mut longest = 0;
    for c in &cases {
        longest = longest.max(tok.encode(&c.reference, false)?.len());
    }
    let config = answer_config(tok, longest + 16, 16);
    let decode = |ids: &[u32]| tok.decode(ids, true).unwrap_or_default();
    Ok(Some(generation_metrics(&cases, &config, &decode)(
        &output.model,
    )?))
}

/// `failed: ...`, `pruned`, `best` or `done`.
fn status(report: &SearchReport, records: &[TrialRecord], id: usize) -> String {
    let t = &report.trials[id];
    if let Some(e) = records.get(id).and_then(|r| r.error.as_ref()) {
        format!("failed: {e}")
    } else if t.error.is_some() {
        "failed".into()
    } else if t.pruned {
        "pruned".into()
    } else if report.best == Some(id) {
        "best".into()
    } else {
        "done".into()
    }
}

/// `search.md`: what was searched, the best trial, and a table of all trials, best first.
fn markdown(
    args: &SearchArgs,
    specs: &[ParamSpec],
    report: &SearchReport,
    records: &[TrialRecord],
    best_path: &Path,
) -> String {
    let mut md = format!(
        "# Hyper-parameter search\n\n{} trials of `{}` ({} sampler, seed {}, {}), objective \
         {} ({}).\n\n",
        report.trials.len(),
        args.recipe.display(),
        match args.sampler {
            SamplerArg::Tpe => "TPE",
            SamplerArg::Random => "random",
            SamplerArg::Grid => "grid",
        },
        args.seed,
        if !args.prunes() {
            "no pruning"
        } else {
            "median pruning"
        },
        args.objective.name(),
        match args.direction() {
            DirectionArg::Minimize => "minimize",
            DirectionArg::Maximize => "maximize",
        }
    );
    if let Some(best) = report.best_trial() {
        md.push_str(&format!(
            "Best: trial {} ({} {:.5}), written as `{}`.\n\n",
            best.id,
            args.objective.name(),
            best.value.unwrap_or(f64::NAN),
            best_path.display()
        ));
    } else {
        md.push_str("No trial finished.\n\n");
    }
    md.push_str("| trial |");
    for s in specs {
        md.push_str(&format!(" {} |", s.key));
    }
    md.push_str(&format!(
        " {} | steps | status |\n|---:|",
        args.objective.name()
    ));
    for _ in specs {
        md.push_str("---:|");
    }
    md.push_str("---:|---:|---|\n");
    let mut order: Vec<&TrialResult> = report.trials.iter().collect();
    let key = |t: &TrialResult| match (t.value, args.direction()) {
        (Some(v), DirectionArg::Minimize) if !t.pruned => v,
        (Some(v), DirectionArg::Maximize) if !t.pruned => -v,
        _ => f64::INFINITY,
    };
    order.sort_by(|a, b| {
        key(a)
            .total_cmp(&key(b))
            .then((a.error.is_some()).cmp(&b.error.is_some()))
            .then(a.id.cmp(&b.id))
    });
    for t in order {
        md.push_str(&format!("| {} |", t.id));
        for s in specs {
            let v = t.params.get(&s.key).map(|x| s.value(*x));
            md.push_str(&format!(" {} |", v.as_ref().map(shown).unwrap_or_default()));
        }
        let value = t.value.map_or("–".into(), |v| format!("{v:.5}"));
        let steps = records.get(t.id).map_or(0, |r| r.steps);
        md.push_str(&format!(
            " {value} | {steps} | {} |\n",
            status(report, records, t.id)
                .replace('|', "\\|")
                .replace('\n', " ")
        ));
    }
    md
}

/// Writes `text` to `path` atomically.
fn write(path: &Path, text: &str) -> Result<()> {
    kiln::nn::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_into_ranges() {
        let p = ParamSpec::parse("adapter.r=4,8,16").unwrap();
        assert_eq!(p.key, "adapter.r");
        assert_eq!(p.range, Range::Choice(vec![json!(4), json!(8), json!(16)]));
        let p = ParamSpec::parse("schedule.kind=constant,\"cosine\",0.5,true").unwrap();
        assert_eq!(
            p.range,
            Range::Choice(vec![
                json!("constant"),
                json!("cosine"),
                json!(0.5),
                json!(true)
            ])
        );
        assert_eq!(
            ParamSpec::parse("optimizer.lr=log:1e-4:3e-3")
                .unwrap()
                .range,
            Range::Log(1e-4, 3e-3)
        );
        assert_eq!(
            ParamSpec::parse("x.y=uniform:-1:1").unwrap().range,
            Range::Uniform(-1.0, 1.0)
        );
        let p = ParamSpec::parse("fit.epochs=int:1:3").unwrap();
        assert_eq!(p.range, Range::Int(1, 3));
        // Every integer of the range is reachable, none outside.
        let Param::Uniform { low, high } = p.param() else {
            panic!()
        };
        assert_eq!((p.value(low), p.value(high)), (json!(1), json!(3)));
        assert_eq!(p.value(2.3), json!(2));
        // Reals are kept to 6 significant digits.
        let lr = ParamSpec::parse("optimizer.lr=log:1e-4:3e-3").unwrap();
        assert_eq!(lr.value(0.001_234_567_89), json!(0.00123457));
    }

    #[test]
    fn bad_params_name_the_fault() {
        for (given, says) in [
            ("adapter.r", "expected KEY=RANGE"),
            ("adapter.r=4,,8", "empty value"),
            ("adapter.r=4,4", "listed twice"),
            ("optimizer.lr=log:0:1", "positive low end"),
            ("optimizer.lr=log:1e-3:1e-4", "not below"),
            ("optimizer.lr=uniform:a:1", "`a` is not a number"),
            ("fit.epochs=int:1.5:3", "not an integer"),
            ("fit.epochs=int:3:3", "not below"),
            ("fit.epochs=int:1:2:3", "expected int:LO:HI"),
            ("=1,2", "not a recipe key"),
        ] {
            let e = ParamSpec::parse(given).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--param {given}:")), "{e}");
            assert!(e.contains(says), "{given}: {e}");
        }
    }
}
