//! Pure functions on slices: no autograd, no files. Each fast kernel has a slow twin beside it
//! (`gemm_naive`, `*_scalar`) that the property tests use as the oracle.

pub mod activation;
pub mod elementwise;
pub mod gemm;
pub mod grouped;
pub mod layernorm;
pub mod softmax;

pub use gemm::{gemm, gemm_batched, gemm_naive, MatRef};
