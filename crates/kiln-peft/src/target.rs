use std::fmt;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::lora::TargetMatcher;
use crate::prompt::PromptEncoder;
use crate::{PeftError, PeftLinear, Result};

/// The sizes prompt-learning methods need from a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelGeometry {
    /// Width of the token embeddings.
    pub hidden_size: usize,
    /// Decoder (or encoder) layers.
    pub num_layers: usize,
    /// Key/value heads per layer.
    pub num_kv_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Rows of the token-embedding table.
    pub vocab_size: usize,
}

/// What a model exposes so PEFT methods can attach to it.
///
/// Paths are the Hugging Face checkpoint paths of the projections (without `.weight`), e.g.
/// `model.layers.0.self_attn.q_proj`, so adapter keys need no renaming table.
pub trait AdapterTarget {
    /// Calls `f` on every linear projection, in checkpoint order, with its path.
    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut PeftLinear));

    /// Calls `f` on every linear projection, in checkpoint order, with its path.
    fn visit_linears(&self, f: &mut dyn FnMut(&str, &PeftLinear));

    /// Sizes of the model, for prompt and prefix tuning.
    fn geometry(&self) -> ModelGeometry;

    /// The token-embedding table `[vocab, hidden]` (prompt-tuning initialization from text or
    /// sampled vocabulary).
    fn token_embeddings(&self) -> Tensor<2>;

    /// The attached prompt-learning module (prompt or prefix tuning), if any.
    fn prompt_encoder(&self) -> Option<&PromptEncoder>;

    /// Attaches or removes a prompt-learning module; the model's forward pass then uses it.
    fn set_prompt_encoder(&mut self, encoder: Option<PromptEncoder>);

    /// Whether the model has biases outside its linear projections (e.g. LayerNorm biases),
    /// which LoRA's `bias = "all"` would train in PEFT.
    fn has_other_biases(&self) -> bool {
        false
    }

    /// Drops every block-quantized copy of a base weight (see [`PeftLinear::set_quantized`]),
    /// before the base weights change. Models that keep other quantized tables (a tied output
    /// head) drop those too.
    fn clear_quantized(&mut self) {
        self.visit_linears_mut(&mut |_, l| {
            l.set_quantized(None)
                .expect("removing the quantized weight cannot fail");
        });
    }

    /// The paths of all projections, in checkpoint order.
    fn linear_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit_linears(&mut |p, _| out.push(p.to_string()));
        out
    }

    /// Merges LoRA/DoRA/IA3 into the base weights of every projection.
    ///
    /// # Errors
    /// See [`PeftLinear::merge`].
    fn merge_adapters(&mut self) -> Result<()> {
        let mut res = Ok(());
        self.visit_linears_mut(&mut |_, l| {
            if res.is_ok() {
                res = l.merge();
            }
        });
        res
    }

    /// Undoes [`merge_adapters`](Self::merge_adapters).
    ///
    /// # Errors
    /// See [`PeftLinear::unmerge`].
    fn unmerge_adapters(&mut self) -> Result<()> {
        let mut res = Ok(());
        self.visit_linears_mut(&mut |_, l| {
            if res.is_ok() {
                res = l.unmerge();
            }
        });
        res
    }

    /// Turns every adapter on or off (base-model outputs while off); prompt encoders are kept
    /// but only applied while enabled by the model's forward pass.
    fn set_adapters_enabled(&mut self, enabled: bool) {
        self.visit_linears_mut(&mut |_, l| l.set_adapters_enabled(enabled));
    }

    /// Removes every adapter and prompt encoder, giving back the base model.
    ///
    /// # Errors
    /// See [`PeftLinear::unmerge`].
    fn remove_adapters(&mut self) -> Result<()> {
        let mut res = Ok(());
        self.visit_linears_mut(&mut |_, l| {
            if res.is_ok() {
                res = l.remove_adapters();
            }
        });
        self.set_prompt_encoder(None);
        res
    }
}

/// Freezes every parameter of a model (the base of a PEFT run).
pub(crate) fn freeze_base<M: Module>(model: M) -> M {
    model.no_grad()
}

/// The layer index in a projection path (`model.layers.3.mlp.up_proj` → 3,
/// `transformer.h.1.attn.c_attn` → 1): the first purely numeric path component.
pub fn layer_index(path: &str) -> Option<usize> {
    path.split('.').find_map(|c| c.parse().ok())
}

/// Makes the projections named in `modules_to_save` fully trainable (weight and bias).
///
/// # Errors
/// [`PeftError::NoTargetMatched`] when a name matches no projection (e.g. `lm_head` of a model
/// whose head is tied to the embeddings).
pub(crate) fn train_modules_to_save<M: AdapterTarget>(
    mut model: M,
    modules: Option<&[String]>,
) -> Result<M> {
    let Some(modules) = modules.filter(|m| !m.is_empty()) else {
        return Ok(model);
    };
    // As in PEFT, names that match nothing are skipped (PEFT's SEQ_CLS task lists both
    // `classifier` and `score`), but at least one must match.
    let mut hit = false;
    for name in modules {
        let matcher = TargetMatcher::new(std::slice::from_ref(name))?;
        model.visit_linears_mut(&mut |path, l| {
            if matcher.matches_any(path) {
                hit = true;
                l.set_quantized(None)
                    .expect("removing the quantized weight cannot fail");
                l.weight = l.weight.clone().set_require_grad(true);
                l.bias = l.bias.take().map(|b| b.set_require_grad(true));
            }
        });
    }
    if !hit {
        return Err(PeftError::NoTargetMatched {
            targets: modules.to_vec(),
            available: format!(
                "{} (modules_to_save; a tied lm_head has no separate weight)",
                model.linear_paths().join(", ")
            ),
        });
    }
    Ok(model)
}

/// Whether `path` is one of `modules_to_save`.
pub(crate) fn is_module_to_save(path: &str, modules: Option<&[String]>) -> Result<bool> {
    match modules {
        None => Ok(false),
        Some([]) => Ok(false),
        Some(m) => Ok(TargetMatcher::new(m)?.matches_any(path)),
    }
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
