//! The Hugging Face PEFT on-disk format: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! Keys are PEFT's: `base_model.model.<projection path>.lora_A.weight` (`[r, in]`),
//! `lora_B.weight` (`[out, r]`), `lora_magnitude_vector` (`[out]`, DoRA), `ia3_l` (`[out, 1]`, or
//! `[1, in]` for feed-forward targets), `base_layer.bias` (trained biases of adapted projections),
//! `<path>.weight` / `<path>.bias` (`modules_to_save`, in the checkpoint's layout) and
//! `prompt_embeddings` (prompt and prefix tuning). Loading is strict: the configuration applied
//! to the model defines exactly which tensors must be present, with which shapes.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::bottleneck::attach_bottleneck;
use crate::config::AdapterConfig;
use crate::ia3::attach_ia3;
use crate::lora::{LoraBias, attach_lora};
use crate::matching::is_module_to_save;
use crate::prefix::attach_prefix_tuning;
use crate::prompt::{PromptEncoder, PromptTuningInit, attach_prompt_tuning};
use crate::{PeftError, Result};
use kiln_nn::safetensors::{HostTensor, read_safetensors, write_atomic, write_safetensors};
use kiln_nn::{AdaptableLinear, AdapterTarget, transpose};

/// The adapter configuration file PEFT reads.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The adapter weights file PEFT reads.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const KEY_PREFIX: &str = "base_model.model.";
const PROMPT_KEY: &str = "prompt_embeddings";

/// One adapter parameter of a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    LoraA,
    LoraB,
    Magnitude,
    Bias,
    Ia3,
    DownWeight,
    DownBias,
    UpWeight,
    UpBias,
    SavedWeight,
}

/// The adapter parameters a projection carries under `config`, with their PEFT key suffixes.
fn slots(path: &str, l: &AdaptableLinear, config: &AdapterConfig) -> Result<Vec<(String, Slot)>> {
    let mut out = Vec::new();
    let k = |s: &str| format!("{KEY_PREFIX}{path}.{s}");
    if l.lora.is_some() {
        out.push((k("lora_A.weight"), Slot::LoraA));
        out.push((k("lora_B.weight"), Slot::LoraB));
        if l.lora.as_ref().is_some_and(|x| x.is_dora()) {
            out.push((k("lora_magnitude_vector"), Slot::Magnitude));
        }
    }
    if let AdapterConfig::Lora(c) = config
        && l.bias.is_some()
    {
        match (c.bias, l.lora.is_some()) {
            (LoraBias::LoraOnly | LoraBias::All, true) => {
                out.push((k("base_layer.bias"), Slot::Bias));
            }
            (LoraBias::All, false) => out.push((k("bias"), Slot::Bias)),
            _ => {}
        }
    }
    if l.ia3.is_some() {
        out.push((k("ia3_l"), Slot::Ia3));
    }
    if l.bottleneck.is_some() {
        out.push((k("adapter_down.weight"), Slot::DownWeight));
        out.push((k("adapter_down.bias"), Slot::DownBias));
        out.push((k("adapter_up.weight"), Slot::UpWeight));
        out.push((k("adapter_up.bias"), Slot::UpBias));
    }
    if is_module_to_save(path, config.modules_to_save())? && !l.has_adapter() {
        out.push((k("weight"), Slot::SavedWeight));
        if l.bias.is_some() {
            out.push((k("bias"), Slot::Bias));
        }
    }
    Ok(out)
}

fn get(l: &AdaptableLinear, slot: Slot) -> HostTensor {
    let lora = || l.lora.as_ref().expect("slot implies LoRA");
    let bn = || {
        l.bottleneck
            .as_ref()
            .expect("slot implies a bottleneck adapter")
    };
    let torch = |t: Tensor<2>| {
        let h = HostTensor::of(t);
        let (r, c) = (h.shape[0], h.shape[1]);
        HostTensor {
            shape: vec![c, r],
            data: transpose(&h.data, r, c),
        }
    };
    match slot {
        // PiSSA saves the difference to its initialization as a rank-2r LoRA on the original
        // weight, as PEFT's `path_initial_model_for_weight_conversion`: [A; A0] and [B, −B0].
        Slot::LoraA => match &lora().pissa_init {
            Some((a0, _)) => torch(Tensor::cat(vec![lora().lora_a.val(), a0.clone()], 1)),
            None => torch(lora().lora_a.val()),
        },
        Slot::LoraB => match &lora().pissa_init {
            Some((_, b0)) => torch(Tensor::cat(vec![lora().lora_b.val(), b0.clone().neg()], 0)),
            None => torch(lora().lora_b.val()),
        },
        Slot::Magnitude => {
            HostTensor::of(lora().magnitude.as_ref().expect("slot implies DoRA").val())
        }
        Slot::Bias => HostTensor::of(l.bias.as_ref().expect("slot implies a bias").val()),
        Slot::Ia3 => {
            let ia3 = l.ia3.as_ref().expect("slot implies IA3");
            let mut h = HostTensor::of(ia3.ia3_l.val());
            let n = h.shape[0];
            h.shape = if ia3.feedforward {
                vec![1, n]
            } else {
                vec![n, 1]
            };
            h
        }
        Slot::DownWeight => torch(bn().adapter_down.val()),
        Slot::DownBias => HostTensor::of(bn().adapter_down_bias.val()),
        Slot::UpWeight => torch(bn().adapter_up.val()),
        Slot::UpBias => HostTensor::of(bn().adapter_up_bias.val()),
        Slot::SavedWeight => {
            let (data, shape) = l.checkpoint_weight();
            HostTensor {
                shape: shape.to_vec(),
                data,
            }
        }
    }
}

fn replace<const D: usize>(p: &mut Param<Tensor<D>>, t: Tensor<D>) {
    kiln_nn::init::replace_value(p, t);
}

fn set(l: &mut AdaptableLinear, slot: Slot, h: &HostTensor, device: &Device) {
    // `[r, c]` in PyTorch layout -> `[c, r]`.
    let from_torch = |h: &HostTensor| -> Tensor<2> {
        let (r, c) = (h.shape[0], h.shape[1]);
        HostTensor {
            shape: vec![c, r],
            data: transpose(&h.data, r, c),
        }
        .tensor(device)
    };
    let flat = |h: &HostTensor| -> Tensor<1> {
        HostTensor {
            shape: vec![h.data.len()],
            data: h.data.clone(),
        }
        .tensor(device)
    };
    match slot {
        Slot::LoraA => {
            // Setting a PiSSA layer from its saved (converted, rank-2r) form turns it into that
            // plain LoRA on the original weight.
            let lora = l.lora.as_mut().expect("LoRA");
            if let Some((a0, b0)) = lora.pissa_init.take() {
                let w = l.weight.val() + a0.matmul(b0).mul_scalar(lora.scaling);
                replace(&mut l.weight, w);
            }
            replace(&mut l.lora.as_mut().expect("LoRA").lora_a, from_torch(h));
        }
        Slot::LoraB => replace(&mut l.lora.as_mut().expect("LoRA").lora_b, from_torch(h)),
        Slot::Magnitude => replace(
            l.lora
                .as_mut()
                .and_then(|x| x.magnitude.as_mut())
                .expect("DoRA"),
            flat(h),
        ),
        Slot::Bias => replace(l.bias.as_mut().expect("bias"), flat(h)),
        Slot::Ia3 => replace(&mut l.ia3.as_mut().expect("IA3").ia3_l, flat(h)),
        Slot::DownWeight => replace(
            &mut l.bottleneck.as_mut().expect("bottleneck").adapter_down,
            from_torch(h),
        ),
        Slot::DownBias => replace(
            &mut l.bottleneck.as_mut().expect("bottleneck").adapter_down_bias,
            flat(h),
        ),
        Slot::UpWeight => replace(
            &mut l.bottleneck.as_mut().expect("bottleneck").adapter_up,
            from_torch(h),
        ),
        Slot::UpBias => replace(
            &mut l.bottleneck.as_mut().expect("bottleneck").adapter_up_bias,
            flat(h),
        ),
        Slot::SavedWeight => {
            let w = if l.fan_in_fan_out {
                h.tensor(device)
            } else {
                from_torch(h)
            };
            replace(&mut l.weight, w);
        }
    }
}

/// The adapter's tensors under PEFT's key names, in PEFT's layouts.
///
/// # Errors
/// An invalid `modules_to_save` pattern.
pub fn adapter_state<M: AdapterTarget>(
    model: &M,
    config: &AdapterConfig,
) -> Result<BTreeMap<String, HostTensor>> {
    let mut out = BTreeMap::new();
    let mut err = None;
    model.visit_linears(&mut |path, l| match slots(path, l, config) {
        Ok(s) => {
            for (key, slot) in s {
                out.insert(key, get(l, slot));
            }
        }
        Err(e) => {
            err.get_or_insert(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(enc) = model.prompt_encoder() {
        out.insert(
            PROMPT_KEY.to_string(),
            HostTensor::of(enc.prompt_embeddings()),
        );
    }
    Ok(out)
}

/// Writes the tensors into the model, strictly: every adapter parameter the model carries must
/// be in `tensors` with its exact shape, and nothing else may be.
///
/// # Errors
/// [`PeftError::MissingTensor`], [`PeftError::UnexpectedTensor`] or [`PeftError::Shape`], naming
/// the key; `file` is the file named in the error.
pub fn set_adapter_state<M: AdapterTarget>(
    model: &mut M,
    config: &AdapterConfig,
    mut tensors: BTreeMap<String, HostTensor>,
    file: &Path,
    device: &Device,
) -> Result<()> {
    let expected = adapter_state(model, config)?;
    for (key, want) in &expected {
        let Some(got) = tensors.get(key) else {
            return Err(PeftError::MissingTensor {
                path: file.to_path_buf(),
                key: key.clone(),
            });
        };
        if got.shape != want.shape {
            return Err(PeftError::Shape {
                path: file.to_path_buf(),
                key: key.clone(),
                expected: want.shape.clone(),
                got: got.shape.clone(),
            });
        }
    }
    if let Some(key) = tensors.keys().find(|k| !expected.contains_key(*k)) {
        return Err(PeftError::UnexpectedTensor {
            path: file.to_path_buf(),
            key: key.clone(),
        });
    }
    let mut err = None;
    model.visit_linears_mut(&mut |path, l| match slots(path, l, config) {
        Ok(s) => {
            for (key, slot) in s {
                if let Some(h) = tensors.remove(&key) {
                    set(l, slot, &h, device);
                }
            }
        }
        Err(e) => {
            err.get_or_insert(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(h) = tensors.remove(PROMPT_KEY) {
        let table: Tensor<2> = h.tensor(device);
        let enc = match model.prompt_encoder() {
            Some(PromptEncoder::Prompt(_)) => {
                PromptEncoder::Prompt(crate::prompt::PromptEmbedding {
                    embedding: Param::from_tensor(table),
                })
            }
            Some(PromptEncoder::Prefix(p)) => {
                PromptEncoder::Prefix(kiln_nn::adapter::PrefixEncoder {
                    embedding: Param::from_tensor(table),
                    transform: None,
                    num_layers: p.num_layers,
                    num_kv_heads: p.num_kv_heads,
                    head_dim: p.head_dim,
                })
            }
            None => unreachable!("prompt_embeddings is expected only with a prompt encoder"),
        };
        model.set_prompt_encoder(Some(enc));
    }
    Ok(())
}

/// Attaches a fresh adapter of any method (dispatching on the config). `init_ids` are the token
/// ids of a prompt-tuning init text. Returns the model and the config as it will be saved (model
/// sizes filled in for prompt methods).
///
/// # Errors
/// Those of the method's attach function.
pub fn attach_adapter<M: AdapterTarget + Module>(
    model: M,
    config: &AdapterConfig,
    init_ids: Option<&[u32]>,
    seed: u64,
    device: &Device,
) -> Result<(M, AdapterConfig)> {
    Ok(match config {
        AdapterConfig::Lora(c) => {
            let mut c = c.clone();
            c.target_modules = c.resolved_targets(&model.linear_paths());
            (
                attach_lora(model, &c, seed, device)?.0,
                AdapterConfig::Lora(c),
            )
        }
        AdapterConfig::Ia3(c) => (attach_ia3(model, c, device)?.0, config.clone()),
        AdapterConfig::Bottleneck(c) => {
            (attach_bottleneck(model, c, seed, device)?.0, config.clone())
        }
        AdapterConfig::PromptTuning(c) => {
            let (m, c) = attach_prompt_tuning(model, c, init_ids, seed, device)?;
            (m, AdapterConfig::PromptTuning(c))
        }
        AdapterConfig::PrefixTuning(c) => {
            let (m, c) = attach_prefix_tuning(model, c, seed, device)?;
            (m, AdapterConfig::PrefixTuning(c))
        }
    })
}

/// Reads `adapter_config.json` from an adapter folder.
///
/// # Errors
/// I/O or JSON errors naming the file.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&path).map_err(|e| PeftError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|source| PeftError::Json { path, source })
}

/// Checks an adapter's tensors without a model: every value is finite, and the LoRA factors'
/// rank (`lora_A.weight` rows, `lora_B.weight` columns) is the configuration's `r`. `file`
/// names the weights file in errors.
///
/// # Errors
/// [`PeftError::NonFinite`] naming the first tensor with NaN or an infinity;
/// [`PeftError::ConfigMismatch`] naming a LoRA factor whose rank is not `r`.
pub fn check_adapter_tensors(
    config: &AdapterConfig,
    tensors: &BTreeMap<String, HostTensor>,
    file: &Path,
) -> Result<()> {
    check_finite(tensors, file)?;
    if let AdapterConfig::Lora(c) = config {
        for (key, t) in tensors {
            let rank = if key.ends_with("lora_A.weight") {
                t.shape.first()
            } else if key.ends_with("lora_B.weight") {
                t.shape.get(1)
            } else {
                continue;
            };
            if t.shape.len() != 2 || rank != Some(&c.r) {
                return Err(PeftError::ConfigMismatch {
                    path: file.to_path_buf(),
                    key: key.clone(),
                    shape: t.shape.clone(),
                    field: "r".into(),
                    value: c.r.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Fails on the first tensor holding NaN or an infinity, naming it.
fn check_finite(tensors: &BTreeMap<String, HostTensor>, file: &Path) -> Result<()> {
    for (key, t) in tensors {
        if let Some((index, &value)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(PeftError::NonFinite {
                path: file.to_path_buf(),
                key: key.clone(),
                value,
                index,
            });
        }
    }
    Ok(())
}

/// [`load_adapter`] for an adapter saved with modules outside `model` (the head of a sequence
/// classifier: PEFT's `SEQ_CLS` task saves `score.weight` next to the adapter): the names in
/// `outside` are taken out of `modules_to_save` before the method is attached, and their
/// tensors (`base_model.model.<name>.weight` / `.bias`) are returned instead of loaded. The
/// configuration is returned as saved.
///
/// # Errors
/// As [`load_adapter`].
pub fn load_adapter_with<M: AdapterTarget + Module>(
    model: M,
    dir: &Path,
    device: &Device,
    outside: &[&str],
) -> Result<(M, AdapterConfig, BTreeMap<String, HostTensor>)> {
    let saved = read_adapter_config(dir)?;
    let mut config = saved.clone();
    config.remove_modules_to_save(outside);
    if let AdapterConfig::PromptTuning(c) = &mut config {
        c.prompt_tuning_init = PromptTuningInit::Random;
    }
    let (mut model, _) = attach_adapter(model, &config, None, 0, device).map_err(|e| match e {
        e @ (PeftError::Io { .. } | PeftError::Json { .. }) => e,
        e => PeftError::InFile {
            path: dir.join(CONFIG_FILE),
            source: Box::new(e),
        },
    })?;
    let file = dir.join(WEIGHTS_FILE);
    let mut tensors = read_safetensors(&file)?;
    check_finite(&tensors, &file)?;
    let mut taken = BTreeMap::new();
    for name in outside {
        for suffix in ["weight", "bias"] {
            let key = format!("{KEY_PREFIX}{name}.{suffix}");
            if let Some(t) = tensors.remove(&key) {
                taken.insert(key, t);
            }
        }
    }
    set_adapter_state(&mut model, &config, tensors, &file, device)?;
    Ok((model, saved, taken))
}

/// Loads a PEFT adapter folder into a model: reads the config, attaches the method, and fills
/// its parameters strictly from `adapter_model.safetensors`.
///
/// # Errors
/// I/O, JSON and safetensors errors naming the file; a missing/unexpected tensor, a shape
/// mismatch or a non-finite value naming the key.
pub fn load_adapter<M: AdapterTarget + Module>(
    model: M,
    dir: &Path,
    device: &Device,
) -> Result<(M, AdapterConfig)> {
    let mut config = read_adapter_config(dir)?;
    if let AdapterConfig::PromptTuning(c) = &mut config {
        // The saved table replaces whatever initialization the config names.
        c.prompt_tuning_init = PromptTuningInit::Random;
    }
    let (mut model, _) = attach_adapter(model, &config, None, 0, device).map_err(|e| match e {
        // Errors that name a file already stay as they are.
        e @ (PeftError::Io { .. } | PeftError::Json { .. }) => e,
        e => PeftError::InFile {
            path: dir.join(CONFIG_FILE),
            source: Box::new(e),
        },
    })?;
    let file = dir.join(WEIGHTS_FILE);
    let tensors = read_safetensors(&file)?;
    check_finite(&tensors, &file)?;
    set_adapter_state(&mut model, &config, tensors, &file, device)?;
    Ok((model, read_adapter_config(dir)?))
}

/// Saves the model's adapter as a PEFT folder (created if needed). Each file is written to a
/// temporary name and renamed, so an interrupted save never leaves a half-written file under
/// the final name.
///
/// # Errors
/// I/O errors naming the file.
pub fn save_adapter<M: AdapterTarget>(model: &M, config: &AdapterConfig, dir: &Path) -> Result<()> {
    save_adapter_with(model, config, dir, BTreeMap::new())
}

/// [`save_adapter`] with more tensors in the weights file, under their own keys (a module
/// outside `model` that `config.modules_to_save` names, such as a classifier's
/// `base_model.model.score.weight`, in the checkpoint's layout).
///
/// # Errors
/// I/O errors naming the file; [`PeftError::InvalidConfig`] when an extra key is also one of
/// the adapter's.
pub fn save_adapter_with<M: AdapterTarget>(
    model: &M,
    config: &AdapterConfig,
    dir: &Path,
    extra: BTreeMap<String, HostTensor>,
) -> Result<()> {
    let mut tensors = adapter_state(model, config)?;
    for (key, t) in extra {
        if tensors.contains_key(&key) {
            return Err(PeftError::InvalidConfig {
                field: "modules_to_save".into(),
                reason: format!("`{key}` is both an adapter tensor and an extra tensor"),
            });
        }
        tensors.insert(key, t);
    }
    let mut config = saved_config(model, config);
    config.common_mut().inference_mode = true;
    let mut fan_in_fan_out = false;
    model.visit_linears(&mut |_, l| {
        fan_in_fan_out |= l.fan_in_fan_out && (l.lora.is_some() || l.ia3.is_some());
    });
    // PEFT resolves `all-linear` only for `nn.Linear` models; the adapted module names are
    // portable to every architecture.
    let mut names: Vec<String> = Vec::new();
    model.visit_linears(&mut |path, l| {
        let last = path.rsplit('.').next().unwrap_or(path).to_string();
        if l.lora.is_some() && !names.contains(&last) {
            names.push(last);
        }
    });
    match &mut config {
        AdapterConfig::Lora(c) => {
            c.fan_in_fan_out = fan_in_fan_out;
            if c.target_modules.iter().any(|t| t == "all-linear") {
                c.target_modules = names;
            }
        }
        AdapterConfig::Ia3(c) => c.fan_in_fan_out = fan_in_fan_out,
        _ => {}
    }
    fs::create_dir_all(dir).map_err(|e| PeftError::io(dir, e))?;
    let mut json = serde_json::to_value(&config).map_err(|source| PeftError::Json {
        path: dir.join(CONFIG_FILE),
        source,
    })?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "peft_version".into(),
            serde_json::Value::String("0.21.2".into()),
        );
    }
    let text = serde_json::to_string_pretty(&json).map_err(|source| PeftError::Json {
        path: dir.join(CONFIG_FILE),
        source,
    })?;
    write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())?;
    Ok(write_safetensors(&dir.join(WEIGHTS_FILE), &tensors)?)
}

/// The configuration that describes [`adapter_state`]'s tensors. A PiSSA adapter is saved as
/// the plain LoRA of twice the rank that PEFT's conversion writes (on the original weight), so
/// rank, alpha and `init_lora_weights` follow what the layers hold.
pub fn saved_config<M: AdapterTarget>(model: &M, config: &AdapterConfig) -> AdapterConfig {
    let mut config = config.clone();
    let AdapterConfig::Lora(c) = &mut config else {
        return config;
    };
    let mut found = None;
    model.visit_linears(&mut |_, l| {
        if let Some(lora) = &l.lora
            && found.is_none()
        {
            let rank = lora.rank() * if lora.pissa_init.is_some() { 2 } else { 1 };
            found = Some((rank, lora.scaling));
        }
    });
    if matches!(c.init(), Ok(Some(crate::lora::LoraInit::Pissa { .. }))) {
        c.init_lora_weights = crate::lora::InitLoraWeights::Flag(true);
    }
    if let Some((rank, scaling)) = found
        && rank != c.r
    {
        c.r = rank;
        c.lora_alpha = if c.use_rslora {
            scaling * (rank as f64).sqrt()
        } else {
            scaling * rank as f64
        };
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoraConfig;

    fn lora(r: usize) -> AdapterConfig {
        AdapterConfig::Lora(LoraConfig {
            r,
            target_modules: vec!["q_proj".into()],
            ..Default::default()
        })
    }

    fn tensors(rank: usize, value: f32) -> BTreeMap<String, HostTensor> {
        let t = |shape: Vec<usize>| HostTensor {
            data: vec![value; shape.iter().product()],
            shape,
        };
        let k = |s: &str| format!("{KEY_PREFIX}model.layers.0.self_attn.q_proj.{s}");
        BTreeMap::from([
            (k("lora_A.weight"), t(vec![rank, 8])),
            (k("lora_B.weight"), t(vec![8, rank])),
        ])
    }

    #[test]
    fn tensors_must_be_finite_and_of_rank_r() {
        let file = Path::new("a/adapter_model.safetensors");
        check_adapter_tensors(&lora(4), &tensors(4, 0.5), file).unwrap();
        let err = check_adapter_tensors(&lora(8), &tensors(4, 0.5), file)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lora_A.weight") && err.contains("`r` = 8") && err.contains("[4, 8]"),
            "{err}"
        );
        for bad in [f32::NAN, f32::INFINITY] {
            let err = check_adapter_tensors(&lora(4), &tensors(4, bad), file)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("lora_A.weight") && err.contains("non-finite"),
                "{err}"
            );
        }
    }

    /// Bounded fuzzing of `adapter_config.json`: mutations of a valid file read to a
    /// configuration or to an error naming the file; never a panic.
    #[test]
    fn mutated_adapter_configs_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let seed = serde_json::to_vec_pretty(&lora(8)).unwrap();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..400 {
            let mut b = seed.clone();
            if next() % 5 == 0 {
                b.truncate((next() % b.len() as u64) as usize);
            } else {
                for _ in 0..1 + next() % 3 {
                    let at = (next() % b.len() as u64) as usize;
                    b[at] = match next() % 6 {
                        0 => b'"',
                        1 => b'-',
                        2 => b'9',
                        3 => b'}',
                        _ => next() as u8,
                    };
                }
            }
            fs::write(dir.path().join(CONFIG_FILE), &b).unwrap();
            match read_adapter_config(dir.path()) {
                Ok(config) => {
                    let _ = check_adapter_tensors(&config, &tensors(8, 0.0), Path::new("x"));
                    if let AdapterConfig::Lora(c) = &config {
                        let _ = c.validate();
                    }
                }
                Err(e) => assert!(e.to_string().contains(CONFIG_FILE), "{e}"),
            }
        }
    }
}
