//! The first losses of a LoRA run match PyTorch + Hugging Face PEFT on the same tiny Llama,
//! adapter initialization, data order and AdamW settings.
//!
//! Reference: `scripts/fixtures/gen_train_fixtures.py` → `tests/fixtures/peft-lora/`.

use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use kiln_data::{TokenBatch, TokenizedExample};
use kiln_nn::AdapterTarget;
use kiln_peft::{LoraConfig, attach_lora};
use kiln_train::{OptimizerConfig, Schedule, Trainer};
use safetensors::SafeTensors;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/peft-lora")
        .join(name)
}

fn batches_of(reference: &serde_json::Value) -> Vec<TokenBatch> {
    let pad = reference["pad_id"].as_u64().unwrap() as u32;
    reference["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let examples: Vec<TokenizedExample> = b
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let ids = |k: &str| -> Vec<u32> {
                        e[k].as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_u64().unwrap() as u32)
                            .collect()
                    };
                    TokenizedExample::prompt_completion(&ids("prompt"), &ids("completion"))
                })
                .collect();
            TokenBatch::pad_right(&examples, pad).unwrap()
        })
        .collect()
}

/// The same run with DoRA (magnitude vector trained too), initialized from PEFT's tensors
/// through the PEFT-format loader.
#[test]
fn first_five_dora_losses_match_pytorch_peft() {
    let config = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        use_dora: true,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        ..Default::default()
    };
    check_reference_run("peft-dora", config, "DoRA", |state| {
        assert!(state.keys().any(|k| k.ends_with("lora_magnitude_vector")));
    });
}

/// The same run on the tiny Gemma 3 (sliding-window and global layers, four norms per block,
/// GeGLU, capped tied head), LoRA on q_proj, v_proj and down_proj: the Burn graph's gradients
/// through every Gemma-specific piece.
#[test]
fn first_five_gemma3_losses_match_pytorch_peft() {
    let config = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        ..Default::default()
    };
    check_reference_run("peft-lora-gemma3", config, "Gemma 3 LoRA", |state| {
        assert!(state.keys().any(|k| k.contains("down_proj")));
    });
}

/// Loads the base named by `tests/fixtures/{name}/reference.json`, attaches `config` with PEFT's
/// initial tensors (`lora_init.safetensors`, through the PEFT-format loader), trains with the
/// reference's AdamW settings and batches, and compares the first losses within 1e-3 relative.
fn check_reference_run(
    name: &str,
    config: LoraConfig,
    what: &str,
    check_state: impl Fn(&std::collections::BTreeMap<String, kiln_nn::safetensors::HostTensor>),
) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let device = Device::flex().autodiff();
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-models/tests/fixtures")
        .join(reference["base"].as_str().unwrap());
    let (_, model) = kiln_models::load_model(&base, &device).unwrap();
    let config = kiln_peft::AdapterConfig::Lora(config);
    let (mut model, config) = kiln_peft::attach_adapter(model, &config, None, 0, &device).unwrap();
    let file = dir.join("lora_init.safetensors");
    let state = kiln_nn::safetensors::read_safetensors(&file).unwrap();
    check_state(&state);
    kiln_peft::io::set_adapter_state(&mut model, &config, state, &file, &device).unwrap();
    let batches = batches_of(&reference);
    let opt = &reference["optimizer"];
    let opt = OptimizerConfig {
        lr: opt["lr"].as_f64().unwrap(),
        weight_decay: opt["weight_decay"].as_f64().unwrap() as f32,
        ..Default::default()
    };
    let mut trainer = Trainer::new(opt, Schedule::Constant { warmup_steps: 0 }, &device).unwrap();
    let expected: Vec<f64> = reference["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut got = Vec::new();
    for step in 0..expected.len() {
        let (m, loss) = trainer
            .train_step(model, &batches[step % batches.len()])
            .unwrap();
        model = m;
        got.push(f64::from(loss));
    }
    println!("kiln {what}    {got:?}\nPyTorch {what} {expected:?}");
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            ((g - e) / e).abs() < 1e-3,
            "{what} step {i}: kiln {g} vs PyTorch + PEFT {e}"
        );
    }
}

/// A PEFT tensor `[rows, cols]` as a Burn tensor transposed to `[cols, rows]` (kiln stores
/// `lora_a` as `[in, r]` and `lora_b` as `[r, out]`).
fn transposed(st: &SafeTensors<'_>, key: &str, device: &Device) -> Param<Tensor<2>> {
    let view = st.tensor(key).unwrap_or_else(|_| panic!("missing {key}"));
    let shape = view.shape();
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let t = Tensor::<2>::from_data(TensorData::new(values, [shape[0], shape[1]]), device);
    Param::from_tensor(t.transpose())
}

#[test]
fn first_five_losses_match_pytorch_peft() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let device = Device::flex().autodiff();
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-models/tests/fixtures/tiny-llama");
    let (_, model) = kiln_models::load_llama(&dir, &device).unwrap();
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        ..Default::default()
    };
    let (mut model, adapted) = attach_lora(model, &lora, 0, &device).unwrap();
    assert_eq!(adapted.len(), 4);

    let bytes = std::fs::read(fixture("lora_init.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut loaded = 0;
    model.visit_linears_mut(&mut |path, linear| {
        if let Some(layer) = linear.lora.as_mut() {
            let key = format!("base_model.model.{path}");
            layer.lora_a = transposed(&st, &format!("{key}.lora_A.weight"), &device);
            layer.lora_b = transposed(&st, &format!("{key}.lora_B.weight"), &device);
            loaded += 1;
        }
    });
    assert_eq!(loaded, st.len() / 2);

    let batches = batches_of(&reference);

    let opt = &reference["optimizer"];
    let config = OptimizerConfig {
        lr: opt["lr"].as_f64().unwrap(),
        beta1: opt["betas"][0].as_f64().unwrap() as f32,
        beta2: opt["betas"][1].as_f64().unwrap() as f32,
        eps: opt["eps"].as_f64().unwrap() as f32,
        weight_decay: opt["weight_decay"].as_f64().unwrap() as f32,
        ..Default::default()
    };
    let mut trainer =
        Trainer::new(config, Schedule::Constant { warmup_steps: 0 }, &device).unwrap();
    let expected: Vec<f64> = reference["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut got = Vec::new();
    for step in 0..expected.len() {
        let (m, loss) = trainer
            .train_step(model, &batches[step % batches.len()])
            .unwrap();
        model = m;
        got.push(f64::from(loss));
    }
    println!("kiln    {got:?}\nPyTorch {expected:?}");
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            ((g - e) / e).abs() < 1e-3,
            "step {i}: kiln {g} vs PyTorch + PEFT {e}"
        );
    }
}
