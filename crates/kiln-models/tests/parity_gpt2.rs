//! GPT-2 parity with transformers on a tiny random checkpoint (`tests/fixtures/tiny-gpt2`, made by
//! `scripts/fixtures/gen_model_fixtures.py`).

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_models::source::SafetensorsDir;
use kiln_models::{CausalLm, GenerationConfig, Gpt2Config, Gpt2LMHeadModel, LmInput, generate};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gpt2")
}

fn load(device: &Device) -> (Gpt2Config, Gpt2LMHeadModel) {
    let dir = fixture_dir();
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg = Gpt2Config::from_json_str(&text, &cfg_path).unwrap();
    let source = SafetensorsDir::open(&dir).unwrap();
    let model = Gpt2LMHeadModel::from_source(&cfg, &source, device).unwrap();
    (cfg, model)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn int_rows(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

fn int_tensor(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}

#[test]
fn logits_match_transformers() {
    let device = Device::default();
    let (cfg, model) = load(&device);
    check_logits(&cfg, &model, &device);
}

/// The same checkpoint converted to GGUF in llama.cpp's layout (`scripts/fixtures/gen_gpt2_gguf.py`:
/// transposed `Conv1D` weights, `attn_qkv` names, a duplicated `output.weight`).
#[test]
fn gguf_in_llama_cpp_layout_matches_transformers() {
    let device = Device::default();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/tiny-gpt2.gguf");
    let (cfg, model) = kiln_models::load_model(&path, &device).unwrap();
    let (kiln_models::AnyConfig::Gpt2(cfg), kiln_models::AnyCausalLm::Gpt2(model)) = (cfg, model)
    else {
        panic!("tiny-gpt2.gguf did not load as GPT-2");
    };
    let (hf_cfg, _) = load(&device);
    assert_eq!(cfg.n_embd, hf_cfg.n_embd);
    assert_eq!(cfg.vocab_size, hf_cfg.vocab_size);
    assert_eq!(cfg.n_positions, hf_cfg.n_positions);
    assert_eq!(cfg.inner_size(), hf_cfg.inner_size());
    check_logits(&cfg, &model, &device);
}

fn check_logits(cfg: &Gpt2Config, model: &Gpt2LMHeadModel, device: &Device) {
    let device = device.clone();
    let r = reference();
    let ids = int_rows(&r["input_ids"]);
    let mask = int_rows(&r["attention_mask"]);
    let positions = int_rows(&r["position_ids"]);
    let input = LmInput::new(int_tensor(&ids, &device))
        .with_attention_mask(int_tensor(&mask, &device))
        .with_position_ids(int_tensor(&positions, &device));
    let logits = model.forward(&input);
    let [b, t, v] = logits.dims();
    assert_eq!([b, t, v], [ids.len(), ids[0].len(), cfg.vocab_size]);
    let got: Vec<f32> = logits.into_data().iter::<f32>().collect();

    let want = r["logits"].as_array().unwrap();
    let mut max_diff = 0.0f64;
    let mut compared = 0;
    for i in 0..b {
        for j in 0..t {
            // A padded query attends to no real key: its logits are implementation-defined.
            if mask[i][j] == 0 {
                continue;
            }
            let row = want[i][j].as_array().unwrap();
            assert_eq!(row.len(), v);
            for (k, w) in row.iter().enumerate() {
                let g = f64::from(got[(i * t + j) * v + k]);
                let d = (g - w.as_f64().unwrap()).abs();
                assert!(d.is_finite(), "non-finite logit at [{i}, {j}, {k}]");
                max_diff = max_diff.max(d);
                compared += 1;
            }
        }
    }
    println!("compared {compared} logits, max abs difference {max_diff:e}");
    assert_eq!(compared, 12 * v);
    assert!(max_diff < 1e-4, "max abs logit difference {max_diff:e}");
}

#[test]
fn greedy_continuation_matches_transformers() {
    let device = Device::default();
    let (_, model) = load(&device);
    let r = reference();
    let greedy = &r["greedy"];
    let as_ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let mut seq = as_ids(&greedy["prompt_ids"]);
    let want = as_ids(&greedy["output_ids"]);
    assert!(want.len() > seq.len());
    while seq.len() < want.len() {
        let logits = model.forward(&LmInput::new(int_tensor(
            std::slice::from_ref(&seq),
            &device,
        )));
        let [_, t, _] = logits.dims();
        let next = logits
            .narrow(1, t - 1, 1)
            .flatten::<1>(0, 2)
            .argmax(0)
            .into_scalar::<i64>();
        seq.push(next);
    }
    assert_eq!(seq, want);

    // The same continuation through the key/value cache.
    let prompt: Vec<u32> = as_ids(&greedy["prompt_ids"])
        .iter()
        .map(|&x| x as u32)
        .collect();
    let cfg = GenerationConfig {
        max_new_tokens: want.len() - prompt.len(),
        ..Default::default()
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
    let cached: Vec<i64> = out[0].tokens.iter().map(|&x| i64::from(x)).collect();
    assert_eq!(cached, want[prompt.len()..]);
}
