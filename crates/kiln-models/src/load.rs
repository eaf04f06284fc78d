//! One call from a path (Hugging Face directory or `.gguf` file) to a model.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::{AnyCausalLm, AnyConfig, LlamaConfig, LlamaForCausalLM, ModelError, Result};

/// What a checkpoint path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// A Hugging Face directory with `config.json` and safetensors weights.
    HfDir(PathBuf),
    /// A single GGUF file.
    Gguf(PathBuf),
}

impl Checkpoint {
    /// Classifies a path.
    ///
    /// # Errors
    /// A path that does not exist, or a file that is not `.gguf`.
    pub fn detect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            Ok(Self::HfDir(path.to_path_buf()))
        } else if path.is_file() {
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            {
                Ok(Self::Gguf(path.to_path_buf()))
            } else {
                Err(ModelError::InvalidConfig {
                    field: path.display().to_string(),
                    reason: "expected a Hugging Face model directory or a .gguf file".into(),
                })
            }
        } else {
            Err(ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or directory",
                ),
            })
        }
    }
}

/// Loads a Llama-family model (Llama, SmolLM, Mistral, Qwen2) from an HF directory or a GGUF file.
/// Weights are dequantized or converted to `f32`.
///
/// # Errors
/// Unreadable files, an unsupported architecture, or tensors that do not fit the configuration
/// (each error names the file and tensor or field).
pub fn load_llama(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<(LlamaConfig, LlamaForCausalLM)> {
    let path = path.as_ref();
    match crate::pretrained::load_model(path, device)? {
        (AnyConfig::Llama(cfg), AnyCausalLm::Llama(model)) => Ok((cfg, model)),
        (config, _) => Err(ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            architecture: config.model_type().into(),
            supported: "llama, mistral, qwen2".into(),
        }),
    }
}
