#![doc = include_str!("../../../README.md")]
#![warn(missing_docs)]

pub mod device;

pub use burn;
pub use kiln_data as data;
pub use kiln_metrics as metrics;
pub use kiln_models as models;
pub use kiln_peft as peft;
pub use kiln_tokenizer as tokenizer;
pub use kiln_train as train;

/// The types most programs need.
pub mod prelude {
    pub use crate::device::{DeviceError, compiled_backends, parse_device};
    pub use burn::tensor::{Device, Int, Tensor, TensorData};
    pub use kiln_data::{IGNORE_INDEX, TokenBatch, TokenizedExample};
    pub use kiln_models::{CausalLm, LlamaConfig, LlamaForCausalLM, LmInput};
    pub use kiln_peft::{AdapterTarget, LoraConfig, PeftLinear, TrainableReport, attach_lora};
    pub use kiln_tokenizer::Tokenizer;
    pub use kiln_train::{OptimizerConfig, Schedule, Trainer, masked_lm_loss};
}
