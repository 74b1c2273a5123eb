//! Tape-based reverse-mode automatic differentiation.
//!
//! - [`Tape`] records ops on values that need a gradient; [`Var`] is a value on a tape.
//! - [`Param`]s are put on a tape with [`Tape::param`]; frozen ones become constants.
//! - [`gradcheck`] compares the tape's gradients with finite differences.
//!
//! The ops are methods on [`Var`], defined in `ops/`, one file per family.

mod gradcheck;
pub mod ops;
mod param;
mod tape;

pub use gradcheck::{gradcheck, GradcheckOptions, GradcheckReport};
pub use param::{Param, ParamId};
pub use tape::{BackwardFn, Gradients, Grads, OpTime, Tape, TraceStep, Var};
