//! Parameter-efficient fine-tuning (PEFT) for kiln models.
//!
//! The building blocks are model-agnostic:
//!
//! - [`PeftLinear`]: a linear projection that hosts adapters. Every projection of a kiln model is
//!   a `PeftLinear`, so any of them is a place where a method can attach.
//! - [`lora`]: Low-Rank Adaptation, computed factored (`x·A·B`), never materializing `W + BA`.
//! - [`AdapterTarget`]: the trait a model implements so methods can find its projections by their
//!   Hugging Face path (`model.layers.0.self_attn.q_proj`).
//!
//! Adapters are chosen when the model is built (composition, not subclassing): [`attach_lora`]
//! walks the model through [`AdapterTarget`], freezes the base weights and adds trainable adapters.
#![warn(missing_docs)]

mod error;
pub mod init;
mod linear;
pub mod lora;
mod target;

pub use error::{PeftError, Result};
pub use linear::PeftLinear;
pub use lora::{LoraConfig, LoraLayer, attach_lora};
pub use target::{AdapterTarget, TrainableReport};
