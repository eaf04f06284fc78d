//! Language-model metrics: perplexity and token accuracy.

use crate::error::{MetricsError, Result};

/// The label that takes no loss and no score (PyTorch's `ignore_index`, `-100`). kiln-data
/// re-exports it for the batches it builds.
pub const IGNORE_INDEX: i64 = -100;

/// Perplexity from a mean negative log-likelihood in nats: `exp(mean_nll)`.
pub fn perplexity(mean_nll: f64) -> f64 {
    mean_nll.exp()
}

/// Fraction of positions where the predicted id equals the label id, skipping positions whose
/// label is [`IGNORE_INDEX`].
///
/// ```
/// use kiln_metrics::token_accuracy;
/// let acc = token_accuracy(&[5, 7, 9, 1], &[5, 8, -100, 1]).unwrap();
/// assert!((acc - 2.0 / 3.0).abs() < 1e-12);
/// ```
///
/// # Errors
/// [`MetricsError::LengthMismatch`] when the slices differ in length,
/// [`MetricsError::Empty`] when no position is left to score.
pub fn token_accuracy(predictions: &[i64], labels: &[i64]) -> Result<f64> {
    if predictions.len() != labels.len() {
        return Err(MetricsError::LengthMismatch {
            hypotheses: predictions.len(),
            references: labels.len(),
        });
    }
    let (mut correct, mut total) = (0usize, 0usize);
    for (&p, &l) in predictions.iter().zip(labels) {
        if l == IGNORE_INDEX {
            continue;
        }
        total += 1;
        correct += usize::from(p == l);
    }
    if total == 0 {
        return Err(MetricsError::Empty);
    }
    Ok(correct as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_is_exp() {
        assert!((perplexity(0.0) - 1.0).abs() < 1e-12);
        assert!((perplexity(2.0_f64.ln()) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn token_accuracy_ignores_masked_labels() {
        assert_eq!(token_accuracy(&[1, 2, 3], &[1, 2, 3]), Ok(1.0));
        assert_eq!(token_accuracy(&[1, 2, 3], &[-100, 0, 3]), Ok(0.5));
        // a prediction equal to -100 at a masked position does not count either way
        assert_eq!(token_accuracy(&[-100, 4], &[-100, 5]), Ok(0.0));
        assert_eq!(token_accuracy(&[1], &[-100]), Err(MetricsError::Empty));
        assert_eq!(token_accuracy(&[], &[]), Err(MetricsError::Empty));
        assert!(matches!(
            token_accuracy(&[1, 2], &[1]),
            Err(MetricsError::LengthMismatch { .. })
        ));
    }
}
