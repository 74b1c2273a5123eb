//! The seams through which parameter-efficient methods plug into the layers.
//!
//! A method never edits a layer's code. It implements one of these traits and is put in the
//! layer's slot ([`Linear::adapter`](super::Linear::adapter), [`Block::adapter`](super::Block::adapter)):
//!
//! - [`LinearAdapter`] — beside or after one linear layer `y = x·Wᵀ + b`. Its `forward` gets the
//!   input and the layer's own `W` and `b` on the tape, so a method can fuse everything into one
//!   op (the consolidator's `consolidated_linear`) or call `x.linear(w, b)` and add to it (LoRA).
//!   Its optional `dense` says what the layer is as one dense map on a batch, when it is one, so
//!   that the MLP can fuse its GELU into the GEMMs (the consolidator without drop-path).
//!   Its `delta` reports what it does to the layer as an exact [`LayerDelta`] — the stage-1
//!   storage form and what stage 2 folds into the dense weights — or an error when it cannot
//!   merge. As HF PEFT's `LoraLayer` owns `get_delta_weight`, the adapter owns its delta.
//! - [`BlockAdapter`] — in a transformer block: prompt tokens inserted for the block (VPT-deep)
//!   and/or a module beside the MLP (AdaptFormer). Not mergeable.
//!
//! An adapter's parameters are visited by the layer under the layer's prefix, so their keys
//! extend the layer's (`blocks.0.attn.qkv.lora_a.weight`).
//!
//! ```
//! use consolidator::algebra::{LayerDelta, ScaleShift};
//! use consolidator::autograd::{Tape, Var};
//! use consolidator::nn::{Linear, LinearAdapter, Module};
//! use consolidator::{module_keys, Param, Result, Tensor};
//! use rand::SeedableRng;
//!
//! /// A per-output scale after the layer: y = (x·Wᵀ + b) ⊙ s.
//! #[derive(Clone, Debug)]
//! struct OutScale { s: Param }
//! module_keys!(OutScale { "out_scale" => s });
//! impl LinearAdapter for OutScale {
//!     fn kind(&self) -> &'static str { "out-scale" }
//!     fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>, w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Var<'t>> {
//!         x.linear(w, b)?.mul(&tape.param(&self.s))
//!     }
//!     fn delta(&self, _w: &Tensor, _b: Option<&Tensor>) -> Result<LayerDelta> {
//!         let gamma = self.s.value.data().iter().map(|&v| v as f64).collect::<Vec<_>>();
//!         Ok(LayerDelta::Post(ScaleShift { beta: vec![0.0; gamma.len()], gamma }))
//!     }
//!     fn clone_box(&self) -> Box<dyn LinearAdapter> { Box::new(self.clone()) }
//! }
//!
//! let mut layer = Linear::new(3, 2, true, &mut rand::rngs::StdRng::seed_from_u64(0));
//! layer.adapter = Some(Box::new(OutScale { s: Param::new(Tensor::full(&[2], 2.0)) }));
//! let keys: Vec<String> = layer.named_params().into_iter().map(|(k, _)| k).collect();
//! assert_eq!(keys, ["weight", "bias", "out_scale"]);
//! # Ok::<(), consolidator::Error>(())
//! ```

use super::Module;
use crate::algebra::LayerDelta;
use crate::autograd::ops::linear::DenseLinear;
use crate::autograd::{Tape, Var};
use crate::{Result, Tensor};
use std::fmt::Debug;

/// A method's module in a [`Linear`](super::Linear) layer's slot.
pub trait LinearAdapter: Module + Debug + Send + Sync {
    /// The method's short name, for messages (`"consolidator"`, `"lora"`).
    fn kind(&self) -> &'static str;

    /// The layer's output `[.., O]` for input `x: [.., I]`, given the layer's own weight
    /// `w: [O, I]` and bias `b: [O]` (constants on the tape when frozen).
    fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>, w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Var<'t>>;

    /// The same layer as [`forward`](Self::forward) for an input of shape `x_shape`, as one
    /// dense map, when the method is one on this batch (linear in the layer's input, nothing
    /// drawn at random): the consolidator without drop-path. The MLP then runs its GELU inside
    /// that map's GEMMs. Default: `None` (the MLP calls `forward`).
    fn dense<'t>(
        &self,
        _tape: &'t Tape,
        _x_shape: &[usize],
        _w: &Var<'t>,
        _b: Option<&Var<'t>>,
    ) -> Result<Option<DenseLinear<'t>>> {
        Ok(None)
    }

    /// What the adapter does to the layer, exactly (stage 1), relative to the layer's current
    /// weight `[O, I]` and bias `[O]` (given, for methods whose change depends on them); an
    /// error when the method cannot be merged.
    fn delta(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<LayerDelta>;

    /// A boxed copy (models are cloned: one per run, the backbone kept for unmerge).
    fn clone_box(&self) -> Box<dyn LinearAdapter>;
}

/// A method's module in a transformer [`Block`](super::Block)'s slot. Both hooks default to
/// doing nothing.
pub trait BlockAdapter: Module + Debug + Send + Sync {
    /// The method's short name, for messages (`"vpt"`, `"adapter"`).
    fn kind(&self) -> &'static str;

    /// Tokens `[B, P, C]` inserted after the class token for this block only (VPT-deep); the
    /// block removes them from its output.
    fn prompts<'t>(&self, _tape: &'t Tape, _batch: usize, _width: usize) -> Result<Option<Var<'t>>> {
        Ok(None)
    }

    /// Something added to the MLP's output, computed from the MLP's input (AdaptFormer).
    fn beside_mlp<'t>(&self, _tape: &'t Tape, _x: &Var<'t>) -> Result<Option<Var<'t>>> {
        Ok(None)
    }

    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn BlockAdapter>;
}

impl Clone for Box<dyn LinearAdapter> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

impl Clone for Box<dyn BlockAdapter> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

impl super::Keyed for Box<dyn LinearAdapter> {
    fn visit_keyed(&self, key: &str, f: &mut dyn FnMut(&str, &crate::Param)) {
        (**self).visit(key, f)
    }
    fn visit_keyed_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut crate::Param)) {
        (**self).visit_mut(key, f)
    }
}

impl super::Keyed for Box<dyn BlockAdapter> {
    fn visit_keyed(&self, key: &str, f: &mut dyn FnMut(&str, &crate::Param)) {
        (**self).visit(key, f)
    }
    fn visit_keyed_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut crate::Param)) {
        (**self).visit_mut(key, f)
    }
}
