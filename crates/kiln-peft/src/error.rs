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
    /// A projection already holds an adapter of another method.
    #[error("`{path}` already holds a LoRA or IA3 adapter; remove it before attaching another")]
    AdapterConflict {
        /// The projection.
        path: String,
    },
    /// An adapter tensor has the wrong shape for the model.
    #[error("{path}: adapter tensor `{key}`: expected shape {expected:?}, found {got:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// An adapter file lacks a tensor the configuration implies.
    #[error("{path}: missing tensor `{key}` (is the adapter made for another architecture?)")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The missing key.
        key: String,
    },
    /// An adapter file has a tensor the model has no place for.
    #[error(
        "{path}: unexpected tensor `{key}`: no such adapter parameter in this model \
         (is the adapter made for another architecture?)"
    )]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// The unexpected key.
        key: String,
    },
    /// An adapter tensor holds NaN or an infinity.
    #[error("{path}: tensor `{key}` holds a non-finite value ({value} at index {index})")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The first non-finite value.
        value: f32,
        /// Its flat index.
        index: usize,
    },
    /// A tensor's shape contradicts a field of the adapter configuration.
    #[error("{path}: tensor `{key}` has shape {shape:?}, which contradicts `{field}` = {value}")]
    ConfigMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The configuration field.
        field: String,
        /// The field's value.
        value: String,
    },
    /// A safetensors file could not be read or written.
    #[error("{path}: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Merging or unmerging is impossible.
    #[error("cannot merge/unmerge: {0}")]
    Merge(String),
    /// The model does not support this operation.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A layer operation failed (a shape, a merge, a safetensors file).
    #[error(transparent)]
    Nn(#[from] kiln_nn::NnError),
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
    /// An error about the contents of a file (e.g. a configuration that does not fit the model).
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<PeftError>,
    },
}

impl PeftError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the PEFT crate.
pub type Result<T, E = PeftError> = std::result::Result<T, E>;
