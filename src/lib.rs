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

pub mod autograd;
pub mod bench;
pub mod data;
mod error;
pub mod io;
pub mod kernels;
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
