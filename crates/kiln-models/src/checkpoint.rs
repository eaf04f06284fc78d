//! Reading a checkpoint (a Hugging Face directory or a GGUF file) into one architecture's model.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use kiln_nn::AdapterTarget;

use crate::gguf::GgufFile;
use crate::source::GgufSource;
use crate::{
    Gemma3Config, Gemma3ForCausalLM, Gpt2Config, Gpt2LMHeadModel, LlamaConfig, LlamaForCausalLM,
    ModelError, Result,
};

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

/// The `config.json` of a Hugging Face directory: its text, its path and its `model_type` (empty
/// when absent).
///
/// # Errors
/// An unreadable file or invalid JSON, naming the file.
pub(crate) fn read_hf_config(dir: &Path) -> Result<(String, PathBuf, String)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|source| ModelError::Io {
        path: cfg_path.clone(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: cfg_path.clone(),
            source,
        })?;
    let model_type = json
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    Ok((text, cfg_path, model_type))
}

/// A GPT-2 model from a GGUF file of llama.cpp's `gpt2` architecture.
///
/// # Errors
/// Missing or mistyped metadata, or tensors that do not fit, naming them.
pub(crate) fn gpt2_from_gguf(
    file: GgufFile,
    device: &Device,
) -> Result<(Gpt2Config, Gpt2LMHeadModel)> {
    let cfg = Gpt2Config::from_gguf(&file)?;
    let source = GgufSource::gpt2(file);
    let model = Gpt2LMHeadModel::from_source(&cfg, &source, device)?;
    Ok((cfg, model))
}

/// A Llama-family model from a GGUF file, keeping the block-quantized weights next to the
/// dequantized ones.
///
/// # Errors
/// Missing or mistyped metadata, tensors that do not fit, or bad quantized blocks, naming them.
pub(crate) fn llama_from_gguf(
    file: GgufFile,
    device: &Device,
) -> Result<(LlamaConfig, LlamaForCausalLM)> {
    let cfg = LlamaConfig::from_gguf(&file)?;
    let source = GgufSource::new(
        file,
        cfg.num_attention_heads,
        cfg.kv_heads(),
        cfg.gguf_permutes_qk(),
    );
    let mut model = LlamaForCausalLM::from_source(&cfg, &source, device)?;
    attach_quantized(&mut model, &source)?;
    if model.lm_head.is_none() {
        model.quantized_head = source.quantized("model.embed_tokens.weight")?;
    }
    Ok((cfg, model))
}

/// A Gemma 3 model from a GGUF file of llama.cpp's `gemma3` architecture, keeping the
/// block-quantized weights (and the tied head's) next to the dequantized ones.
///
/// # Errors
/// Missing or mistyped metadata, tensors that do not fit, or bad quantized blocks, naming them.
pub(crate) fn gemma3_from_gguf(
    file: GgufFile,
    device: &Device,
) -> Result<(Gemma3Config, Gemma3ForCausalLM)> {
    let cfg = Gemma3Config::from_gguf(&file)?;
    let source = GgufSource::gemma3(file);
    let mut model = Gemma3ForCausalLM::from_source(&cfg, &source, device)?;
    attach_quantized(&mut model, &source)?;
    model.quantized_head = source.quantized("model.embed_tokens.weight")?;
    Ok((cfg, model))
}

/// Keeps the block-quantized (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K) weights of a Llama-family GGUF file next to the
/// dequantized ones, for fast decoding on the CPU (see [`AdaptableLinear::set_quantized`]).
fn attach_quantized<M: AdapterTarget>(model: &mut M, source: &GgufSource) -> Result<()> {
    let mut res = Ok(());
    model.visit_linears_mut(&mut |path, l| {
        if res.is_ok() {
            let name = format!("{path}.weight");
            res = source.quantized(&name).and_then(|q| {
                l.set_quantized(q).map_err(|e| {
                    source.tensor_error(&name, format!("the quantized blocks do not fit: {e}"))
                })
            });
        }
    });
    res
}
