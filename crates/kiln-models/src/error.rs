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
    /// A layer operation failed (a shape, quantized blocks, a merge, a safetensors file).
    #[error(transparent)]
    Nn(#[from] kiln_nn::NnError),
}

/// Result alias of the models crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
