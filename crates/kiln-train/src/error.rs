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
}

/// Result alias of the training crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
