//! PEFT adapters against Hugging Face PEFT, and the invariants every method must keep.
//!
//! The fixtures (`tests/fixtures/peft/<arch>-<method>/`) are written by
//! `scripts/fixtures/gen_peft_fixtures.py`: Python `peft` attaches each method to the tiny random
//! Llama (GQA) or GPT-2 checkpoint, randomizes every adapter parameter and saves the adapter
//! with `save_pretrained`, plus the logits of the adapted (and merged) model.
//!
//! With `KILN_PEFT_EXPORT=DIR`, `kiln_saved_adapters_for_python` also writes every adapter as
//! kiln saves it, with kiln's logits, for `gen_peft_fixtures.py --check DIR` (the reverse
//! direction: PEFT loads kiln's files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_models::gguf::{GgmlType, GgufFile};
use kiln_models::{
    AnyCausalLm, AnyConfig, CausalLm, GenerationConfig, LmInput, generate, load_model, save_gguf,
    save_pretrained,
};
use kiln_nn::AdapterTarget;
use kiln_nn::safetensors::read_safetensors;
use kiln_peft::io::adapter_state;
use kiln_peft::{
    AdapterConfig, BottleneckConfig, Ia3Config, LoraConfig, PeftError, PrefixTuningConfig,
    PromptTuningConfig, TrainableReport, attach_adapter, load_adapter, save_adapter,
};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join("peft"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("reference.json").exists())
        // Encoder adapters are checked in `parity_bert.rs`.
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("bert-")
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 10,
        "expected the PEFT fixtures, found {}",
        v.len()
    );
    v
}

fn floats(v: &Value, out: &mut Vec<f32>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| floats(x, out)),
        Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
        other => panic!("unexpected {other}"),
    }
}

fn ids_of(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn ids_tensor(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| i64::from(x)).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), rows[0].len()]), device)
}

fn logits(model: &AnyCausalLm, ids: &[Vec<u32>]) -> Vec<f32> {
    let device = model.device();
    model
        .forward(&LmInput::new(ids_tensor(ids, &device)))
        .into_data()
        .iter::<f32>()
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn base(name: &str, device: &Device) -> AnyCausalLm {
    load_model(fixtures().join(name), device).unwrap().1
}

const IDS: [[u32; 7]; 2] = [[5, 17, 42, 8, 77, 3, 61], [90, 12, 33, 1, 49, 26, 70]];

fn ids() -> Vec<Vec<u32>> {
    IDS.iter().map(|r| r.to_vec()).collect()
}

/// Every PEFT-written adapter loads and gives PEFT's logits; merged logits equal PEFT's merged
/// ones and the unmerged ones; unmerging restores them; saving writes the same tensors back.
#[test]
fn peft_adapters_match_python_peft() {
    let device = Device::default();
    let tmp = tempfile::tempdir().unwrap();
    for dir in cases() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let ids = ids_of(&reference["input_ids"]);
        let model = base(reference["base"].as_str().unwrap(), &device);
        let (mut model, config) = load_adapter(model, &dir, &device).unwrap();
        let mut want = Vec::new();
        floats(&reference["logits"], &mut want);
        let got = logits(&model, &ids);
        let d = max_diff(&got, &want);
        println!("{name}: {} max |kiln - peft| = {d:.2e}", config.peft_type());
        assert!(d < 1e-4, "{name}: logits differ from PEFT by {d}");

        if !reference["merged_logits"].is_null() {
            let mut want_merged = Vec::new();
            floats(&reference["merged_logits"], &mut want_merged);
            model.merge_adapters().unwrap();
            let merged = logits(&model, &ids);
            let dm = max_diff(&merged, &want_merged);
            let du = max_diff(&merged, &got);
            println!("{name}: merged vs peft merged {dm:.2e}, merged vs unmerged {du:.2e}");
            assert!(dm < 1e-4, "{name}: merged logits differ from PEFT by {dm}");
            assert!(
                du < 1e-4,
                "{name}: merged logits differ from unmerged by {du}"
            );
            model.unmerge_adapters().unwrap();
            let back = logits(&model, &ids);
            assert!(
                max_diff(&back, &got) < 1e-4,
                "{name}: unmerge did not restore"
            );
        }

        // Round trip: kiln writes exactly the tensors it read, under the same keys.
        let out = tmp.path().join(&name);
        save_adapter(&model, &config, &out).unwrap();
        let original = read_safetensors(&dir.join("adapter_model.safetensors")).unwrap();
        let saved = read_safetensors(&out.join("adapter_model.safetensors")).unwrap();
        assert_eq!(
            original, saved,
            "{name}: save/load round trip changed tensors"
        );
        let cfg_back = kiln_peft::read_adapter_config(&out).unwrap();
        assert_eq!(cfg_back.peft_type(), config.peft_type());
    }
}

/// Greedy generation with the KV cache equals generation without it for adapted models
/// (prompt and prefix tuning change how the cache starts).
#[test]
fn cached_generation_with_prompt_methods() {
    let device = Device::default();
    for case in [
        "llama-prompt",
        "llama-prefix",
        "gpt2-prompt",
        "gpt2-prefix",
        "llama-dora",
    ] {
        let dir = fixtures().join("peft").join(case);
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let model = base(reference["base"].as_str().unwrap(), &device);
        let (model, _) = load_adapter(model, &dir, &device).unwrap();
        let prompt = vec![5u32, 17, 42, 8];
        let cfg = GenerationConfig {
            max_new_tokens: 6,
            ..GenerationConfig::default()
        };
        let out = generate(
            &model,
            std::slice::from_ref(&prompt),
            0,
            &cfg,
            None,
            &mut |_, _| {},
        )
        .unwrap();
        // Uncached greedy: full forward each step.
        let mut seq = prompt.clone();
        for _ in 0..6 {
            let l = logits(&model, std::slice::from_ref(&seq));
            let v = model.vocab_size();
            let last = &l[(seq.len() - 1) * v..seq.len() * v];
            let next = (0..v).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
            seq.push(next);
        }
        assert_eq!(out[0].tokens, seq[prompt.len()..], "{case}");
    }
}

fn method_configs() -> Vec<(&'static str, AdapterConfig)> {
    vec![
        ("lora", AdapterConfig::Lora(LoraConfig::default())),
        (
            "rslora-all-linear",
            AdapterConfig::Lora(LoraConfig {
                r: 4,
                lora_alpha: 16.0,
                use_rslora: true,
                target_modules: vec!["all-linear".into()],
                ..Default::default()
            }),
        ),
        (
            "dora",
            AdapterConfig::Lora(LoraConfig {
                use_dora: true,
                target_modules: vec!["all-linear".into()],
                ..Default::default()
            }),
        ),
        ("ia3", AdapterConfig::Ia3(Ia3Config::default())),
        (
            "pissa",
            AdapterConfig::Lora(LoraConfig {
                r: 4,
                lora_alpha: 8.0,
                init_lora_weights: kiln_peft::lora::InitLoraWeights::Named("pissa".into()),
                ..Default::default()
            }),
        ),
        (
            "houlsby",
            AdapterConfig::Bottleneck(BottleneckConfig::default()),
        ),
        (
            "prompt",
            AdapterConfig::PromptTuning(PromptTuningConfig {
                num_virtual_tokens: 4,
                ..Default::default()
            }),
        ),
        (
            "prefix-projection",
            AdapterConfig::PrefixTuning(PrefixTuningConfig {
                num_virtual_tokens: 4,
                prefix_projection: true,
                encoder_hidden_size: 16,
                ..Default::default()
            }),
        ),
    ]
}

/// Sets every trainable adapter parameter to non-trivial values so merges and saves are tested
/// on more than zeros and ones.
fn perturb<M: AdapterTarget>(model: &mut M, config: &AdapterConfig, device: &Device) {
    let mut state = adapter_state(model, config).unwrap();
    let mut k = 0u32;
    for t in state.values_mut() {
        for v in &mut t.data {
            k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *v += ((k >> 16) % 1000) as f32 / 1000.0 * 0.2 - 0.1;
        }
    }
    kiln_peft::io::set_adapter_state(model, config, state, Path::new("perturbed"), device).unwrap();
}

/// The method x architecture matrix of invariants.
#[test]
fn invariants_for_every_method_and_architecture() {
    let device = Device::default();
    let ad = device.clone().autodiff();
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["tiny-llama", "tiny-gpt2", "tiny-gemma3"] {
        let base_logits = logits(&base(arch, &device), &ids());
        for (name, config) in method_configs() {
            let case = format!("{arch}/{name}");
            let (fresh, config) =
                attach_adapter(base(arch, &device), &config, None, 7, &device).unwrap();
            let zero_init = !matches!(
                config,
                AdapterConfig::PromptTuning(_) | AdapterConfig::PrefixTuning(_)
            );
            let fresh_logits = logits(&fresh, &ids());
            if zero_init {
                let d = max_diff(&fresh_logits, &base_logits);
                assert!(
                    d < 1e-5,
                    "{case}: a fresh adapter changed the logits by {d}"
                );
            }

            // Only adapter parameters receive gradients.
            let (model_ad, _) = attach_adapter(base(arch, &ad), &config, None, 7, &ad).unwrap();
            let report = TrainableReport::of(&model_ad);
            let adapter_params: usize = adapter_state(&model_ad, &config)
                .unwrap()
                .values()
                .map(|t| t.data.len())
                .sum();
            let expected_trainable = match &config {
                // The reparameterization MLP trains; the saved table is its output.
                AdapterConfig::PrefixTuning(_) => report.trainable,
                // PiSSA saves [A; A0] and [B, -B0]: twice the trained factors.
                AdapterConfig::Lora(c)
                    if c.init_lora_weights
                        == kiln_peft::lora::InitLoraWeights::Named("pissa".into()) =>
                {
                    adapter_params / 2
                }
                _ => adapter_params,
            };
            assert!(report.trainable > 0, "{case}: nothing trainable");
            assert_eq!(
                report.trainable, expected_trainable,
                "{case}: trainable count"
            );
            let out = model_ad.forward(&LmInput::new(ids_tensor(&ids(), &ad)));
            let grads = out.powi_scalar(2).mean().backward();
            let mut with_grad = 0usize;
            struct Count<'a> {
                grads: &'a burn::tensor::Gradients,
                with_grad: &'a mut usize,
                frozen_with_grad: usize,
            }
            impl burn::module::ModuleVisitor for Count<'_> {
                fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                    let g = p.val().grad(self.grads);
                    if g.is_some() {
                        if p.is_require_grad() {
                            *self.with_grad += p.shape().num_elements();
                        } else {
                            self.frozen_with_grad += 1;
                        }
                    }
                }
            }
            let mut c = Count {
                grads: &grads,
                with_grad: &mut with_grad,
                frozen_with_grad: 0,
            };
            model_ad.visit(&mut c);
            assert_eq!(
                c.frozen_with_grad, 0,
                "{case}: a frozen parameter got a gradient"
            );
            assert_eq!(
                with_grad, report.trainable,
                "{case}: some trainable parameter got no gradient"
            );
            let _ = model_ad.valid();

            // Merged == unmerged, disabling gives the base model, save/load is exact.
            let mut model = fresh;
            perturb(&mut model, &config, &device);
            let adapted = logits(&model, &ids());
            if zero_init {
                assert!(
                    max_diff(&adapted, &base_logits) > 1e-4,
                    "{case}: perturbation had no effect"
                );
            }
            if matches!(config, AdapterConfig::Lora(_) | AdapterConfig::Ia3(_)) {
                model.merge_adapters().unwrap();
                let d = max_diff(&logits(&model, &ids()), &adapted);
                assert!(d < 1e-5, "{case}: merged differs from unmerged by {d}");
                model.unmerge_adapters().unwrap();
            }
            // PiSSA's base weight is the residual: disabled gives the residual model, as in PEFT.
            if name != "pissa" {
                model.set_adapters_enabled(false);
                let d = max_diff(&logits(&model, &ids()), &base_logits);
                assert!(
                    d < 1e-5,
                    "{case}: disabled adapters still change logits by {d}"
                );
                model.set_adapters_enabled(true);
            }

            let dir = tmp.path().join(arch).join(name);
            save_adapter(&model, &config, &dir).unwrap();
            let (loaded, _) = load_adapter(base(arch, &device), &dir, &device).unwrap();
            let saved = adapter_state(&model, &config).unwrap();
            let reread = adapter_state(&loaded, &config).unwrap();
            assert_eq!(saved, reread, "{case}: save/load round trip");
            let d = max_diff(&logits(&loaded, &ids()), &adapted);
            assert!(
                d < 1e-5,
                "{case}: reloaded adapter gives other logits ({d})"
            );

            let mut removed = loaded;
            removed.remove_adapters().unwrap();
            let d = max_diff(&logits(&removed, &ids()), &base_logits);
            assert!(
                d < 1e-5,
                "{case}: removing the adapter left a difference of {d}"
            );
        }
    }
}

/// Loading is strict: an adapter for another architecture, a missing tensor, an unexpected one or
/// a wrong shape is an error naming the key.
#[test]
fn strict_loading_names_the_key() {
    let device = Device::default();
    let llama_lora = fixtures().join("peft/llama-lora");
    // Llama adapter on GPT-2.
    let err = load_adapter(base("tiny-gpt2", &device), &llama_lora, &device).unwrap_err();
    assert!(
        matches!(&err, PeftError::InFile { path, source }
            if path.ends_with("adapter_config.json")
                && matches!(**source, PeftError::NoTargetMatched { .. })),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let copy = |tensors: &BTreeMap<String, kiln_nn::safetensors::HostTensor>| {
        let d = tmp.path().join(format!("c{}", tensors.len()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(
            llama_lora.join("adapter_config.json"),
            d.join("adapter_config.json"),
        )
        .unwrap();
        kiln_nn::safetensors::write_safetensors(&d.join("adapter_model.safetensors"), tensors)
            .unwrap();
        d
    };
    let original = read_safetensors(&llama_lora.join("adapter_model.safetensors")).unwrap();
    let key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";

    let mut missing = original.clone();
    missing.remove(key);
    let err = load_adapter(base("tiny-llama", &device), &copy(&missing), &device).unwrap_err();
    assert!(
        matches!(err, PeftError::MissingTensor { .. }) && err.to_string().contains(key),
        "{err}"
    );

    let mut extra = original.clone();
    let stray = "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight";
    extra.insert(stray.into(), original[key].clone());
    let err = load_adapter(base("tiny-llama", &device), &copy(&extra), &device).unwrap_err();
    assert!(
        matches!(err, PeftError::UnexpectedTensor { .. }) && err.to_string().contains(stray),
        "{err}"
    );

    let mut wrong = original.clone();
    let t = wrong.get_mut(key).unwrap();
    t.shape = vec![t.shape[1], t.shape[0]];
    let err = load_adapter(base("tiny-llama", &device), &copy(&wrong), &device);
    // A transposed [out, r] -> [r, out] factor only differs in shape.
    let err = err.unwrap_err();
    assert!(
        matches!(err, PeftError::Shape { .. }) && err.to_string().contains(key),
        "{err}"
    );
}

/// The reverse direction: adapters made and saved by kiln (every method PEFT has, on both tiny
/// bases), and models with merged adapters exported by kiln, with kiln's logits beside each.
/// With `KILN_PEFT_PYTHON` (a Python with torch, transformers and peft, as
/// `scripts/python-reference.sh` makes), `scripts/fixtures/gen_peft_fixtures.py --check` loads
/// every one in PEFT / transformers and must find kiln's logits within 1e-4; with
/// `KILN_PEFT_EXPORT=DIR` the files are also kept in DIR. Skipped when neither is set.
#[test]
fn kiln_saved_adapters_for_python() {
    let python = std::env::var_os("KILN_PEFT_PYTHON");
    let export = std::env::var_os("KILN_PEFT_EXPORT").map(PathBuf::from);
    if python.is_none() && export.is_none() {
        eprintln!(
            "skipping: set KILN_PEFT_PYTHON (scripts/python-reference.sh) to check kiln's \
             adapters in Python PEFT, or KILN_PEFT_EXPORT=DIR to write them"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = export.unwrap_or_else(|| tmp.path().to_path_buf());
    let device = Device::default();
    let mut cases = 0;
    for arch in ["tiny-llama", "tiny-gpt2", "tiny-gemma3"] {
        for (name, config) in method_configs() {
            if matches!(config, AdapterConfig::Bottleneck(_)) {
                continue; // PEFT has no bottleneck adapters
            }
            let (mut model, config) =
                attach_adapter(base(arch, &device), &config, None, 11, &device).unwrap();
            perturb(&mut model, &config, &device);
            let dir = out.join(format!("{arch}-{name}"));
            save_adapter(&model, &config, &dir).unwrap();
            write_kiln_logits(&dir, arch, &model);
            cases += 1;
        }
    }
    for case in MERGED_CASES {
        let (model, config, base_name) = merged_case(case, &device);
        let dir = out.join(format!("merged-{case}"));
        save_pretrained(&model, &config, None, &dir).unwrap();
        write_kiln_logits(&dir, &base_name, &model);
        cases += 1;
    }
    // Gemma 3 with every projection's LoRA merged: transformers must read kiln's config.json
    // (Gemma 3's RoPE bases, layer kinds and norms) and give the same logits.
    let (config, base_model) = load_model(fixtures().join("tiny-gemma3"), &device).unwrap();
    let lora = AdapterConfig::Lora(LoraConfig {
        target_modules: vec!["all-linear".into()],
        ..Default::default()
    });
    let (mut model, lora) = attach_adapter(base_model, &lora, None, 13, &device).unwrap();
    perturb(&mut model, &lora, &device);
    model.merge_adapters().unwrap();
    let dir = out.join("merged-tiny-gemma3-lora-all");
    save_pretrained(&model, &config, None, &dir).unwrap();
    let (_, reloaded) = load_model(&dir, &device).unwrap();
    assert!(max_diff(&logits(&reloaded, &ids()), &logits(&model, &ids())) < 1e-6);
    write_kiln_logits(&dir, "tiny-gemma3", &model);
    cases += 1;
    let Some(python) = python else { return };
    let check = std::process::Command::new(python)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../scripts/fixtures/gen_peft_fixtures.py"),
        )
        .arg("--check")
        .arg(&out)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let checked = report.lines().filter(|l| l.ends_with(" ok")).count();
    assert!(
        check.status.success() && checked == cases,
        "PEFT checked {checked} of {cases} kiln adapters and models:\n{report}"
    );
    eprintln!("{report}");
}

/// `kiln_logits.json` beside a saved adapter or model: the base's folder name, the input ids and
/// kiln's logits `[2, 7, vocab]`.
fn write_kiln_logits(dir: &Path, base: &str, model: &AnyCausalLm) {
    let l: Vec<f32> = logits(model, &ids());
    let v = model.vocab_size();
    let rows: Vec<Vec<Vec<f32>>> = (0..2)
        .map(|b| {
            (0..7)
                .map(|t| l[(b * 7 + t) * v..(b * 7 + t + 1) * v].to_vec())
                .collect()
        })
        .collect();
    let json = serde_json::json!({"base": base, "input_ids": ids(), "logits": rows});
    std::fs::write(dir.join("kiln_logits.json"), json.to_string()).unwrap();
}

/// PEFT fixtures whose adapters kiln merges and exports.
const MERGED_CASES: [&str; 4] = [
    "llama-dora",
    "llama-rslora-all",
    "gpt2-lora-bias",
    "gpt2-ia3",
];

/// A PEFT fixture's adapter loaded and merged into its base: the model, its config and the
/// base's folder name.
fn merged_case(case: &str, device: &Device) -> (AnyCausalLm, AnyConfig, String) {
    let dir = fixtures().join("peft").join(case);
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let base_name = reference["base"].as_str().unwrap().to_string();
    let (config, model) = load_model(fixtures().join(&base_name), device).unwrap();
    let (mut model, _) = load_adapter(model, &dir, device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = save_pretrained(&model, &config, None, tmp.path()).unwrap_err();
    assert!(err.to_string().contains("merge"), "{err}");
    model.merge_adapters().unwrap();
    (model, config, base_name)
}

/// A model with merged adapters saves as an HF directory that loads back with the same logits.
#[test]
fn merged_models_export_as_hf_directories() {
    let device = Device::default();
    let tmp = tempfile::tempdir().unwrap();
    for case in MERGED_CASES {
        let (model, config, _) = merged_case(case, &device);
        let out = tmp.path().join(case);
        save_pretrained(&model, &config, None, &out).unwrap();
        let (_, reloaded) = load_model(&out, &device).unwrap();
        let want = logits(&model, &ids());
        let got = logits(&reloaded, &ids());
        assert!(
            max_diff(&got, &want) < 1e-6,
            "{case}: exported model differs"
        );
    }
}

/// A model from a GGUF base with a merged rsLoRA on every projection saves as a GGUF file in the
/// base's layout: without an adapter, the exported attention weights equal the base file's
/// (llama.cpp's q/k row order restored); with one, an f32 export holds the merged weights
/// exactly and kiln loads every export with the merged model's logits (in f32 up to float
/// rounding, 1.1e-4 of logits up to 3.6 on flex; closely in f16 and Q8_0).
#[test]
fn merged_models_export_as_gguf() {
    let device = Device::default();
    let tmp = tempfile::tempdir().unwrap();
    let path = fixtures().join("gguf/tiny-llama-quant.gguf");
    let base_file = GgufFile::open(&path).unwrap();
    let (config, model) = load_model(&path, &device).unwrap();

    let plain = tmp.path().join("plain.gguf");
    save_gguf(&model, &config, &base_file, GgmlType::F32, &plain).unwrap();
    let plain = GgufFile::open(&plain).unwrap();
    for name in [
        "blk.0.attn_q.weight",
        "blk.1.attn_k.weight",
        "token_embd.weight",
    ] {
        assert_eq!(
            plain.tensor_f32(name).unwrap(),
            base_file.tensor_f32(name).unwrap(),
            "{name}"
        );
    }
    assert_eq!(plain.get_u32("general.file_type").unwrap(), 0);
    assert_eq!(
        plain.get_u32("llama.block_count").unwrap(),
        base_file.get_u32("llama.block_count").unwrap()
    );

    let (_, lora) = method_configs()
        .into_iter()
        .find(|(n, _)| *n == "rslora-all-linear")
        .unwrap();
    let (mut model, lora) = attach_adapter(model, &lora, None, 5, &device).unwrap();
    perturb(&mut model, &lora, &device);
    let out = tmp.path().join("merged.gguf");
    let err = save_gguf(&model, &config, &base_file, GgmlType::F32, &out).unwrap_err();
    assert!(err.to_string().contains("merge"), "{err}");
    assert!(!out.exists());
    model.merge_adapters().unwrap();
    let want = logits(&model, &ids());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (ty, tolerance) in [
        (GgmlType::F32, 1e-4),
        (GgmlType::F16, 1e-2),
        (GgmlType::Q8_0, 5e-2),
    ] {
        save_gguf(&model, &config, &base_file, ty, &out).unwrap();
        let (_, reloaded) = load_model(&out, &device).unwrap();
        let diff = max_diff(&logits(&reloaded, &ids()), &want);
        eprintln!("{ty}: max |logit diff| {diff:.2e} (logits up to {scale:.2})");
        assert!(diff <= tolerance * scale.max(1.0), "{ty}: {diff}");
        let file = GgufFile::open(&out).unwrap();
        assert_eq!(
            file.tensor_info("blk.0.ffn_up.weight").unwrap().ggml_type(),
            ty
        );
        if ty == GgmlType::F32 {
            // The merged weight itself is written exactly (`[out, in]` rows in the file).
            let mut merged = Vec::new();
            model.visit_linears(&mut |path, l| {
                if path == "model.layers.0.mlp.up_proj" {
                    let w = l.weight.val().transpose().into_data();
                    merged = w.iter::<f32>().collect();
                }
            });
            let (written, _) = file.tensor_f32("blk.0.ffn_up.weight").unwrap();
            assert_eq!(written, merged, "blk.0.ffn_up.weight");
        }
        assert_eq!(
            file.tensor_info("blk.0.attn_norm.weight")
                .unwrap()
                .ggml_type(),
            GgmlType::F32
        );
    }
}

/// PiSSA: kiln's initialization spans the same top-r update as PEFT's (compared as products,
/// since singular vectors are defined up to sign), leaves the model unchanged, and saves as the
/// plain rank-2r LoRA that PEFT's conversion writes.
#[test]
fn pissa_initialization_matches_peft() {
    let device = Device::default();
    let dir = fixtures().join("peft/llama-pissa/initial");
    let peft_init = read_safetensors(&dir.join("adapter_model.safetensors")).unwrap();
    let config = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        init_lora_weights: kiln_peft::lora::InitLoraWeights::Named("pissa".into()),
        ..Default::default()
    };
    let base_logits = logits(&base("tiny-llama", &device), &ids());
    let (model, _) =
        kiln_peft::attach_lora(base("tiny-llama", &device), &config, 0, &device).unwrap();
    assert!(
        max_diff(&logits(&model, &ids()), &base_logits) < 1e-5,
        "PiSSA changed the model"
    );
    let mut checked = 0;
    model.visit_linears(&mut |path, l| {
        let Some(lora) = &l.lora else { return };
        // kiln: s·A·B in [in, out]; PEFT: s·B0·A0 in [out, in].
        let ours: Vec<f32> = lora.delta_weight().into_data().iter::<f32>().collect();
        let key = |s: &str| format!("base_model.model.{path}.{s}");
        let a0 = &peft_init[&key("lora_A.weight")];
        let b0 = &peft_init[&key("lora_B.weight")];
        let (r, d_in, d_out) = (a0.shape[0], a0.shape[1], b0.shape[0]);
        let mut worst = 0f32;
        for i in 0..d_in {
            for o in 0..d_out {
                let theirs: f32 = (0..r)
                    .map(|k| b0.data[o * r + k] * a0.data[k * d_in + i])
                    .sum::<f32>()
                    * 2.0;
                worst = worst.max((theirs - ours[i * d_out + o]).abs());
            }
        }
        assert!(
            worst < 1e-4,
            "{path}: PiSSA update differs from PEFT's by {worst}"
        );
        checked += 1;
    });
    assert_eq!(checked, 6);

    // Saved as PEFT converts it: rank 2r, alpha doubled, `init_lora_weights: true`.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = AdapterConfig::Lora(config);
    save_adapter(&model, &cfg, tmp.path()).unwrap();
    let saved = kiln_peft::read_adapter_config(tmp.path()).unwrap();
    let AdapterConfig::Lora(saved) = saved else {
        panic!()
    };
    assert_eq!((saved.r, saved.lora_alpha), (8, 16.0));
    // A fresh PiSSA adapter is a zero update on the original weights.
    let (reloaded, _) = load_adapter(base("tiny-llama", &device), tmp.path(), &device).unwrap();
    assert!(max_diff(&logits(&reloaded, &ids()), &base_logits) < 1e-5);
}
