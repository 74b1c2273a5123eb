//! # consolidator
//!
//! A pure-Rust, CPU-only deep-learning engine whose first-class operator is the *consolidator*
//! (Hao et al., ICLR 2023): grouped connections trained beside the frozen linear layers of a
//! Vision Transformer, then folded away — first into one sparse delta per layer for storage
//! (stage 1), then into the dense weights for inference (stage 2), so the deployed model is a
//! plain ViT with no extra cost.
//!
//! ## The workflow
//!
//! Load a checkpoint (timm's key names), attach a method, train, consolidate, store the task,
//! merge, check, predict — on a tiny model, in a few seconds:
//!
//! ```
//! use consolidator::prelude::*;
//!
//! # let dir = std::env::temp_dir().join(format!("consolidator-front-page-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! // 1. A checkpoint with timm's key names. (Here a tiny ViT saved by this crate; a timm
//! //    safetensors file loads the same way, with `LoadOptions::arch` naming its architecture.)
//! let cfg = VitConfig { depth: 2, ..VitConfig::preset("vit_mnist_tiny")? };
//! VisionTransformer::new(&cfg, 0)?.save(dir.join("backbone.safetensors"))?;
//! let backbone = Model::load(dir.join("backbone.safetensors"))?;
//!
//! // 2. Attach a method: consolidator branches with 16 and 32 groups beside every FC layer,
//! //    and a fresh 2-class head. The backbone is frozen.
//! let method = Method::parse("consolidator:g=16+32", cfg.embed_dim)?;
//! let mut model = backbone.adapt(&method, 2, 0)?;
//!
//! // 3. Train a few steps on a toy task: bright images against dark ones.
//! let images = Tensor::new(&[16, 1, 28, 28], (0..16 * 784).map(|i| if i / 784 % 2 == 0 { 0.9 } else { -0.9 }).collect())?;
//! let data = Dataset::new(images.clone(), (0..16).map(|i| i % 2).collect(), 2)?;
//! Trainer::new(TrainConfig { epochs: 3, batch_size: 8, ..TrainConfig::default() }).run(&mut model, &data, None)?;
//!
//! // 4. Stage 1: every layer's branches fold into one sparse delta. That file is the task.
//! let delta = consolidate(&model, &backbone.vit)?;
//! delta.save(dir.join("task.safetensors"))?;
//! assert!(delta.storage_bytes() < 4 * backbone.vit.num_params() / 5);
//!
//! // 5. Stage 2: load the task and merge it: a plain ViT, as fast as the backbone.
//! let merged = merge(&backbone, &TaskDelta::load(dir.join("task.safetensors"))?)?.model;
//! assert!(!merged.vit.has_adapters());
//!
//! // 6. Merged and unmerged agree; predict.
//! let (unmerged_logits, merged_logits) = (model.predict(&images)?, merged.predict(&images)?);
//! assert!(merged_logits.max_abs_diff(&unmerged_logits) < 1e-5 * unmerged_logits.max_abs().max(1.0));
//! assert_eq!(merged_logits.shape(), &[16, 2]);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The crate, bottom up
//!
//! | module | what |
//! |---|---|
//! | [`tensor`], [`Error`], [`par`] | `Tensor` (contiguous `f32`, shared storage), the one error type, the thread switch |
//! | [`kernels`] | pure functions on slices, each with a scalar twin: GEMM, grouped connection, softmax, LayerNorm, GELU, elementwise |
//! | [`autograd`] | the tape: [`Tape`](autograd::Tape), [`Var`](autograd::Var), one file per op family, [`gradcheck`](autograd::gradcheck) |
//! | [`algebra`] | exact affine maps (dense, block-diagonal, sparse, low-rank, scale-shift) and [`LayerDelta`](algebra::LayerDelta) |
//! | [`nn`] | the ViT with timm's keys; the seam methods plug into ([`LinearAdapter`](nn::LinearAdapter), [`BlockAdapter`](nn::BlockAdapter)) |
//! | [`peft`] | the methods, one file each: consolidator, LoRA, SSF, AdaptFormer, VPT, BitFit, linear probe, full |
//! | [`model`] | [`Model`](model::Model): load and save plain and adapted models; import of the official PyTorch checkpoints |
//! | [`optim`], [`train`] | AdamW/SGD and schedules; the [`Trainer`](train::Trainer) |
//! | [`reparam`] | stage 1 ([`consolidate`](reparam::consolidate)), the task-delta file, stage 2 ([`merge`](reparam::merge())) |
//! | [`io`], [`data`] | safetensors, JSON, atomic writes; datasets and readers |
//! | [`guide`] | the long-form pages: architecture, autograd, the consolidator, the algebra, robustness |
//! | [`prelude`] | the names the workflow uses |
//!
//! ## Cargo features
//!
//! | feature | default | what it gives | crates it brings |
//! |---|---|---|---|
//! | `rayon` | on | kernels split across threads (results do not depend on the thread count) | `rayon` |
//! | `cli` | on | the `consolidator` binary: per-verb help, Ctrl-C stopping training with a checkpoint | `clap`, `ctrlc` |
//!
//! With `default-features = false` the library is the whole engine on the calling thread, on
//! `matrixmultiply`, `wide`, `rand` and `flate2` (gzip'd MNIST) alone.
//!
//! ## Builds and SIMD
//!
//! `wide` picks its instructions when the crate is compiled: build with
//! `RUSTFLAGS="-C target-cpu=native"` (or `x86-64-v3`) to get AVX2/FMA in the elementwise
//! kernels; the default target is portable and correct, only slower. `matrixmultiply` detects
//! AVX2/FMA at run time on its own.

#![warn(missing_docs)]

pub mod algebra;
pub mod autograd;
/// The workloads of `consolidator bench` and of the criterion benches, and the timers the CLI
/// shares with them. Hidden: a measuring tool for this repository, not a stable API.
#[doc(hidden)]
pub mod bench;
pub mod data;
mod error;
pub mod guide;
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

/// What the workflow above uses, in one `use consolidator::prelude::*;`.
pub mod prelude {
    pub use crate::data::Dataset;
    pub use crate::model::{LoadOptions, Model};
    pub use crate::nn::{Module, VisionTransformer, VitConfig};
    pub use crate::peft::Method;
    pub use crate::reparam::{consolidate, merge, TaskDelta};
    pub use crate::train::{TrainConfig, Trainer};
    pub use crate::{Error, Result, Tensor};
}
pub use error::{Error, Result};
pub use tensor::Tensor;
