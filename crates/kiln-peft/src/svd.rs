//! The leading singular triplets of a small dense matrix, on the host in `f64` (for PiSSA's
//! initialization): exact through a Jacobi eigen-decomposition of the Gram matrix, or fast
//! through randomized subspace iteration (Halko et al.), like `torch.svd_lowrank`.

/// The `r` largest singular triplets of `w` (`[rows, cols]`, row-major):
/// `(left [rows, r], sigma [r], right [r, cols])`, with `w ≈ left·diag(sigma)·right`.
/// `niter: None` is exact; `Some(n)` uses `n` power iterations on a random subspace.
pub(crate) fn top_singular(
    w: &[f32],
    rows: usize,
    cols: usize,
    r: usize,
    niter: Option<usize>,
    seed: u64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let w: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    let r = r.min(rows).min(cols);
    match niter {
        None => exact(&w, rows, cols, r),
        Some(n) => randomized(&w, rows, cols, r, n, seed),
    }
}

/// `a [m, k] · b [k, n]`.
fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            if x == 0.0 {
                continue;
            }
            let row = &b[p * n..(p + 1) * n];
            for (o, y) in out[i * n..(i + 1) * n].iter_mut().zip(row) {
                *o += x * y;
            }
        }
    }
    out
}

fn transpose(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut t = vec![0.0; a.len()];
    for i in 0..m {
        for j in 0..n {
            t[j * m + i] = a[i * n + j];
        }
    }
    t
}

/// Eigen-decomposition of a symmetric `[n, n]` matrix by cyclic Jacobi rotations: eigenvalues
/// (descending) and eigenvectors as columns of `[n, n]`.
fn jacobi_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = (0..n)
            .map(|i| a[i * n + i] * a[i * n + i])
            .sum::<f64>()
            .max(1e-300);
        if off <= 1e-26 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let vals = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vecs = vec![0.0; n * n];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..n {
            vecs[k * n + new] = v[k * n + old];
        }
    }
    (vals, vecs)
}

/// From the left singular vectors `u` (`[rows, r]` columns) of `w`: `(u, sigma, right)`.
fn complete_from_left(
    w: &[f64],
    rows: usize,
    cols: usize,
    u: Vec<f64>,
    r: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    // right = diag(1/σ)·uᵀ·w, σ = ‖uᵀ·w‖ per row
    let ut = transpose(&u, rows, r);
    let mut right = matmul(&ut, w, r, rows, cols);
    let mut sigma = vec![0.0; r];
    for i in 0..r {
        let row = &mut right[i * cols..(i + 1) * cols];
        let s = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        sigma[i] = s;
        if s > 0.0 {
            row.iter_mut().for_each(|x| *x /= s);
        }
    }
    (u, sigma, right)
}

fn exact(w: &[f64], rows: usize, cols: usize, r: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    if rows <= cols {
        // w·wᵀ = U Σ² Uᵀ
        let g = matmul(w, &transpose(w, rows, cols), rows, cols, rows);
        let (_, vecs) = jacobi_eigen(g, rows);
        let u: Vec<f64> = (0..rows)
            .flat_map(|k| vecs[k * rows..k * rows + r].to_vec())
            .collect();
        complete_from_left(w, rows, cols, u, r)
    } else {
        // wᵀ·w = V Σ² Vᵀ; left = w·v / σ
        let wt = transpose(w, rows, cols);
        let (right_t, sigma, left_t) = exact(&wt, cols, rows, r);
        // wᵀ ≈ right_t·Σ·left_t  ⇒  w ≈ left_tᵀ·Σ·right_tᵀ
        (
            transpose(&left_t, r, rows),
            sigma,
            transpose(&right_t, cols, r),
        )
    }
}

/// Orthonormalizes the columns of `[m, k]` in place (Gram-Schmidt, twice for stability); columns
/// that are numerically dependent on earlier ones become zero.
fn orthonormalize(q: &mut [f64], m: usize, k: usize) {
    for j in 0..k {
        let before = (0..m)
            .map(|i| q[i * k + j] * q[i * k + j])
            .sum::<f64>()
            .sqrt();
        for _pass in 0..2 {
            for p in 0..j {
                let dot: f64 = (0..m).map(|i| q[i * k + j] * q[i * k + p]).sum();
                for i in 0..m {
                    q[i * k + j] -= dot * q[i * k + p];
                }
            }
        }
        let norm = (0..m)
            .map(|i| q[i * k + j] * q[i * k + j])
            .sum::<f64>()
            .sqrt();
        let scale = if norm > 1e-10 * before.max(1e-300) {
            1.0 / norm
        } else {
            0.0
        };
        for i in 0..m {
            q[i * k + j] *= scale;
        }
    }
}

fn randomized(
    w: &[f64],
    rows: usize,
    cols: usize,
    r: usize,
    niter: usize,
    seed: u64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let k = (r + 10).min(rows).min(cols);
    let mut rng = kiln_nn::init::HostRng::new(seed);
    let omega: Vec<f64> = rng
        .normal(cols * k, 1.0)
        .into_iter()
        .map(f64::from)
        .collect();
    let wt = transpose(w, rows, cols);
    let mut q = matmul(w, &omega, rows, cols, k);
    orthonormalize(&mut q, rows, k);
    for _ in 0..niter {
        let mut z = matmul(&wt, &q, cols, rows, k);
        orthonormalize(&mut z, cols, k);
        q = matmul(w, &z, rows, cols, k);
        orthonormalize(&mut q, rows, k);
    }
    // b = qᵀ·w [k, cols]; b = Û Σ V; left = q·Û
    let b = matmul(&transpose(&q, rows, k), w, k, rows, cols);
    let (u_small, sigma, right) = exact(&b, k, cols, r);
    let left = matmul(&q, &u_small, rows, k, r);
    (left, sigma, right)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconstruct(
        l: &[f64],
        s: &[f64],
        rt: &[f64],
        rows: usize,
        cols: usize,
        r: usize,
    ) -> Vec<f64> {
        let mut ls = l.to_vec();
        for i in 0..rows {
            for j in 0..r {
                ls[i * r + j] *= s[j];
            }
        }
        matmul(&ls, rt, rows, r, cols)
    }

    #[test]
    fn recovers_a_known_low_rank_matrix() {
        // w = 3·a·bᵀ + 1·c·dᵀ with orthonormal a ⟂ c, b ⟂ d.
        let (rows, cols) = (4, 6);
        let a = [0.5, 0.5, 0.5, 0.5];
        let c = [0.5, -0.5, 0.5, -0.5];
        let b = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let d = [0.0, 0.6, 0.8, 0.0, 0.0, 0.0];
        let w: Vec<f32> = (0..rows * cols)
            .map(|k| (3.0 * a[k / cols] * b[k % cols] + c[k / cols] * d[k % cols]) as f32)
            .collect();
        for (shape, niter) in [((rows, cols), None), ((rows, cols), Some(4))] {
            let (l, s, rt) = top_singular(&w, shape.0, shape.1, 2, niter, 0);
            assert!(
                (s[0] - 3.0).abs() < 1e-6 && (s[1] - 1.0).abs() < 1e-6,
                "{s:?}"
            );
            let back = reconstruct(&l, &s, &rt, rows, cols, 2);
            for (x, y) in back.iter().zip(&w) {
                assert!((x - f64::from(*y)).abs() < 1e-6);
            }
        }
        // Tall matrices go through wᵀ.
        let wt: Vec<f32> = (0..rows * cols)
            .map(|k| w[(k % rows) * cols + k / rows])
            .collect();
        let (_, s, _) = top_singular(&wt, cols, rows, 1, None, 0);
        assert!((s[0] - 3.0).abs() < 1e-6);
    }
}
