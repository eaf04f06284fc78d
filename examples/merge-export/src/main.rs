//! Merges an adapter into its base model, exports a Hugging Face directory (`config.json`,
//! `model.safetensors`, tokenizer files) that transformers loads, reloads the export and checks
//! that it computes what base + adapter computes.
//!
//! ```text
//! cargo run --release -p kiln-example-merge-export -- \
//!     assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf runs/dtc-assistant/adapter runs/dtc-merged
//! ```

use anyhow::{Context, Result};
use kiln::models::{load_pretrained, save_pretrained};
use kiln::prelude::*;

fn logits(model: &AnyCausalLm, ids: &[u32], device: &Device) -> Vec<f32> {
    let data: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    let input = LmInput::new(Tensor::from_data(
        TensorData::new(data, [1, ids.len()]),
        device,
    ));
    model.forward(&input).into_data().iter::<f32>().collect()
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let model_path = args
        .next()
        .unwrap_or_else(|| "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let adapter_dir = args
        .next()
        .unwrap_or_else(|| "runs/dtc-assistant/adapter".into());
    let out = args.next().unwrap_or_else(|| "runs/dtc-merged".into());
    let device = parse_device("cpu")?;

    let p = load_pretrained(&model_path, &device)
        .with_context(|| format!("loading {model_path} (run ./scripts/fetch-assets.sh)"))?;
    let (mut model, adapter) = load_adapter(p.model, adapter_dir.as_ref(), &device)
        .with_context(|| format!("loading {adapter_dir} (run the dtc-assistant example first)"))?;
    let ids = p.tokenizer.encode("What does P0036 mean?", true)?;
    let before = logits(&model, &ids, &device);

    // Fold the low-rank update into the weights: the forward pass then costs what the base costs.
    model.merge_adapters()?;
    save_pretrained(&model, &p.config, Some(&p.tokenizer), out.as_ref())?;

    // The export is a plain checkpoint: reload it like any other.
    let reloaded = load_pretrained(&out, &device)?;
    let after = logits(&reloaded.model, &ids, &device);
    let diff = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!(
        "merged {} ({adapter_dir}) into {model_path} → {out}; max |logit difference| vs base + adapter: {diff:.2e}",
        adapter.peft_type()
    );
    Ok(())
}
