//! The block products of the fused attention kernels: `C (+)= A·B` for small row-major `f32`
//! matrices, with an AVX2 + FMA register-blocked micro-kernel (6 rows × 16 columns of `C` in
//! registers) and a portable fallback.

use super::{Isa, usable};

/// `C = A·B` (or `C += A·B` with `acc`) for `A: [m, k]` (row stride `lda`), `B: [k, n]` (row
/// stride `ldb`), `C: [m, n]` (row stride `ldc`), with the instruction set `isa` (lowered to
/// what the CPU has).
///
/// # Panics
/// If `n` is not a multiple of 8, a stride is shorter than its row, or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    isa: Isa,
    acc: bool,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(
        n.is_multiple_of(8),
        "matmul: n = {n} is not a multiple of 8"
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldc >= n && c.len() >= (m - 1) * ldc + n,
        "matmul: C too short"
    );
    if k == 0 {
        if !acc {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        lda >= k && a.len() >= (m - 1) * lda + k,
        "matmul: A too short"
    );
    assert!(
        ldb >= n && b.len() >= (k - 1) * ldb + n,
        "matmul: B too short"
    );
    match usable(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX2 and FMA; the asserts above bound every access of the
        // kernel: rows `< m` of A and C, rows `< k` of B, columns `< k` of A and `< n` of B, C.
        Isa::Avx2 | Isa::Avx512 => unsafe {
            x86::matmul(
                acc,
                m,
                n,
                k,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                c.as_mut_ptr(),
                ldc,
            )
        },
        _ => {
            for i in 0..m {
                let crow = &mut c[i * ldc..i * ldc + n];
                if !acc {
                    crow.fill(0.0);
                }
                for p in 0..k {
                    let av = a[i * lda + p];
                    for (cv, bv) in crow.iter_mut().zip(&b[p * ldb..p * ldb + n]) {
                        *cv += av * bv;
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Rows of `C` per micro-tile.
    const MR: usize = 6;

    /// See [`super::matmul`]; `n` is a multiple of 8.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, and the pointers must hold the matrices.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul(
        acc: bool,
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        // Column panels outside, row tiles inside: one `k × 16` panel of B stays in L1 while
        // every row tile of A passes over it.
        let mut j = 0;
        while j < n {
            let nv = if n - j >= 16 { 2 } else { 1 };
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(MR);
                // SAFETY: rows `i..i + rows < m`, columns `j..j + 8·nv ≤ n`.
                unsafe {
                    let (a, c) = (a.add(i * lda), c.add(i * ldc + j));
                    let b = b.add(j);
                    match (rows, nv) {
                        (6, 2) => tile::<6, 2>(acc, k, a, lda, b, ldb, c, ldc),
                        (5, 2) => tile::<5, 2>(acc, k, a, lda, b, ldb, c, ldc),
                        (4, 2) => tile::<4, 2>(acc, k, a, lda, b, ldb, c, ldc),
                        (3, 2) => tile::<3, 2>(acc, k, a, lda, b, ldb, c, ldc),
                        (2, 2) => tile::<2, 2>(acc, k, a, lda, b, ldb, c, ldc),
                        (1, 2) => tile::<1, 2>(acc, k, a, lda, b, ldb, c, ldc),
                        (6, _) => tile::<6, 1>(acc, k, a, lda, b, ldb, c, ldc),
                        (5, _) => tile::<5, 1>(acc, k, a, lda, b, ldb, c, ldc),
                        (4, _) => tile::<4, 1>(acc, k, a, lda, b, ldb, c, ldc),
                        (3, _) => tile::<3, 1>(acc, k, a, lda, b, ldb, c, ldc),
                        (2, _) => tile::<2, 1>(acc, k, a, lda, b, ldb, c, ldc),
                        _ => tile::<1, 1>(acc, k, a, lda, b, ldb, c, ldc),
                    }
                }
                i += rows;
            }
            j += 8 * nv;
        }
    }

    /// One `R × 8·V` tile of `C` over the whole `k`.
    ///
    /// # Safety
    /// AVX2 + FMA; `a` holds `R` rows of `k`, `b` `k` rows of `8·V`, `c` `R` rows of `8·V`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const V: usize>(
        acc: bool,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut s = [[_mm256_setzero_ps(); V]; R];
        for p in 0..k {
            // SAFETY: `p < k`, `v < V`, `r < R`: inside the tile's rows and columns.
            unsafe {
                let bp = b.add(p * ldb);
                let bv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(bp.add(8 * v)));
                for (r, sr) in s.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r * lda + p));
                    for (sv, bv) in sr.iter_mut().zip(&bv) {
                        *sv = _mm256_fmadd_ps(av, *bv, *sv);
                    }
                }
            }
        }
        for (r, sr) in s.iter().enumerate() {
            for (v, sv) in sr.iter().enumerate() {
                // SAFETY: inside the tile of C.
                unsafe {
                    let cp = c.add(r * ldc + 8 * v);
                    let x = if acc {
                        _mm256_add_ps(_mm256_loadu_ps(cp), *sv)
                    } else {
                        *sv
                    };
                    _mm256_storeu_ps(cp, x);
                }
            }
        }
    }
}
