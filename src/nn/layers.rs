//! Linear, LayerNorm, PatchEmbed, Attention and Mlp, with their parameter-efficient attachments.

use super::Module;
use crate::autograd::ops::grouped::Branch;
use crate::autograd::{Tape, Var};
use crate::peft::{Consolidator, Lora, Ssf};
use crate::reparam::LayerDelta;
use crate::{Error, Param, Result, Tensor};
use rand::Rng;

/// What is attached to a linear layer by a parameter-efficient method.
#[derive(Clone, Debug, Default)]
pub enum LinearPeft {
    /// A plain layer.
    #[default]
    None,
    /// Grouped-connection branches beside the layer (mergeable).
    Consolidator(Consolidator),
    /// A low-rank update beside the layer (mergeable).
    Lora(Lora),
    /// A per-channel scale and shift after the layer (mergeable).
    Ssf(Ssf),
    /// A stage-1 task delta applied on the fly (inference only; see `reparam::attach_delta`).
    Delta(std::sync::Arc<LayerDelta>),
}

/// `y = x·Wᵀ + b`, `W: [out, in]` (timm/PyTorch layout).
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Param,
    /// `[out]`, if the layer has one.
    pub bias: Option<Param>,
    /// The attached method module, if any.
    pub peft: LinearPeft,
}

impl Linear {
    /// timm's ViT init: truncated normal (std 0.02) weight, zero bias.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, rng: &mut impl Rng) -> Self {
        Linear {
            weight: Param::new(Tensor::trunc_normal(&[out_dim, in_dim], 0.02, rng)),
            bias: bias.then(|| Param::new(Tensor::zeros(&[out_dim]))),
            peft: LinearPeft::None,
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

    /// Forward, including the attached method (drop-path of consolidator branches in training).
    pub fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>) -> Result<Var<'t>> {
        let w = tape.param(&self.weight);
        let b = self.bias.as_ref().map(|b| tape.param(b));
        match &self.peft {
            LinearPeft::None => x.linear(&w, b.as_ref()),
            LinearPeft::Consolidator(c) => {
                let vars: Vec<(Var, Var)> =
                    c.branches.iter().map(|br| (tape.param(&br.weight), tape.param(&br.bias))).collect();
                let branches: Vec<Branch> = c
                    .branches
                    .iter()
                    .zip(&vars)
                    .map(|(br, (g, beta))| Branch { spec: br.spec, weight: g, bias: Some(beta) })
                    .collect();
                x.consolidated_linear(&w, b.as_ref(), &branches, c.drop_path)
            }
            LinearPeft::Lora(l) => {
                let y = x.linear(&w, b.as_ref())?;
                let (a, bb) = (tape.param(&l.a), tape.param(&l.b));
                let d = x.linear(&a, None)?.linear(&bb, None)?.scale(l.scale)?;
                y.add(&d)
            }
            LinearPeft::Ssf(s) => {
                let y = x.linear(&w, b.as_ref())?;
                y.mul(&tape.param(&s.scale))?.add(&tape.param(&s.shift))
            }
            LinearPeft::Delta(d) => {
                if x.requires_grad() || w.requires_grad() {
                    return Err(Error::invalid(
                        "linear",
                        "a stage-1 delta is applied for inference only; merge it to train on top",
                    ));
                }
                let y = x.linear(&w, b.as_ref())?;
                let (rows, _) = x.value().rows_cols();
                let o = self.out_dim();
                let mut out = y.value().data().to_vec();
                match d.as_ref() {
                    LayerDelta::Add(a) => {
                        let xs: Vec<f64> = x.value().data().iter().map(|&v| v as f64).collect();
                        for (v, dv) in out.iter_mut().zip(a.apply(&xs)?) {
                            *v = (*v as f64 + dv) as f32;
                        }
                    }
                    LayerDelta::Post(s) => {
                        for r in 0..rows {
                            for k in 0..o {
                                let v = &mut out[r * o + k];
                                *v = (s.gamma[k] * *v as f64 + s.beta[k]) as f32;
                            }
                        }
                    }
                }
                Ok(tape.constant(Tensor::new(y.shape(), out)?))
            }
        }
    }
}

impl Module for Linear {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        f(&format!("{prefix}weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(&format!("{prefix}bias"), b);
        }
        match &self.peft {
            LinearPeft::None => {}
            LinearPeft::Consolidator(c) => c.visit(prefix, f),
            LinearPeft::Lora(l) => l.visit(prefix, f),
            LinearPeft::Ssf(s) => s.visit(prefix, f),
            LinearPeft::Delta(_) => {}
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&format!("{prefix}weight"), &mut self.weight);
        if let Some(b) = &mut self.bias {
            f(&format!("{prefix}bias"), b);
        }
        match &mut self.peft {
            LinearPeft::None => {}
            LinearPeft::Consolidator(c) => c.visit_mut(prefix, f),
            LinearPeft::Lora(l) => l.visit_mut(prefix, f),
            LinearPeft::Ssf(s) => s.visit_mut(prefix, f),
            LinearPeft::Delta(_) => {}
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

impl Module for LayerNorm {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        f(&format!("{prefix}weight"), &self.weight);
        f(&format!("{prefix}bias"), &self.bias);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&format!("{prefix}weight"), &mut self.weight);
        f(&format!("{prefix}bias"), &mut self.bias);
    }
}

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

impl Module for PatchEmbed {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        f(&format!("{prefix}proj.weight"), &self.weight);
        f(&format!("{prefix}proj.bias"), &self.bias);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&format!("{prefix}proj.weight"), &mut self.weight);
        f(&format!("{prefix}proj.bias"), &mut self.bias);
    }
}

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

impl Module for Attention {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        self.qkv.visit(&format!("{prefix}qkv."), f);
        self.proj.visit(&format!("{prefix}proj."), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        self.qkv.visit_mut(&format!("{prefix}qkv."), f);
        self.proj.visit_mut(&format!("{prefix}proj."), f);
    }
}

/// `fc1 → gelu_erf → fc2`.
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
        self.fc2.forward(tape, &self.fc1.forward(tape, x)?.gelu_erf()?)
    }
}

impl Module for Mlp {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        self.fc1.visit(&format!("{prefix}fc1."), f);
        self.fc2.visit(&format!("{prefix}fc2."), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        self.fc1.visit_mut(&format!("{prefix}fc1."), f);
        self.fc2.visit_mut(&format!("{prefix}fc2."), f);
    }
}
