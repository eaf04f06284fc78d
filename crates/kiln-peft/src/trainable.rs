//! Freezing the base, counting what trains, and full fine-tuning.

use std::fmt;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use kiln_nn::AdapterTarget;

/// Freezes every parameter of a model (the base of a PEFT run).
pub(crate) fn freeze_base<M: Module>(model: M) -> M {
    model.no_grad()
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

    /// Trainable parameters per module: `(module path, trainable, total)` for every module that
    /// owns a trainable parameter, in visiting order. Paths follow the module fields
    /// (`model.layers.0.self_attn.q_proj.lora.lora_a` belongs to
    /// `model.layers.0.self_attn.q_proj.lora`; a trained bias to its projection).
    pub fn by_module<M: Module>(module: &M) -> Vec<(String, usize, usize)> {
        struct Walker {
            path: Vec<String>,
            rows: Vec<(String, usize, usize)>,
        }
        impl ModuleVisitor for Walker {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                // Enum variants (e.g. a model wrapper) are not part of checkpoint paths.
                let skip = container_type.starts_with("Enum:");
                self.path.push(if skip {
                    String::new()
                } else {
                    name.to_string()
                });
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                // The path ends with the parameter's own name; its module is the parent.
                let parts: Vec<&str> = self
                    .path
                    .iter()
                    .map(String::as_str)
                    .filter(|p| !p.is_empty())
                    .collect();
                let module = parts[..parts.len().saturating_sub(1)].join(".");
                let n = param.shape().num_elements();
                let t = if param.is_require_grad() { n } else { 0 };
                match self.rows.last_mut() {
                    Some(row) if row.0 == module => {
                        row.1 += t;
                        row.2 += n;
                    }
                    _ => self.rows.push((module, t, n)),
                }
            }
        }
        let mut w = Walker {
            path: Vec::new(),
            rows: Vec::new(),
        };
        module.visit(&mut w);
        w.rows.retain(|r| r.1 > 0);
        w.rows
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

/// Full fine-tuning, the baseline of every PEFT comparison: makes every float parameter of the
/// model trainable (including any attached adapter), and drops the checkpoint's quantized weight
/// copies, which would go stale.
pub fn full_fine_tuning<M: Module + AdapterTarget>(mut model: M) -> M {
    model.clear_quantized();
    struct Unfreeze;
    impl ModuleMapper for Unfreeze {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.set_require_grad(true)
        }
    }
    model.map(&mut Unfreeze)
}
