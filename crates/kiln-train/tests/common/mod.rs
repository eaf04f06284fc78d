//! Shared by kiln-train's integration tests.

use kiln_models::LlamaConfig;

/// The tiny Llama the training tests start from: vocabulary 32, width 32, 2 layers, 4 query and
/// 2 key/value heads, an untied head. Tests change a field with `LlamaConfig { .., ..tiny_llama() }`.
pub fn tiny_llama() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 32,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        tie_word_embeddings: false,
        ..Default::default()
    }
}
