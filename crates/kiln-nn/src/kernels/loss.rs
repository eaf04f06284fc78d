//! Next-token cross-entropy and its gradient, in place over a slice of logits.

use rayon::prelude::*;

use super::exp::exp_inplace;

/// For each row `i` of `logits`: adds `logsumexp(z_i) − z_i[target_i]` to the returned sum and
/// overwrites the row with its gradient `scale · (softmax(z_i) − onehot(target_i))`.
///
/// # Shapes
/// - `logits`: `[n, vocab]`; `targets`: `[n]`
///
/// # Panics
/// When a target is not below `vocab` or the shapes disagree.
pub fn cross_entropy_grad_inplace(logits: &mut [f32], vocab: usize, targets: &[u32], scale: f32) -> f64 {
    assert_eq!(logits.len(), targets.len() * vocab, "cross_entropy: shapes");
    // Per-row losses summed in row order, so the total does not depend on the thread schedule.
    let losses: Vec<f64> = logits
        .par_chunks_mut(vocab)
        .zip(targets.par_iter())
        .map(|(z, &target)| {
            let target = target as usize;
            assert!(target < vocab, "target {target} is not below the vocabulary size {vocab}");
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let picked = z[target];
            for v in z.iter_mut() {
                *v -= max;
            }
            exp_inplace(z);
            let sum: f64 = z.iter().map(|&v| f64::from(v)).sum();
            let loss = sum.ln() + f64::from(max) - f64::from(picked);
            let k = scale / sum as f32;
            for v in z.iter_mut() {
                *v *= k;
            }
            z[target] -= scale;
            loss
        })
        .collect();
    losses.iter().sum()
}
