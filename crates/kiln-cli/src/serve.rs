//! `kiln serve`: an OpenAI-compatible HTTP server (see the `kiln-serve` crate).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kiln::models::load_pretrained;
use kiln::peft::load_adapter;
use kiln_serve::{ServeOptions, Server};

use crate::util::{DeviceArg, QuantInputs};

/// Options of `kiln serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Model path: a Hugging Face directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// A resident adapter, `NAME=DIR` (a PEFT folder); requests pick it with `"model": NAME`.
    /// Repeat for several.
    #[arg(long, value_name = "NAME=DIR")]
    adapter: Vec<String>,
    /// The base model's name in requests and `/v1/models` (default: the model file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the one taken is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests decoded together at most.
    #[arg(long, default_value_t = 16)]
    max_concurrent: usize,
    /// Requests waiting for a slot at most; more are answered 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// A key every `/v1` request must send as `Authorization: Bearer KEY` (or set
    /// KILN_API_KEY).
    #[arg(long, env = "KILN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Append preference pairs from `POST /v1/feedback` to this JSONL file.
    #[arg(long)]
    feedback: Option<PathBuf>,
    /// `max_tokens` of a request that gives none.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// How a GGUF model's quantized matrices treat their input rows: `q16` (default; greedy
    /// text equal to the unquantized product's on the checkpoints tested) or `q8` (8-bit
    /// activations as llama.cpp computes them: faster, text can differ at near-ties).
    #[arg(long, value_enum, default_value_t)]
    quant_inputs: QuantInputs,
}

/// Splits `NAME=DIR`.
fn parse_adapter(spec: &str) -> Result<(String, PathBuf)> {
    match spec.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_string(), PathBuf::from(dir)))
        }
        _ => bail!("--adapter {spec:?}: expected NAME=DIR"),
    }
}

pub fn run(device: &DeviceArg, args: &ServeArgs) -> Result<()> {
    if args.max_concurrent == 0 {
        bail!("--max-concurrent must be at least 1");
    }
    if args.default_max_tokens == 0 {
        bail!("--default-max-tokens must be at least 1");
    }
    let specs = args
        .adapter
        .iter()
        .map(|s| parse_adapter(s))
        .collect::<Result<Vec<_>>>()?;
    let base_name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "base".into()),
    };
    for (i, (name, _)) in specs.iter().enumerate() {
        if *name == base_name || specs[..i].iter().any(|(n, _)| n == name) {
            bail!("--adapter {name}=...: the name `{name}` is already taken");
        }
    }
    let device = device.open()?;
    let start = std::time::Instant::now();
    let mut p = load_pretrained(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    // Before the adapters: their models share the base's matrices.
    args.quant_inputs.apply(&mut p.model);
    let mut adapters = Vec::with_capacity(specs.len());
    for (name, dir) in &specs {
        let (model, config) = load_adapter(p.model.clone(), dir, &device)
            .with_context(|| format!("loading the adapter `{name}` from {}", dir.display()))?;
        eprintln!(
            "adapter `{name}`: {} from {}",
            config.peft_type(),
            dir.display()
        );
        adapters.push((name.clone(), model));
    }
    let options = ServeOptions {
        max_concurrent: args.max_concurrent,
        max_queue: args.max_queue,
        api_key: args.api_key.clone(),
        feedback: args.feedback.clone(),
        default_max_tokens: args.default_max_tokens,
    };
    let server = Server::new(&base_name, p.model, adapters, p.tokenizer, options)?;
    eprintln!(
        "loaded {} as `{base_name}` in {:.1?}; {}",
        args.model.display(),
        start.elapsed(),
        if server.batched() {
            format!("continuous batching, {} slots", server.slots())
        } else {
            "one request at a time (no batched decoder for this model, device or adapter)".into()
        }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        eprintln!("listening on http://{addr}");
        server
            .run(listener, async {
                kiln_serve::shutdown_signal().await;
                eprintln!("shutting down: finishing the requests in flight");
            })
            .await?;
        eprintln!("stopped");
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_specs() {
        assert_eq!(
            parse_adapter("dtc=out/a").unwrap(),
            ("dtc".to_string(), PathBuf::from("out/a"))
        );
        assert!(parse_adapter("out/a").is_err());
        assert!(parse_adapter("=out/a").is_err());
    }
}
