//! Several named adapters for one model, and weighted combinations of LoRA adapters.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use crate::config::AdapterConfig;
use crate::io::{
    WEIGHTS_FILE, adapter_state, attach_adapter, read_adapter_config, set_adapter_state,
};
use crate::lora::LoraConfig;
use crate::{PeftError, Result};
use kiln_nn::AdapterTarget;
use kiln_nn::safetensors::{HostTensor, read_safetensors};

/// Named adapters kept on the host, one of which is applied to the model at a time.
///
/// Switching costs one upload of the adapter's (small) tensors; the base model is shared.
///
/// ```no_run
/// # fn demo<M: kiln_nn::AdapterTarget + burn::module::Module>(model: M, device: &burn::tensor::Device) -> kiln_peft::Result<()> {
/// use std::path::Path;
/// let mut set = kiln_peft::AdapterSet::default();
/// set.add_dir("dtc", Path::new("out/dtc-adapter"))?;
/// set.add_dir("chat", Path::new("out/chat-adapter"))?;
/// let model = set.activate(model, "dtc", device)?;
/// // ... generate ...
/// let model = set.activate(model, "chat", device)?;
/// # let _ = model; Ok(()) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct AdapterSet {
    adapters: BTreeMap<String, (AdapterConfig, BTreeMap<String, HostTensor>)>,
    active: Option<String>,
}

impl AdapterSet {
    /// Adds an adapter from its parts.
    pub fn add(
        &mut self,
        name: &str,
        config: AdapterConfig,
        tensors: BTreeMap<String, HostTensor>,
    ) {
        self.adapters.insert(name.to_string(), (config, tensors));
    }

    /// Adds a PEFT adapter folder under `name`.
    ///
    /// # Errors
    /// I/O, JSON or safetensors errors naming the file.
    pub fn add_dir(&mut self, name: &str, dir: &Path) -> Result<()> {
        let config = read_adapter_config(dir)?;
        let tensors = read_safetensors(&dir.join(WEIGHTS_FILE))?;
        self.add(name, config, tensors);
        Ok(())
    }

    /// Stores the adapter currently on `model` under `name` (e.g. after training it).
    ///
    /// # Errors
    /// An invalid `modules_to_save` pattern.
    pub fn capture<M: AdapterTarget>(
        &mut self,
        name: &str,
        model: &M,
        config: &AdapterConfig,
    ) -> Result<()> {
        let tensors = adapter_state(model, config)?;
        self.add(name, crate::io::saved_config(model, config), tensors);
        Ok(())
    }

    /// The adapter names.
    pub fn names(&self) -> Vec<&str> {
        self.adapters.keys().map(String::as_str).collect()
    }

    /// The adapter applied by the last [`activate`](Self::activate).
    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// The stored parts of an adapter.
    pub fn get(&self, name: &str) -> Option<(&AdapterConfig, &BTreeMap<String, HostTensor>)> {
        self.adapters.get(name).map(|(c, t)| (c, t))
    }

    /// Removes whatever adapter `model` holds and applies `name`.
    ///
    /// # Errors
    /// An unknown name; the strict-loading errors of [`crate::io::set_adapter_state`].
    pub fn activate<M: AdapterTarget + Module>(
        &mut self,
        mut model: M,
        name: &str,
        device: &Device,
    ) -> Result<M> {
        let (config, tensors) =
            self.adapters
                .get(name)
                .ok_or_else(|| PeftError::InvalidConfig {
                    field: "adapter".into(),
                    reason: format!(
                        "no adapter named `{name}` (have: {})",
                        self.names().join(", ")
                    ),
                })?;
        model.remove_adapters()?;
        let (mut model, _) = attach_adapter(model, config, None, 0, device)?;
        let file = Path::new(name);
        set_adapter_state(&mut model, config, tensors.clone(), file, device)?;
        self.active = Some(name.to_string());
        Ok(model)
    }
}

/// How [`combine_lora`] combines adapters (PEFT's `add_weighted_adapter` `combination_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combination {
    /// `A = Σ √|wᵢsᵢ|·sign·Aᵢ`, `B = Σ √|wᵢsᵢ|·Bᵢ` (equal ranks required).
    Linear,
    /// Concatenate along the rank: `A = [w₁s₁A₁; w₂s₂A₂; …]`, `B = [B₁ B₂ …]`; the update is
    /// exactly `Σ wᵢ·sᵢ·BᵢAᵢ`.
    Cat,
}

/// A weighted combination of LoRA adapters, as PEFT's `add_weighted_adapter`: the result has
/// rank `r` (linear) or `Σ rᵢ` (cat) and `lora_alpha = r`, so its scaling is 1.
///
/// # Errors
/// No adapters, a non-LoRA or DoRA adapter, different key sets, or different ranks for
/// [`Combination::Linear`].
pub fn combine_lora(
    adapters: &[(&AdapterConfig, &BTreeMap<String, HostTensor>, f64)],
    how: Combination,
) -> Result<(AdapterConfig, BTreeMap<String, HostTensor>)> {
    let bad = |reason: String| PeftError::InvalidConfig {
        field: "adapters".into(),
        reason,
    };
    let mut loras = Vec::new();
    for (c, t, w) in adapters {
        match c {
            AdapterConfig::Lora(l) if !l.use_dora => loras.push((l, *t, *w)),
            AdapterConfig::Lora(_) => return Err(bad("DoRA adapters cannot be combined".into())),
            other => {
                return Err(bad(format!(
                    "only LoRA adapters combine, found {}",
                    other.peft_type()
                )));
            }
        }
    }
    let Some((first, first_t, _)) = loras.first() else {
        return Err(bad("nothing to combine".into()));
    };
    let keys: Vec<&String> = first_t.keys().collect();
    for (_, t, _) in &loras[1..] {
        if t.keys().collect::<Vec<_>>() != keys {
            return Err(bad("the adapters adapt different projections".into()));
        }
    }
    if how == Combination::Linear && loras.iter().any(|(c, _, _)| c.r != first.r) {
        return Err(bad("linear combination needs equal ranks; use Cat".into()));
    }
    let new_r = match how {
        Combination::Linear => first.r,
        Combination::Cat => loras.iter().map(|(c, _, _)| c.r).sum(),
    };
    let mut out = BTreeMap::new();
    for key in keys {
        let Some(stem) = key.strip_suffix("lora_A.weight") else {
            if !key.ends_with("lora_B.weight") {
                return Err(bad(format!("`{key}` is not a LoRA factor")));
            }
            continue;
        };
        let b_key = format!("{stem}lora_B.weight");
        let (d_in, d_out) = (first_t[key].shape[1], first_t[&b_key].shape[0]);
        let mut a = vec![0.0f32; new_r * d_in];
        let mut b = vec![0.0f32; d_out * new_r];
        let mut offset = 0;
        for (c, t, w) in &loras {
            let (ai, bi) = (&t[key], &t[&b_key]);
            let ws = *w * c.scaling();
            let r = c.r;
            match how {
                Combination::Linear => {
                    let root = ws.abs().sqrt() as f32;
                    let sa = if ws >= 0.0 { root } else { -root };
                    for (o, v) in a.iter_mut().zip(&ai.data) {
                        *o += sa * v;
                    }
                    for (o, v) in b.iter_mut().zip(&bi.data) {
                        *o += root * v;
                    }
                }
                Combination::Cat => {
                    for row in 0..r {
                        for col in 0..d_in {
                            a[(offset + row) * d_in + col] = ws as f32 * ai.data[row * d_in + col];
                        }
                    }
                    for row in 0..d_out {
                        for col in 0..r {
                            b[row * new_r + offset + col] = bi.data[row * r + col];
                        }
                    }
                    offset += r;
                }
            }
        }
        out.insert(
            key.clone(),
            HostTensor {
                shape: vec![new_r, d_in],
                data: a,
            },
        );
        out.insert(
            b_key,
            HostTensor {
                shape: vec![d_out, new_r],
                data: b,
            },
        );
    }
    let config = LoraConfig {
        r: new_r,
        lora_alpha: new_r as f64,
        use_rslora: false,
        ..(*first).clone()
    };
    Ok((AdapterConfig::Lora(config), out))
}
