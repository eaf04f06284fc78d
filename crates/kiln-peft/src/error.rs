use std::path::PathBuf;

/// Errors of the PEFT crate.
#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    /// A configuration value is invalid.
    #[error("invalid adapter configuration: field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No module of the model matched the requested targets.
    #[error(
        "no module matched target_modules {targets:?}; available projections include: {available}"
    )]
    NoTargetMatched {
        /// The requested targets.
        targets: Vec<String>,
        /// A sample of the projection names the model offers.
        available: String,
    },
    /// An invalid regular expression in `target_modules`.
    #[error("target_modules regex `{pattern}` is invalid: {source}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// The regex error.
        #[source]
        source: regex::Error,
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
    /// A JSON (de)serialization error with the file it happened on.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result alias of the PEFT crate.
pub type Result<T, E = PeftError> = std::result::Result<T, E>;
