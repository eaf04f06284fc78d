//! The k-quant super-blocks (Q4_K, Q5_K, Q6_K) against inputs quantized to 16 bits per 32
//! values: the portable loop of [`crate::quant::k_quants::rows_dot_q16`], compiled here with
//! AVX2 enabled so that the compiler vectorizes its integer products (`vpmaddwd` on the
//! widened weight values). Same operations, same order, same result as the portable build.
//!
//! The safe function of [`crate::quant`] calls it only after [`super::quant_avx2::available`]
//! confirmed the CPU features.

use crate::quant::{Q16Input, QuantFormat, k_quants};

/// `out[i·n + j] = W[i] · x[j]` over the whole rows of `data`.
pub(crate) fn rows_dot(
    format: QuantFormat,
    data: &[u8],
    cols: usize,
    xq: &Q16Input,
    out: &mut [f32],
) {
    assert!(super::quant_avx2::available());
    // SAFETY: `available()` confirmed AVX2, FMA and F16C; the body is safe code (bounds-checked
    // slices), only compiled for those features.
    unsafe { rows(format, data, cols, xq, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows(format: QuantFormat, data: &[u8], cols: usize, xq: &Q16Input, out: &mut [f32]) {
    k_quants::rows_dot_q16(format, data, cols, xq, out);
}
