//! Prompt tuning (Lester et al., 2021): learned virtual-token embeddings prepended to the input.

mod attach;
mod config;

pub use attach::attach_prompt_tuning;
pub use config::{PromptTuningConfig, PromptTuningInit};
pub use kiln_nn::adapter::{PromptEmbedding, PromptEncoder};
