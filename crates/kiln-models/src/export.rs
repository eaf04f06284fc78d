//! Saving a model (typically with merged adapters) as a Hugging Face safetensors directory:
//! `config.json`, `model.safetensors` (f32, HF key names and layouts) and, when given, the
//! tokenizer (`tokenizer.json`, `tokenizer_config.json` with the chat template), loadable by
//! `transformers.AutoModelForCausalLM.from_pretrained`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::Tensor;
use kiln_nn::safetensors::{HostTensor, write_atomic, write_safetensors};
use kiln_nn::{AdaptableLinear, AdapterTarget};
use kiln_tokenizer::Tokenizer;

use crate::gpt2::LayerNorm;
use crate::{AnyCausalLm, AnyConfig, Gpt2LMHeadModel, LlamaForCausalLM, ModelError, Result};

fn host<const D: usize>(p: &Param<Tensor<D>>) -> HostTensor {
    let t = p.val();
    HostTensor {
        shape: t.dims().to_vec(),
        data: t.into_data().iter::<f32>().collect(),
    }
}

fn linear(out: &mut BTreeMap<String, HostTensor>, name: &str, l: &AdaptableLinear) {
    let (data, shape) = l.checkpoint_weight();
    out.insert(
        format!("{name}.weight"),
        HostTensor {
            shape: shape.to_vec(),
            data,
        },
    );
    if let Some(b) = &l.bias {
        out.insert(format!("{name}.bias"), host(b));
    }
}

fn llama_tensors(m: &LlamaForCausalLM) -> BTreeMap<String, HostTensor> {
    let mut out = BTreeMap::new();
    out.insert(
        "model.embed_tokens.weight".into(),
        host(&m.model.embed_tokens.weight),
    );
    for (i, layer) in m.model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = &layer.self_attn;
        linear(&mut out, &format!("{p}.self_attn.q_proj"), &a.q_proj);
        linear(&mut out, &format!("{p}.self_attn.k_proj"), &a.k_proj);
        linear(&mut out, &format!("{p}.self_attn.v_proj"), &a.v_proj);
        linear(&mut out, &format!("{p}.self_attn.o_proj"), &a.o_proj);
        linear(
            &mut out,
            &format!("{p}.mlp.gate_proj"),
            &layer.mlp.gate_proj,
        );
        linear(&mut out, &format!("{p}.mlp.up_proj"), &layer.mlp.up_proj);
        linear(
            &mut out,
            &format!("{p}.mlp.down_proj"),
            &layer.mlp.down_proj,
        );
        out.insert(
            format!("{p}.input_layernorm.weight"),
            host(&layer.input_layernorm.weight),
        );
        out.insert(
            format!("{p}.post_attention_layernorm.weight"),
            host(&layer.post_attention_layernorm.weight),
        );
    }
    out.insert("model.norm.weight".into(), host(&m.model.norm.weight));
    if let Some(head) = &m.lm_head {
        linear(&mut out, "lm_head", head);
    }
    out
}

fn layer_norm(out: &mut BTreeMap<String, HostTensor>, name: &str, ln: &LayerNorm) {
    out.insert(format!("{name}.weight"), host(&ln.weight));
    out.insert(format!("{name}.bias"), host(&ln.bias));
}

fn gpt2_tensors(m: &Gpt2LMHeadModel) -> BTreeMap<String, HostTensor> {
    let mut out = BTreeMap::new();
    let t = &m.transformer;
    out.insert("transformer.wte.weight".into(), host(&t.wte.weight));
    out.insert("transformer.wpe.weight".into(), host(&t.wpe.weight));
    for (i, b) in t.h.iter().enumerate() {
        let p = format!("transformer.h.{i}");
        layer_norm(&mut out, &format!("{p}.ln_1"), &b.ln_1);
        linear(&mut out, &format!("{p}.attn.c_attn"), &b.attn.c_attn);
        linear(&mut out, &format!("{p}.attn.c_proj"), &b.attn.c_proj);
        layer_norm(&mut out, &format!("{p}.ln_2"), &b.ln_2);
        linear(&mut out, &format!("{p}.mlp.c_fc"), &b.mlp.c_fc);
        linear(&mut out, &format!("{p}.mlp.c_proj"), &b.mlp.c_proj);
    }
    layer_norm(&mut out, "transformer.ln_f", &t.ln_f);
    if let Some(head) = &m.lm_head {
        linear(&mut out, "lm_head", head);
    }
    out
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
    let (tensors, mut json) = match (model, config) {
        (AnyCausalLm::Llama(m), AnyConfig::Llama(c)) => {
            let arch = match c.model_type.as_str() {
                "qwen2" => "Qwen2ForCausalLM",
                "mistral" => "MistralForCausalLM",
                _ => "LlamaForCausalLM",
            };
            let mut j = serde_json::to_value(c).map_err(|e| json_err(dir, e))?;
            j["architectures"] = serde_json::json!([arch]);
            j["tie_word_embeddings"] = serde_json::json!(m.lm_head.is_none());
            (llama_tensors(m), j)
        }
        (AnyCausalLm::Gpt2(m), AnyConfig::Gpt2(c)) => {
            let mut j = serde_json::to_value(c).map_err(|e| json_err(dir, e))?;
            j["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
            j["tie_word_embeddings"] = serde_json::json!(m.lm_head.is_none());
            (gpt2_tensors(m), j)
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
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
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
