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

/// `dst[c·ldd + r] = scale · src[r·lds + c]` for `r < rows`, `c < cols`: the transpose of a
/// strided `[rows, cols]` matrix, 8 × 8 blocks in registers with AVX2.
///
/// # Panics
/// If a stride is shorter than its row or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn transpose(
    isa: Isa,
    (rows, cols): (usize, usize),
    src: &[f32],
    lds: usize,
    scale: f32,
    dst: &mut [f32],
    ldd: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        lds >= cols && src.len() >= (rows - 1) * lds + cols,
        "transpose: src too short"
    );
    assert!(
        ldd >= rows && dst.len() >= (cols - 1) * ldd + rows,
        "transpose: dst too short"
    );
    let (mut r8, mut c8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if usable(isa) != Isa::Scalar {
        (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        // SAFETY: `usable` confirmed AVX2; the kernel reads rows `< r8 ≤ rows` and columns
        // `< c8 ≤ cols` of `src` and writes rows `< c8` and columns `< r8` of `dst`, inside the
        // lengths asserted above.
        unsafe { x86::transpose(r8, c8, src.as_ptr(), lds, scale, dst.as_mut_ptr(), ldd) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    // The edges (everything, on the scalar path).
    for r in 0..rows {
        let first = if r < r8 { c8 } else { 0 };
        for c in first..cols {
            dst[c * ldd + r] = scale * src[r * lds + c];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// See [`super::transpose`]; `rows` and `cols` are multiples of 8.
    ///
    /// # Safety
    /// The CPU must have AVX2, and the pointers must hold the matrices.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn transpose(
        rows: usize,
        cols: usize,
        src: *const f32,
        lds: usize,
        scale: f32,
        dst: *mut f32,
        ldd: usize,
    ) {
        let s = _mm256_set1_ps(scale);
        for r0 in (0..rows).step_by(8) {
            for c0 in (0..cols).step_by(8) {
                // SAFETY: rows `r0..r0 + 8 ≤ rows` and columns `c0..c0 + 8 ≤ cols` of `src`,
                // rows `c0..c0 + 8` and columns `r0..r0 + 8` of `dst`.
                unsafe {
                    let x: [__m256; 8] =
                        std::array::from_fn(|i| _mm256_loadu_ps(src.add((r0 + i) * lds + c0)));
                    let t0 = _mm256_unpacklo_ps(x[0], x[1]);
                    let t1 = _mm256_unpackhi_ps(x[0], x[1]);
                    let t2 = _mm256_unpacklo_ps(x[2], x[3]);
                    let t3 = _mm256_unpackhi_ps(x[2], x[3]);
                    let t4 = _mm256_unpacklo_ps(x[4], x[5]);
                    let t5 = _mm256_unpackhi_ps(x[4], x[5]);
                    let t6 = _mm256_unpacklo_ps(x[6], x[7]);
                    let t7 = _mm256_unpackhi_ps(x[6], x[7]);
                    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                    let y = [
                        _mm256_permute2f128_ps::<0x20>(u0, u4),
                        _mm256_permute2f128_ps::<0x20>(u1, u5),
                        _mm256_permute2f128_ps::<0x20>(u2, u6),
                        _mm256_permute2f128_ps::<0x20>(u3, u7),
                        _mm256_permute2f128_ps::<0x31>(u0, u4),
                        _mm256_permute2f128_ps::<0x31>(u1, u5),
                        _mm256_permute2f128_ps::<0x31>(u2, u6),
                        _mm256_permute2f128_ps::<0x31>(u3, u7),
                    ];
                    for (j, y) in y.iter().enumerate() {
                        _mm256_storeu_ps(dst.add((c0 + j) * ldd + r0), _mm256_mul_ps(*y, s));
                    }
                }
            }
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    /// Every shape class of the micro-kernel (row tails 1–5, one or two vectors of columns,
    /// strides past the rows) against the definition, overwriting and accumulating.
    #[test]
    fn the_products_match_the_definition() {
        for isa in [Isa::Scalar, Isa::Avx2] {
            for (m, n, k) in [
                (1, 8, 1),
                (5, 24, 3),
                (6, 16, 64),
                (13, 40, 7),
                (16, 64, 256),
            ] {
                let (lda, ldb, ldc) = (k + 3, n + 8, n + 16);
                let a = values(m * lda, 1);
                let b = values(k * ldb, 2);
                let c0 = values(m * ldc, 3);
                for acc in [false, true] {
                    let mut c = c0.clone();
                    matmul(isa, acc, (m, n, k), &a, lda, &b, ldb, &mut c, ldc);
                    for i in 0..m {
                        for j in 0..ldc {
                            let want = if j < n {
                                let s: f32 = (0..k).map(|p| a[i * lda + p] * b[p * ldb + j]).sum();
                                s + if acc { c0[i * ldc + j] } else { 0.0 }
                            } else {
                                c0[i * ldc + j]
                            };
                            let got = c[i * ldc + j];
                            assert!(
                                (got - want).abs() <= 1e-5,
                                "{isa:?} {m}x{n}x{k} [{i},{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_transpose_matches_the_definition() {
        for isa in [Isa::Scalar, Isa::Avx2] {
            for (rows, cols) in [(1, 1), (8, 8), (13, 21), (64, 256), (45, 12)] {
                let (lds, ldd) = (cols + 5, rows + 3);
                let src = values(rows * lds, 4);
                let mut dst = vec![9.0; cols * ldd];
                transpose(isa, (rows, cols), &src, lds, 0.5, &mut dst, ldd);
                for c in 0..cols {
                    for r in 0..ldd {
                        let want = if r < rows {
                            0.5 * src[r * lds + c]
                        } else {
                            9.0
                        };
                        assert_eq!(dst[c * ldd + r], want, "{isa:?} {rows}x{cols} [{c},{r}]");
                    }
                }
            }
        }
    }
}
