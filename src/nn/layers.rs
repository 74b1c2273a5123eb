//! Linear, LayerNorm, PatchEmbed, Attention and Mlp.

use super::adapter::LinearAdapter;
use crate::autograd::ops::linear::DenseLinear;
use crate::autograd::{Tape, Var};
use crate::{module_keys, Error, Param, Result, Tensor};
use rand::Rng;

/// `y = x·Wᵀ + b`, `W: [out, in]` (timm/PyTorch layout), with a slot for a method's module.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Param,
    /// `[out]`, if the layer has one.
    pub bias: Option<Param>,
    /// A method's module that computes this layer's output in its place (see [`LinearAdapter`]).
    pub adapter: Option<Box<dyn LinearAdapter>>,
}

module_keys!(Linear { "weight" => weight, "bias" => bias, "" => adapter });

impl Linear {
    /// timm's ViT init: truncated normal (std 0.02) weight, zero bias.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, rng: &mut impl Rng) -> Self {
        Linear {
            weight: Param::new(Tensor::trunc_normal(&[out_dim, in_dim], 0.02, rng)),
            bias: bias.then(|| Param::new(Tensor::zeros(&[out_dim]))),
            adapter: None,
        }
    }
    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.weight.shape()[1]
    }
    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Forward: the plain layer, or the attached adapter given the layer's weight and bias.
    pub fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>) -> Result<Var<'t>> {
        let w = tape.param(&self.weight);
        let b = self.bias.as_ref().map(|b| tape.param(b));
        match &self.adapter {
            None => x.linear(&w, b.as_ref()),
            Some(a) => a.forward(tape, x, &w, b.as_ref()),
        }
    }

    /// The layer (with its adapter) as one dense map for an input of shape `x_shape`: always
    /// without an adapter, else when the adapter says so ([`LinearAdapter::dense`]).
    pub fn dense<'t>(&self, tape: &'t Tape, x_shape: &[usize]) -> Result<Option<DenseLinear<'t>>> {
        let w = tape.param(&self.weight);
        let b = self.bias.as_ref().map(|b| tape.param(b));
        match &self.adapter {
            None => DenseLinear::new(&w, b.as_ref()).map(Some),
            Some(a) => a.dense(tape, x_shape, &w, b.as_ref()),
        }
    }
}

/// LayerNorm over the last dimension (timm's ViT uses eps 1e-6).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// Scale `γ`, `[C]`.
    pub weight: Param,
    /// Shift `β`, `[C]`.
    pub bias: Param,
    /// Added to the variance (timm's ViT: 1e-6).
    pub eps: f32,
}

impl LayerNorm {
    /// γ = 1, β = 0.
    pub fn new(dim: usize) -> Self {
        LayerNorm { weight: Param::new(Tensor::full(&[dim], 1.0)), bias: Param::new(Tensor::zeros(&[dim])), eps: 1e-6 }
    }
    /// Forward.
    pub fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>) -> Result<Var<'t>> {
        x.layer_norm(&tape.param(&self.weight), &tape.param(&self.bias), self.eps)
    }
}

module_keys!(LayerNorm { "weight" => weight, "bias" => bias });

/// The patch embedding: timm's strided `Conv2d(C, E, kernel = stride = patch)` computed as
/// non-overlapping patches (a gather) followed by one GEMM. `proj.weight: [E, C, ph, pw]`.
#[derive(Clone, Debug)]
pub struct PatchEmbed {
    /// Convolution weight `[C, in_chans, ph, pw]` (timm layout), applied as a linear map on patches.
    pub weight: Param,
    /// `[C]`.
    pub bias: Param,
    /// Patch (height, width).
    pub patch: (usize, usize),
}

impl PatchEmbed {
    /// Random init (truncated normal 0.02, zero bias).
    pub fn new(in_chans: usize, dim: usize, patch: (usize, usize), rng: &mut impl Rng) -> Self {
        PatchEmbed {
            weight: Param::new(Tensor::trunc_normal(&[dim, in_chans, patch.0, patch.1], 0.02, rng)),
            bias: Param::new(Tensor::zeros(&[dim])),
            patch,
        }
    }
    /// `[B, C, H, W] → [B, N, E]`.
    pub fn forward<'t>(&self, tape: &'t Tape, images: &Var<'t>) -> Result<Var<'t>> {
        let [e, c, ph, pw] = self.weight.value.dims::<4>("patch_embed")?;
        let [_, ic, _, _] = images.value().dims::<4>("patch_embed (images [B, C, H, W])")?;
        if ic != c {
            return Err(Error::invalid(
                "patch_embed",
                format!("the model takes {c}-channel images, got {ic} channels"),
            ));
        }
        let w = tape.param(&self.weight).reshape(&[e, c * ph * pw])?;
        images.patchify(ph, pw)?.linear(&w, Some(&tape.param(&self.bias)))
    }
}

module_keys!(PatchEmbed { "proj.weight" => weight, "proj.bias" => bias });

/// Multi-head self-attention with timm's fused `qkv` (rows `[q; k; v]`, head-major).
#[derive(Clone, Debug)]
pub struct Attention {
    /// Packed `C → 3C` projection, rows `[q; k; v]`.
    pub qkv: Linear,
    /// Output projection `C → C`.
    pub proj: Linear,
    /// Number of heads `H`.
    pub heads: usize,
}

impl Attention {
    /// Forward `[B, T, C] → [B, T, C]`.
    pub fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>) -> Result<Var<'t>> {
        let qkv = self.qkv.forward(tape, x)?;
        self.proj.forward(tape, &qkv.attention(self.heads)?)
    }
}

module_keys!(Attention { "qkv." => qkv, "proj." => proj });

/// `fc1 → gelu_erf → fc2`: one fused op when both layers are dense maps on the batch (no
/// adapter, or the consolidator without drop-path): the GELU and its derivative computed inside
/// the GEMMs, the same values as the three ops.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// `C → hidden`.
    pub fc1: Linear,
    /// `hidden → C`.
    pub fc2: Linear,
}

impl Mlp {
    /// Forward.
    pub fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>) -> Result<Var<'t>> {
        let mut hidden = x.shape().to_vec();
        if let Some(last) = hidden.last_mut() {
            *last = self.fc1.out_dim();
        }
        match (self.fc1.dense(tape, x.shape())?, self.fc2.dense(tape, &hidden)?) {
            (Some(fc1), Some(fc2)) => super::fused::mlp_gelu(x, fc1, fc2),
            (Some(fc1), None) => self.fc2.forward(tape, &fc1.record(x)?.gelu_erf()?),
            (None, _) => self.fc2.forward(tape, &self.fc1.forward(tape, x)?.gelu_erf()?),
        }
    }
}

module_keys!(Mlp { "fc1." => fc1, "fc2." => fc2 });
