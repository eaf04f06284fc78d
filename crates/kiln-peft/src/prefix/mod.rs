//! Prefix tuning (Li & Liang, 2021): learned key/value prefixes in every attention layer.
//!
//! The prefix is one table `[n, layers·2·kv_dim]` (PEFT's `prompt_embeddings`), viewed as
//! `[n, layers·2, kv_heads, head_dim]`; layer `i` takes rows `2i` (keys) and `2i + 1` (values).
//! With grouped-query attention `kv_dim = kv_heads·head_dim`. During training an optional MLP
//! (`prefix_projection`) reparameterizes the table; it is folded away when saved.

mod attach;
mod config;

pub use attach::attach_prefix_tuning;
pub use config::PrefixTuningConfig;
pub use kiln_nn::adapter::{PrefixEncoder, PrefixMlp, PromptEncoder};
