//! Parameter-efficient fine-tuning (PEFT) for kiln models, in the Hugging Face PEFT file format.
//!
//! The building blocks are model-agnostic:
//!
//! - [`PeftLinear`]: a linear projection that hosts adapters. Every projection of a kiln model is
//!   a `PeftLinear`, so any of them is a place where a method can attach.
//! - One module per method: [`lora`] (LoRA, rsLoRA, DoRA; computed factored, `x·A·B`, never
//!   materializing `W + BA` in training), [`ia3`], [`bottleneck`] (Houlsby / Pfeiffer),
//!   [`prompt`] (prompt tuning) and [`prefix`] (prefix tuning). Full fine-tuning needs no adapter;
//!   `modules_to_save` trains chosen projections (e.g. `lm_head`) fully next to an adapter.
//! - [`AdapterTarget`]: the trait a model implements so methods can find its projections by their
//!   Hugging Face path (`model.layers.0.self_attn.q_proj`) and hold a prompt encoder.
//! - [`io`]: `adapter_config.json` + `adapter_model.safetensors`, exactly as PEFT writes them.
//! - [`quant`]: a checkpoint's block-quantized weights ([`QuantizedMatrix`]), which a
//!   [`PeftLinear`] uses for its base projection when decoding on the CPU.
//!
//! Adapters are chosen when the model is built (composition, not subclassing): the `attach_*`
//! functions walk the model through [`AdapterTarget`], freeze the base weights and add trainable
//! adapters. [`AdapterTarget::merge_adapters`], [`AdapterTarget::set_adapters_enabled`] and
//! [`AdapterTarget::remove_adapters`] work on any attached method; [`AdapterSet`] keeps several
//! named adapters for one model and switches between them.
#![warn(missing_docs)]

pub mod bottleneck;
mod config;
mod error;
pub mod ia3;
pub mod init;
pub mod io;
mod linear;
pub mod lora;
mod multi;
pub mod prefix;
pub mod prompt;
pub mod quant;
mod svd;
mod target;

pub use bottleneck::{BottleneckConfig, attach_bottleneck};
pub use config::{AdapterConfig, PeftCommon};
pub use error::{PeftError, Result};
pub use ia3::{Ia3Config, attach_ia3};
pub use io::{attach_adapter, load_adapter, read_adapter_config, save_adapter};
pub use linear::PeftLinear;
pub use lora::{LoraConfig, LoraLayer, attach_lora};
pub use multi::{AdapterSet, Combination, combine_lora};
pub use prefix::{PrefixTuningConfig, attach_prefix_tuning};
pub use prompt::{PromptEncoder, PromptTuningConfig, attach_prompt_tuning};
pub use quant::{QuantFormat, QuantizedMatrix};
pub use target::{AdapterTarget, ModelGeometry, TrainableReport, full_fine_tuning, layer_index};
