//! Parameter-efficient methods, all on the same engine: the consolidator and the baselines
//! people compare it with (linear probe, full fine-tuning, BitFit, LoRA, AdaptFormer adapters,
//! VPT-deep, SSF). [`Method::apply`] turns a loaded backbone into a model ready to adapt: it
//! freezes what the method freezes, attaches what it adds, and puts a fresh head on top.
//!
//! ```
//! use consolidator::nn::{Module, VisionTransformer, VitConfig};
//! use consolidator::peft::Method;
//! let cfg = VitConfig { depth: 2, ..VitConfig::preset("vit_mnist_tiny")? };
//! let mut vit = VisionTransformer::new(&cfg, 0)?;
//! let total = vit.num_params();
//! Method::parse("consolidator:g=16", cfg.embed_dim)?.apply(&mut vit, 10, 0)?;
//! // Trainable: the branches, the LayerNorms, the FC biases and the new head; frozen: the rest.
//! assert!(vit.num_trainable() * 5 < total);
//! # Ok::<(), consolidator::Error>(())
//! ```

mod methods;
mod official;

pub use methods::{ConsolidatorConfig, Init, LayerSet, Method};
pub use official::import_official;

use crate::autograd::{Tape, Var};
use crate::kernels::grouped::GroupSpec;
use crate::nn::{Linear, Module};
use crate::{Param, Result};

/// One grouped-connection branch: `BD(G)·P·x + β`.
#[derive(Clone, Debug)]
pub struct GroupBranch {
    /// Widths, group count and reorder flag.
    pub spec: GroupSpec,
    /// `[g, O/g, I/g]`.
    pub weight: Param,
    /// `[O]`.
    pub bias: Param,
}

/// A consolidator beside a frozen linear layer: its branches and their drop-path rate.
/// Parameter keys: `<layer>.consolidator.<k>.weight` / `.bias`.
#[derive(Clone, Debug)]
pub struct Consolidator {
    /// The branches, summed into the layer output.
    pub branches: Vec<GroupBranch>,
    /// Drop-path rate of each branch in training.
    pub drop_path: f32,
}

impl Module for Consolidator {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        for (k, b) in self.branches.iter().enumerate() {
            f(&format!("{prefix}consolidator.{k}.weight"), &b.weight);
            f(&format!("{prefix}consolidator.{k}.bias"), &b.bias);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        for (k, b) in self.branches.iter_mut().enumerate() {
            f(&format!("{prefix}consolidator.{k}.weight"), &mut b.weight);
            f(&format!("{prefix}consolidator.{k}.bias"), &mut b.bias);
        }
    }
}

/// LoRA: `x ↦ scale·B·A·x` beside the layer. Keys `<layer>.lora_a.weight` `[r, I]`,
/// `<layer>.lora_b.weight` `[O, r]`.
#[derive(Clone, Debug)]
pub struct Lora {
    /// `A`, `[r, I]`.
    pub a: Param,
    /// `B`, `[O, r]` (zero-initialised).
    pub b: Param,
    /// `α/r`.
    pub scale: f32,
}

impl Module for Lora {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        f(&format!("{prefix}lora_a.weight"), &self.a);
        f(&format!("{prefix}lora_b.weight"), &self.b);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&format!("{prefix}lora_a.weight"), &mut self.a);
        f(&format!("{prefix}lora_b.weight"), &mut self.b);
    }
}

/// SSF: `y ↦ γ ⊙ y + β` after the layer. Keys `<layer>.ssf_scale`, `<layer>.ssf_shift`.
#[derive(Clone, Debug)]
pub struct Ssf {
    /// Per-channel scale `γ`, `[O]`.
    pub scale: Param,
    /// Per-channel shift `β`, `[O]`.
    pub shift: Param,
}

impl Module for Ssf {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        f(&format!("{prefix}ssf_scale"), &self.scale);
        f(&format!("{prefix}ssf_shift"), &self.shift);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&format!("{prefix}ssf_scale"), &mut self.scale);
        f(&format!("{prefix}ssf_shift"), &mut self.shift);
    }
}

/// AdaptFormer: a bottleneck `scale·up(relu(down(x)))` parallel to a block's MLP. Not mergeable
/// (the ReLU sits between the two linear maps).
#[derive(Clone, Debug)]
pub struct Adapter {
    /// `C → dim`.
    pub down: Linear,
    /// `dim → C` (zero-initialised).
    pub up: Linear,
    /// Output scale.
    pub scale: f32,
}

impl Adapter {
    /// Forward.
    pub fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>) -> Result<Var<'t>> {
        self.up.forward(tape, &self.down.forward(tape, x)?.relu()?)?.scale(self.scale)
    }
}

impl Module for Adapter {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        self.down.visit(&format!("{prefix}down."), f);
        self.up.visit(&format!("{prefix}up."), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        self.down.visit_mut(&format!("{prefix}down."), f);
        self.up.visit_mut(&format!("{prefix}up."), f);
    }
}
