#!/usr/bin/env bash
# The project's test command (README's second command; .ci/run runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== the crate as published: cargo package, and its docs with warnings as errors"
cargo package --no-verify --locked
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked
echo "== the library alone (no default features: no rayon, no CLI)"
cargo check --lib --no-default-features --locked
echo "== cargo test --release (x86-64-v3: AVX2/FMA)"
cargo test --release --all-targets
cargo test --release --doc
echo "== kernels on a baseline x86-64 target (no AVX2/FMA)"
RUSTFLAGS="-C target-cpu=x86-64" CARGO_TARGET_DIR=target/baseline cargo test --release --test kernels
echo "== every example runs (each takes seconds to a minute)"
for ex in examples/*.rs; do
  echo "-- example $(basename "$ex" .rs)"
  cargo run --release --example "$(basename "$ex" .rs)"
done
