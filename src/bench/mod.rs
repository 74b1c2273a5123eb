//! The `consolidator bench` workloads (the criterion benches in `benches/` mirror them).

pub mod gc;
pub mod gemm;
pub mod peak;
pub mod vit;
