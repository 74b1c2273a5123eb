//! Fuzz target `resume`: see `fuzz/bodies.rs` and `docs/ROBUSTNESS.md`.
#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::resume(data));
