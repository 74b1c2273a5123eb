//! # consolidator
//!
//! A pure-Rust, CPU-only deep-learning engine whose first-class operator is the *consolidator*
//! (Hao et al., ICLR 2023): grouped connections trained beside the frozen linear layers of a
//! Vision Transformer, then folded away — first into one sparse delta per layer for storage,
//! then into the dense weights for inference.
//!
//! Layers, bottom up: [`tensor`] and [`kernels`] (pure functions on slices), [`autograd`] (the
//! tape), `nn` (the ViT), `peft` (consolidator and baselines), `reparam` (the merge algebra),
//! `io`, `data`, `optim`.
//!
//! To read the engine top to bottom, start with the long-form pages in `docs/`:
//! `ARCHITECTURE.md` (the layers and how data flows), `AUTOGRAD.md` (the tape and every op's
//! backward), `CONSOLIDATOR.md` (the operator and its two consolidation stages, with worked
//! examples) and `REPARAM.md` (the reparameterization algebra).
//!
//! ```
//! use consolidator::autograd::Tape;
//! use consolidator::kernels::grouped::GroupSpec;
//! use consolidator::Tensor;
//! // A frozen 8→8 layer with one grouped-connection branch (g = 2) beside it: one tape node.
//! let tape = Tape::new();
//! let x = tape.constant(Tensor::full(&[2, 3, 8], 0.5)); // [B, T, C]
//! let w = tape.constant(Tensor::full(&[8, 8], 0.1)); // frozen: no weight gradient is computed
//! let spec = GroupSpec::new(8, 8, 2, true)?;
//! let g = tape.var(Tensor::full(&spec.weight_shape(), 0.01)); // [g, O/g, I/g] = [2, 4, 4]
//! let branch = consolidator::autograd::ops::grouped::Branch { spec, weight: &g, bias: None };
//! let y = x.consolidated_linear(&w, None, &[branch], 0.0)?;
//! let grads = y.sum()?.backward()?;
//! assert_eq!(grads.get(&g).unwrap().shape(), &[2, 4, 4]);
//! # Ok::<(), consolidator::Error>(())
//! ```

#![warn(missing_docs)]

pub mod algebra;
pub mod autograd;
pub mod bench;
pub mod data;
mod error;
pub mod io;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod optim;
pub mod par;
pub mod peft;
pub mod reparam;
pub mod tensor;
pub mod train;

pub use autograd::{Param, ParamId};
pub use error::{Error, Result};
pub use tensor::Tensor;
