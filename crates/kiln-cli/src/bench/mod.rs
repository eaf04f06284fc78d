//! `kiln bench`: training-step and decoding throughput and peak memory; PEFT methods compared.
//!
//! | module | command |
//! |---|---|
//! | `train_step` | `kiln bench train-step` |
//! | `decode` | `kiln bench decode` |
//! | `methods` | `kiln bench methods` (the parent: data, model, one child per method) |
//! | `method_run` | `kiln bench method-run` (the hidden child: one method's run) |
//! | `report` | `methods.json`, `methods.md`, `methods.png` and the docs section |

use anyhow::Result;

use crate::util::DeviceArg;

mod decode;
mod method_run;
mod methods;
mod report;
mod train_step;

/// `kiln bench ...`
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Full training steps (forward, backward, AdamW) on random tokens, every position labelled.
    ///
    /// Prints one line per step on stderr and, as the last line on stdout,
    /// `tokens_per_s=... peak_rss_mib=... step_s=... minor_faults_per_step=...` (warm-up steps excluded from the rate).
    ///
    /// Example:
    ///   kiln bench train-step --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --method lora --batch 4 --seq 256 --steps 3
    #[command(verbatim_doc_comment)]
    TrainStep(train_step::TrainStepArgs),
    /// Prefill and greedy decoding of one prompt, timed.
    ///
    /// Prints one line per run on stderr and, as the last line on stdout,
    /// `prefill_tokens_per_s=... decode_tokens_per_s=... peak_rss_mib=...` (medians over the runs after a warm-up run).
    ///
    /// Example:
    ///   kiln bench decode --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --prompt-tokens 1024 --new-tokens 100
    #[command(verbatim_doc_comment)]
    Decode(decode::DecodeArgs),
    /// Compare fine-tuning methods on the same model, data, split and token budget.
    ///
    /// Trains full fine-tuning, LoRA, rsLoRA, DoRA, IA3, bottleneck adapters, prefix tuning and
    /// prompt tuning (each in its own process, with its own learning rate), then reports per
    /// method: trainable parameters, saved file size, peak memory, time per step, training
    /// tokens/s, validation loss and held-out answer scores. Writes methods.json, methods.md and
    /// methods.png into --out (and, with --docs, into docs/benchmarks.md and docs/img/).
    ///
    /// Examples:
    ///   kiln bench methods --quick
    ///   kiln bench methods --docs docs
    ///   kiln bench methods --methods lora,dora --lr lora=1e-3 --epochs 3
    #[command(verbatim_doc_comment)]
    Methods(methods::MethodsArgs),
    /// One method of `kiln bench methods`, in its own process.
    #[command(hide = true)]
    MethodRun(method_run::MethodRunArgs),
}

/// Runs `kiln bench`.
pub fn run(device: &DeviceArg, command: &BenchCommand) -> Result<()> {
    match command {
        BenchCommand::TrainStep(args) => train_step::run(device, args),
        BenchCommand::Decode(args) => decode::run(device, args),
        BenchCommand::Methods(args) => methods::run(device, args),
        BenchCommand::MethodRun(args) => method_run::run(device, args),
    }
}
