//! Language model architectures for kiln.
//!
//! Each architecture lives in one file with a serde config mirroring Hugging Face's
//! `config.json`. Module field names equal checkpoint keys (`model.layers.0.self_attn.q_proj`), so
//! loading weights and PEFT adapters needs no renaming table. Every linear projection is a
//! [`kiln_nn::AdaptableLinear`], a place where adapters attach.
//!
//! The training crate sees models only through [`CausalLm`].
//!
//! # Layout
//!
//! - Architectures, one file each: [`llama`] (Llama, SmolLM, Mistral, Qwen2; its configuration in
//!   `llama_config.rs`, as transformers' `configuration_llama.py`), [`gemma3`] (Gemma 3's text
//!   decoder; `gemma3_config.rs`), [`gpt2`] (its configuration in `gpt2_config.rs`) and
//!   [`bert`]. Each also holds its table of llama.cpp GGUF tensor names
//!   and the list of keys it saves in a Hugging Face checkpoint. [`layers`] holds the building
//!   blocks they share (RMSNorm, LayerNorm, rotary embeddings).
//! - What the decoders share: `cache.rs` (the [`KvCache`]), `mask.rs` (positions and attention
//!   biases), `prompt.rs` (prompt and prefix tuning in the forward pass, [`llama::ids_tensor`]),
//!   `adapter.rs` (the common parts of the [`kiln_nn::AdapterTarget`] implementations) and
//!   `causal_lm.rs` (the [`CausalLm`] and [`CachedCausalLm`] traits).
//! - Reading checkpoints: [`gguf`] (the GGUF file format: element types, metadata values,
//!   memory-mapped file, parser, block dequantizers), [`source`] (tensors by Hugging Face name
//!   from safetensors directories or GGUF files, checked by [`StrictLoader`]), `checkpoint.rs`
//!   (what a path is, and reading it into one architecture) and `auto.rs` ([`AnyCausalLm`],
//!   [`load_model`], [`load_pretrained`], tokenizer lookup).
//! - Writing checkpoints: `export.rs` ([`save_pretrained`], [`save_tokenizer`]).
//! - Using models: [`generate`](mod@generate) (sampling with the KV cache), [`retrieval`]
//!   (cosine search over embeddings) and [`reward`] (a decoder with a scalar head that scores
//!   sequences, as transformers' `*ForSequenceClassification` with one label).
#![warn(missing_docs)]

mod adapter;
mod auto;
pub mod bert;
mod cache;
mod causal_lm;
mod checkpoint;
mod error;
mod export;
pub mod gemma3;
mod gemma3_config;
pub mod generate;
pub mod gguf;
pub mod gpt2;
mod gpt2_config;
pub mod layers;
pub mod llama;
mod llama_config;
mod llama_decode;
mod llama_fused;
mod mask;
mod prompt;
pub mod retrieval;
pub mod reward;
pub mod source;

pub use auto::{
    AnyCausalLm, AnyConfig, Pretrained, load_llama, load_model, load_pretrained, load_tokenizer,
    tokenizer_spec,
};
pub use bert::{
    BertConfig, BertForSequenceClassification, BertModel, load_bert, load_bert_classifier,
};
pub use causal_lm::{CachedCausalLm, CausalLm, FusedStep, HostBatch, HostDecoder, LmInput};
pub use checkpoint::Checkpoint;
pub use error::{ModelError, Result};
pub use export::{save_gguf, save_pretrained, save_tokenizer};
pub use gemma3::{Gemma3Config, Gemma3ForCausalLM};
pub use generate::{FinishReason, Generation, GenerationConfig, Sampler, generate};
pub use gpt2::{Gpt2Config, Gpt2LMHeadModel};
pub use llama::{KvCache, LlamaConfig, LlamaForCausalLM};
pub use retrieval::{CosineIndex, Hit};
pub use reward::RewardModel;
pub use source::{GgufSource, SafetensorsDir, StrictLoader, TensorSource};
