//! Gemma 3 parity with transformers: a tiny random checkpoint (`tests/fixtures/tiny-gemma3`, made
//! by `scripts/fixtures/gen_gemma3_fixtures.py`) covers the sliding window, the two RoPE bases, the
//! norms and the logit cap; Gemma 3 270M (`assets/gemma3`, from `scripts/fetch-assets.sh`; skipped
//! without it) is checked against transformers loading the same GGUF.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_models::source::SafetensorsDir;
use kiln_models::{
    AnyCausalLm, CausalLm, Gemma3Config, Gemma3ForCausalLM, GenerationConfig, LmInput, generate,
    load_pretrained,
};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_tiny(device: &Device) -> (Gemma3Config, Gemma3ForCausalLM) {
    let dir = fixtures().join("tiny-gemma3");
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg = Gemma3Config::from_json_str(&text, &cfg_path).unwrap();
    let source = SafetensorsDir::open(&dir).unwrap();
    let model = Gemma3ForCausalLM::from_source(&cfg, &source, device).unwrap();
    (cfg, model)
}

fn json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<i64>> {
    v.as_array().unwrap().iter().map(ids).collect()
}

fn int_tensor(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}

#[test]
fn tiny_config_reads_both_generations_of_keys() {
    let (cfg, _) = load_tiny(&Device::default());
    assert_eq!(
        cfg.layer_types,
        ["sliding_attention", "full_attention", "sliding_attention"]
    );
    assert_eq!((cfg.rope_theta, cfg.rope_local_base_freq), (1e6, 1e4));
    assert_eq!((cfg.head_dim, cfg.query_pre_attn_scalar), (16, 24.0));
    // The older keys of published checkpoints give the same configuration.
    let old = r#"{"model_type": "gemma3_text", "vocab_size": 96, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 24,
        "sliding_window": 3, "sliding_window_pattern": 2, "max_position_embeddings": 128,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "final_logit_softcapping": 4.0, "pad_token_id": 0, "eos_token_id": null}"#;
    let path = std::path::Path::new("config.json");
    let parsed = Gemma3Config::from_json_str(old, path).unwrap();
    assert_eq!(parsed, cfg);
    let multimodal = r#"{"model_type": "gemma3", "text_config": {}}"#;
    let err = Gemma3Config::from_json_str(multimodal, path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model_type") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn tiny_logits_match_transformers() {
    let device = Device::default();
    let (cfg, model) = load_tiny(&device);
    let r = json(fixtures().join("tiny-gemma3/reference.json"));
    let (ids, mask, positions) = (
        rows(&r["input_ids"]),
        rows(&r["attention_mask"]),
        rows(&r["position_ids"]),
    );
    let input = LmInput::new(int_tensor(&ids, &device))
        .with_attention_mask(int_tensor(&mask, &device))
        .with_position_ids(int_tensor(&positions, &device));
    let logits = model.forward(&input);
    let [b, t, v] = logits.dims();
    assert_eq!([b, t, v], [2, 7, cfg.vocab_size]);
    let got: Vec<f32> = logits.into_data().iter::<f32>().collect();
    let want = r["logits"].as_array().unwrap();
    let (mut max_diff, mut compared) = (0.0f64, 0);
    for i in 0..b {
        for j in (0..t).filter(|&j| mask[i][j] == 1) {
            for (k, w) in want[i][j].as_array().unwrap().iter().enumerate() {
                let d = (f64::from(got[(i * t + j) * v + k]) - w.as_f64().unwrap()).abs();
                assert!(d.is_finite(), "non-finite logit at [{i}, {j}, {k}]");
                max_diff = max_diff.max(d);
                compared += 1;
            }
        }
    }
    println!("compared {compared} logits, max abs difference {max_diff:e}");
    assert_eq!(compared, 12 * v);
    assert!(max_diff < 1e-5, "max abs logit difference {max_diff:e}");
}

#[test]
fn tiny_greedy_matches_transformers_with_and_without_the_cache() {
    let device = Device::default();
    let (_, model) = load_tiny(&device);
    let r = json(fixtures().join("tiny-gemma3/reference.json"));
    let prompt = ids(&r["greedy"]["prompt_ids"]);
    let want = ids(&r["greedy"]["output_ids"]);
    let mut seq = prompt.clone();
    while seq.len() < want.len() {
        let logits = model.forward(&LmInput::new(int_tensor(
            std::slice::from_ref(&seq),
            &device,
        )));
        let t = logits.dims()[1];
        seq.push(
            logits
                .narrow(1, t - 1, 1)
                .flatten::<1>(0, 2)
                .argmax(0)
                .into_scalar::<i64>(),
        );
    }
    assert_eq!(seq, want);
    let prompt: Vec<u32> = prompt.iter().map(|&x| x as u32).collect();
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

/// Gemma 3 270M (Q4_K_M GGUF): 64 greedy tokens per prompt through the default decoding path
/// (the checkpoint's quantized blocks, 16-bit inputs) and the last position's top-32 logits
/// through the `f32` weights equal transformers' on the same file, and so does the
/// tokenization.
#[test]
fn gemma3_270m_matches_transformers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("assets/gemma3/gemma-3-270m-q4_k_m.gguf");
    if !path.exists() {
        eprintln!(
            "skipping: {} is missing (scripts/fetch-assets.sh)",
            path.display()
        );
        return;
    }
    // The CPU device: the 262k-row embedding is over wgpu's 128 MiB binding limit.
    let device = Device::flex();
    let mut p = load_pretrained(&path, &device).unwrap();
    assert!(matches!(p.model, AnyCausalLm::Gemma3(_)));
    let r = json(fixtures().join("gemma3_reference.json"));
    for case in r["tokenization"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got: Vec<i64> = p
            .tokenizer
            .encode(text, false)
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(got, ids(&case["ids"]), "tokenization of {text:?}");
    }
    let cases = r["cases"].as_array().unwrap();
    let last_logits = |model: &AnyCausalLm, prompt: &[i64]| -> Vec<f32> {
        let rows = vec![prompt.to_vec()];
        let hidden = model.forward_hidden(&LmInput::new(int_tensor(&rows, &device)));
        let t = hidden.dims()[1];
        let last = hidden.narrow(1, t - 1, 1).flatten::<2>(0, 1);
        model.logits(last).into_data().iter::<f32>().collect()
    };
    let top_diff = |logits: &[f32], case: &Value| -> f64 {
        ids(&case["top_ids"])
            .iter()
            .zip(case["top_logits"].as_array().unwrap())
            .map(|(id, w)| (f64::from(logits[*id as usize]) - w.as_f64().unwrap()).abs())
            .fold(0.0, f64::max)
    };
    let mut quantized_worst = 0.0f64;
    for case in cases {
        let text = case["prompt"].as_str().unwrap();
        let prompt = p.tokenizer.encode(text, true).unwrap();
        let want_prompt = ids(&case["prompt_ids"]);
        let got_prompt: Vec<i64> = prompt.iter().map(|&x| i64::from(x)).collect();
        assert_eq!(got_prompt, want_prompt, "prompt ids of {text:?}");
        quantized_worst = quantized_worst.max(top_diff(&last_logits(&p.model, &want_prompt), case));
        let want = ids(&case["output_ids"]);
        let cfg = GenerationConfig {
            max_new_tokens: want.len(),
            ..Default::default()
        };
        let out = generate(&p.model, &[prompt], 0, &cfg, None, &mut |_, _| {}).unwrap();
        let got: Vec<i64> = out[0].tokens.iter().map(|&x| i64::from(x)).collect();
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        println!("{text:?}: {same}/{} greedy tokens equal", want.len());
        assert_eq!(got, want, "greedy continuation of {text:?}");
    }
    kiln_nn::AdapterTarget::clear_quantized(&mut p.model);
    let mut worst = 0.0f64;
    for case in cases {
        let logits = last_logits(&p.model, &ids(&case["prompt_ids"]));
        worst = worst.max(top_diff(&logits, case));
        let argmax = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(argmax as i64, ids(&case["top_ids"])[0]);
    }
    println!(
        "max abs difference over the top-32 logits: {worst:e} (f32 weights), \
         {quantized_worst:e} (quantized blocks, 16-bit inputs)"
    );
    assert!(worst < 1e-3, "max abs logit difference {worst:e}");
}
