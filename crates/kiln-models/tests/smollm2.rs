//! SmolLM2-135M-Instruct from its GGUF (assets/, fetched by scripts/fetch-assets.sh) against
//! transformers' fp32 reference: last-position logits and greedy continuations.
//! Skips with a printed reason when the asset is absent.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_models::{CausalLm, GenerationConfig, LmInput, generate, load_llama};
use serde_json::Value;

fn asset() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        println!(
            "skipped: {} is absent (run scripts/fetch-assets.sh)",
            p.display()
        );
        None
    }
}

fn reference(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(path) = asset() else { return };
    let device = Device::default();
    let (cfg, model) = load_llama(&path, &device).unwrap();
    assert_eq!(
        (cfg.num_hidden_layers, cfg.hidden_size, cfg.kv_heads()),
        (30, 576, 3)
    );
    assert!(cfg.tie_word_embeddings);

    // Last-position logits of the chat prompt.
    let r = reference("smollm2_reference.json");
    let prompt = ids(&r["prompt_ids"]);
    let n = prompt.len();
    let x = Tensor::<2, Int>::from_data(
        TensorData::new(
            prompt.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(),
            [1, n],
        ),
        &device,
    );
    let logits: Vec<f32> = model
        .forward(&LmInput::new(x))
        .narrow(1, n - 1, 1)
        .into_data()
        .iter::<f32>()
        .collect();
    let want: Vec<f32> = r["last_position_logits"]["first_64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let max = want
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("SmolLM2 last-position logits: max |diff| over 64 = {max:e}");
    assert!(max < 1e-3, "max |diff| {max}");
    let argmax = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    assert_eq!(
        argmax as u64,
        r["last_position_logits"]["argmax"].as_u64().unwrap()
    );

    // Greedy continuation that ends with EOS.
    let cfg = GenerationConfig {
        max_new_tokens: 32,
        eos_token_ids: vec![2],
        ..Default::default()
    };
    let out = generate(&model, &[prompt], 2, &cfg, None, &mut |_, _| {}).unwrap();
    assert_eq!(out[0].tokens, ids(&r["output_ids"]));

    // A full 32-token greedy continuation.
    let r = reference("smollm2_long_reference.json");
    let cfg = GenerationConfig {
        max_new_tokens: 32,
        ..Default::default()
    };
    let out = generate(
        &model,
        &[ids(&r["prompt_ids"])],
        2,
        &cfg,
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        out[0].tokens,
        ids(&r["output_ids"]),
        "expected {:?}",
        r["output_text"]
    );
}

#[test]
fn smollm2_load_pretrained_chat_and_tokenizer() {
    use kiln_models::load_pretrained;
    use kiln_tokenizer::ChatMessage;
    let Some(path) = asset() else { return };
    let device = Device::default();
    let p = load_pretrained(&path, &device).unwrap();
    assert_eq!(p.config.model_type(), "llama");
    let r = reference("smollm2_reference.json");

    // Tokenization of a few strings equals the transformers tokenizer.
    for item in r["tokenization"].as_array().unwrap() {
        let text = item["text"].as_str().unwrap();
        assert_eq!(
            p.tokenizer.encode(text, false).unwrap(),
            ids(&item["ids"]),
            "{text:?}"
        );
    }

    // The chat template renders the same prompt, which encodes to the same ids.
    let messages = [ChatMessage::user("What is the capital of France?")];
    let prompt = p.tokenizer.apply_chat_template(&messages, true).unwrap();
    assert_eq!(prompt, r["prompt_text"].as_str().unwrap());
    let prompt_ids = p.tokenizer.encode(&prompt, false).unwrap();
    assert_eq!(prompt_ids, ids(&r["prompt_ids"]));

    // Generation stops at the tokenizer's EOS and decodes to the reference text.
    let eos = p.tokenizer.eos_token_id().unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: 32,
        eos_token_ids: vec![eos],
        ..Default::default()
    };
    let decode = |t: &[u32]| p.tokenizer.decode(t, false).unwrap();
    let mut streamed = Vec::new();
    let out = generate(
        &p.model,
        &[prompt_ids],
        eos,
        &cfg,
        Some(&decode),
        &mut |_, t| streamed.push(t),
    )
    .unwrap();
    assert_eq!(streamed, out[0].tokens);
    assert_eq!(decode(&out[0].tokens), r["output_text"].as_str().unwrap());
}
