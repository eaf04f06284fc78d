//! Tokenization for kiln, on top of Hugging Face's `tokenizers` crate, so encodings match the
//! Python `transformers` tokenizers exactly.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};

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
}

/// Result alias of the tokenizer crate.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// A text tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
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
        Ok(Self { inner })
    }

    /// Wraps an existing `tokenizers` tokenizer.
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Self { inner }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_path() {
        let err = Tokenizer::from_file("/nonexistent/tokenizer.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
    }
}
