use std::path::PathBuf;

/// Errors of the data crate. Each names the file, line and field it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O error with the file it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line that is not valid JSON.
    #[error("{path}:{line}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A record without a required field, or with a field of the wrong type.
    #[error("{path}:{line}: field `{field}`: {reason}")]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A dataset with no usable record.
    #[error("{0}: dataset is empty")]
    Empty(PathBuf),
    /// Examples of different lengths where equal lengths are required.
    #[error("example {index} has {got} tokens but its labels have {labels}")]
    LabelLength {
        /// Index of the example.
        index: usize,
        /// Token count.
        got: usize,
        /// Label count.
        labels: usize,
    },
}

/// Result alias of the data crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
