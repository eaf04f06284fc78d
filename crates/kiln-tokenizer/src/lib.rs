//! Tokenization for kiln, on top of Hugging Face's `tokenizers` crate, so encodings match the
//! Python `transformers` tokenizers exactly.
//!
//! A [`Tokenizer`] comes from a `tokenizer.json` ([`Tokenizer::from_file`]), a Hugging Face model
//! directory with its special tokens and chat template ([`Tokenizer::from_hf_dir`]), or the
//! tokenizer metadata of a GGUF file ([`Tokenizer::from_gguf_spec`], see [`gguf`]). It knows its
//! BOS, EOS, unknown and padding tokens and renders conversations with the model's chat template
//! ([`Tokenizer::apply_chat_template`], see [`chat`]). Domain tokens are added with
//! [`Tokenizer::add_tokens`], and [`train_bpe`] trains a byte-level BPE tokenizer on a corpus
//! (see [`vocab`]).
//!
//! ```
//! use kiln_tokenizer::{ChatMessage, GgufTokenizerSpec, Tokenizer};
//!
//! // A byte-level BPE vocabulary; `Ġ` spells the space byte.
//! let tokens = ["<|im_start|>", "<|im_end|>", "h", "i", "hi", "Ġ"];
//! let spec = GgufTokenizerSpec {
//!     token_types: Some(vec![3, 3, 1, 1, 1, 1]),
//!     merges: Some(vec!["h i".into()]),
//!     eos_token_id: Some(1),
//!     chat_template: Some(kiln_tokenizer::CHATML_TEMPLATE.into()),
//!     ..GgufTokenizerSpec::new("gpt2", tokens.map(String::from).to_vec())
//! };
//! let tokenizer = Tokenizer::from_gguf_spec(&spec).unwrap();
//! let ids = tokenizer.encode("<|im_start|>hi hi<|im_end|>", false).unwrap();
//! assert_eq!(ids, [0, 4, 5, 4, 1]);
//! assert_eq!(tokenizer.eos_token_id(), Some(1));
//!
//! let prompt = tokenizer.apply_chat_template(&[ChatMessage::user("hi")], true).unwrap();
//! assert_eq!(prompt, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
//! ```
#![warn(missing_docs)]

pub mod chat;
pub mod gguf;
mod hf;
mod special;
pub mod vocab;

use std::path::{Path, PathBuf};

pub use chat::{CHATML_TEMPLATE, ChatMessage, ChatTemplate, GEMMA_TEMPLATE, SpecialTokens};
pub use gguf::GgufTokenizerSpec;
pub use vocab::{AddedTokens, BpeOptions, train_bpe};

/// Errors of the tokenizer crate.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A `tokenizer.json` that cannot be read or parsed.
    #[error("{path}: cannot load tokenizer: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Codec(String),
    /// A malformed tokenizer description, e.g. GGUF tokenizer metadata.
    #[error("{field}: {message}")]
    Spec {
        /// The offending field, e.g. `tokenizer.ggml.merges`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A chat template that does not compile or fails to render.
    #[error("chat template: {0}")]
    Template(String),
    /// A chat template rejected the conversation by calling `raise_exception(message)`.
    #[error("chat template: {0}")]
    TemplateRaised(String),
    /// [`Tokenizer::apply_chat_template`] on a tokenizer without a chat template.
    #[error("the tokenizer has no chat template (set one with `Tokenizer::with_chat_template`)")]
    NoChatTemplate,
}

/// Result alias of the tokenizer crate.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// A text tokenizer, with its named special tokens and optional chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    chat_template: Option<ChatTemplate>,
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    ///
    /// # Errors
    /// A missing or malformed file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self::from_inner(inner))
    }

    /// Wraps an existing `tokenizers` tokenizer, without special tokens or chat template.
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Self {
            inner,
            special: SpecialTokens::default(),
            chat_template: None,
        }
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (BOS/EOS, `[CLS]`...).
    ///
    /// # Errors
    /// The underlying tokenizer failed.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError::Codec(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of token ids.
    ///
    /// # Errors
    /// The underlying tokenizer failed.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Codec(e.to_string()))
    }

    /// Id of a token, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token of an id, if in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The named special tokens (BOS, EOS, unknown, padding).
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Replaces the named special tokens.
    pub fn with_special_tokens(mut self, special: SpecialTokens) -> Self {
        self.special = special;
        self
    }

    fn id_of(&self, token: Option<&String>) -> Option<u32> {
        token.and_then(|t| self.inner.token_to_id(t))
    }

    /// Id of the beginning-of-sequence token.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.id_of(self.special.bos_token.as_ref())
    }

    /// Id of the end-of-sequence token.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.id_of(self.special.eos_token.as_ref())
    }

    /// Id of the padding token.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.id_of(self.special.pad_token.as_ref())
    }

    /// The id batches are padded with: the padding token, else the end-of-sequence token (padded
    /// positions are masked, so any id works), else 0.
    pub fn padding_id(&self) -> u32 {
        self.pad_token_id().or(self.eos_token_id()).unwrap_or(0)
    }

    /// Id of the unknown token.
    pub fn unk_token_id(&self) -> Option<u32> {
        self.id_of(self.special.unk_token.as_ref())
    }

    /// The chat template, if the tokenizer has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Sets the chat template, e.g. [`ChatTemplate::chatml`] for a tokenizer without one.
    pub fn with_chat_template(mut self, template: ChatTemplate) -> Self {
        self.chat_template = Some(template);
        self
    }

    /// Sets or removes the chat template.
    pub fn set_chat_template(&mut self, template: Option<ChatTemplate>) {
        self.chat_template = template;
    }

    /// Renders a conversation with the chat template, as `transformers`'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` does; the
    /// template sees this tokenizer's special tokens.
    ///
    /// # Errors
    /// [`TokenizerError::NoChatTemplate`] without a template; the template's errors
    /// ([`ChatTemplate::render`]).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.chat_template
            .as_ref()
            .ok_or(TokenizerError::NoChatTemplate)?
            .render(messages, add_generation_prompt, &self.special)
    }

    /// Token ids of a rendered conversation: [`Self::apply_chat_template`] encoded without
    /// adding special tokens (the template writes them), as `apply_chat_template(...,
    /// tokenize=True)` does.
    ///
    /// # Errors
    /// As [`Self::apply_chat_template`] and [`Self::encode`].
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        self.encode(&text, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
        check::<ChatTemplate>();
    }

    #[test]
    fn no_chat_template_is_an_error() {
        let tk = Tokenizer::from_gguf_spec(&GgufTokenizerSpec {
            merges: Some(vec![]),
            ..GgufTokenizerSpec::new("gpt2", vec!["a".into()])
        })
        .unwrap();
        let err = tk.apply_chat_template(&[ChatMessage::user("a")], false);
        assert!(
            matches!(err, Err(TokenizerError::NoChatTemplate)),
            "{err:?}"
        );
        let tk = tk.with_chat_template(ChatTemplate::chatml());
        assert_eq!(
            tk.apply_chat_template(&[ChatMessage::user("a")], false)
                .unwrap(),
            "<|im_start|>user\na<|im_end|>\n"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Tokenizer::from_file("/nonexistent/tokenizer.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
    }
}
