//! The two consolidation stages, for every mergeable method.
//!
//! **Stage 1** ([`consolidate`], adaptation → storage): a trained model becomes a [`TaskDelta`].
//! Each layer's module reports its change through the seam
//! ([`LinearAdapter::delta`](crate::nn::LinearAdapter::delta)): for a consolidator, the sum of
//! its branches as one sparse map on the union of their supports; LoRA its factors; SSF its
//! scale and shift. A change of the layer's own bias is folded in. The other trained tensors
//! (head, LayerNorms, biases, or everything for full fine-tuning) are stored as they are. The
//! delta records a fingerprint of its backbone.
//!
//! **Stage 2** ([`merge()`], loading → inference): the delta is folded into the backbone, giving a
//! plain ViT with the backbone's structure and the task's head. Accumulation is in `f64`, rounded
//! once. [`Merged::unmerge`] returns the backbone from the kept copy (bit-exact).
//! [`attach_delta`] serves stage 1 without merging (each layer applies its delta on the fly).
//!
//! The parts: [`extract`] (stage 1 and the fingerprint), [`format`](mod@format) (the delta file),
//! [`merge`](mod@merge) (stage 2, unmerge, attach).
//!
//! ```
//! use consolidator::model::Model;
//! use consolidator::nn::{VisionTransformer, VitConfig};
//! use consolidator::peft::Method;
//! use consolidator::reparam::{consolidate, merge};
//! use consolidator::Tensor;
//! let cfg = VitConfig { depth: 1, ..VitConfig::preset("vit_mnist_tiny")? };
//! let backbone = Model::plain(VisionTransformer::new(&cfg, 0)?);
//! let method = Method::parse("consolidator", cfg.embed_dim)?; // g = 32 beside all four FC layers
//! let adapted = backbone.adapt(&method, 3, 0)?; // (training would happen here)
//! let delta = consolidate(&adapted, &backbone.vit)?; // stage 1
//! assert_eq!(delta.layers.len(), 4);
//! let merged = merge(&backbone, &delta)?; // stage 2: a plain ViT
//! let images = Tensor::full(&[2, 1, 28, 28], 0.5);
//! let gap = adapted.predict(&images)?.max_abs_diff(&merged.model.predict(&images)?);
//! assert!(gap < 1e-5);
//! # Ok::<(), consolidator::Error>(())
//! ```

pub mod extract;
pub mod format;
pub mod merge;

pub use extract::{consolidate, fingerprint};
pub use format::TaskDelta;
pub use merge::{attach_delta, merge, DeltaAdapter, Merged};
