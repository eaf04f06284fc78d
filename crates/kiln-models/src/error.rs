use std::path::PathBuf;

/// Errors of the models crate.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is missing or invalid.
    #[error("invalid model configuration: field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error with the file it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `config.json` that does not parse.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A GGUF file that is malformed or truncated, or lacks a requested metadata key or tensor.
    /// The message names the field, key or tensor concerned.
    #[error("{path}: {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field, key or tensor.
        message: String,
    },
    /// A checkpoint whose tensors do not match the architecture.
    #[error("{source_name}: tensor `{tensor}`: {reason}")]
    Tensor {
        /// The checkpoint (file or directory).
        source_name: String,
        /// The tensor, by its Hugging Face name.
        tensor: String,
        /// What is wrong (missing, unexpected, shape mismatch, dtype).
        reason: String,
    },
    /// A checkpoint of an architecture kiln does not implement.
    #[error("{path}: unsupported architecture `{architecture}` (supported: {supported})")]
    UnsupportedArchitecture {
        /// The checkpoint.
        path: PathBuf,
        /// What it declares.
        architecture: String,
        /// What kiln supports.
        supported: String,
    },
    /// The tokenizer of a checkpoint could not be built.
    #[error("{path}: tokenizer: {source}")]
    Tokenizer {
        /// The checkpoint.
        path: PathBuf,
        /// The tokenizer error.
        #[source]
        source: kiln_tokenizer::TokenizerError,
    },
    /// A sequence longer than the positions the model learned.
    #[error(
        "a sequence of {tokens} tokens is longer than {model}'s {positions} learned positions \
         (shorten or truncate it)"
    )]
    SequenceTooLong {
        /// Its length, virtual tokens included.
        tokens: usize,
        /// The positions the model has.
        positions: usize,
        /// The architecture.
        model: String,
    },
    /// A vector whose length is not the one required.
    #[error("{what} has {got} dimensions, expected {expected}")]
    Dimension {
        /// What the vector is (e.g. `query embedding`).
        what: String,
        /// The dimension required.
        expected: usize,
        /// The dimension given.
        got: usize,
    },
    /// A prompt and the tokens to generate do not fit in the model's context window.
    #[error(
        "prompt {prompt} has {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}: \
         {} positions, more than the model's context of {context} \
         (shorten the prompt, lower max_new_tokens, or truncate the prompt from the left)",
        prompt_tokens + max_new_tokens
    )]
    ContextLength {
        /// Index of the first prompt that does not fit.
        prompt: usize,
        /// Its length in tokens.
        prompt_tokens: usize,
        /// Tokens to generate.
        max_new_tokens: usize,
        /// Positions the model can take (see `CachedCausalLm::max_context`).
        context: usize,
    },
    /// A layer operation failed (a shape, quantized blocks, a merge, a safetensors file).
    #[error(transparent)]
    Nn(#[from] kiln_nn::NnError),
    /// An error about the contents of a file (e.g. an invalid configuration read from it).
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<ModelError>,
    },
}

impl ModelError {
    /// The error, said of the file `path`.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        Self::InFile {
            path: path.into(),
            source: Box::new(self),
        }
    }
}

/// Result alias of the models crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// `Err(ModelError::InvalidConfig)` naming `field`.
pub(crate) fn invalid_config<T>(field: &str, reason: impl Into<String>) -> Result<T> {
    Err(ModelError::InvalidConfig {
        field: field.into(),
        reason: reason.into(),
    })
}

/// Checks that each named size of a configuration is positive.
///
/// # Errors
/// [`ModelError::InvalidConfig`] naming the first size that is 0.
pub(crate) fn positive_sizes(sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => invalid_config(name, "must be positive"),
        None => Ok(()),
    }
}

/// Parses a `config.json` text, naming the file in errors.
///
/// # Errors
/// [`ModelError::Json`] for malformed JSON or a mistyped field.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &std::path::Path,
) -> Result<T> {
    serde_json::from_str(text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}
