//! Shared helpers of kiln's benchmarks (see `benches/*.rs` and `docs/benchmarks.md`).

use std::path::PathBuf;

/// The SmolLM2-135M-Instruct GGUF fetched by `scripts/fetch-assets.sh`, if present.
pub fn smollm2_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

/// The device named by `KILN_DEVICE` (default `cpu`).
///
/// # Panics
/// On an unknown or not-compiled device string.
pub fn bench_device() -> kiln::burn::tensor::Device {
    let spec = std::env::var("KILN_DEVICE").unwrap_or_else(|_| "cpu".into());
    kiln::device::parse_device(&spec).unwrap_or_else(|e| panic!("KILN_DEVICE: {e}"))
}
