//! Which projections a config selects: PEFT's `target_modules` (names, a regular expression or
//! `all-linear`) and `modules_to_save`.

use regex::Regex;

use crate::common::targets_serde;
use kiln_nn::AdapterTarget;

use crate::{PeftError, Result};

/// Decides which projection paths a config adapts.
#[derive(Debug)]
pub(crate) enum TargetMatcher {
    Names(Vec<String>),
    Regex(Regex),
    AllLinear,
}

impl TargetMatcher {
    /// Like [`matches`](Self::matches), but `all-linear` also selects the output head (for
    /// `modules_to_save`).
    pub(crate) fn matches_any(&self, path: &str) -> bool {
        matches!(self, Self::AllLinear) || self.matches(path)
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            // The output head is never a target of `all-linear`, as in PEFT.
            Self::AllLinear => !path.ends_with("lm_head"),
            Self::Regex(re) => re.is_match(path),
            Self::Names(names) => {
                let last = path.rsplit('.').next().unwrap_or(path);
                names
                    .iter()
                    .any(|n| n == last || n == path || path.ends_with(&format!(".{n}")))
            }
        }
    }
}

impl TargetMatcher {
    /// A matcher for PEFT-style `target_modules`.
    pub(crate) fn new(target_modules: &[String]) -> Result<Self> {
        if target_modules.len() == 1 {
            let t = &target_modules[0];
            if t == "all-linear" {
                return Ok(TargetMatcher::AllLinear);
            }
            if targets_serde::is_pattern(t) {
                let re = Regex::new(&format!("^(?:{t})$")).map_err(|source| PeftError::Regex {
                    pattern: t.clone(),
                    source,
                })?;
                return Ok(TargetMatcher::Regex(re));
            }
        }
        Ok(TargetMatcher::Names(target_modules.to_vec()))
    }
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

/// The end of attaching a projection adapter: an error when no projection was adapted (naming
/// the targets and the projections the model has), then `modules_to_save` made trainable.
pub(crate) fn finish_attach<M: AdapterTarget>(
    model: M,
    adapted: Vec<String>,
    targets: Vec<String>,
    modules_to_save: Option<&[String]>,
) -> Result<(M, Vec<String>)> {
    if adapted.is_empty() {
        return Err(PeftError::NoTargetMatched {
            targets,
            available: model.linear_paths().join(", "),
        });
    }
    let model = train_modules_to_save(model, modules_to_save)?;
    Ok((model, adapted))
}

/// Whether `path` is one of `modules_to_save`.
pub(crate) fn is_module_to_save(path: &str, modules: Option<&[String]>) -> Result<bool> {
    match modules {
        None => Ok(false),
        Some([]) => Ok(false),
        Some(m) => Ok(TargetMatcher::new(m)?.matches_any(path)),
    }
}
