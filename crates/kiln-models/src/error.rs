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
}

/// Result alias of the models crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
