//! Language model architectures for kiln.
//!
//! Each architecture lives in one file with a serde config mirroring Hugging Face's
//! `config.json`. Module field names equal checkpoint keys (`model.layers.0.self_attn.q_proj`), so
//! loading weights and PEFT adapters needs no renaming table. Every linear projection is a
//! [`kiln_peft::PeftLinear`], a place where adapters attach.
//!
//! The training crate sees models only through [`CausalLm`].
#![warn(missing_docs)]

pub mod bert;
mod cache;
mod causal_lm;
mod error;
mod export;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod layers;
pub mod llama;
mod load;
mod mask;
mod pretrained;
mod prompt;
pub mod retrieval;
pub mod source;

pub use bert::{
    BertConfig, BertForSequenceClassification, BertModel, load_bert, load_bert_classifier,
};
pub use causal_lm::{CachedCausalLm, CausalLm, LmInput};
pub use error::{ModelError, Result};
pub use export::{save_pretrained, save_tokenizer};
pub use generate::{GenerationConfig, generate};
pub use gpt2::{Gpt2Config, Gpt2LMHeadModel};
pub use llama::{KvCache, LlamaConfig, LlamaForCausalLM};
pub use load::{Checkpoint, load_llama};
pub use pretrained::{
    AnyCausalLm, AnyConfig, Pretrained, load_model, load_pretrained, load_tokenizer, tokenizer_spec,
};
pub use retrieval::{CosineIndex, Hit};
pub use source::{GgufSource, SafetensorsDir, StrictLoader, TensorSource};
