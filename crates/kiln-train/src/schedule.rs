use serde::{Deserialize, Serialize};

/// A learning-rate schedule with linear warmup, as in `transformers.get_scheduler`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Warmup then constant.
    Constant {
        /// Warmup steps.
        warmup_steps: usize,
    },
    /// Warmup then linear decay to 0 at `total_steps`.
    Linear {
        /// Warmup steps.
        warmup_steps: usize,
        /// Total optimizer steps.
        total_steps: usize,
    },
    /// Warmup then half-cosine decay to 0 at `total_steps`.
    Cosine {
        /// Warmup steps.
        warmup_steps: usize,
        /// Total optimizer steps.
        total_steps: usize,
    },
}

impl Schedule {
    /// Multiplier of the base learning rate for the optimizer step `step` (0-based), matching
    /// transformers' `LambdaLR` factors.
    pub fn factor(&self, step: usize) -> f64 {
        let warm = |w: usize| {
            if step < w {
                Some(step as f64 / w.max(1) as f64)
            } else {
                None
            }
        };
        match *self {
            Schedule::Constant { warmup_steps } => warm(warmup_steps).unwrap_or(1.0),
            Schedule::Linear {
                warmup_steps,
                total_steps,
            } => warm(warmup_steps).unwrap_or_else(|| {
                let left = total_steps.saturating_sub(step) as f64;
                (left / total_steps.saturating_sub(warmup_steps).max(1) as f64).max(0.0)
            }),
            Schedule::Cosine {
                warmup_steps,
                total_steps,
            } => warm(warmup_steps).unwrap_or_else(|| {
                let progress = (step - warmup_steps) as f64
                    / total_steps.saturating_sub(warmup_steps).max(1) as f64;
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_match_transformers() {
        let lin = Schedule::Linear {
            warmup_steps: 2,
            total_steps: 10,
        };
        let got: Vec<f64> = (0..4).map(|s| lin.factor(s)).collect();
        assert_eq!(got, vec![0.0, 0.5, 1.0, 0.875]);
        assert_eq!(lin.factor(10), 0.0);
        let cos = Schedule::Cosine {
            warmup_steps: 0,
            total_steps: 4,
        };
        assert!((cos.factor(2) - 0.5).abs() < 1e-12);
        assert_eq!(Schedule::Constant { warmup_steps: 0 }.factor(7), 1.0);
    }
}
