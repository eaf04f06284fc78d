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

/// Feeds `model` (on the flex device: the host decoder is the CPU's) llama.cpp's prompts and
/// greedy tokens (teacher forcing, so one near-tie does
/// not change the rest) and returns, over all steps: how many steps have llama.cpp's two best
/// logits `decided` or more apart, how many of those kiln's best token differs from llama.cpp's,
/// how far llama.cpp's token trails kiln's best at most, and the mean `|kiln - llama.cpp|` over
/// llama.cpp's 8 best logits.
fn against_llama_cpp(
    model: &kiln_models::LlamaForCausalLM,
    decided: f32,
) -> (usize, usize, f32, f32) {
    use kiln_models::CachedCausalLm;
    let r = reference("smollm2_llama_cpp_q8.json");
    let (mut steps, mut wrong, mut behind, mut diff, mut count) = (0, 0, 0.0f32, 0.0f32, 0);
    for case in r["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["output_ids"]);
        let mut dec = model.host_decoder(&[prompt.len() + want.len()]).unwrap();
        let mut logits = dec.step(&[&prompt]);
        for (i, &t) in want.iter().enumerate() {
            let gap = case["top2_gaps"][i].as_f64().unwrap() as f32;
            let best = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap();
            if gap >= decided {
                steps += 1;
                wrong += usize::from(best != t as usize);
            }
            behind = behind.max(logits[best] - logits[t as usize]);
            for pair in case["top8"][i].as_array().unwrap() {
                let (id, v) = (
                    pair[0].as_u64().unwrap() as usize,
                    pair[1].as_f64().unwrap(),
                );
                diff += (logits[id] - v as f32).abs();
                count += 1;
            }
            logits = dec.step(&[&[t]]);
        }
    }
    (steps, wrong, behind, diff / count as f32)
}

/// With llama.cpp's 8-bit inputs (`Inputs::Q8`, `--quant-inputs q8`) kiln's decoder agrees with
/// llama.cpp (`scripts/fixtures/gen_llama_cpp_q8_fixture.py`: the two chat prompts of the
/// transformers fixtures and the `kiln bench decode` prompt, 32 of llama.cpp's greedy tokens
/// each): wherever llama.cpp's two best logits are 0.5 or more apart (78 of the 96 steps) kiln's
/// best token is llama.cpp's, and the 8 best logits differ from llama.cpp's by less than 0.5 on
/// average. The implementations round scales and the key/value cache differently, so nearer
/// ties may go either way. Measured 2026-12-05 on an AVX-512 machine: 93 of the 96 tokens are
/// kiln's best, the others trail it by at most 0.089, the mean top-8 difference is 0.20 (0.18
/// with 16-bit inputs: the rounding of the inputs is not what sets the two apart); with the
/// AVX2 matrix kernels (`scripts/test-avx2-kernels.sh`) the trailing gap reaches 0.39.
#[test]
fn smollm2_gguf_with_8_bit_inputs_agrees_with_llama_cpp() {
    use kiln_nn::AdapterTarget;
    let Some(path) = asset() else { return };
    let device = Device::flex();
    let (_, mut model) = load_llama(&path, &device).unwrap();
    model.set_quant_inputs(kiln_nn::Inputs::Q8);
    let (steps, wrong, behind, diff) = against_llama_cpp(&model, 0.5);
    println!(
        "8-bit inputs: {wrong} of {steps} decided steps differ, llama.cpp's token at most \
         {behind} behind, mean |diff| of the top-8 logits {diff}"
    );
    assert!(steps >= 64, "only {steps} of 96 steps decided");
    assert_eq!(wrong, 0);
    assert!(diff < 0.5, "mean |diff| of the top-8 logits {diff}");
}
