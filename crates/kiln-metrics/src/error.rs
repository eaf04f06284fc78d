//! The error type shared by every metric of the crate.

/// Errors of the metrics crate.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum MetricsError {
    /// Two aligned inputs (hypotheses and references, predictions and labels) of different
    /// lengths.
    #[error("{hypotheses} hypotheses but {references} references")]
    LengthMismatch {
        /// Number of hypotheses (predictions).
        hypotheses: usize,
        /// Number of references (gold labels).
        references: usize,
    },
    /// No item to score.
    #[error("nothing to score")]
    Empty,
    /// A hypothesis was given an empty set of references.
    #[error("hypothesis {index} has no reference")]
    NoReference {
        /// Position of the hypothesis in its list.
        index: usize,
    },
    /// A parameter outside of its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// Name of the parameter.
        name: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
}

/// Result alias of the metrics crate.
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;

/// Checks that two aligned lists have the same, non-zero length.
pub(crate) fn check_aligned(hypotheses: usize, references: usize) -> Result<()> {
    if hypotheses != references {
        return Err(MetricsError::LengthMismatch {
            hypotheses,
            references,
        });
    }
    if hypotheses == 0 {
        return Err(MetricsError::Empty);
    }
    Ok(())
}
