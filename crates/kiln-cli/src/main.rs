//! The `kiln` executable.

use anyhow::Result;
use clap::{Parser, Subcommand};

use kiln::prelude::*;

/// Customize small language models to a domain.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    /// Backend to run on: cpu, flex, ndarray, wgpu, wgpu:cpu, wgpu:N, cuda, cuda:N.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the backends compiled into this build and check that DEVICE works.
    ///
    /// Example: `kiln --device wgpu:cpu devices`
    Devices,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Devices => {
            println!("compiled backends: {}", compiled_backends().join(", "));
            let device = parse_device(&cli.device)?;
            let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device);
            let sum: f32 = x.sum().into_scalar::<f32>();
            anyhow::ensure!(
                (sum - 6.0).abs() < 1e-6,
                "device {} computed 1+2+3 = {sum}",
                cli.device
            );
            println!("{}: ok ({device:?})", cli.device);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_device_is_reported() {
        let err = parse_device("tpu").context("--device").unwrap_err();
        assert!(format!("{err:#}").contains("unknown device"));
    }
}
