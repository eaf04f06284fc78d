use std::path::PathBuf;

/// Errors of the layer crate.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A tensor has the wrong shape for the layer.
    #[error("tensor `{key}`: expected shape {expected:?}, found {got:?}")]
    Shape {
        /// The tensor.
        key: String,
        /// The shape the layer needs.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// Block-quantized weights that do not form a matrix of the stated format and size.
    #[error("invalid {format} blocks: {reason}")]
    QuantizedBlocks {
        /// The block format (`Q4_0`, ...).
        format: String,
        /// What is wrong.
        reason: String,
    },
    /// Merging or unmerging is impossible.
    #[error("cannot merge/unmerge: {0}")]
    Merge(String),
    /// A safetensors file could not be read or written.
    #[error("{path}: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What went wrong.
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
}

impl NnError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the layer crate.
pub type Result<T, E = NnError> = std::result::Result<T, E>;
