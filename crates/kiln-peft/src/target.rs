use std::fmt;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::PeftLinear;

/// What a model exposes so PEFT methods can attach to it.
///
/// Paths are the Hugging Face checkpoint paths of the projections (without `.weight`), e.g.
/// `model.layers.0.self_attn.q_proj`, so adapter keys need no renaming table.
pub trait AdapterTarget {
    /// Calls `f` on every linear projection, in checkpoint order, with its path.
    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut PeftLinear));

    /// Calls `f` on every linear projection, in checkpoint order, with its path.
    fn visit_linears(&self, f: &mut dyn FnMut(&str, &PeftLinear));
}

/// Counts of trainable and total parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainableReport {
    /// Parameters that receive gradients.
    pub trainable: usize,
    /// All parameters.
    pub total: usize,
}

impl TrainableReport {
    /// Counts the parameters of a module.
    pub fn of<M: Module>(module: &M) -> Self {
        struct Counter {
            trainable: usize,
            total: usize,
        }
        impl ModuleVisitor for Counter {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let n = param.shape().num_elements();
                self.total += n;
                if param.is_require_grad() {
                    self.trainable += n;
                }
            }
        }
        let mut c = Counter {
            trainable: 0,
            total: 0,
        };
        module.visit(&mut c);
        Self {
            trainable: c.trainable,
            total: c.total,
        }
    }

    /// Trainable share in percent.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.trainable as f64 / self.total as f64
        }
    }
}

impl fmt::Display for TrainableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            self.trainable,
            self.total,
            self.percent()
        )
    }
}
