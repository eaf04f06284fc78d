//! Adapter operations on tiny models: several named adapters, weighted LoRA combinations,
//! layer selection, bias training, PEFT-style configs and the trainable-parameter report.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_models::{AnyCausalLm, CausalLm, LmInput, load_model};
use kiln_nn::AdapterTarget;
use kiln_peft::io::{adapter_state, set_adapter_state};
use kiln_peft::lora::LoraBias;
use kiln_peft::{
    AdapterConfig, AdapterSet, Combination, LoraConfig, PeftError, TrainableReport, attach_adapter,
    attach_lora, combine_lora, save_adapter,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn base(name: &str, device: &Device) -> AnyCausalLm {
    load_model(fixtures().join(name), device).unwrap().1
}

fn logits(model: &AnyCausalLm) -> Vec<f32> {
    let device = model.device();
    let ids: Vec<i64> = vec![5, 17, 42, 8, 77, 3, 61, 90, 12, 33, 1, 49, 26, 70];
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 7]), &device);
    model
        .forward(&LmInput::new(ids))
        .into_data()
        .iter::<f32>()
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A LoRA adapter with random (non-zero) factors on the tiny Llama.
fn random_lora(seed: u64, r: usize, alpha: f64, device: &Device) -> (AnyCausalLm, AdapterConfig) {
    let cfg = AdapterConfig::Lora(LoraConfig {
        r,
        lora_alpha: alpha,
        init_lora_weights: kiln_peft::lora::InitLoraWeights::Flag(false),
        ..Default::default()
    });
    let (m, cfg) = attach_adapter(base("tiny-llama", device), &cfg, None, seed, device).unwrap();
    (m, cfg)
}

#[test]
fn adapter_set_switches_between_named_adapters() {
    let device = Device::default();
    let (a, cfg_a) = random_lora(1, 4, 8.0, &device);
    let (b, cfg_b) = random_lora(2, 2, 4.0, &device);
    let (la, lb) = (logits(&a), logits(&b));
    assert!(max_diff(&la, &lb) > 1e-3);
    let mut set = AdapterSet::default();
    set.capture("a", &a, &cfg_a).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_adapter(&b, &cfg_b, dir.path()).unwrap();
    set.add_dir("b", dir.path()).unwrap();
    assert_eq!(set.names(), vec!["a", "b"]);

    let model = base("tiny-llama", &device);
    let model = set.activate(model, "b", &device).unwrap();
    assert!(max_diff(&logits(&model), &lb) < 1e-6);
    let model = set.activate(model, "a", &device).unwrap();
    assert!(max_diff(&logits(&model), &la) < 1e-6);
    assert_eq!(set.active(), Some("a"));
    let err = set.activate(model, "c", &device).unwrap_err().to_string();
    assert!(err.contains("`c`") && err.contains("a, b"), "{err}");
}

#[test]
fn weighted_combinations_of_lora_adapters() {
    let device = Device::default();
    let (a, cfg_a) = random_lora(1, 4, 8.0, &device);
    let (b, cfg_b) = random_lora(2, 2, 6.0, &device);
    let (sa, sb) = (
        adapter_state(&a, &cfg_a).unwrap(),
        adapter_state(&b, &cfg_b).unwrap(),
    );
    // Cat: the update is exactly 0.7·ΔW_a + 0.3·ΔW_b, so per projection the outputs add up.
    let (cfg, state) =
        combine_lora(&[(&cfg_a, &sa, 0.7), (&cfg_b, &sb, 0.3)], Combination::Cat).unwrap();
    let AdapterConfig::Lora(lc) = &cfg else {
        panic!()
    };
    assert_eq!((lc.r, lc.lora_alpha), (6, 6.0));
    let (mut combined, cfg) =
        attach_adapter(base("tiny-llama", &device), &cfg, None, 0, &device).unwrap();
    set_adapter_state(&mut combined, &cfg, state, Path::new("cat"), &device).unwrap();
    // Compare merged weights: W + 0.7 ΔA + 0.3 ΔB.
    let weights = |m: &mut AnyCausalLm| {
        m.merge_adapters().unwrap();
        let mut w = Vec::new();
        m.visit_linears(&mut |_, l| w.extend(l.checkpoint_weight().0));
        w
    };
    let base_w = weights(&mut base("tiny-llama", &device));
    let (wa, wb, wc) = (
        weights(&mut { a }),
        weights(&mut { b }),
        weights(&mut combined),
    );
    let want: Vec<f32> = (0..base_w.len())
        .map(|i| base_w[i] + 0.7 * (wa[i] - base_w[i]) + 0.3 * (wb[i] - base_w[i]))
        .collect();
    assert!(
        max_diff(&wc, &want) < 1e-5,
        "cat combination: {}",
        max_diff(&wc, &want)
    );

    // Linear needs equal ranks.
    let err = combine_lora(
        &[(&cfg_a, &sa, 0.5), (&cfg_b, &sb, 0.5)],
        Combination::Linear,
    )
    .unwrap_err();
    assert!(err.to_string().contains("equal ranks"), "{err}");
    let (lin_cfg, lin) = combine_lora(
        &[(&cfg_a, &sa, 0.5), (&cfg_a, &sa, 0.5)],
        Combination::Linear,
    )
    .unwrap();
    // Two halves of the same adapter: A·√(s) and B·√(s) summed twice give B·A·s·(1/2+1/2)... but
    // the linear rule mixes factors (PEFT's semantics): ΔW = (Σ√wᵢsᵢ Bᵢ)(Σ√wᵢsᵢ Aᵢ) = 2·s·BA here.
    let (mut m, lin_cfg) =
        attach_adapter(base("tiny-llama", &device), &lin_cfg, None, 0, &device).unwrap();
    set_adapter_state(&mut m, &lin_cfg, lin, Path::new("linear"), &device).unwrap();
    let wl = weights(&mut m);
    let want: Vec<f32> = (0..base_w.len())
        .map(|i| base_w[i] + 2.0 * (wa[i] - base_w[i]))
        .collect();
    assert!(max_diff(&wl, &want) < 1e-5);
}

#[test]
fn layers_to_transform_and_biases() {
    let device = Device::default();
    let cfg = LoraConfig {
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        layers_to_transform: Some(vec![1]),
        ..Default::default()
    };
    let (_, adapted) = attach_lora(base("tiny-llama", &device), &cfg, 0, &device).unwrap();
    assert_eq!(
        adapted,
        vec![
            "model.layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.v_proj"
        ]
    );

    // GPT-2 has LayerNorm biases, which `bias = "all"` would train in PEFT.
    let all = LoraConfig {
        bias: LoraBias::All,
        ..Default::default()
    };
    let err = attach_lora(base("tiny-gpt2", &device), &all, 0, &device).unwrap_err();
    assert!(
        matches!(err, PeftError::InvalidConfig { ref field, .. } if field == "bias"),
        "{err}"
    );

    // `lora_only` trains the biases of adapted projections (c_attn: 3·32 outputs per layer).
    let ad = device.clone().autodiff();
    let only = LoraConfig {
        bias: LoraBias::LoraOnly,
        r: 2,
        ..Default::default()
    };
    let (m, _) = attach_lora(base("tiny-gpt2", &ad), &only, 0, &ad).unwrap();
    let report = TrainableReport::of(&m);
    // 2 layers x (A 32x2 + B 2x96 + bias 96)
    assert_eq!(report.trainable, 2 * (32 * 2 + 2 * 96 + 96));
    let rows = TrainableReport::by_module(&m);
    assert_eq!(rows.iter().map(|r| r.1).sum::<usize>(), report.trainable);
    assert!(
        rows.iter().any(|r| r.0.ends_with("h.0.attn.c_attn.lora")),
        "{rows:?}"
    );
}

#[test]
fn peft_json_configs_parse() {
    // As PEFT writes them: a regex string target, nulls, unknown keys.
    let json = r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules":
        ".*\\.(q|v)_proj", "modules_to_save": null, "layers_to_transform": null,
        "task_type": "CAUSAL_LM", "megatron_core": "megatron.core", "use_dora": false}"#;
    let cfg: AdapterConfig = serde_json::from_str(json).unwrap();
    let AdapterConfig::Lora(lc) = &cfg else {
        panic!()
    };
    assert_eq!(lc.target_modules, vec![r".*\.(q|v)_proj"]);
    let device = Device::default();
    let (_, adapted) = attach_lora(base("tiny-llama", &device), lc, 0, &device).unwrap();
    assert_eq!(adapted.len(), 4);
    // Written back as a string, so PEFT reads it as a regex again.
    let back = serde_json::to_value(&cfg).unwrap();
    assert_eq!(back["target_modules"], serde_json::json!(r".*\.(q|v)_proj"));
    assert_eq!(back["peft_type"], "LORA");

    let bad = r#"{"peft_type": "LORA", "init_lora_weights": "olora"}"#;
    let cfg: AdapterConfig = serde_json::from_str(bad).unwrap();
    let AdapterConfig::Lora(lc) = cfg else {
        panic!()
    };
    let err = lc.validate().unwrap_err().to_string();
    assert!(err.contains("init_lora_weights"), "{err}");
}

#[test]
fn full_fine_tuning_and_prompt_init_from_text() {
    let device = Device::default().autodiff();
    let model = base("tiny-llama", &device);
    let frozen = kiln_peft::attach_lora(model, &LoraConfig::default(), 0, &device)
        .unwrap()
        .0;
    let lora_only = TrainableReport::of(&frozen);
    let full = TrainableReport::of(&kiln_peft::full_fine_tuning(frozen));
    assert!(lora_only.trainable < full.trainable);
    assert_eq!(full.trainable, full.total);

    // TEXT initialization copies the embedding rows of the text's ids (repeated to length).
    let cfg = kiln_peft::PromptTuningConfig {
        num_virtual_tokens: 5,
        prompt_tuning_init: kiln_peft::prompt::PromptTuningInit::Text,
        ..Default::default()
    };
    let device = Device::default();
    let m = base("tiny-llama", &device);
    let table: Vec<f32> = m.token_embeddings().into_data().iter::<f32>().collect();
    let (m, filled) = kiln_peft::attach_prompt_tuning(m, &cfg, Some(&[7, 9]), 0, &device).unwrap();
    assert_eq!(filled.token_dim, 32);
    let got: Vec<f32> = m
        .prompt_encoder()
        .unwrap()
        .prompt_embeddings()
        .into_data()
        .iter::<f32>()
        .collect();
    let want: Vec<f32> = [7usize, 9, 7, 9, 7]
        .iter()
        .flat_map(|&i| table[i * 32..(i + 1) * 32].to_vec())
        .collect();
    assert_eq!(got, want);
    let err = kiln_peft::attach_prompt_tuning(base("tiny-llama", &device), &cfg, None, 0, &device)
        .unwrap_err();
    assert!(err.to_string().contains("prompt_tuning_init_text"), "{err}");
}
