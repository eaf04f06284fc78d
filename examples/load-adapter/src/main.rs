//! Loads an adapter in the Hugging Face PEFT format (written by `kiln train` or by Python `peft`)
//! onto its base model and answers a question with it, next to the base model's answer.
//!
//! ```text
//! cargo run --release -p kiln-example-dtc-assistant          # writes runs/dtc-assistant/adapter
//! cargo run --release -p kiln-example-load-adapter -- \
//!     assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf runs/dtc-assistant/adapter "What does P0036 mean?"
//! ```

use anyhow::{Context, Result};
use kiln::models::{GenerationConfig, generate, load_pretrained};
use kiln::prelude::*;
use kiln::tokenizer::ChatMessage;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let model_path = args
        .next()
        .unwrap_or_else(|| "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let adapter_dir = args
        .next()
        .unwrap_or_else(|| "runs/dtc-assistant/adapter".into());
    let question = args
        .next()
        .unwrap_or_else(|| "What does P0036 mean?".into());
    let device = parse_device("cpu")?;

    // Model and tokenizer (with its chat template) from one path: HF directory or GGUF.
    let pretrained = load_pretrained(&model_path, &device)
        .with_context(|| format!("loading {model_path} (run ./scripts/fetch-assets.sh)"))?;
    let tok = &pretrained.tokenizer;
    let messages = [
        ChatMessage::system("You are a car diagnostics assistant."),
        ChatMessage::user(question.as_str()),
    ];
    let prompt = tok.encode_chat(&messages, true)?;
    let config = GenerationConfig {
        max_new_tokens: 32,
        eos_token_ids: tok.eos_token_id().into_iter().collect(),
        ..Default::default()
    };
    let answer = |model: &AnyCausalLm| -> Result<String> {
        let out = generate(
            model,
            std::slice::from_ref(&prompt),
            0,
            &config,
            None,
            &mut |_, _| {},
        )?;
        Ok(tok.decode(&out[0].tokens, true)?.trim().to_string())
    };
    println!("question: {question}");
    println!("base:     {}", answer(&pretrained.model)?);

    // The adapter: `adapter_config.json` picks the method, the safetensors fill it strictly.
    let (tuned, adapter) = load_adapter(pretrained.model, adapter_dir.as_ref(), &device)
        .with_context(|| {
            format!("loading the adapter {adapter_dir} (run the dtc-assistant example first)")
        })?;
    println!(
        "{}:     {}",
        adapter.peft_type().to_lowercase(),
        answer(&tuned)?
    );
    println!(
        "({} on {model_path}; {})",
        adapter_dir,
        TrainableReport::of(&tuned)
    );
    Ok(())
}
