//! Which `transformers` tokenizer class a GGUF vocabulary is handed to, and the split regex of
//! its `tokenizer.ggml.pre` kind.

use super::{GgufTokenizerSpec, MODEL, spec_error};
use crate::Result;

/// Which `transformers` tokenizer class a GGUF vocabulary is handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `GPT2Tokenizer`: byte-level BPE.
    ByteLevel,
    /// `LlamaTokenizer`: SentencePiece BPE with metaspace.
    Llama,
    /// `LlamaTokenizer` with Phi-3's normalizer instead of the metaspace pre-tokenizer.
    Phi3,
    /// `GemmaTokenizer` on respelled tokens, merges ordered by position.
    Gemma,
    /// `GemmaTokenizer` as it is (`tokenizer.ggml.model = "gemma4"`).
    Gemma4,
}

impl Kind {
    pub(super) fn of(spec: &GgufTokenizerSpec) -> Result<Self> {
        let architecture = spec.architecture.as_deref().unwrap_or_default();
        match spec.model.as_str() {
            "gpt2" => Ok(Self::ByteLevel),
            "llama" => Ok(match architecture {
                "gemma" | "gemma2" | "gemma3" => Self::Gemma,
                "phi3" => Self::Phi3,
                _ => Self::Llama,
            }),
            "gemma4" => Ok(Self::Gemma4),
            other => Err(spec_error(
                MODEL,
                format!("unsupported tokenizer model {other:?} (supported: gpt2, llama, gemma4)"),
            )),
        }
    }

    /// The special tokens the `transformers` class defaults to, in the order it registers them.
    pub(super) fn default_special_tokens(self) -> &'static [&'static str] {
        match self {
            Self::ByteLevel => &["<|endoftext|>"],
            Self::Llama | Self::Phi3 => &["<s>", "</s>", "<unk>"],
            Self::Gemma | Self::Gemma4 => &["<bos>", "<eos>", "<unk>", "<pad>", "<mask>"],
        }
    }
}

/// Split regexes of the `tokenizer.ggml.pre` kinds whose merges were learned on them.
pub(super) fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = concat!(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    const TEKKEN: &str = concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
        r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    const GPT4O: &str = concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    const QWEN2: &str = concat!(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    const QWEN35: &str = concat!(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}",
        r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3,
        "tekken" => TEKKEN,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2,
        "qwen35" => QWEN35,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O,
        _ => return None,
    })
}
