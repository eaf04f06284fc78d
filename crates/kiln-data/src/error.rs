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
    /// A CSV file that cannot be parsed.
    #[error("{path}:{line}: invalid CSV: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number (0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
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
    /// A prompt template that does not parse (e.g. an unclosed `{`).
    #[error("template: {0}")]
    Template(String),
    /// A template placeholder that names a field the record does not have.
    #[error(
        "{path}:{line}: template placeholder `{{{placeholder}}}` has no field `{placeholder}` in the record"
    )]
    Placeholder {
        /// The file of the record.
        path: PathBuf,
        /// 1-based line of the record.
        line: usize,
        /// The placeholder name.
        placeholder: String,
    },
    /// A tokenizer or chat-template error on one record.
    #[error("{path}:{line}: {source}")]
    Tokenizer {
        /// The file of the record.
        path: PathBuf,
        /// 1-based line of the record.
        line: usize,
        /// The tokenizer error.
        #[source]
        source: kiln_tokenizer::TokenizerError,
    },
    /// A tokenizer without a token the configuration needs (EOS, padding...).
    #[error("the tokenizer has no {0} token")]
    MissingSpecialToken(&'static str),
    /// An example longer than the limit while truncation is off.
    #[error(
        "{path}:{line}: example has {len} tokens, more than the limit of {max} (truncation is off)"
    )]
    TooLong {
        /// The file of the record.
        path: PathBuf,
        /// 1-based line of the record.
        line: usize,
        /// Token count.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An invalid configuration value (split ratios, batch size, row length...).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result alias of the data crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
