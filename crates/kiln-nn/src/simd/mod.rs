//! All `unsafe` code of kiln-nn: the SIMD kernels (AVX2/FMA/F16C, AVX-512 where the CPU has it)
//! and the calls into the `gemm` crate. Every kernel here is reached through a safe function of
//! another module, which checks the CPU's features at run time and the lengths of the slices,
//! and falls back to portable code where the features are missing.
#![allow(unsafe_code)]

pub(crate) mod k_quants_avx2;
pub(crate) mod quant_avx2;
pub(crate) mod quant_f32_avx2;
