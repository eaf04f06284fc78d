//! Retrieval-augmented answers about OBD-II trouble codes.
//!
//! 1. Indexes every code of the `obd` package (`"CODE: description"`) with `kiln::rag`: BM25 and
//!    all-MiniLM-L6-v2 embeddings (mean-pooled, normalized, as sentence-transformers does),
//!    stored in `runs/dtc-retrieval/index` and reused on later runs.
//! 2. Retrieves the codes that best match the user's symptom (BM25 and dense lists fused by
//!    reciprocal rank).
//! 3. Puts those codes before the question (`kiln::rag::rag_prompt`) in SmolLM2-135M-Instruct's
//!    chat prompt, so its answer is grounded in the retrieved descriptions instead of invented.
//!
//! With `--measure` it instead reports Recall@1 and Recall@5 of hybrid, BM25-only and
//! dense-only retrieval over the whole code list for code questions ("What does P0130 mean?"
//! and other phrasings) and for the symptom questions of `examples/dtc-assistant/symptoms.jsonl`.
//!
//! Needs the assets (`./scripts/fetch-assets.sh`).
//!
//! ```text
//! cargo run --release -p kiln-example-dtc-retrieval -- "engine misfires when cold"
//! cargo run --release -p kiln-example-dtc-retrieval -- --measure
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail};
use kiln::data::obd::{CodeDoc, read_codes};
use kiln::models::{GenerationConfig, generate, load_pretrained};
use kiln::prelude::*;
use kiln::rag::{Embed, Embedder, HybridIndex, Mode, rag_prompt};
use kiln::tokenizer::ChatMessage;

const ASSETS: &str = "assets";
const INDEX: &str = "runs/dtc-retrieval/index";
const SYMPTOMS: &str = "examples/dtc-assistant/symptoms.jsonl";

/// Code questions: `{}` is the code.
const CODE_PHRASINGS: &[&str] = &[
    "What does {} mean?",
    "My scanner shows {}. What is wrong with my car?",
    "{}",
    "check engine light with code {}, what should I look at?",
];

/// Opens the index of all codes, building it first when it is missing or stale.
fn code_index(codes: &[CodeDoc], minilm: &Path, device: &Device) -> Result<HybridIndex> {
    if let Ok(index) = HybridIndex::open(INDEX, device)
        && index.len() == codes.len()
    {
        return Ok(index);
    }
    let docs: Vec<serde_json::Value> = codes
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let start = std::time::Instant::now();
    let index = HybridIndex::build(&docs, "text", Embedder::load(minilm, device)?, INDEX)?;
    eprintln!(
        "indexed {} codes into {INDEX} in {:.1} s",
        index.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(index)
}

/// Recall@1 and Recall@5 of one mode.
#[derive(Debug, Default, Clone, Copy)]
struct Recall {
    at1: f64,
    at5: f64,
    /// Counting a hit whose description is the expected code's (the code list has a few
    /// descriptions shared by several codes, e.g. P0171 and P0174 "System Too Lean").
    same_text_at1: f64,
    same_text_at5: f64,
}

/// Recall of each mode for `(question, expected code)` pairs.
fn recall(index: &HybridIndex, cases: &[(String, String)]) -> Result<Vec<(Mode, Recall)>> {
    let description = |code: &str| {
        index
            .records()
            .iter()
            .find(|r| r["code"] == code)
            .map(|r| r["description"].clone())
    };
    let mut vectors = Vec::with_capacity(cases.len());
    let questions: Vec<String> = cases.iter().map(|(q, _)| q.clone()).collect();
    for chunk in questions.chunks(256) {
        vectors.extend(index.embedder().embed(chunk)?);
    }
    let mut out = Vec::new();
    for mode in [Mode::Hybrid, Mode::Bm25, Mode::Dense] {
        let mut r = Recall::default();
        for ((question, code), v) in cases.iter().zip(&vectors) {
            let hits = index.query_embedded(question, Some(v), 5, mode)?;
            let expected = description(code);
            let exact = |h: &kiln::rag::Hit| &h.id == code;
            let same = |h: &kiln::rag::Hit| {
                exact(h) || Some(&h.record["description"]) == expected.as_ref()
            };
            r.at1 += f64::from(u8::from(hits.first().is_some_and(exact)));
            r.at5 += f64::from(u8::from(hits.iter().any(exact)));
            r.same_text_at1 += f64::from(u8::from(hits.first().is_some_and(same)));
            r.same_text_at5 += f64::from(u8::from(hits.iter().any(same)));
        }
        let n = cases.len().max(1) as f64;
        r.at1 /= n;
        r.at5 /= n;
        r.same_text_at1 /= n;
        r.same_text_at5 /= n;
        out.push((mode, r));
    }
    Ok(out)
}

fn print_recall(title: &str, n: usize, rows: &[(Mode, Recall)]) {
    println!(
        "\n{title} ({n} questions)\n\n| mode | Recall@1 | Recall@5 | Recall@1 (same description) | \
         Recall@5 (same description) |\n|---|---|---|---|---|"
    );
    for (mode, r) in rows {
        println!(
            "| {mode} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.at1, r.at5, r.same_text_at1, r.same_text_at5
        );
    }
}

fn measure(codes: &[CodeDoc], index: &HybridIndex) -> Result<()> {
    let mut code_cases = Vec::new();
    for c in codes {
        for p in CODE_PHRASINGS {
            code_cases.push((p.replace("{}", &c.code), c.code.clone()));
        }
    }
    let text = std::fs::read_to_string(SYMPTOMS).with_context(|| format!("reading {SYMPTOMS}"))?;
    let mut symptom_cases = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{SYMPTOMS}:{}", i + 1))?;
        let (Some(prompt), Some(code)) = (v["prompt"].as_str(), v["code"].as_str()) else {
            bail!(
                "{SYMPTOMS}:{}: needs string fields `prompt` and `code`",
                i + 1
            );
        };
        if !codes.iter().any(|c| c.code == code) {
            bail!("{SYMPTOMS}:{}: code {code} is not in the code list", i + 1);
        }
        symptom_cases.push((prompt.to_string(), code.to_string()));
    }
    let start = std::time::Instant::now();
    print_recall(
        &format!(
            "Code questions over {} codes, {} phrasings each",
            codes.len(),
            CODE_PHRASINGS.len()
        ),
        code_cases.len(),
        &recall(index, &code_cases)?,
    );
    print_recall(
        &format!("Symptom questions without a code ({SYMPTOMS})"),
        symptom_cases.len(),
        &recall(index, &symptom_cases)?,
    );
    eprintln!("\nmeasured in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> Result<()> {
    let arg = std::env::args().nth(1);
    let measuring = arg.as_deref() == Some("--measure");
    let query = arg.unwrap_or_else(|| "engine misfires when cold".to_string());
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
    let codes: Vec<CodeDoc> = read_codes(&codes_py)?.iter().map(CodeDoc::from).collect();
    let index = code_index(&codes, &minilm, &device)?;
    if measuring {
        return measure(&codes, &index);
    }

    let hits = index.query(&query, 5)?;
    println!("Symptom: {query}\nNearest codes:");
    for h in &hits {
        println!("  {:.4}  {}", h.score, h.text);
    }

    let lm = load_pretrained(&smollm, &device)?;
    let messages = vec![
        ChatMessage::system("You are a car diagnostics assistant. Answer in one sentence."),
        ChatMessage::user(rag_prompt(
            &format!("My car: {query}. Which trouble code fits best, and what does it mean?"),
            &hits,
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
