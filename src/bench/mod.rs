//! The `consolidator bench` workloads (the criterion benches in `benches/` mirror them).
pub mod gemm;
pub mod peak;
