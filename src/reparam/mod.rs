//! The reparameterization algebra: linear maps that can be collapsed, exactly.
//!
//! [`affine`] holds the representations and their laws (`apply`, `add`, `compose`, `to_dense`,
//! `storage_bytes`).

pub mod affine;

pub use affine::{branch_from_f32, Affine, BlockDiagonal, Dense, LowRank, Pattern, ScaleShift, Sparse};
pub mod stage;

pub use stage::{attach_delta, consolidate, fingerprint, merge, LayerDelta, Merged, TaskDelta};
