//! Row-major f32 matrix products on the CPU (the `gemm` crate's kernels, on the rayon pool).

use crate::simd::gemm::{View, gemm_f32};

/// How an operand is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Row-major as the logical matrix.
    Plain,
    /// Row-major as the transpose of the logical matrix (`[cols, rows]` in memory).
    Transposed,
}

fn view(data: &[f32], rows: usize, cols: usize, layout: Layout) -> View<'_> {
    let (row_stride, col_stride) = match layout {
        Layout::Plain => (cols, 1),
        Layout::Transposed => (1, rows),
    };
    View {
        data,
        rows,
        cols,
        row_stride,
        col_stride,
    }
}

/// `c = scale·a·b`, or `c += scale·a·b` when `accumulate`.
///
/// # Shapes
/// - `a`: logical `[m, k]` (stored `[k, m]` when `a_layout` is [`Layout::Transposed`])
/// - `b`: logical `[k, n]` (stored `[n, k]` when transposed)
/// - `c`: `[m, n]`, row-major
///
/// # Panics
/// When a slice is shorter than its shape.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    a_layout: Layout,
    b: &[f32],
    b_layout: Layout,
    [m, k, n]: [usize; 3],
    c: &mut [f32],
    scale: f32,
    accumulate: bool,
) {
    assert!(a.len() >= m * k && b.len() >= k * n, "operands shorter than [{m}, {k}]·[{k}, {n}]");
    gemm_f32(
        view(a, m, k, a_layout),
        view(b, k, n, b_layout),
        c,
        scale,
        accumulate,
        rayon::current_num_threads(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], at: bool, b: &[f32], bt: bool, [m, k, n]: [usize; 3]) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let x = if at { a[p * m + i] } else { a[i * k + p] };
                    let y = if bt { b[j * k + p] } else { b[p * n + j] };
                    s += f64::from(x) * f64::from(y);
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn every_layout_matches_the_naive_product() {
        let mut rng = crate::init::HostRng::new(3);
        for &[m, k, n] in &[[1, 1, 1], [7, 5, 3], [33, 64, 17], [130, 70, 9]] {
            let a = rng.uniform(m * k, -1.0, 1.0);
            let b = rng.uniform(k * n, -1.0, 1.0);
            for (at, bt) in [(false, false), (true, false), (false, true), (true, true)] {
                let la = if at { Layout::Transposed } else { Layout::Plain };
                let lb = if bt { Layout::Transposed } else { Layout::Plain };
                let want = naive(&a, at, &b, bt, [m, k, n]);
                let mut c = vec![1.0f32; m * n];
                matmul(&a, la, &b, lb, [m, k, n], &mut c, 2.0, true);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - (1.0 + 2.0 * w)).abs() < 1e-4, "{m}x{k}x{n} {at} {bt}");
                }
                matmul(&a, la, &b, lb, [m, k, n], &mut c, 1.0, false);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - w).abs() < 1e-4);
                }
            }
        }
    }
}
