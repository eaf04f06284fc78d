//! Saving a model (typically with merged adapters) as a Hugging Face safetensors directory:
//! `config.json`, `model.safetensors` (f32, HF key names and layouts) and, when given, the
//! tokenizer (`tokenizer.json`, `tokenizer_config.json` with the chat template), loadable by
//! `transformers.AutoModelForCausalLM.from_pretrained`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::Tensor;
use kiln_nn::AdapterTarget;
use kiln_nn::safetensors::{HostTensor, write_atomic, write_safetensors};
use kiln_tokenizer::Tokenizer;

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
