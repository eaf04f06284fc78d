//! Adapter layers: the trainable parts that PEFT methods add to a model.
//!
//! [`LoraLayer`], [`Ia3Layer`] and [`BottleneckLayer`] live inside an
//! [`AdaptableLinear`](crate::AdaptableLinear); a [`PromptEncoder`] (prompt or prefix tuning)
//! is held by the model and applied in its forward pass.

mod bottleneck;
mod ia3;
mod lora;
mod prompt;

pub use bottleneck::{Activation, BottleneckLayer};
pub use ia3::Ia3Layer;
pub use lora::{LoraInit, LoraLayer};
pub use prompt::{PrefixEncoder, PrefixMlp, PromptEmbedding, PromptEncoder};
