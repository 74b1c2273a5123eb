//! The long-form pages, readable here and in `docs/` of the repository. Each is read top to
//! bottom with the code open beside it.
//!
//! - [`architecture`]: the layers, how data flows, how to add an op and a method.
//! - [`autograd`]: the tape, from a scalar to attention's backward, with the math of every backward.
//! - [`consolidator`]: grouped connections, the reorder, drop-path, the two stages, storage counts.
//! - [`reparam`]: the reparameterization algebra: why merging is exact, which methods can merge.
//! - [`robustness`]: hostile files, atomic writes, interrupted runs, and how each is tested.
//! - [`scale`]: the budget sweep as independent runs, on one machine or a cluster.
//!
//! Code excerpts on these pages are marked `ignore` here: each is the code of a compiled example
//! (`examples/custom_op.rs`) or function, and `tests/docs.rs` checks that it still is.

#[doc = include_str!("../docs/ARCHITECTURE.md")]
pub mod architecture {}

#[doc = include_str!("../docs/AUTOGRAD.md")]
pub mod autograd {}

#[doc = include_str!("../docs/CONSOLIDATOR.md")]
pub mod consolidator {}

#[doc = include_str!("../docs/REPARAM.md")]
pub mod reparam {}

#[doc = include_str!("../docs/ROBUSTNESS.md")]
pub mod robustness {}

#[doc = include_str!("../docs/SCALE.md")]
pub mod scale {}
