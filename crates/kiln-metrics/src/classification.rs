//! Classification metrics: accuracy and (macro) F1.
//!
//! The per-class scores follow `sklearn.metrics.precision_recall_fscore_support`: the classes
//! are the labels that occur in `y_true` or `y_pred`, a ratio with a zero denominator is 0, and
//! F1 is `2 tp / (2 tp + fp + fn)`. Macro F1 is the unweighted mean over the classes, as
//! `sklearn.metrics.f1_score(y_true, y_pred, average="macro")`.
//!
//! ```
//! use kiln_metrics::{accuracy, macro_f1};
//!
//! let y_true = ["misfire", "misfire", "lean", "ok"];
//! let y_pred = ["misfire", "lean", "lean", "ok"];
//! assert_eq!(accuracy(&y_true, &y_pred).unwrap(), 0.75);
//! // F1 per class: misfire 2/3, lean 2/3, ok 1
//! assert!((macro_f1(&y_true, &y_pred).unwrap() - 7.0 / 9.0).abs() < 1e-12);
//! ```

use std::collections::HashMap;
use std::hash::Hash;

use crate::error::{Result, check_aligned};

/// Scores of one class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScores<T> {
    /// The class label.
    pub label: T,
    /// `tp / (tp + fp)`, 0 when the class is never predicted.
    pub precision: f64,
    /// `tp / (tp + fn)`, 0 when the class never occurs in `y_true`.
    pub recall: f64,
    /// `2 tp / (2 tp + fp + fn)`.
    pub f1: f64,
    /// Occurrences of the class in `y_true`.
    pub support: usize,
}

/// Fraction of positions where the prediction equals the gold label.
///
/// # Errors
/// [`MetricsError::LengthMismatch`](crate::MetricsError::LengthMismatch) for slices of
/// different lengths, [`MetricsError::Empty`](crate::MetricsError::Empty) for empty slices.
pub fn accuracy<T: PartialEq>(y_true: &[T], y_pred: &[T]) -> Result<f64> {
    check_aligned(y_pred.len(), y_true.len())?;
    let correct = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    Ok(correct as f64 / y_true.len() as f64)
}

/// Per class, in order of first occurrence: (label, true positives, occurrences in `y_true`,
/// occurrences in `y_pred`).
fn class_counts<'a, T: Eq + Hash>(
    y_true: &'a [T],
    y_pred: &'a [T],
) -> Result<Vec<(&'a T, usize, usize, usize)>> {
    check_aligned(y_pred.len(), y_true.len())?;
    let mut index: HashMap<&T, usize> = HashMap::new();
    let mut classes: Vec<(&T, usize, usize, usize)> = Vec::new();
    let mut slot = |label: &'a T| -> usize {
        *index.entry(label).or_insert_with(|| {
            classes.push((label, 0, 0, 0));
            classes.len() - 1
        })
    };
    let true_ids: Vec<usize> = y_true.iter().map(&mut slot).collect();
    let pred_ids: Vec<usize> = y_pred.iter().map(&mut slot).collect();
    for (&t, &p) in true_ids.iter().zip(&pred_ids) {
        classes[t].2 += 1;
        classes[p].3 += 1;
        if t == p {
            classes[t].1 += 1;
        }
    }
    Ok(classes)
}

fn f1(tp: usize, true_sum: usize, pred_sum: usize) -> f64 {
    if true_sum + pred_sum == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (true_sum + pred_sum) as f64
    }
}

/// Precision, recall, F1 and support of every class occurring in `y_true` or `y_pred`, in
/// order of first occurrence (`y_true` first, then `y_pred`).
///
/// # Errors
/// As [`accuracy`].
pub fn per_class_scores<T: Eq + Hash + Clone>(
    y_true: &[T],
    y_pred: &[T],
) -> Result<Vec<ClassScores<T>>> {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(class_counts(y_true, y_pred)?
        .into_iter()
        .map(|(label, tp, true_sum, pred_sum)| ClassScores {
            label: label.clone(),
            precision: ratio(tp, pred_sum),
            recall: ratio(tp, true_sum),
            f1: f1(tp, true_sum, pred_sum),
            support: true_sum,
        })
        .collect())
}

/// Macro-averaged F1: the unweighted mean of the per-class F1 over the classes occurring in
/// `y_true` or `y_pred`.
///
/// # Errors
/// As [`accuracy`].
pub fn macro_f1<T: Eq + Hash>(y_true: &[T], y_pred: &[T]) -> Result<f64> {
    let classes = class_counts(y_true, y_pred)?;
    let sum: f64 = classes.iter().map(|&(_, tp, t, p)| f1(tp, t, p)).sum();
    Ok(sum / classes.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricsError;

    #[test]
    fn perfect_and_disjoint() {
        assert_eq!(macro_f1(&[1usize, 2, 3], &[1, 2, 3]), Ok(1.0));
        assert_eq!(macro_f1(&[1usize, 1], &[2, 2]), Ok(0.0));
        assert_eq!(accuracy(&[1usize, 1], &[2, 2]), Ok(0.0));
    }

    #[test]
    fn predicted_only_labels_count_as_classes() {
        // class 0: tp 1, fn 1 -> f1 2/3; class 9: only predicted -> 0
        let s = per_class_scores(&[0usize, 0], &[0, 9]).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].label, s[1].precision, s[1].recall, s[1].f1),
            (9, 0.0, 0.0, 0.0)
        );
        assert_eq!(s[0].support, 2);
        assert!((s[0].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((macro_f1(&[0usize, 0], &[0, 9]).unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn errors() {
        assert_eq!(accuracy::<u8>(&[], &[]), Err(MetricsError::Empty));
        assert!(matches!(
            macro_f1(&["a"], &["a", "b"]),
            Err(MetricsError::LengthMismatch { .. })
        ));
    }
}
