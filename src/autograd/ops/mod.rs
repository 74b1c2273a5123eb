//! The ops, one file per family. Each file holds the forward, the backward closure beside it,
//! the math of both in its doc comment, and the family's gradient checks.
//!
//! How to add an op: compute the output with the kernels, then call [`crate::autograd::Tape::op`]
//! with the inputs and a closure that, given `dy`, adds each input's gradient with
//! `Grads::add_with(node, || ...)` (which skips inputs that need none). Add a `gradcheck` test.

pub mod elementwise;
pub mod grouped;
pub mod linear;
pub mod reduce;
