//! Neural-network layers and the Vision Transformer.
//!
//! Every layer's parameters are visited under their timm state-dict key (`blocks.3.attn.qkv.weight`),
//! so checkpoints load with no rename table and no transposes.
//!
//! ```
//! use consolidator::nn::{VisionTransformer, VitConfig};
//! use consolidator::autograd::Tape;
//! use consolidator::Tensor;
//! let cfg = VitConfig::preset("vit_mnist_tiny").unwrap();
//! let vit = VisionTransformer::new(&cfg, 0).unwrap();
//! let tape = Tape::inference();
//! let images = tape.constant(Tensor::zeros(&[2, 1, 28, 28]));
//! let logits = vit.forward(&tape, &images).unwrap();
//! assert_eq!(logits.shape(), &[2, 10]);
//! ```

mod checkpoint;
mod layers;
mod vit;

pub use checkpoint::{resample_pos_embed, LoadReport};
pub use layers::{Attention, LayerNorm, Linear, LinearPeft, Mlp, PatchEmbed};
pub use vit::{Block, Pool, VisionTransformer, VitConfig};

use crate::Param;

/// Something with named parameters (keys are timm state-dict keys).
pub trait Module {
    /// Visits every parameter with its full key (`prefix` + local name).
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param));
    /// Visits every parameter mutably.
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param));

    /// Total number of parameter values.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, p| n += p.numel());
        n
    }
    /// Number of trainable parameter values.
    fn num_trainable(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, p| {
            if p.trainable {
                n += p.numel()
            }
        });
        n
    }
    /// Marks every parameter frozen.
    fn freeze(&mut self) {
        self.visit_mut("", &mut |_, p| p.trainable = false);
    }
    /// `(key, parameter)` pairs in visiting order.
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = Vec::new();
        self.visit("", &mut |k, p| v.push((k.to_string(), p.clone())));
        v
    }
}
