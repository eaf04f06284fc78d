//! One call from a checkpoint path to a ready model and its tokenizer, whatever the
//! architecture: [`AnyCausalLm`], [`load_model`], [`load_pretrained`], [`load_tokenizer`].

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use kiln_nn::AdaptableLinear;
use kiln_nn::adapter::PromptEncoder;
use kiln_nn::{AdapterTarget, ModelGeometry};
use kiln_tokenizer::{GgufTokenizerSpec, Tokenizer};

use crate::checkpoint::{
    Checkpoint, gemma3_from_gguf, gpt2_from_gguf, llama_from_gguf, read_hf_config,
};
use crate::gguf::{GgufFile, GgufValue};
use crate::source::SafetensorsDir;
use crate::{
    CachedCausalLm, CausalLm, Gemma3Config, Gemma3ForCausalLM, Gpt2Config, Gpt2LMHeadModel,
    KvCache, LlamaConfig, LlamaForCausalLM, LmInput, ModelError, Result,
};

/// Any decoder architecture kiln implements, behind the common traits.
// One value per loaded model: the size difference between variants costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyCausalLm {
    /// Llama, SmolLM, Mistral, Qwen2.
    Llama(LlamaForCausalLM),
    /// GPT-2.
    Gpt2(Gpt2LMHeadModel),
    /// Gemma 3 (text).
    Gemma3(Gemma3ForCausalLM),
}

/// The configuration of an [`AnyCausalLm`].
#[derive(Debug, Clone, PartialEq)]
pub enum AnyConfig {
    /// Llama family.
    Llama(LlamaConfig),
    /// GPT-2.
    Gpt2(Gpt2Config),
    /// Gemma 3 (text).
    Gemma3(Gemma3Config),
}

impl AnyConfig {
    /// The Hugging Face `model_type`.
    pub fn model_type(&self) -> &str {
        match self {
            Self::Llama(c) => &c.model_type,
            Self::Gpt2(_) => "gpt2",
            Self::Gemma3(c) => &c.model_type,
        }
    }
}

/// A loaded checkpoint: configuration, model and tokenizer.
#[derive(Debug)]
pub struct Pretrained {
    /// Where it came from.
    pub path: PathBuf,
    /// The architecture's configuration.
    pub config: AnyConfig,
    /// The model (weights in `f32`).
    pub model: AnyCausalLm,
    /// The tokenizer (with chat template and special tokens when the checkpoint has them).
    pub tokenizer: Tokenizer,
}

/// Loads model and tokenizer from a Hugging Face directory (`config.json`, safetensors,
/// `tokenizer.json`) or a GGUF file (weights dequantized, tokenizer built from its metadata).
///
/// # Errors
/// Unreadable files, unsupported architectures or quantizations, tensors that do not fit, or a
/// tokenizer that cannot be built; each error names the file and tensor or field.
pub fn load_pretrained(path: impl AsRef<Path>, device: &Device) -> Result<Pretrained> {
    let path = path.as_ref().to_path_buf();
    let (config, model) = load_model(&path, device)?;
    let tokenizer = load_tokenizer(&path)?;
    Ok(Pretrained {
        path,
        config,
        model,
        tokenizer,
    })
}

/// Loads only the tokenizer of a checkpoint: `tokenizer.json` (and its config) from a Hugging
/// Face directory, or the tokenizer rebuilt from a GGUF file's metadata.
///
/// # Errors
/// Unreadable files or a tokenizer that cannot be built, naming the file.
pub fn load_tokenizer(path: impl AsRef<Path>) -> Result<Tokenizer> {
    let path = path.as_ref();
    let tok_err = |source| ModelError::Tokenizer {
        path: path.to_path_buf(),
        source,
    };
    match Checkpoint::detect(path)? {
        Checkpoint::HfDir(dir) => Tokenizer::from_hf_dir(&dir).map_err(tok_err),
        Checkpoint::Gguf(file_path) => {
            let spec = tokenizer_spec(&GgufFile::open(&file_path)?)?;
            Tokenizer::from_gguf_spec(&spec).map_err(tok_err)
        }
    }
}

/// Loads only the model (no tokenizer) from a Hugging Face directory or a GGUF file.
///
/// # Errors
/// As [`load_pretrained`], without the tokenizer's.
pub fn load_model(path: impl AsRef<Path>, device: &Device) -> Result<(AnyConfig, AnyCausalLm)> {
    match Checkpoint::detect(path.as_ref())? {
        Checkpoint::HfDir(dir) => {
            let (text, cfg_path, model_type) = read_hf_config(&dir)?;
            match model_type.as_str() {
                "llama" | "mistral" | "qwen2" => {
                    let cfg = LlamaConfig::from_json_str(&text, &cfg_path)?;
                    let source = SafetensorsDir::open(&dir)?;
                    let m = LlamaForCausalLM::from_source(&cfg, &source, device)?;
                    Ok((AnyConfig::Llama(cfg), AnyCausalLm::Llama(m)))
                }
                "gpt2" => {
                    let cfg = Gpt2Config::from_json_str(&text, &cfg_path)?;
                    let source = SafetensorsDir::open(&dir)?;
                    let m = Gpt2LMHeadModel::from_source(&cfg, &source, device)?;
                    Ok((AnyConfig::Gpt2(cfg), AnyCausalLm::Gpt2(m)))
                }
                "gemma3_text" | "gemma3" => {
                    let cfg = Gemma3Config::from_json_str(&text, &cfg_path)?;
                    let source = SafetensorsDir::open(&dir)?;
                    let m = Gemma3ForCausalLM::from_source(&cfg, &source, device)?;
                    Ok((AnyConfig::Gemma3(cfg), AnyCausalLm::Gemma3(m)))
                }
                other => Err(ModelError::UnsupportedArchitecture {
                    path: cfg_path,
                    architecture: other.into(),
                    supported: "llama, mistral, qwen2, gemma3_text, gpt2".into(),
                }),
            }
        }
        Checkpoint::Gguf(file_path) => {
            let file = GgufFile::open(&file_path)?;
            match file.get_str("general.architecture").ok() {
                Some("gpt2") => {
                    let (cfg, m) = gpt2_from_gguf(file, device)?;
                    return Ok((AnyConfig::Gpt2(cfg), AnyCausalLm::Gpt2(m)));
                }
                Some("gemma3") => {
                    let (cfg, m) = gemma3_from_gguf(file, device)?;
                    return Ok((AnyConfig::Gemma3(cfg), AnyCausalLm::Gemma3(m)));
                }
                _ => {}
            }
            let (cfg, m) = llama_from_gguf(file, device)?;
            Ok((AnyConfig::Llama(cfg), AnyCausalLm::Llama(m)))
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
    match load_model(path, device)? {
        (AnyConfig::Llama(cfg), AnyCausalLm::Llama(model)) => Ok((cfg, model)),
        (config, _) => Err(ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            architecture: config.model_type().into(),
            supported: "llama, mistral, qwen2".into(),
        }),
    }
}

/// Reads the `tokenizer.*` metadata of a GGUF file.
///
/// # Errors
/// A missing vocabulary or model kind, or a key of the wrong type.
pub fn tokenizer_spec(file: &GgufFile) -> Result<GgufTokenizerSpec> {
    let opt_u32 = |k: &str| file.get(k).map(|_| file.get_u32(k)).transpose();
    let opt_bool = |k: &str| file.get(k).map(|_| file.get_bool(k)).transpose();
    let opt_str = |k: &str| -> Result<Option<String>> {
        file.get(k)
            .map(|_| file.get_str(k).map(String::from))
            .transpose()
    };
    Ok(GgufTokenizerSpec {
        model: file.get_str("tokenizer.ggml.model")?.to_string(),
        pre: opt_str("tokenizer.ggml.pre")?,
        tokens: file.get_str_array("tokenizer.ggml.tokens")?.to_vec(),
        token_types: file
            .get("tokenizer.ggml.token_type")
            .map(|_| {
                file.get_i32_array("tokenizer.ggml.token_type")
                    .map(<[i32]>::to_vec)
            })
            .transpose()?,
        merges: file
            .get("tokenizer.ggml.merges")
            .map(|_| {
                file.get_str_array("tokenizer.ggml.merges")
                    .map(<[String]>::to_vec)
            })
            .transpose()?,
        scores: file
            .get("tokenizer.ggml.scores")
            .map(|_| {
                file.get_f32_array("tokenizer.ggml.scores")
                    .map(<[f32]>::to_vec)
            })
            .transpose()?,
        bos_token_id: opt_u32("tokenizer.ggml.bos_token_id")?,
        eos_token_id: opt_u32("tokenizer.ggml.eos_token_id")?,
        unknown_token_id: opt_u32("tokenizer.ggml.unknown_token_id")?,
        padding_token_id: opt_u32("tokenizer.ggml.padding_token_id")?,
        add_bos_token: opt_bool("tokenizer.ggml.add_bos_token")?,
        add_eos_token: opt_bool("tokenizer.ggml.add_eos_token")?,
        chat_template: match file.get("tokenizer.chat_template") {
            Some(GgufValue::String(s)) => Some(s.clone()),
            _ => None,
        },
        architecture: opt_str("general.architecture")?,
    })
}

macro_rules! delegate {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            AnyCausalLm::Llama($m) => $e,
            AnyCausalLm::Gpt2($m) => $e,
            AnyCausalLm::Gemma3($m) => $e,
        }
    };
}

impl CausalLm for AnyCausalLm {
    fn vocab_size(&self) -> usize {
        delegate!(self, m => m.vocab_size())
    }

    fn hidden_size(&self) -> usize {
        delegate!(self, m => m.hidden_size())
    }

    fn device(&self) -> Device {
        delegate!(self, m => m.device())
    }

    fn max_positions(&self) -> Option<usize> {
        delegate!(self, m => CausalLm::max_positions(m))
    }

    fn forward_hidden(&self, input: &LmInput) -> Tensor<3> {
        delegate!(self, m => m.forward_hidden(input))
    }

    fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        delegate!(self, m => m.logits(hidden))
    }

    fn fused_loss_grads(
        &self,
        batch: &crate::HostBatch,
        step: crate::FusedStep,
    ) -> Option<(f64, burn::optim::GradientsParams)> {
        delegate!(self, m => m.fused_loss_grads(batch, step))
    }
}

impl CachedCausalLm for AnyCausalLm {
    type Cache = KvCache;

    fn new_cache(&self) -> KvCache {
        KvCache::default()
    }

    fn max_context(&self) -> Option<usize> {
        delegate!(self, m => m.max_context())
    }

    fn host_decoder(&self, capacity: &[usize]) -> Option<Box<dyn crate::HostDecoder + '_>> {
        delegate!(self, m => m.host_decoder(capacity))
    }

    fn multi_adapter_decoder(
        &self,
        adapters: &[&Self],
        capacity: &[usize],
    ) -> Option<Box<dyn crate::HostDecoder + '_>> {
        match self {
            Self::Llama(base) => {
                let models: Option<Vec<&LlamaForCausalLM>> = adapters
                    .iter()
                    .map(|a| match a {
                        Self::Llama(m) => Some(m),
                        Self::Gpt2(_) | Self::Gemma3(_) => None,
                    })
                    .collect();
                base.multi_adapter_decoder(&models?, capacity)
            }
            Self::Gpt2(_) | Self::Gemma3(_) => None,
        }
    }

    fn forward_cached(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        delegate!(self, m => m.forward_cached(input_ids, attention_mask, cache))
    }
}

impl AdapterTarget for AnyCausalLm {
    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut AdaptableLinear)) {
        delegate!(self, m => m.visit_linears_mut(f))
    }

    fn visit_linears(&self, f: &mut dyn FnMut(&str, &AdaptableLinear)) {
        delegate!(self, m => m.visit_linears(f))
    }

    fn geometry(&self) -> ModelGeometry {
        delegate!(self, m => m.geometry())
    }

    fn token_embeddings(&self) -> Tensor<2> {
        delegate!(self, m => m.token_embeddings())
    }

    fn prompt_encoder(&self) -> Option<&PromptEncoder> {
        delegate!(self, m => m.prompt_encoder())
    }

    fn set_prompt_encoder(&mut self, encoder: Option<PromptEncoder>) {
        delegate!(self, m => m.set_prompt_encoder(encoder))
    }

    fn set_adapters_enabled(&mut self, enabled: bool) {
        delegate!(self, m => m.set_adapters_enabled(enabled))
    }

    fn has_other_biases(&self) -> bool {
        delegate!(self, m => m.has_other_biases())
    }

    fn peft_model_type(&self) -> Option<&str> {
        delegate!(self, m => m.peft_model_type())
    }

    fn clear_quantized(&mut self) {
        delegate!(self, m => m.clear_quantized())
    }

    fn set_quant_inputs(&mut self, inputs: kiln_nn::Inputs) {
        delegate!(self, m => m.set_quant_inputs(inputs))
    }
}
