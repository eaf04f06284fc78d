//! The call into the `gemm` crate's f32 kernels (raw pointers and strides).

use gemm::Parallelism;

/// A strided view of a row-major buffer as an `[rows, cols]` matrix.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Element `(i, j)` is `data[i·row_stride + j·col_stride]`.
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View<'_> {
    /// The largest index the view touches, plus one (0 for an empty view).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
    }
}

/// `c = beta·a·b + (accumulate ? c : 0)` with `c` row-major `[a.rows, b.cols]`, on `threads`
/// rayon threads (1: the calling thread only).
pub(crate) fn gemm_f32(a: View<'_>, b: View<'_>, c: &mut [f32], beta: f32, accumulate: bool, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert!(a.extent() <= a.data.len() && b.extent() <= b.data.len());
    assert!(c.len() >= m * n, "output holds {} values, not {m}·{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above keep every element the strides reach inside `a`, `b` and the
    // first `m·n` values of `c`; `c` is exclusively borrowed and does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            beta,
            false,
            false,
            false,
            parallelism,
        );
    }
}
