//! Tokenizers built from the tokenizer metadata of GGUF files (`tokenizer.ggml.*`).
//!
//! A GGUF file carries no `tokenizer.json`: it stores the vocabulary, the merges or scores, the
//! token types and the special token ids under llama.cpp's key names. [`GgufTokenizerSpec`] holds
//! those values (read by any GGUF reader), and
//! [`Tokenizer::from_gguf_spec`](crate::Tokenizer::from_gguf_spec) builds the same tokenizer
//! Hugging Face `transformers` builds from the file
//! (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`):
//!
//! * `gpt2` vocabularies: byte-level BPE with the file's merges, the GPT-2 `ByteLevel`
//!   pre-tokenizer (no prefix space) and decoder, or, for the `tokenizer.ggml.pre` kinds that need
//!   one (`llama-bpe`, `qwen2`, `gpt-4o`...), that vocabulary's split regex before a regex-less
//!   `ByteLevel`;
//! * `llama` (SentencePiece) vocabularies: BPE with byte fallback and merges from the file or, when
//!   it has none, derived from the token scores; `▁` metaspace pre-tokenization (prepended to the
//!   first word only) and the matching decoder; the Gemma and Phi-3 variants are picked by
//!   [`GgufTokenizerSpec::architecture`];
//! * `gemma4` vocabularies: Gemma's SentencePiece BPE, without a BOS.
//!
//! Tokens of type control (3) become special added tokens and tokens of type user-defined (4)
//! plain added tokens, so neither is ever split. The named special tokens (BOS, EOS, unknown,
//! padding) are registered as special, and a BOS and/or EOS is added around encodings as
//! `tokenizer.ggml.add_bos_token` / `add_eos_token` say (SentencePiece vocabularies add a BOS when
//! the file does not say).
//!
//! The files: this one holds the spec; `kind.rs` picks the `transformers` class and split regex
//! for a spec, `merges.rs` reads or derives the BPE merges, `models.rs` builds the BPE model,
//! normalizer, pre-tokenizer and decoder of each class, and `build.rs` checks the spec and
//! assembles the tokenizer with its added tokens and BOS/EOS post-processor
//! (`Tokenizer::from_gguf_spec`).

mod build;
mod kind;
mod merges;
mod models;

use crate::TokenizerError;

/// Token types of `tokenizer.ggml.token_type`, as llama.cpp numbers them.
pub mod token_type {
    /// A regular token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A control token such as `<s>` or `<|im_end|>`: added as a special token.
    pub const CONTROL: i32 = 3;
    /// A user-defined token such as `<think>`: added as a (non-special) added token.
    pub const USER_DEFINED: i32 = 4;
    /// An unused slot.
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token such as `<0x0A>`.
    pub const BYTE: i32 = 6;
}

/// The tokenizer metadata of a GGUF file, as plain values.
///
/// Fill it from a GGUF reader; every field names the key it comes from. Keys a file lacks stay
/// `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufTokenizerSpec {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE), `"llama"` (SentencePiece) or `"gemma4"`.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer kind (`"llama-bpe"`, `"qwen2"`, `"smollm"`...).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: the vocabulary, indexed by token id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: one [`token_type`] per token.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: BPE merges, `"left right"` each, best first.
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.scores`: one score per token (SentencePiece vocabularies).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unknown_token_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub padding_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos_token: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `general.architecture` (`"llama"`, `"gemma3"`, `"phi3"`...): Gemma and Phi-3 files use
    /// variants of the SentencePiece tokenizer.
    pub architecture: Option<String>,
}

impl GgufTokenizerSpec {
    /// A spec with the given model kind and vocabulary, every other field unset.
    pub fn new(model: impl Into<String>, tokens: Vec<String>) -> Self {
        Self {
            model: model.into(),
            tokens,
            ..Self::default()
        }
    }
}

const TOKENS: &str = "tokenizer.ggml.tokens";
const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const MERGES: &str = "tokenizer.ggml.merges";
const SCORES: &str = "tokenizer.ggml.scores";
const MODEL: &str = "tokenizer.ggml.model";

fn spec_error(field: &str, message: impl Into<String>) -> TokenizerError {
    TokenizerError::Spec {
        field: field.to_owned(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests;
