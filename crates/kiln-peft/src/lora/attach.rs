//! Attaching LoRA (and PiSSA's initialization) to a model's projections.

use super::config::{LoraBias, LoraConfig};
use burn::tensor::{Tensor, TensorData};
use kiln_nn::adapter::{LoraInit, LoraLayer};

use kiln_nn::AdaptableLinear;

/// PiSSA: `A = √(S_r/s)·Uh_r`, `B = V_r·√(S_r/s)` from `W = V·S·Uh` (PyTorch `[out, in]`
/// layout), and the base weight becomes the residual `W − s·BA`.
fn pissa(
    linear: &mut AdaptableLinear,
    layer: &mut LoraLayer,
    r: usize,
    niter: Option<usize>,
    seed: u64,
    device: &Device,
) {
    let (d_in, d_out) = (linear.d_in(), linear.d_out());
    let ours: Vec<f32> = linear.weight.val().into_data().iter::<f32>().collect();
    // [in, out] -> [out, in]
    let w = kiln_nn::transpose(&ours, d_in, d_out);
    let (left, sigma, right) = crate::svd::top_singular(&w, d_out, d_in, r, niter, seed);
    let r = sigma.len();
    let root: Vec<f64> = sigma.iter().map(|s| (s / layer.scaling).sqrt()).collect();
    // ours: lora_a [in, r] = (√S·Uh)ᵀ, lora_b [r, out] = (V·√S)ᵀ
    let mut a = vec![0.0f32; d_in * r];
    let mut b = vec![0.0f32; r * d_out];
    for k in 0..r {
        for i in 0..d_in {
            a[i * r + k] = (root[k] * right[k * d_in + i]) as f32;
        }
        for o in 0..d_out {
            b[k * d_out + o] = (left[o * r + k] * root[k]) as f32;
        }
    }
    let a = Tensor::<2>::from_data(TensorData::new(a, [d_in, r]), device);
    let b = Tensor::<2>::from_data(TensorData::new(b, [r, d_out]), device);
    let residual = linear.weight.val() - a.clone().matmul(b.clone()).mul_scalar(layer.scaling);
    kiln_nn::init::replace_value(&mut linear.weight, residual);
    // The checkpoint's quantized blocks no longer hold the base weight.
    linear
        .set_quantized(None)
        .expect("removing the quantized weight cannot fail");
    kiln_nn::init::replace_value(&mut layer.lora_a, a.clone());
    kiln_nn::init::replace_value(&mut layer.lora_b, b.clone());
    layer.pissa_init = Some((a, b));
}

use burn::module::Module;
use burn::tensor::Device;

use kiln_nn::init::HostRng;
use kiln_nn::{AdapterTarget, layer_index};

use crate::matching::{TargetMatcher, train_modules_to_save};
use crate::trainable::freeze_base;
use crate::{PeftError, Result};

/// Freezes the model's base weights and attaches a fresh LoRA adapter to every projection that
/// `config.target_modules` (and `layers_to_transform`) selects. Biases and `modules_to_save` are
/// made trainable as the config says. Returns the model and the paths of the adapted projections.
///
/// # Errors
/// An invalid configuration, targets that match no projection of the model, a projection that
/// already holds another adapter, or `bias = "all"` on a model with biases outside its
/// projections (GPT-2's LayerNorms).
pub fn attach_lora<M: AdapterTarget + Module>(
    model: M,
    config: &LoraConfig,
    seed: u64,
    device: &Device,
) -> Result<(M, Vec<String>)> {
    config.validate()?;
    let targets = config.resolved_targets(&model.linear_paths());
    let matcher = TargetMatcher::new(&targets)?;
    if config.bias == LoraBias::All && model.has_other_biases() {
        return Err(PeftError::InvalidConfig {
            field: "bias".into(),
            reason: "\"all\" would also train normalization biases, which kiln keeps frozen; \
                     use \"lora_only\" or \"none\""
                .into(),
        });
    }
    if let Some(wanted) = &config.layers_to_transform {
        let mut present: Vec<usize> = model
            .linear_paths()
            .iter()
            .filter_map(|p| layer_index(p))
            .collect();
        present.sort_unstable();
        present.dedup();
        if let Some(missing) = wanted.iter().find(|i| !present.contains(i)) {
            let have = match (present.first(), present.last()) {
                (Some(a), Some(b)) => format!("layers {a} to {b}"),
                _ => "no numbered layers".to_string(),
            };
            return Err(PeftError::InvalidConfig {
                field: "layers_to_transform".into(),
                reason: format!("layer {missing} does not exist; the model has {have}"),
            });
        }
    }
    let mut model = freeze_base(model);
    let root = HostRng::new(seed);
    let mut adapted = Vec::new();
    let mut seen = Vec::new();
    let mut conflict = None;
    let layers = config.layers_to_transform.as_deref();
    model.visit_linears_mut(&mut |path, linear| {
        seen.push(path.to_string());
        let in_layers = layers.is_none_or(|ls| layer_index(path).is_some_and(|i| ls.contains(&i)));
        if matcher.matches(path) && in_layers {
            if linear.ia3.is_some() || linear.lora.is_some() {
                conflict.get_or_insert_with(|| path.to_string());
                return;
            }
            let mut rng = root.fork(path);
            let base = config.use_dora.then(|| linear.weight.val());
            let mut layer =
                config.init_layer(&mut rng, linear.d_in(), linear.d_out(), base, device);
            if let Ok(Some(LoraInit::Pissa { niter })) = config.init() {
                pissa(linear, &mut layer, config.r, niter, seed, device);
            }
            linear.lora = Some(layer);
            if config.bias == LoraBias::LoraOnly {
                linear.bias = linear.bias.take().map(|b| b.set_require_grad(true));
            }
            adapted.push(path.to_string());
        }
        if config.bias == LoraBias::All {
            linear.bias = linear.bias.take().map(|b| b.set_require_grad(true));
        }
    });
    if let Some(path) = conflict {
        return Err(PeftError::AdapterConflict { path });
    }
    if adapted.is_empty() {
        let available = seen.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        return Err(PeftError::NoTargetMatched { targets, available });
    }
    let model = train_modules_to_save(model, config.modules_to_save.as_deref())?;
    Ok((model, adapted))
}
