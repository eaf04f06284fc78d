use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One optimizer step, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Optimizer steps taken, including this one (1-based).
    pub step: usize,
    /// Epoch the step belongs to (0-based).
    pub epoch: usize,
    /// Token-weighted mean training loss of the step.
    pub loss: f32,
    /// Base learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Labelled tokens in the step.
    pub loss_tokens: usize,
    /// Input tokens processed per second of training time, over the whole run.
    pub tokens_per_sec: f64,
    /// Training wall time so far, in seconds.
    pub elapsed_secs: f64,
    /// Other metrics of the step by name (preference runs: TRL's `rewards/chosen`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
}

/// One evaluation, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLog {
    /// Optimizer steps taken when it ran.
    pub step: usize,
    /// Token-weighted mean validation loss (preference runs: the mean preference loss over
    /// the validation pairs).
    pub val_loss: f64,
    /// `exp(val_loss)` (0 for preference runs, whose loss is not a likelihood).
    pub val_perplexity: f64,
    /// Labelled validation tokens.
    pub val_tokens: usize,
    /// Whether this evaluation is the best so far.
    pub is_best: bool,
    /// Further metrics from the evaluation hook (e.g. generation-based scores on a sample).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
}

/// Hooks into a [`crate::Fit`] run. Every method has a do-nothing default.
pub trait Callback {
    /// After every optimizer step.
    fn on_step(&mut self, _log: &StepLog) {}
    /// After every evaluation.
    fn on_eval(&mut self, _log: &EvalLog) {}
    /// After a checkpoint is published in `_dir`.
    fn on_checkpoint(&mut self, _step: usize, _dir: &Path) {}
    /// Asked after every step (and its evaluation and checkpoint); `true` ends the run.
    fn should_stop(&mut self, _step: usize) -> bool {
        false
    }
}

/// Which evaluation value early stopping and keep-best watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EvalMetric {
    /// Validation loss.
    #[default]
    ValLoss,
    /// Validation perplexity.
    ValPerplexity,
    /// A metric of the evaluation hook, by name (see [`crate::Fit::eval_hook`]).
    Extra(String),
}

impl EvalMetric {
    /// The value of this metric in an evaluation.
    pub fn of(&self, log: &EvalLog) -> f64 {
        match self {
            EvalMetric::ValLoss => log.val_loss,
            EvalMetric::ValPerplexity => log.val_perplexity,
            EvalMetric::Extra(name) => log.extra.get(name).copied().unwrap_or(f64::NAN),
        }
    }
}

/// Whether a metric improves downwards or upwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Smaller is better (losses).
    #[default]
    Minimize,
    /// Larger is better (accuracies).
    Maximize,
}

/// Stop when the watched metric has not improved by more than `min_delta` for `patience`
/// evaluations in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStopping {
    /// Evaluations without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
    /// The watched metric.
    pub metric: EvalMetric,
    /// Its direction.
    pub direction: Direction,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            patience: 3,
            min_delta: 0.0,
            metric: EvalMetric::ValLoss,
            direction: Direction::Minimize,
        }
    }
}

impl EarlyStopping {
    /// Whether `value` improves on `best` by more than `min_delta`.
    pub fn improves(&self, value: f64, best: Option<f64>) -> bool {
        match best {
            None => value.is_finite(),
            Some(best) => match self.direction {
                Direction::Minimize => value < best - self.min_delta,
                Direction::Maximize => value > best + self.min_delta,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn improvement_respects_direction_and_delta() {
        let min = EarlyStopping {
            min_delta: 0.1,
            ..Default::default()
        };
        assert!(min.improves(1.0, None));
        assert!(min.improves(0.85, Some(1.0)));
        assert!(!min.improves(0.95, Some(1.0)));
        assert!(!min.improves(f64::NAN, None));
        let max = EarlyStopping {
            direction: Direction::Maximize,
            ..Default::default()
        };
        assert!(max.improves(0.6, Some(0.5)));
        assert!(!max.improves(0.4, Some(0.5)));
    }
}
