//! `kiln inspect`: what a model or an adapter holds.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln::models::{AnyConfig, load_pretrained};
use kiln::nn::safetensors::read_safetensors;
use kiln::peft::{check_adapter_tensors, read_adapter_config};
use kiln::prelude::*;

use crate::util::DeviceArg;

/// Arguments of `kiln inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A Hugging Face model directory, a .gguf file, or a PEFT adapter folder.
    pub path: PathBuf,
    /// Also print the chat template.
    #[arg(long)]
    pub template: bool,
}

/// Runs `kiln inspect`.
pub fn run(device: &DeviceArg, args: &InspectArgs) -> Result<()> {
    if args.path.join("adapter_config.json").is_file() {
        return adapter(&args.path);
    }
    if args.path.is_dir() && !args.path.join("config.json").is_file() {
        let what = if args.path.join("adapter_model.safetensors").is_file() {
            "an adapter folder without adapter_config.json"
        } else {
            "neither an adapter folder (adapter_config.json) nor a model folder (config.json)"
        };
        bail!("{}: {what}", args.path.display());
    }
    let device = device.open()?;
    let p = load_pretrained(&args.path, &device)
        .with_context(|| format!("loading {}", args.path.display()))?;
    println!("path: {}", args.path.display());
    println!("model_type: {}", p.config.model_type());
    match &p.config {
        AnyConfig::Llama(c) => {
            println!(
                "layers: {}, hidden: {}, intermediate: {}, heads: {} (kv {}), vocab: {}, rope_theta: {}, tied embeddings: {}",
                c.num_hidden_layers,
                c.hidden_size,
                c.intermediate_size,
                c.num_attention_heads,
                c.num_key_value_heads.unwrap_or(c.num_attention_heads),
                c.vocab_size,
                c.rope_theta,
                c.tie_word_embeddings
            );
        }
        AnyConfig::Gemma3(c) => {
            let sliding = (0..c.num_hidden_layers)
                .filter(|&l| c.is_sliding(l))
                .count();
            println!(
                "layers: {} ({sliding} with a {}-token sliding window), hidden: {}, intermediate: {}, heads: {} (kv {}, width {}), vocab: {}, rope_theta: {} (local {})",
                c.num_hidden_layers,
                c.sliding_window,
                c.hidden_size,
                c.intermediate_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim,
                c.vocab_size,
                c.rope_theta,
                c.rope_local_base_freq
            );
        }
        AnyConfig::Gpt2(c) => {
            println!(
                "layers: {}, hidden: {}, heads: {}, positions: {}, vocab: {}",
                c.n_layer, c.n_embd, c.n_head, c.n_positions, c.vocab_size
            );
        }
    }
    let report = TrainableReport::of(&p.model);
    println!(
        "parameters: {} ({:.1} M)",
        report.total,
        report.total as f64 / 1e6
    );
    let t = &p.tokenizer;
    let name = |id: Option<u32>| {
        id.and_then(|i| t.id_to_token(i).map(|s| format!("{s:?} ({i})")))
            .unwrap_or_else(|| "none".into())
    };
    println!(
        "tokenizer: {} tokens; bos {}, eos {}, pad {}",
        t.vocab_size(),
        name(t.bos_token_id()),
        name(t.eos_token_id()),
        name(t.pad_token_id())
    );
    match t.chat_template() {
        Some(tpl) if args.template => println!("chat template:\n{}", tpl.source()),
        Some(tpl) => println!(
            "chat template: {} characters (--template prints it)",
            tpl.source().len()
        ),
        None => println!("chat template: none"),
    }
    Ok(())
}

fn adapter(dir: &Path) -> Result<()> {
    let config = read_adapter_config(dir)?;
    let file = dir.join("adapter_model.safetensors");
    let tensors = read_safetensors(&file)?;
    check_adapter_tensors(&config, &tensors, &file)?;
    println!("path: {}", dir.display());
    println!("method: {}", config.peft_type());
    let common = config.common();
    println!(
        "task: {}, base model: {}",
        common.task_type.as_deref().unwrap_or("unset"),
        common.base_model_name_or_path.as_deref().unwrap_or("unset")
    );
    println!(
        "config: {}",
        serde_json::to_string(&config).unwrap_or_default()
    );
    let params: usize = tensors.values().map(|t| t.data.len()).sum();
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "tensors: {}, trainable parameters: {params}, file: {:.2} MiB",
        tensors.len(),
        bytes as f64 / (1024.0 * 1024.0)
    );
    let mut modules: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.rsplit_once('.').map(|(m, _)| m.to_string()))
        .map(|m| {
            // `base_model.model.model.layers.3.self_attn.q_proj.lora_A` → `self_attn.q_proj`
            let parts: Vec<&str> = m.split('.').collect();
            match parts.iter().position(|p| p.parse::<usize>().is_ok()) {
                Some(i) => parts[i + 1..parts.len().saturating_sub(1).max(i + 1)].join("."),
                None => m.clone(),
            }
        })
        .collect();
    modules.sort();
    modules.dedup();
    println!("adapted modules: {}", modules.join(", "));
    Ok(())
}
