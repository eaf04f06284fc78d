#![doc = include_str!("../../../README.md")]
#![warn(missing_docs)]

pub use burn;
pub use kiln_data as data;
pub use kiln_metrics as metrics;
pub use kiln_models as models;
pub use kiln_nn as nn;
pub use kiln_peft as peft;
pub use kiln_rag as rag;
pub use kiln_recipe as recipe;
pub use kiln_tokenizer as tokenizer;
pub use kiln_train as train;

/// Choosing a backend at run time (see [`kiln_recipe::device`]); the backends compiled in are
/// chosen by this crate's cargo features (`flex`, `ndarray`, `wgpu`, `cuda`).
pub mod device {
    pub use kiln_recipe::RecipeError as DeviceError;
    pub use kiln_recipe::device::{compiled_backends, parse_device};
}

/// The types most programs need.
pub mod prelude {
    pub use crate::device::{DeviceError, compiled_backends, parse_device};
    pub use burn::tensor::{Device, Int, Tensor, TensorData};
    pub use kiln_data::{IGNORE_INDEX, TokenBatch, TokenizedExample};
    pub use kiln_models::{
        AnyCausalLm, CausalLm, GenerationConfig, LlamaConfig, LlamaForCausalLM, LmInput, generate,
        load_model, load_pretrained, save_pretrained,
    };
    pub use kiln_nn::{AdaptableLinear, AdapterTarget};
    pub use kiln_peft::{
        AdapterConfig, AdapterSet, BottleneckConfig, Ia3Config, LoraConfig, PrefixTuningConfig,
        PromptTuningConfig, TrainableReport, attach_adapter, attach_lora, full_fine_tuning,
        load_adapter, save_adapter,
    };
    pub use kiln_tokenizer::Tokenizer;
    pub use kiln_train::{OptimizerConfig, Schedule, Trainer, masked_lm_loss};
}
