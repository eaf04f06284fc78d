//! Elementwise exponential.

/// `x = exp(x)` elementwise.
pub fn exp_inplace(x: &mut [f32]) {
    for v in x {
        *v = v.exp();
    }
}
