use std::path::PathBuf;

/// Errors of the training crate.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A batch with no position that carries a label.
    #[error("batch has no labelled position (every label is -100)")]
    NoLabels,
    /// A configuration value is invalid.
    #[error("invalid training configuration: field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The loss became NaN or infinite.
    #[error("loss is not finite at step {step}: {value}")]
    NonFiniteLoss {
        /// The optimizer step.
        step: usize,
        /// The value.
        value: f32,
    },
    /// An example longer than the model's learned positions.
    #[error(
        "{set} example {index} has {tokens} tokens, more than the model's {positions} positions \
         (lower data.max_len or drop the example)"
    )]
    TooLong {
        /// Which examples (`training`, `validation`, `evaluation`).
        set: String,
        /// Its index.
        index: usize,
        /// Its length.
        tokens: usize,
        /// The positions the model has.
        positions: usize,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A parameter or optimizer record could not be written, read or applied.
    #[error("record error on `{path}`: {message}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A JSON state file could not be written or parsed.
    #[error("JSON error on `{path}`: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint does not belong to the run that tries to resume from it.
    #[error("cannot resume from `{path}`: {reason}")]
    ResumeMismatch {
        /// The checkpoint directory.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// Another live process holds the output directory's lock.
    #[error(
        "`{path}` is held by process {pid}: another run writes into this output directory \
         (if no such run exists, delete the file)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The owner's process id.
        pid: u32,
    },
    /// The output directory holds the checkpoints of an earlier run, and the run neither
    /// resumes nor overwrites.
    #[error(
        "`{path}` holds checkpoints of an earlier run (newest: step {step}); continue it with \
         `resume` (`kiln train --resume`) or delete them and start over with `overwrite` \
         (`kiln train --overwrite`)"
    )]
    PreviousRun {
        /// The checkpoints directory.
        path: PathBuf,
        /// The newest checkpoint's step.
        step: usize,
    },
    /// A checkpoint file does not match the checksum written with it.
    #[error("checkpoint file `{path}` is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// A restored parameter holds NaN or an infinity.
    #[error("checkpoint `{path}`: parameter `{param}` holds a non-finite value")]
    NonFiniteParam {
        /// The checkpoint's parameter file.
        path: PathBuf,
        /// The parameter's module path.
        param: String,
    },
    /// A user hook (adapter export) failed.
    #[error("adapter export into `{path}` failed: {message}")]
    Export {
        /// The checkpoint directory being written.
        path: PathBuf,
        /// The hook's error message.
        message: String,
    },
    /// Drawing the loss curve failed.
    #[error("plotting `{path}` failed: {message}")]
    Plot {
        /// The image file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Generation failed.
    #[error(transparent)]
    Model(#[from] kiln_models::ModelError),
    /// Scoring failed.
    #[error(transparent)]
    Metrics(#[from] kiln_metrics::MetricsError),
    /// Batching the data failed.
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    /// Reading or writing an adapter failed.
    #[error(transparent)]
    Peft(#[from] kiln_peft::PeftError),
    /// A data-parallel group failed: a peer is missing, died, timed out or disagrees.
    #[error("data-parallel replica {rank} of {world}: {message}")]
    Distributed {
        /// This replica's rank.
        rank: usize,
        /// The group's size.
        world: usize,
        /// What went wrong, naming the peer or the address.
        message: String,
    },
}

impl TrainError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// Wraps a record error with the path it concerns.
    pub(crate) fn record(
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(burn::store::RecordError) -> Self {
        let path = path.into();
        move |e| Self::Record {
            path,
            message: e.to_string(),
        }
    }

    /// Wraps a JSON error with the path it concerns.
    pub(crate) fn json(path: impl Into<PathBuf>) -> impl FnOnce(serde_json::Error) -> Self {
        let path = path.into();
        move |source| Self::Json { path, source }
    }
}

/// Result alias of the training crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
