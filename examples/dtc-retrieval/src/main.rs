//! Retrieval-augmented answers about OBD-II trouble codes.
//!
//! 1. Embeds every code description of the `obd` package with all-MiniLM-L6-v2 (mean-pooled,
//!    normalized, as sentence-transformers does) into a cosine index.
//! 2. Embeds the user's symptom and retrieves the nearest codes.
//! 3. Puts those codes into SmolLM2-135M-Instruct's chat prompt, so its answer is grounded in
//!    the retrieved descriptions instead of invented.
//!
//! Needs the assets (`./scripts/fetch-assets.sh`).
//!
//! ```text
//! cargo run --release -p kiln-example-dtc-retrieval -- "engine misfires when cold"
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail};
use kiln::data::obd::read_codes;
use kiln::models::{CosineIndex, GenerationConfig, generate, load_bert, load_pretrained};
use kiln::prelude::*;
use kiln::tokenizer::{ChatMessage, Tokenizer};

const ASSETS: &str = "assets";

/// Embeds texts in batches: `[n][384]`, unit length.
fn embed(
    model: &kiln::models::BertModel,
    tok: &Tokenizer,
    texts: &[String],
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        let ids: Vec<Vec<u32>> = chunk
            .iter()
            .map(|t| {
                tok.encode(t, true).map(|mut v| {
                    v.truncate(128);
                    v
                })
            })
            .collect::<Result<_, _>>()?;
        let t = ids.iter().map(Vec::len).max().unwrap_or(1);
        let mut flat = Vec::with_capacity(ids.len() * t);
        let mut mask = Vec::with_capacity(ids.len() * t);
        for row in &ids {
            flat.extend(row.iter().map(|&x| i64::from(x)));
            flat.extend(std::iter::repeat_n(0i64, t - row.len()));
            mask.extend(std::iter::repeat_n(1i64, row.len()));
            mask.extend(std::iter::repeat_n(0i64, t - row.len()));
        }
        let b = ids.len();
        let input = LmInput::new(Tensor::from_data(TensorData::new(flat, [b, t]), device))
            .with_attention_mask(Tensor::from_data(TensorData::new(mask, [b, t]), device));
        let emb: Vec<f32> = model
            .mean_pooled(&input, true)?
            .into_data()
            .iter::<f32>()
            .collect();
        out.extend(emb.chunks_exact(emb.len() / b).map(<[f32]>::to_vec));
    }
    Ok(out)
}

fn main() -> Result<()> {
    let query = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "engine misfires when cold".to_string());
    let assets = Path::new(ASSETS);
    let minilm = assets.join("all-MiniLM-L6-v2");
    let smollm = assets.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let codes_py = assets.join("obd/codes.py");
    for p in [&minilm, &smollm, &codes_py] {
        if !p.exists() {
            bail!(
                "{} not found; run ./scripts/fetch-assets.sh first",
                p.display()
            );
        }
    }
    let device = parse_device("cpu")?;

    let codes = read_codes(&codes_py)?;
    let (_, encoder) = load_bert(&minilm, &device)?;
    let tok = Tokenizer::from_hf_dir(&minilm).context("MiniLM tokenizer")?;
    let start = std::time::Instant::now();
    let texts: Vec<String> = codes.iter().map(|c| c.description.clone()).collect();
    let vectors = embed(&encoder, &tok, &texts, &device)?;
    let mut index = CosineIndex::new(vectors[0].len());
    for (c, v) in codes.iter().zip(&vectors) {
        index.add(c.code.clone(), v)?;
    }
    eprintln!(
        "indexed {} code descriptions in {:.1} s",
        index.len(),
        start.elapsed().as_secs_f64()
    );

    let q = embed(&encoder, &tok, std::slice::from_ref(&query), &device)?;
    let hits = index.search(&q[0], 5)?;
    println!("Symptom: {query}\nNearest codes:");
    let by_code = |code: &str| {
        codes
            .iter()
            .find(|c| c.code == code)
            .map(|c| c.description.as_str())
    };
    let mut context = String::new();
    for h in &hits {
        let d = by_code(&h.id).unwrap_or("");
        println!("  {:.3}  {}  {}", h.score, h.id, d);
        context.push_str(&format!("- {}: {}\n", h.id, d));
    }

    let lm = load_pretrained(&smollm, &device)?;
    let messages = vec![
        ChatMessage::system(format!(
            "You are a car diagnostics assistant. Use only these OBD-II codes:\n{context}"
        )),
        ChatMessage::user(format!(
            "My car: {query}. Which trouble code fits best, and what does it mean? Answer in one sentence."
        )),
    ];
    let prompt = lm.tokenizer.encode_chat(&messages, true)?;
    let cfg = GenerationConfig {
        max_new_tokens: 48,
        eos_token_ids: lm.tokenizer.eos_token_id().into_iter().collect(),
        ..Default::default()
    };
    let out = generate(&lm.model, &[prompt], 0, &cfg, None, &mut |_, _| {})?;
    let answer = lm.tokenizer.decode(&out[0].tokens, true)?;
    println!(
        "\nGrounded answer (SmolLM2-135M-Instruct, greedy):\n  {}",
        answer.trim()
    );
    Ok(())
}
