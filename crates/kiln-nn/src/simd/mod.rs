//! All `unsafe` code of kiln-nn: the SIMD kernels (AVX2/FMA/F16C, AVX-512 where the CPU has it)
//! and the calls into the `gemm` crate. Every kernel here is reached through a safe function of
//! another module, which checks the CPU's features at run time and the lengths of the slices,
//! and falls back to portable code where the features are missing.
#![allow(unsafe_code)]

pub(crate) mod attention;
pub(crate) mod decode;
pub(crate) mod exp;
pub(crate) mod gemm;
pub(crate) mod k_quants_avx2;
pub(crate) mod k_quants_i16;
pub(crate) mod quant_avx2;
pub(crate) mod quant_f32_avx2;
pub(crate) mod quant_i16_avx2;
pub(crate) mod quant_i16_avx512;

use std::sync::OnceLock;

/// The instruction sets the `f32` kernels of [`exp`] and [`attention`] choose from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Portable scalar code (any CPU).
    Scalar,
    /// AVX2 and FMA, 8 lanes.
    Avx2,
    /// AVX-512F (with AVX2 and FMA), 16 lanes.
    Avx512,
}

/// The best instruction set this CPU has (checked once).
pub(crate) fn best_isa() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    })
}

/// `isa`, lowered to what this CPU has: a request for an instruction set the CPU lacks is
/// served by the best one it has.
pub(crate) fn usable(isa: Isa) -> Isa {
    match (isa, best_isa()) {
        (Isa::Scalar, _) | (_, Isa::Scalar) => Isa::Scalar,
        (Isa::Avx512, Isa::Avx512) => Isa::Avx512,
        _ => Isa::Avx2,
    }
}
