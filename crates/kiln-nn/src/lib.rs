//! The layers kiln models are built from, shared by the architectures (kiln-models) and the
//! fine-tuning methods (kiln-peft), which are siblings over this crate.
//!
//! - [`AdaptableLinear`]: a linear projection that can host adapters. Every projection of a kiln
//!   model is one, so any of them is a place where a PEFT method can attach.
//! - [`adapter`]: the adapter layers a projection or model holds: LoRA/DoRA, IA3, bottleneck
//!   adapters, and the prompt-learning modules (prompt and prefix tuning).
//! - [`AdapterTarget`]: the trait a model implements so methods find its projections by their
//!   Hugging Face path (`model.layers.0.self_attn.q_proj`) and hold a prompt encoder.
//! - [`init`]: seeded host-side initialization ([`init::HostRng`]).
//! - [`safetensors`]: host tensors and safetensors files, written atomically.
//! - [`kernels`]: fused CPU kernels on host `f32` buffers (blockwise causal attention with
//!   grouped-query heads, norms, RoPE, SwiGLU, loss, products) and a vectorized exponential.
//! - [`quant`]: a checkpoint's block-quantized weights ([`quant::QuantizedMatrix`]) and their
//!   CPU kernels.
//!
//! All `unsafe` code of the crate (SIMD kernels, calls into `gemm`) is in one private module,
//! `simd`, behind the safe functions of the modules above.
#![warn(missing_docs)]

pub mod adapter;
mod error;
pub mod init;
pub mod kernels;
mod linear;
pub mod quant;
pub mod safetensors;
mod simd;
mod target;

pub use error::{NnError, Result};
pub use linear::{AdaptableLinear, transpose};
pub use quant::{Inputs, QuantFormat, QuantizedMatrix};
pub use safetensors::write_atomic;
pub use target::{AdapterTarget, ModelGeometry, layer_index};
