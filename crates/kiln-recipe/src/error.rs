//! The crate's error type.

use std::path::PathBuf;

/// Errors of reading or running a recipe, or of choosing the device it runs on.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the recipe's fields.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file, or `--set`.
        origin: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A model error.
    #[error(transparent)]
    Model(#[from] kiln_models::ModelError),
    /// A data error.
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    /// A PEFT error.
    #[error(transparent)]
    Peft(#[from] kiln_peft::PeftError),
    /// A layer or file error (e.g. an atomic write).
    #[error(transparent)]
    Nn(#[from] kiln_nn::NnError),
    /// A training error.
    #[error(transparent)]
    Train(#[from] kiln_train::TrainError),
    /// A tokenizer error.
    #[error(transparent)]
    Tokenizer(#[from] kiln_tokenizer::TokenizerError),
    /// The device's backend exists but this build does not include it.
    #[error(
        "backend `{backend}` was not compiled into this build; rebuild with `--features {feature}` \
         (compiled backends: {available})"
    )]
    NotCompiled {
        /// The requested backend.
        backend: String,
        /// The cargo feature that enables it.
        feature: String,
        /// What this build has.
        available: String,
    },
    /// The device string names no known backend or has a malformed index.
    #[error(
        "unknown device `{0}`; expected cpu, flex, ndarray, wgpu, wgpu:cpu, wgpu:N, cuda or cuda:N"
    )]
    UnknownDevice(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, RecipeError>;
