//! LoRA: Low-Rank Adaptation (Hu et al., 2021), with rsLoRA scaling and DoRA.
//!
//! `y = x·W + (dropout(x)·A·B)·s` where `A: [d_in, r]`, `B: [r, d_out]` and
//! `s = lora_alpha / r` (or `lora_alpha / sqrt(r)` with rsLoRA). `B` starts at zero, so a fresh
//! adapter leaves the model's output unchanged.

mod attach;
mod config;

pub use attach::attach_lora;
pub use config::{InitLoraWeights, LoraBias, LoraConfig};
pub use kiln_nn::adapter::{LoraInit, LoraLayer};
