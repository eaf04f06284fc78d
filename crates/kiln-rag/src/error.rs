//! The error type of the crate.

use std::path::PathBuf;

/// Errors of the retrieval crate. Each names the file, line, document or argument at fault.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// A file or folder that cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of a JSONL documents file that is not a JSON object with the text field.
    #[error("{path}:{line}: {reason}")]
    Record {
        /// The file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A document given to [`crate::HybridIndex::build`] without a usable text field.
    #[error("document {number}: {reason}")]
    Document {
        /// The document, counted from 1.
        number: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// [`crate::HybridIndex::build`] was given no document.
    #[error("no documents to index")]
    NoDocuments,
    /// A file of an index folder that is missing, unreadable or inconsistent.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedder does not produce vectors of the index's dimension.
    #[error(
        "{path}: the index holds {index}-dimensional embeddings but the embedder produces \
         {embedder}-dimensional ones"
    )]
    Dimension {
        /// The index folder.
        path: PathBuf,
        /// The dimension stored in the index.
        index: usize,
        /// The embedder's dimension.
        embedder: usize,
    },
    /// The output folder exists and is not a kiln index, so it is not overwritten.
    #[error(
        "{path} exists and is not a kiln retrieval index (no meta.json of format `{format}`); \
         refusing to overwrite it"
    )]
    NotAnIndex {
        /// The folder.
        path: PathBuf,
        /// The format name expected in its `meta.json`.
        format: &'static str,
    },
    /// An invalid argument, e.g. `top_k` of 0.
    #[error("{name}: {reason}")]
    Argument {
        /// The argument.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An embedder that returned the wrong number or size of vectors.
    #[error("embedder: {0}")]
    Embedding(String),
    /// The full-text index failed.
    #[error("{path}: full-text index: {source}")]
    Tantivy {
        /// The index folder.
        path: PathBuf,
        /// The underlying error.
        source: Box<tantivy::TantivyError>,
    },
    /// Loading or running the embedding model failed.
    #[error(transparent)]
    Model(#[from] kiln_models::ModelError),
    /// Tokenizing for the embedding model failed.
    #[error(transparent)]
    Tokenizer(#[from] kiln_tokenizer::TokenizerError),
    /// Reading or writing the embeddings file failed.
    #[error(transparent)]
    Tensors(#[from] kiln_nn::NnError),
}

impl RagError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tantivy(path: impl Into<PathBuf>, source: tantivy::TantivyError) -> Self {
        Self::Tantivy {
            path: path.into(),
            source: Box::new(source),
        }
    }
}

/// Result alias of the retrieval crate.
pub type Result<T, E = RagError> = std::result::Result<T, E>;
