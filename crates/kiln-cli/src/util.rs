//! Small helpers the commands share: the `--device` value, atomic writes, JSON files, child
//! processes, peak memory, the date and the machine.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use kiln::prelude::{Device, parse_device};

/// The global `--device` value: kept as written (it is passed on to child processes and printed
/// in reports) and turned into a device by [`DeviceArg::open`] when a command needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceArg(String);

impl DeviceArg {
    /// The string as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The device it names.
    ///
    /// # Errors
    /// A backend that is unknown or not compiled into this build.
    pub fn open(&self) -> Result<Device> {
        Ok(parse_device(&self.0)?)
    }
}

impl std::str::FromStr for DeviceArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A command that runs this executable again (a child process with its own peak memory).
pub fn kiln_command() -> Result<Command> {
    let exe = std::env::current_exe().context("locating the kiln executable")?;
    Ok(Command::new(exe))
}

/// Runs a child process with inherited output; fails unless it succeeds, naming `what`.
pub fn run_child(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {}", Path::new(cmd.get_program()).display()))?;
    if !status.success() {
        bail!("{what}: the run failed ({status}); its output is above");
    }
    Ok(())
}

/// Peak resident set size of this process in MiB (`VmHWM`), where the platform reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Minor page faults of this process so far (`/proc/self/stat`, field 10), on Linux.
pub fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the closing paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

/// Today as `YYYY-MM-DD` in UTC.
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = kiln::tokenizer::chat::civil_date((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The CPU model and core count, and the device string.
pub fn machine(device: &DeviceArg) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpu}, {cores} logical cores, device {device}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_date_is_well_formed() {
        let d = utc_date();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
        assert_eq!(&d[4..5], "-");
    }

    #[test]
    fn device_arg_keeps_the_string_and_parses_late() {
        let d: DeviceArg = "tpu".parse().unwrap();
        assert_eq!(d.as_str(), "tpu");
        assert!(format!("{:#}", d.open().unwrap_err()).contains("unknown device"));
    }
}

/// How a GGUF model's block-quantized matrices treat their input rows (`--quant-inputs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantInputs {
    /// 16 bits per 32-value block: greedy text equal to the unquantized product's on the
    /// checkpoints tested.
    #[default]
    Q16,
    /// 8 bits per block, as llama.cpp quantizes activations: the fastest kernels.
    Q8,
    /// Kept in `f32` (the slowest kernels).
    F32,
}

impl QuantInputs {
    /// Applies the choice to every block-quantized matrix of `model` (a no-op for models
    /// without any).
    pub fn apply(self, model: &mut impl kiln::nn::AdapterTarget) {
        let inputs = match self {
            Self::Q16 => kiln::nn::Inputs::Q16,
            Self::Q8 => kiln::nn::Inputs::Q8,
            Self::F32 => kiln::nn::Inputs::F32,
        };
        model.set_quant_inputs(inputs);
    }
}

/// Which end of a too-long prompt to cut (`--truncate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Truncate {
    /// Drop the first tokens, keep the end of the prompt.
    Left,
}

/// Cuts every prompt that with `max_new_tokens` would overrun `context`, saying so on stderr.
///
/// # Errors
/// When `max_new_tokens` alone fills the context.
pub fn truncate_prompts<'a>(
    how: Truncate,
    context: Option<usize>,
    max_new_tokens: usize,
    prompts: impl Iterator<Item = &'a mut Vec<u32>>,
) -> anyhow::Result<()> {
    let Some(context) = context else {
        return Ok(());
    };
    let keep = context.saturating_sub(max_new_tokens);
    if keep == 0 {
        anyhow::bail!(
            "--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's \
             context of {context} tokens"
        );
    }
    match how {
        Truncate::Left => {
            for (i, ids) in prompts.enumerate() {
                if ids.len() > keep {
                    eprintln!(
                        "prompt {i}: kept its last {keep} of {} tokens (--truncate left, \
                         context {context}, --max-new-tokens {max_new_tokens})",
                        ids.len()
                    );
                    ids.drain(..ids.len() - keep);
                }
            }
        }
    }
    Ok(())
}

/// A flag the first SIGINT or SIGTERM raises, so that a long command can stop at a safe point
/// (after the step in progress, with a checkpoint); a second signal exits at once with status 130.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let interrupt = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&interrupt))
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&interrupt))
            .context("installing the signal handler")?;
    }
    Ok(interrupt)
}
