//! The vectorized exponential.

use crate::simd::{Isa, best_isa, exp::exp_sub_sum};

/// `xs[i] = e^xs[i]` for every element, 8 lanes at a time with AVX2 + FMA, 16 with AVX-512F,
/// portable scalar code on other CPUs.
///
/// Relative error within a few ulp of `f32::exp` for inputs in `[-87.33, 88.72]`; inputs below
/// `-87.33654` (where `eˣ` is no longer a normal `f32`, including `-∞` and masked scores such as
/// `-1e9`) give 0 at full speed, inputs above `88.72283` give `+∞`, NaN stays NaN.
///
/// # Shapes
/// `xs`: any length.
pub fn exp_inplace(xs: &mut [f32]) {
    exp_inplace_with(best_isa(), xs);
}

/// [`exp_inplace`] with the instruction set `isa` (lowered to what the CPU has).
pub(crate) fn exp_inplace_with(isa: Isa, xs: &mut [f32]) {
    exp_sub_sum(isa, xs, 0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::exp::exp_sub_each;

    const ISAS: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// Evenly spaced inputs over `[lo, hi]` plus a few odd lengths' worth of tail.
    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    /// Largest `|ours − exp| / exp` over `xs`, `exp` computed in `f64` and rounded.
    fn max_rel_err(isa: Isa, xs: &[f32]) -> f64 {
        let mut ys = xs.to_vec();
        exp_inplace_with(isa, &mut ys);
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                let want = f64::from(x).exp();
                (f64::from(y) - want).abs() / want
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn every_path_matches_the_exponential_within_two_ulp() {
        // 2 ulp of a value in [1, 2) relative to its size: 2 · 2⁻²³.
        let bound = 2.0 * f64::from(f32::EPSILON);
        let xs = grid(-87.3, 88.72, 1_000_003);
        let small = grid(-1.0, 1.0, 100_001);
        for isa in ISAS {
            let e = max_rel_err(isa, &xs).max(max_rel_err(isa, &small));
            assert!(e < bound, "{isa:?}: relative error {e:e} ≥ {bound:e}");
        }
    }

    #[test]
    fn every_path_handles_the_edges() {
        let xs = [
            f32::NEG_INFINITY,
            -1e9,
            -1e30,
            -100.0,
            -87.4,
            0.0,
            -0.0,
            89.0,
            1e9,
            f32::INFINITY,
            f32::NAN,
        ];
        for isa in ISAS {
            // Lengths 11, 3, 8, 16 and 19 run the full-vector and the tail code of each path.
            for len in [xs.len(), 3, 8, 16, 19] {
                let input: Vec<f32> = xs.iter().cycle().take(len).copied().collect();
                let mut ys = input.clone();
                exp_inplace_with(isa, &mut ys);
                for (x, y) in input.iter().zip(&ys) {
                    if x.is_nan() {
                        assert!(y.is_nan(), "{isa:?}: e^NaN = {y}");
                    } else if *x < -87.34 {
                        assert_eq!(*y, 0.0, "{isa:?}: e^{x}");
                    } else if *x > 88.73 {
                        assert_eq!(*y, f32::INFINITY, "{isa:?}: e^{x}");
                    } else {
                        assert_eq!(*y, x.exp(), "{isa:?}: e^{x}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_fused_forms_subtract_before_the_exponential() {
        let xs = grid(-30.0, 30.0, 37);
        let sub = grid(-5.0, 5.0, 37);
        for isa in ISAS {
            let mut a = xs.clone();
            let total = exp_sub_sum(isa, &mut a, 2.5);
            let mut b = xs.clone();
            exp_sub_each(isa, &mut b, &sub);
            for i in 0..xs.len() {
                let want = f64::from(xs[i] - 2.5).exp();
                assert!((f64::from(a[i]) - want).abs() <= 1e-6 * want, "{isa:?}");
                let want = f64::from(xs[i] - sub[i]).exp();
                assert!((f64::from(b[i]) - want).abs() <= 1e-6 * want, "{isa:?}");
            }
            let want: f64 = xs.iter().map(|x| f64::from(x - 2.5).exp()).sum();
            assert!((f64::from(total) - want).abs() <= 1e-6 * want, "{isa:?}");
        }
    }
}
