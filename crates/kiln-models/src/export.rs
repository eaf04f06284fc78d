//! Saving a model (typically with merged adapters) as a Hugging Face safetensors directory:
//! `config.json`, `model.safetensors` (f32, HF key names and layouts) and, when given, the
//! tokenizer (`tokenizer.json`, `tokenizer_config.json` with the chat template), loadable by
//! `transformers.AutoModelForCausalLM.from_pretrained`; and saving a Llama-family model as a
//! GGUF file for llama.cpp ([`save_gguf`]).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::Tensor;
use kiln_nn::AdapterTarget;
use kiln_nn::safetensors::{HostTensor, write_atomic, write_safetensors};
use kiln_tokenizer::Tokenizer;

use crate::gguf::{GgmlType, GgufFile, GgufValue, GgufWriter};
use crate::{AnyCausalLm, AnyConfig, ModelError, Result};

/// The tensors of a Hugging Face checkpoint being written, by checkpoint key; each architecture
/// adds its own (`export_tensors`).
#[derive(Debug, Default)]
pub(crate) struct ExportTensors(BTreeMap<String, HostTensor>);

impl ExportTensors {
    /// Adds a parameter.
    pub(crate) fn param<const D: usize>(&mut self, key: impl Into<String>, p: &Param<Tensor<D>>) {
        let t = p.val();
        self.0.insert(
            key.into(),
            HostTensor {
                shape: t.dims().to_vec(),
                data: t.into_data().iter::<f32>().collect(),
            },
        );
    }

    /// Adds the weight and bias of every linear projection, in the checkpoint layout.
    pub(crate) fn linears(&mut self, model: &impl AdapterTarget) {
        model.visit_linears(&mut |name, l| {
            let (data, shape) = l.checkpoint_weight();
            self.0.insert(
                format!("{name}.weight"),
                HostTensor {
                    shape: shape.to_vec(),
                    data,
                },
            );
            if let Some(b) = &l.bias {
                self.param(format!("{name}.bias"), b);
            }
        });
    }
}

/// Fails unless every adapter of the model is merged into its weights.
fn check_merged(model: &AnyCausalLm) -> Result<()> {
    let mut problem = None;
    model.visit_linears(&mut |path, l| {
        let unmerged = (l.lora.is_some() || l.ia3.is_some()) && !l.merged;
        if unmerged || l.bottleneck.is_some() {
            problem.get_or_insert_with(|| path.to_string());
        }
    });
    if let Some(path) = problem {
        return Err(ModelError::InvalidConfig {
            field: path,
            reason: "holds an unmerged (or bottleneck) adapter; merge LoRA/DoRA/IA3 first".into(),
        });
    }
    if model.prompt_encoder().is_some() {
        return Err(ModelError::InvalidConfig {
            field: "prompt_encoder".into(),
            reason: "prompt and prefix tuning cannot be merged into weights; save the adapter"
                .into(),
        });
    }
    Ok(())
}

/// Saves the model as a Hugging Face directory. LoRA, DoRA and IA3 adapters must be merged
/// first ([`AdapterTarget::merge_adapters`]); bottleneck adapters and prompt encoders have no
/// place in a plain checkpoint and are an error.
///
/// # Errors
/// Unmerged or unmergeable adapters; I/O errors naming the file.
pub fn save_pretrained(
    model: &AnyCausalLm,
    config: &AnyConfig,
    tokenizer: Option<&Tokenizer>,
    dir: &Path,
) -> Result<()> {
    check_merged(model)?;
    let mut tensors = ExportTensors::default();
    let mut json = match (model, config) {
        (AnyCausalLm::Llama(m), AnyConfig::Llama(c)) => {
            let arch = match c.model_type.as_str() {
                "qwen2" => "Qwen2ForCausalLM",
                "mistral" => "MistralForCausalLM",
                _ => "LlamaForCausalLM",
            };
            let mut j = serde_json::to_value(c).map_err(|e| json_err(dir, e))?;
            j["architectures"] = serde_json::json!([arch]);
            j["tie_word_embeddings"] = serde_json::json!(m.lm_head.is_none());
            m.export_tensors(&mut tensors);
            j
        }
        (AnyCausalLm::Gemma3(m), AnyConfig::Gemma3(c)) => {
            let mut j = serde_json::to_value(c).map_err(|e| json_err(dir, e))?;
            j["architectures"] = serde_json::json!(["Gemma3ForCausalLM"]);
            m.export_tensors(&mut tensors);
            j
        }
        (AnyCausalLm::Gpt2(m), AnyConfig::Gpt2(c)) => {
            let mut j = serde_json::to_value(c).map_err(|e| json_err(dir, e))?;
            j["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
            j["tie_word_embeddings"] = serde_json::json!(m.lm_head.is_none());
            m.export_tensors(&mut tensors);
            j
        }
        _ => {
            return Err(ModelError::InvalidConfig {
                field: "config".into(),
                reason: "the configuration is for another architecture than the model".into(),
            });
        }
    };
    json["torch_dtype"] = serde_json::json!("float32");
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let text = serde_json::to_string_pretty(&json).map_err(|e| json_err(dir, e))?;
    write_atomic(&dir.join("config.json"), text.as_bytes())?;
    write_safetensors(&dir.join("model.safetensors"), &tensors.0)?;
    if let Some(tok) = tokenizer {
        save_tokenizer(tok, dir)?;
    }
    Ok(())
}

/// Saves a Llama-family model (Llama, Mistral, Qwen2) loaded from the GGUF file `base`, with its
/// adapters merged, as a GGUF file that llama.cpp loads: every metadata key of `base` (tokenizer
/// and chat template included) with `general.file_type` set for `ggml_type`, the tensors in
/// `base`'s order under their llama.cpp names, q/k rows permuted back to llama.cpp's layout
/// where `base` has them so. Weights are written as `ggml_type` (F32, F16, Q8_0 or Q4_0; a
/// weight whose rows are not a multiple of 32 values falls back to F16 for the block types);
/// norms and other 1-D tensors as F32.
///
/// # Errors
/// Unmerged or unmergeable adapters, another architecture, a model that does not match `base`'s
/// tensors (naming the tensor), I/O errors naming the file.
pub fn save_gguf(
    model: &AnyCausalLm,
    config: &AnyConfig,
    base: &GgufFile,
    ggml_type: GgmlType,
    path: &Path,
) -> Result<()> {
    check_merged(model)?;
    let (AnyCausalLm::Llama(m), AnyConfig::Llama(c)) = (model, config) else {
        return Err(ModelError::InvalidConfig {
            field: "model".into(),
            reason: format!(
                "GGUF export writes the Llama family (llama, mistral, qwen2), not {}",
                config.model_type()
            ),
        });
    };
    let file_type: u32 = match ggml_type {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q8_0 => 7,
        other => {
            return Err(ModelError::InvalidConfig {
                field: "quant".into(),
                reason: format!("GGUF export writes f32, f16, q8_0 or q4_0, not {other}"),
            });
        }
    };
    let mut tensors = ExportTensors::default();
    m.export_tensors(&mut tensors);
    let mut writer = GgufWriter::new();
    for (key, value) in base.metadata() {
        writer.set(key.clone(), value.clone());
    }
    writer.set("general.file_type", GgufValue::U32(file_type));
    if matches!(ggml_type, GgmlType::Q8_0 | GgmlType::Q4_0) {
        writer.set("general.quantization_version", GgufValue::U32(2));
    } else {
        writer.remove("general.quantization_version");
    }
    let mut written = 0;
    for info in base.tensors() {
        let g = info.name();
        let exported = crate::llama::GGUF_NAMES
            .hf_name(g)
            .and_then(|hf| tensors.0.get(&hf));
        let (values, shape) = match exported {
            Some(t) => {
                written += 1;
                let heads = if g.ends_with("attn_q.weight") {
                    Some(c.num_attention_heads)
                } else if g.ends_with("attn_k.weight") {
                    Some(c.kv_heads())
                } else {
                    None
                };
                let values = match heads {
                    Some(h) if c.gguf_permutes_qk() && t.shape.len() == 2 => {
                        permute_rows(&t.data, t.shape[0], t.shape[1], h)
                    }
                    _ => t.data.clone(),
                };
                (values, t.shape.clone())
            }
            // Tensors the model does not hold as parameters (RoPE frequency factors), as the
            // base has them.
            None => base.tensor_f32(g)?,
        };
        if shape != info.shape() {
            return Err(ModelError::InvalidConfig {
                field: format!("tensor `{g}`"),
                reason: format!(
                    "the model's tensor has shape {shape:?}, the base file's {:?}",
                    info.shape()
                ),
            });
        }
        let row = shape.last().copied().unwrap_or(1);
        let ty = match ggml_type {
            _ if shape.len() < 2 => GgmlType::F32,
            GgmlType::Q8_0 | GgmlType::Q4_0 if !row.is_multiple_of(32) => GgmlType::F16,
            t => t,
        };
        writer.add_tensor(g, &shape, ty, &values)?;
    }
    if written != tensors.0.len() {
        let missing: Vec<&String> = tensors
            .0
            .keys()
            .filter(|hf| {
                !base
                    .tensors()
                    .iter()
                    .any(|i| crate::llama::GGUF_NAMES.hf_name(i.name()).as_ref() == Some(*hf))
            })
            .collect();
        return Err(ModelError::InvalidConfig {
            field: format!("tensor `{}`", missing.first().map_or("?", |s| s.as_str())),
            reason: "the model holds tensors the base file does not have".into(),
        });
    }
    writer.write(path)
}

/// llama.cpp's q/k permutation of a `[rows, cols]` weight in the Hugging Face layout (rows
/// `[head, 2, half]` become `[head, half, 2]`): the inverse of the order the loader undoes.
fn permute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    // `order[hf_row]` is the GGUF row the loader reads Hugging Face row `hf_row` from.
    for (hf, gguf) in crate::source::reverse_permutation(rows, heads)
        .into_iter()
        .enumerate()
    {
        out[gguf * cols..(gguf + 1) * cols].copy_from_slice(&values[hf * cols..(hf + 1) * cols]);
    }
    out
}

/// Writes `tokenizer.json` and a `tokenizer_config.json` (special tokens, chat template).
///
/// # Errors
/// I/O errors naming the file.
pub fn save_tokenizer(tok: &Tokenizer, dir: &Path) -> Result<()> {
    let json = tok
        .inner()
        .to_string(false)
        .map_err(|e| ModelError::InvalidConfig {
            field: "tokenizer".into(),
            reason: e.to_string(),
        })?;
    write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
    let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
    let mut cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
    });
    for (key, id) in [
        ("bos_token", tok.bos_token_id()),
        ("eos_token", tok.eos_token_id()),
        ("pad_token", tok.pad_token_id()),
        ("unk_token", tok.unk_token_id()),
    ] {
        if let Some(t) = name(id) {
            cfg[key] = serde_json::json!(t);
        }
    }
    if let Some(t) = tok.chat_template() {
        cfg["chat_template"] = serde_json::json!(t.source());
    }
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| json_err(dir, e))?;
    write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())?;
    Ok(())
}

fn json_err(dir: &Path, source: serde_json::Error) -> ModelError {
    ModelError::Json {
        path: dir.join("config.json"),
        source,
    }
}
