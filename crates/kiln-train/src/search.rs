//! Hyper-parameter search: random sampling, a grid over lists of values, or a Tree-structured
//! Parzen Estimator (TPE, Bergstra et al. 2011, with independent per-parameter estimators as in
//! Optuna's default), median pruning of bad trials, and a results table.
//!
//! The objective is any closure that trains with the sampled values and returns the metric; to
//! prune, pass the [`TrialPruner`] it receives to [`crate::Fit::callback`]: it watches the
//! evaluations and stops the run when it falls behind the median of earlier trials.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::callback::{Callback, Direction, EvalLog, EvalMetric};
use crate::data::mix;
use crate::{Result, TrainError};

/// The range of one hyper-parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Param {
    /// A real number, uniform on a log scale (learning rates).
    LogUniform {
        /// Smallest value (positive).
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// A real number, uniform.
    Uniform {
        /// Smallest value.
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// One of a few values (ranks, alphas).
    Choice {
        /// The values.
        values: Vec<f64>,
    },
}

impl Param {
    fn validate(&self, name: &str) -> Result<()> {
        let ok = match self {
            Param::LogUniform { low, high } => *low > 0.0 && low < high && high.is_finite(),
            Param::Uniform { low, high } => low.is_finite() && high.is_finite() && low <= high,
            Param::Choice { values } => !values.is_empty() && values.iter().all(|v| v.is_finite()),
        };
        if ok {
            Ok(())
        } else {
            Err(TrainError::InvalidConfig {
                field: format!("space.{name}"),
                reason: format!("invalid range {self:?}"),
            })
        }
    }

    /// Internal coordinates: log for log-uniform, the value for uniform, the index for choices.
    fn to_internal(&self, v: f64) -> f64 {
        match self {
            Param::LogUniform { .. } => v.ln(),
            Param::Uniform { .. } => v,
            Param::Choice { values } => values
                .iter()
                .position(|x| *x == v)
                .map_or(0.0, |i| i as f64),
        }
    }

    fn bounds(&self) -> (f64, f64) {
        match self {
            Param::LogUniform { low, high } => (low.ln(), high.ln()),
            Param::Uniform { low, high } => (*low, *high),
            Param::Choice { values } => (0.0, values.len() as f64 - 1.0),
        }
    }

    fn value_at(&self, x: f64) -> f64 {
        let (lo, hi) = self.bounds();
        let x = x.clamp(lo, hi);
        match self {
            Param::LogUniform { .. } => x.exp(),
            Param::Uniform { .. } => x,
            Param::Choice { values } => values[(x.round() as usize).min(values.len() - 1)],
        }
    }

    fn sample_prior(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Param::Choice { values } => values[rng.random_range(0..values.len())],
            _ => {
                let (lo, hi) = self.bounds();
                self.value_at(if hi > lo {
                    rng.random_range(lo..hi)
                } else {
                    lo
                })
            }
        }
    }
}

/// Named hyper-parameter ranges, e.g. `lr`, `r`, `lora_alpha`, `lora_dropout`.
pub type SearchSpace = BTreeMap<String, Param>;

/// Values of one trial, by name.
pub type TrialParams = BTreeMap<String, f64>;

/// How the next trial's values are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sampler {
    /// Independent uniform draws from the ranges.
    Random,
    /// TPE: after `startup_trials` random trials, split finished trials into the best `gamma`
    /// fraction and the rest, fit a Parzen estimator to each (per parameter), draw `candidates`
    /// values from the good one and keep the one maximizing `good(x) / bad(x)`.
    Tpe {
        /// Random trials before the model is used.
        startup_trials: usize,
        /// Fraction of trials counted as good.
        gamma: f64,
        /// Candidates drawn per parameter.
        candidates: usize,
    },
    /// Every combination of the values once, in order (the last parameter by name varies
    /// fastest); every parameter must be a [`Param::Choice`], and the search stops when the
    /// grid is exhausted, so it runs at most the product of the list lengths.
    Grid,
}

impl Sampler {
    /// TPE with Optuna-like defaults (10 startup trials, γ = 0.25, 24 candidates).
    pub fn tpe() -> Self {
        Sampler::Tpe {
            startup_trials: 10,
            gamma: 0.25,
            candidates: 24,
        }
    }
}

/// Median pruning: from evaluation `warmup_evals` on, a trial whose value at an evaluation is
/// worse than the median of earlier trials at the same evaluation is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MedianPruner {
    /// Evaluations before pruning may happen.
    pub warmup_evals: usize,
    /// Trials that must have reported an evaluation before it is used for pruning.
    pub min_trials: usize,
}

/// A search run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// Number of trials.
    pub trials: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// How values are chosen.
    pub sampler: Sampler,
    /// Whether the objective is minimized (losses) or maximized.
    pub direction: Direction,
    /// Early stopping of bad trials.
    pub pruner: Option<MedianPruner>,
    /// The evaluation value the pruner watches.
    pub metric: EvalMetric,
}

/// What happened to one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// 0-based trial number.
    pub id: usize,
    /// Sampled values.
    pub params: TrialParams,
    /// Objective value (`None` when the objective failed).
    pub value: Option<f64>,
    /// Whether the pruner stopped it.
    pub pruned: bool,
    /// The objective's error, if any.
    pub error: Option<String>,
}

/// All trials and the best one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// Trials in run order.
    pub trials: Vec<TrialResult>,
    /// Index of the best trial with a value.
    pub best: Option<usize>,
    /// Direction of the objective.
    pub direction: Direction,
}

/// Handed to the objective: a [`Callback`] that records evaluations and asks the run to stop
/// when the trial falls behind the median of earlier trials.
#[derive(Debug)]
pub struct TrialPruner<'a> {
    pruner: Option<MedianPruner>,
    metric: EvalMetric,
    direction: Direction,
    history: &'a [Vec<f64>],
    own: Vec<f64>,
    pruned: bool,
}

impl TrialPruner<'_> {
    /// Whether the pruner stopped this trial.
    pub fn pruned(&self) -> bool {
        self.pruned
    }

    /// Records an intermediate value (the `n`-th evaluation) by hand, for objectives that do not
    /// run a [`crate::Fit`]; returns whether the trial should stop.
    pub fn report(&mut self, value: f64) -> bool {
        self.own.push(value);
        let n = self.own.len() - 1;
        let Some(p) = self.pruner else {
            return false;
        };
        if n < p.warmup_evals {
            return false;
        }
        let mut others: Vec<f64> = self
            .history
            .iter()
            .filter_map(|h| h.get(n).copied())
            .filter(|v| v.is_finite())
            .collect();
        if others.len() < p.min_trials.max(1) {
            return false;
        }
        others.sort_by(f64::total_cmp);
        let median = if others.len() % 2 == 1 {
            others[others.len() / 2]
        } else {
            0.5 * (others[others.len() / 2 - 1] + others[others.len() / 2])
        };
        // NaN counts as worse.
        let worse = value.is_nan()
            || match self.direction {
                Direction::Minimize => value > median,
                Direction::Maximize => value < median,
            };
        if worse {
            self.pruned = true;
        }
        self.pruned
    }
}

impl Callback for TrialPruner<'_> {
    fn on_eval(&mut self, log: &EvalLog) {
        let value = self.metric.of(log);
        self.report(value);
    }

    fn should_stop(&mut self, _step: usize) -> bool {
        self.pruned
    }
}

/// Runs `config.trials` trials of `objective` over `space`.
///
/// The objective gets the sampled values and a [`TrialPruner`]; it returns the final metric.
/// A failing objective is recorded (not fatal) and counts as the worst value.
///
/// # Errors
/// An invalid space or configuration.
pub fn search<F>(
    space: &SearchSpace,
    config: &SearchConfig,
    mut objective: F,
) -> Result<SearchReport>
where
    F: FnMut(&TrialParams, &mut TrialPruner<'_>) -> Result<f64>,
{
    if space.is_empty() {
        return Err(TrainError::InvalidConfig {
            field: "space".into(),
            reason: "no hyper-parameter".into(),
        });
    }
    for (name, p) in space {
        p.validate(name)?;
    }
    if let Sampler::Tpe { gamma, .. } = config.sampler
        && !(gamma > 0.0 && gamma < 1.0)
    {
        return Err(TrainError::InvalidConfig {
            field: "sampler.gamma".into(),
            reason: format!("{gamma} is not in (0, 1)"),
        });
    }
    if config.sampler == Sampler::Grid
        && let Some((name, _)) = space
            .iter()
            .find(|(_, p)| !matches!(p, Param::Choice { .. }))
    {
        return Err(TrainError::InvalidConfig {
            field: format!("space.{name}"),
            reason: "the grid sampler needs a list of values, not a range".into(),
        });
    }
    let n_trials = planned_trials(space, config);
    let mut trials: Vec<TrialResult> = Vec::with_capacity(n_trials);
    let mut histories: Vec<Vec<f64>> = Vec::new();
    for id in 0..n_trials {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(config.seed, id as u64));
        let params = if config.sampler == Sampler::Grid {
            grid_point(space, id)
        } else {
            sample(space, config, &trials, &mut rng)
        };
        let mut pruner = TrialPruner {
            pruner: config.pruner,
            metric: config.metric.clone(),
            direction: config.direction,
            history: &histories,
            own: Vec::new(),
            pruned: false,
        };
        let outcome = objective(&params, &mut pruner);
        let (pruned, own) = (pruner.pruned, pruner.own);
        let (value, error) = match outcome {
            Ok(v) if v.is_finite() => (Some(v), None),
            Ok(v) => (None, Some(format!("objective returned {v}"))),
            Err(e) => (None, Some(e.to_string())),
        };
        histories.push(own);
        trials.push(TrialResult {
            id,
            params,
            value,
            pruned,
            error,
        });
    }
    let best = trials
        .iter()
        .filter(|t| t.value.is_some() && !t.pruned)
        .min_by(|a, b| oriented(config.direction, a).total_cmp(&oriented(config.direction, b)))
        .map(|t| t.id);
    Ok(SearchReport {
        trials,
        best,
        direction: config.direction,
    })
}

/// How many trials [`search`] runs: `config.trials`, or fewer for a grid with fewer points.
pub fn planned_trials(space: &SearchSpace, config: &SearchConfig) -> usize {
    if config.sampler != Sampler::Grid {
        return config.trials;
    }
    let points = space.values().fold(1usize, |n, p| match p {
        Param::Choice { values } => n.saturating_mul(values.len()),
        _ => n,
    });
    config.trials.min(points)
}

/// The value as a loss (smaller is better); failures are the worst.
fn oriented(direction: Direction, t: &TrialResult) -> f64 {
    match (t.value, direction) {
        (Some(v), Direction::Minimize) => v,
        (Some(v), Direction::Maximize) => -v,
        (None, _) => f64::INFINITY,
    }
}

/// The `id`-th combination of the grid: mixed radix over the lists, the last name fastest.
fn grid_point(space: &SearchSpace, id: usize) -> TrialParams {
    let mut rest = id;
    let mut point = TrialParams::new();
    for (name, p) in space.iter().rev() {
        if let Param::Choice { values } = p {
            point.insert(name.clone(), values[rest % values.len()]);
            rest /= values.len();
        }
    }
    point
}

fn sample(
    space: &SearchSpace,
    config: &SearchConfig,
    done: &[TrialResult],
    rng: &mut ChaCha8Rng,
) -> TrialParams {
    let finished: Vec<&TrialResult> = done.iter().filter(|t| t.value.is_some()).collect();
    match config.sampler {
        Sampler::Tpe {
            startup_trials,
            gamma,
            candidates,
        } if finished.len() >= startup_trials.max(2) => {
            let mut ranked = finished;
            ranked.sort_by(|a, b| {
                oriented(config.direction, a).total_cmp(&oriented(config.direction, b))
            });
            let n_good = ((gamma * ranked.len() as f64).ceil() as usize).clamp(1, ranked.len() - 1);
            let (good, bad) = ranked.split_at(n_good);
            space
                .iter()
                .map(|(name, p)| {
                    let xs = |set: &[&TrialResult]| -> Vec<f64> {
                        set.iter()
                            .filter_map(|t| t.params.get(name).map(|v| p.to_internal(*v)))
                            .collect()
                    };
                    let value = tpe_one(p, &xs(good), &xs(bad), candidates.max(1), rng);
                    (name.clone(), value)
                })
                .collect()
        }
        _ => space
            .iter()
            .map(|(name, p)| (name.clone(), p.sample_prior(rng)))
            .collect(),
    }
}

/// One parameter of TPE: candidates from the good estimator, the best `l(x) / g(x)`.
fn tpe_one(p: &Param, good: &[f64], bad: &[f64], candidates: usize, rng: &mut ChaCha8Rng) -> f64 {
    let (lo, hi) = p.bounds();
    let width = (hi - lo).max(1e-12);
    if let Param::Choice { values } = p {
        // Categorical: smoothed frequencies.
        let k = values.len();
        let freq = |set: &[f64]| -> Vec<f64> {
            let mut c = vec![1.0; k];
            for &x in set {
                c[(x.round() as usize).min(k - 1)] += 1.0;
            }
            let s: f64 = c.iter().sum();
            c.into_iter().map(|v| v / s).collect()
        };
        let (l, g) = (freq(good), freq(bad));
        let mut best = (f64::NEG_INFINITY, 0usize);
        for _ in 0..candidates {
            // Draw from l.
            let mut u: f64 = rng.random();
            let mut idx = k - 1;
            for (i, w) in l.iter().enumerate() {
                if u < *w {
                    idx = i;
                    break;
                }
                u -= w;
            }
            let score = l[idx] / g[idx];
            if score > best.0 {
                best = (score, idx);
            }
        }
        return values[best.1];
    }
    // Continuous: Gaussian kernels (plus the uniform prior as one more component), bandwidth
    // shrinking with the number of points.
    let bandwidth = |n: usize| (0.2 * width / (n as f64 + 1.0).powf(0.2)).max(width * 1e-3);
    let density = |set: &[f64], x: f64| -> f64 {
        let h = bandwidth(set.len());
        let kernels: f64 = set
            .iter()
            .map(|m| {
                (-0.5 * ((x - m) / h).powi(2)).exp() / (h * (2.0 * std::f64::consts::PI).sqrt())
            })
            .sum();
        (kernels + 1.0 / width) / (set.len() as f64 + 1.0)
    };
    let h = bandwidth(good.len());
    let mut best = (f64::NEG_INFINITY, lo);
    for _ in 0..candidates {
        let pick = rng.random_range(0..=good.len());
        let x = if pick == good.len() {
            rng.random_range(lo..=hi)
        } else {
            // Box–Muller around a good point.
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (good[pick] + h * z).clamp(lo, hi)
        };
        let score = density(good, x) / density(bad, x);
        if score > best.0 {
            best = (score, x);
        }
    }
    p.value_at(best.1)
}

impl SearchReport {
    /// The best trial.
    pub fn best_trial(&self) -> Option<&TrialResult> {
        self.best.and_then(|i| self.trials.get(i))
    }

    /// A Markdown table of all trials, best first (pruned and failed trials last).
    pub fn to_markdown(&self) -> String {
        let names: Vec<&String> = self
            .trials
            .first()
            .map(|t| t.params.keys().collect())
            .unwrap_or_default();
        let mut md = String::from("| trial |");
        for n in &names {
            let _ = write!(md, " {n} |");
        }
        md.push_str(" value | status |\n|---:|");
        for _ in &names {
            md.push_str("---:|");
        }
        md.push_str("---:|---|\n");
        let mut order: Vec<&TrialResult> = self.trials.iter().collect();
        order.sort_by(|a, b| {
            (a.pruned || a.value.is_none())
                .cmp(&(b.pruned || b.value.is_none()))
                .then(oriented(self.direction, a).total_cmp(&oriented(self.direction, b)))
        });
        for t in order {
            let _ = write!(md, "| {} |", t.id);
            for n in &names {
                let _ = write!(
                    md,
                    " {} |",
                    t.params.get(*n).map_or(String::new(), |v| number(*v))
                );
            }
            let status = if let Some(e) = &t.error {
                format!("failed: {}", e.replace('|', "\\|"))
            } else if t.pruned {
                "pruned".into()
            } else if Some(t.id) == self.best {
                "best".into()
            } else {
                "done".into()
            };
            let value = t.value.map_or("–".into(), |v| format!("{v:.5}"));
            let _ = writeln!(md, " {value} | {status} |");
        }
        md
    }
}

/// Whole numbers as such, others in scientific notation.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e6 {
        format!("{v:.0}")
    } else {
        format!("{v:.4e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> SearchSpace {
        let mut s = SearchSpace::new();
        s.insert(
            "lr".into(),
            Param::LogUniform {
                low: 1e-5,
                high: 1e-1,
            },
        );
        s.insert(
            "lora_dropout".into(),
            Param::Uniform {
                low: 0.0,
                high: 0.3,
            },
        );
        s.insert(
            "r".into(),
            Param::Choice {
                values: vec![4.0, 8.0, 16.0, 32.0],
            },
        );
        s
    }

    /// A smooth objective with its minimum at lr = 1e-3, dropout 0.1, r = 16.
    fn objective(p: &TrialParams) -> f64 {
        (p["lr"].log10() + 3.0).powi(2)
            + (p["lora_dropout"] - 0.1).powi(2) * 10.0
            + ((p["r"].log2() - 4.0).powi(2)) * 0.2
    }

    fn config(sampler: Sampler) -> SearchConfig {
        SearchConfig {
            trials: 40,
            seed: 3,
            sampler,
            direction: Direction::Minimize,
            pruner: None,
            metric: EvalMetric::ValLoss,
        }
    }

    #[test]
    fn random_search_stays_in_range_and_is_reproducible() {
        let run = || search(&space(), &config(Sampler::Random), |p, _| Ok(objective(p))).unwrap();
        let a = run();
        assert_eq!(a, run());
        for t in &a.trials {
            assert!((1e-5..=1e-1).contains(&t.params["lr"]));
            assert!((0.0..=0.3).contains(&t.params["lora_dropout"]));
            assert!([4.0, 8.0, 16.0, 32.0].contains(&t.params["r"]));
        }
        let best = a.best_trial().unwrap().value.unwrap();
        assert!(a.trials.iter().all(|t| t.value.unwrap() >= best));
        let md = a.to_markdown();
        assert_eq!(md.lines().count(), 2 + 40);
        assert!(md.contains("| best |"));
    }

    #[test]
    fn tpe_concentrates_near_the_optimum() {
        let tpe = search(&space(), &config(Sampler::tpe()), |p, _| Ok(objective(p))).unwrap();
        let random = search(&space(), &config(Sampler::Random), |p, _| Ok(objective(p))).unwrap();
        // After the startup phase, TPE's proposals are on average much closer to the optimum.
        let mean_late =
            |r: &SearchReport| r.trials[20..].iter().map(|t| t.value.unwrap()).sum::<f64>() / 20.0;
        let (t, r) = (mean_late(&tpe), mean_late(&random));
        assert!(t < 0.5 * r, "TPE {t} vs random {r}");
        let best = tpe.best_trial().unwrap();
        assert!((best.params["lr"].log10() + 3.0).abs() < 0.5, "{best:?}");
    }

    #[test]
    fn grid_runs_every_combination_once() {
        let mut grid = SearchSpace::new();
        grid.insert(
            "lr".into(),
            Param::Choice {
                values: vec![1e-3, 2e-3, 3e-3],
            },
        );
        grid.insert(
            "r".into(),
            Param::Choice {
                values: vec![8.0, 16.0],
            },
        );
        let report = search(&grid, &config(Sampler::Grid), |p, _| {
            Ok((p["lr"] - 2e-3).abs() + p["r"])
        })
        .unwrap();
        // 40 trials asked, 6 points: each once, in order.
        let points: Vec<(f64, f64)> = report
            .trials
            .iter()
            .map(|t| (t.params["lr"], t.params["r"]))
            .collect();
        assert_eq!(
            points,
            vec![
                (1e-3, 8.0),
                (1e-3, 16.0),
                (2e-3, 8.0),
                (2e-3, 16.0),
                (3e-3, 8.0),
                (3e-3, 16.0)
            ]
        );
        assert_eq!(report.best, Some(2));
        // A range is refused, naming the parameter.
        let err = search(&space(), &config(Sampler::Grid), |p, _| Ok(objective(p))).unwrap_err();
        assert!(err.to_string().contains("space.lora_dropout"), "{err}");
    }

    #[test]
    fn median_pruner_stops_trials_behind_the_median() {
        let cfg = SearchConfig {
            trials: 4,
            pruner: Some(MedianPruner {
                warmup_evals: 1,
                min_trials: 2,
            }),
            ..config(Sampler::Random)
        };
        // Trial i reports the curve (i+1)·(1, 0.9, 0.8): later trials are worse everywhere
        // except trial 3, which is made better than all.
        let report = search(&space(), &cfg, |_, pruner| {
            let scale = [1.0, 2.0, 3.0, 0.5][pruner.history.len()];
            for v in [1.0, 0.9, 0.8] {
                if pruner.report(v * scale) {
                    return Ok(v * scale);
                }
            }
            Ok(0.8 * scale)
        })
        .unwrap();
        let pruned: Vec<bool> = report.trials.iter().map(|t| t.pruned).collect();
        // Trials 0 and 1 have too few predecessors; trial 2 is behind the median of 0 and 1;
        // trial 3 is ahead.
        assert_eq!(pruned, vec![false, false, true, false]);
        assert_eq!(report.best, Some(3));
        assert!(report.to_markdown().contains("| pruned |"));
    }
}
