//! Parameter-efficient fine-tuning (PEFT) for kiln models, in the Hugging Face PEFT file format.
//!
//! Laid out like a tuner library:
//!
//! - [`AdapterConfig`] (`config.rs`): the one mapping from PEFT's `peft_type` to a method, as
//!   found in `adapter_config.json`. Fields every method shares are in `common.rs`; which
//!   projections a config selects (`target_modules`, `modules_to_save`) in `matching.rs`.
//! - One folder per method, each with its configuration and its `attach_*` function; the layers
//!   they add live in [`kiln_nn::adapter`]: [`lora`] (LoRA, rsLoRA, DoRA, PiSSA; computed
//!   factored, `x·A·B`, never materializing `W + BA` in training), [`ia3`], [`bottleneck`]
//!   (Houlsby / Pfeiffer), [`prompt`] (prompt tuning) and [`prefix`] (prefix tuning). Full
//!   fine-tuning needs no adapter ([`full_fine_tuning`]); `modules_to_save` trains chosen
//!   projections (e.g. `lm_head`) fully next to an adapter.
//! - [`io`]: the file format alone: `adapter_config.json` + `adapter_model.safetensors`, exactly
//!   as PEFT writes them.
//! - [`AdapterSet`] keeps several named adapters for one model and switches between them;
//!   [`combine_lora`] merges LoRA adapters into one.
//!
//! Methods attach to any model that implements [`kiln_nn::AdapterTarget`] (composition, not
//! subclassing): the `attach_*` functions walk the model's
//! [`AdaptableLinear`](kiln_nn::AdaptableLinear) projections, freeze the base weights and add
//! trainable adapters. [`AdapterTarget::merge_adapters`](kiln_nn::AdapterTarget::merge_adapters),
//! `set_adapters_enabled` and `remove_adapters` work on any attached method.
#![warn(missing_docs)]

pub mod bottleneck;
mod common;
mod config;
mod error;
pub mod ia3;
pub mod io;
pub mod lora;
mod matching;
mod multi;
pub mod prefix;
pub mod prompt;
mod svd;
mod trainable;

pub use bottleneck::{BottleneckConfig, attach_bottleneck};
pub use common::PeftCommon;
pub use config::AdapterConfig;
pub use error::{PeftError, Result};
pub use ia3::{Ia3Config, attach_ia3};
pub use io::{
    attach_adapter, check_adapter_tensors, load_adapter, load_adapter_with, read_adapter_config,
    save_adapter, save_adapter_with,
};
pub use lora::{LoraConfig, attach_lora};
pub use multi::{AdapterSet, Combination, combine_lora};
pub use prefix::{PrefixTuningConfig, attach_prefix_tuning};
pub use prompt::{PromptTuningConfig, attach_prompt_tuning};
pub use trainable::{TrainableReport, full_fine_tuning};
