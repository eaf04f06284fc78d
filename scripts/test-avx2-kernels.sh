#!/usr/bin/env bash
# Runs the README's test suite with the flex backend's AVX2 matrix kernels, on a CPU that has
# AVX-512 (where the default build picks the AVX-512 kernels at run time).
#
# The gemm crate has no run-time switch between its kernels: the AVX-512 ones exist only when
# the `x86-v4` feature is on (the workspace turns it on, for Burn and for kiln-nn's direct `gemm`
# dependency). This script copies the working tree (tracked and untracked, not ignored files)
# under target/avx2-tree, drops `x86-v4` from the copy's workspace manifest and runs the test
# command there, with its own target directory. kiln's own exp and attention kernels pick their
# instruction set at run time; their unit tests force each one.
# Extra arguments go to `cargo test` (for example `-p kiln-train` or `--no-fail-fast`).
#
#   ./scripts/fetch-assets.sh && ./scripts/test-avx2-kernels.sh
set -euo pipefail
root=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
tree="$root/target/avx2-tree"
rm -rf "$tree"
mkdir -p "$tree"
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$tree")
[ -d "$root/assets" ] && ln -s "$root/assets" "$tree/assets"
sed -i 's/features = \["std", "x86-v4"\]/features = ["std"]/' "$tree/Cargo.toml"
sed -i 's/features = \["std", "rayon", "x86-v4"\]/features = ["std", "rayon"]/' "$tree/Cargo.toml"
if grep -v '^\s*#' "$tree/Cargo.toml" | grep -q '"x86-v4"'; then
  echo "test-avx2-kernels: could not remove x86-v4 from $tree/Cargo.toml" >&2
  exit 1
fi
if grep -q avx512f /proc/cpuinfo 2>/dev/null; then
  echo "test-avx2-kernels: this CPU has AVX-512; the suite runs on gemm's AVX2 kernels" >&2
else
  echo "test-avx2-kernels: this CPU has no AVX-512; the default build already uses AVX2" >&2
fi
cd "$tree"
CARGO_TARGET_DIR="$root/target/avx2" cargo test --workspace --release --features kiln/wgpu "$@"
