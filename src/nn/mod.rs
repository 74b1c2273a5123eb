//! Neural-network layers and the Vision Transformer.
//!
//! Every layer's parameters are visited under their timm state-dict key (`blocks.3.attn.qkv.weight`),
//! so checkpoints load with no rename table and no transposes.
//!
//! `nn` names no parameter-efficient method. Methods plug in through two seams defined here
//! ([`adapter`]): a [`LinearAdapter`] sits in a [`Linear`] layer's slot and computes the layer's
//! output from the input and the layer's own weight and bias (the consolidator's branches,
//! LoRA, SSF); a [`BlockAdapter`] sits in a [`Block`] and may add prompt tokens or a module
//! beside the MLP (VPT, AdaptFormer). The methods themselves live in the `peft` module, above this one.
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

pub mod adapter;
mod checkpoint;
mod fused;
mod layers;
mod vit;

pub use adapter::{BlockAdapter, LinearAdapter};
pub use checkpoint::{resample_pos_embed, LoadReport};
pub use layers::{Attention, LayerNorm, Linear, Mlp, PatchEmbed};
pub use vit::{Block, Pool, VisionTransformer, VitConfig};

use crate::Param;

/// Something with named parameters (keys are timm state-dict keys).
///
/// Implement it with [`module_keys!`](crate::module_keys), which names each key once and
/// writes both visitors.
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
    /// `(key, parameter)` pairs in visiting order (cheap: parameters share their storage).
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = Vec::new();
        self.visit("", &mut |k, p| v.push((k.to_string(), p.clone())));
        v
    }
}

/// A field of a module as [`module_keys!`](crate::module_keys) visits it: a [`Param`] is visited under its key, a
/// sub-module with its key as prefix, an `Option` when present, a `Vec` entry `i` under
/// `key` + `i.` (`blocks.` → `blocks.0.`), a boxed adapter under the key (usually `""`: its
/// keys extend the layer's own).
pub trait Keyed {
    /// Visits under `key`.
    fn visit_keyed(&self, key: &str, f: &mut dyn FnMut(&str, &Param));
    /// Visits mutably under `key`.
    fn visit_keyed_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param));
}

impl Keyed for Param {
    fn visit_keyed(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
        f(key, self)
    }
    fn visit_keyed_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(key, self)
    }
}

impl<T: Keyed> Keyed for Option<T> {
    fn visit_keyed(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
        if let Some(v) = self {
            v.visit_keyed(key, f)
        }
    }
    fn visit_keyed_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        if let Some(v) = self {
            v.visit_keyed_mut(key, f)
        }
    }
}

impl<T: Keyed> Keyed for Vec<T> {
    fn visit_keyed(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
        for (i, v) in self.iter().enumerate() {
            v.visit_keyed(&format!("{key}{i}."), f)
        }
    }
    fn visit_keyed_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        for (i, v) in self.iter_mut().enumerate() {
            v.visit_keyed_mut(&format!("{key}{i}."), f)
        }
    }
}

/// Implements [`Module`](crate::nn::Module) (and [`Keyed`](crate::nn::Keyed)) for a struct from
/// one list of `"key" => field` pairs, so every key is written once. A `Param` field's key is its
/// full local name (`"weight"`); a sub-module's key is its prefix (`"attn."`); a `Vec` of modules
/// is numbered (`"blocks."` → `blocks.0.…`); an adapter slot usually takes `""`.
///
/// ```
/// use consolidator::nn::Module;
/// use consolidator::{module_keys, Param, Tensor};
/// struct Scale { gamma: Param, beta: Option<Param> }
/// module_keys!(Scale { "gamma" => gamma, "beta" => beta });
/// let s = Scale { gamma: Param::new(Tensor::zeros(&[4])), beta: None };
/// let keys: Vec<String> = s.named_params().into_iter().map(|(k, _)| k).collect();
/// assert_eq!(keys, ["gamma"]);
/// ```
#[macro_export]
macro_rules! module_keys {
    ($ty:ty { $($key:literal => $field:ident),* $(,)? }) => {
        impl $crate::nn::Module for $ty {
            fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &$crate::Param)) {
                $( $crate::nn::Keyed::visit_keyed(&self.$field, &format!("{prefix}{}", $key), f); )*
            }
            fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut $crate::Param)) {
                $( $crate::nn::Keyed::visit_keyed_mut(&mut self.$field, &format!("{prefix}{}", $key), f); )*
            }
        }
        impl $crate::nn::Keyed for $ty {
            fn visit_keyed(&self, key: &str, f: &mut dyn FnMut(&str, &$crate::Param)) {
                $crate::nn::Module::visit(self, key, f)
            }
            fn visit_keyed_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut $crate::Param)) {
                $crate::nn::Module::visit_mut(self, key, f)
            }
        }
    };
}
