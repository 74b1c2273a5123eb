//! The reparameterization algebra: exact representations of affine maps, and what a method does
//! to one linear layer.
//!
//! - [`affine`]: [`Affine`] maps in five representations (dense, block-diagonal, sparse,
//!   low-rank, scale-shift) and the laws that collapse them (`add`, `compose`, `to_dense`).
//! - [`LayerDelta`]: a method's change to one linear layer, as an exact map: added to the layer
//!   (consolidator branches, LoRA) or applied after it (SSF). It is what a method reports
//!   through the [`crate::nn::LinearAdapter`] seam, what a stage-1 task file stores per layer,
//!   and what stage 2 folds into the dense weights.
//!
//! This module depends on the kernels only (for [`GroupSpec`](crate::kernels::grouped::GroupSpec)), so every layer above — `nn`,
//! `peft`, `reparam` — may use it. Values are `f64`: every `f32` parameter converts exactly and a
//! merged result is rounded to `f32` once.
//!
//! ```
//! use consolidator::algebra::{Affine, Dense, LayerDelta, ScaleShift};
//! // A 2→2 layer y = x·Wᵀ + b, and an SSF delta after it: W' = diag(γ)·W, b' = γ⊙b + β.
//! let base = Dense::from_f32(2, 2, &[1.0, 2.0, 3.0, 4.0], &[0.5, -0.5])?;
//! let delta = LayerDelta::Post(ScaleShift { gamma: vec![2.0, 1.0], beta: vec![0.0, 1.0] });
//! let merged = delta.merge_into(&base)?;
//! assert_eq!(merged.weight, [2.0, 4.0, 3.0, 4.0]);
//! assert_eq!(merged.bias, [1.0, 0.5]);
//! # Ok::<(), consolidator::Error>(())
//! ```

pub mod affine;

pub use affine::{branch_from_f32, f64s, Affine, BlockDiagonal, Dense, LowRank, Pattern, ScaleShift, Sparse};

use crate::{Error, Result};

/// What a method does to one linear layer `y = x·Wᵀ + b` (`W: [O, I]`), exactly.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerDelta {
    /// `W' = W + A`, `b' = b + a` (consolidator branches: sparse; LoRA: low-rank).
    Add(Affine),
    /// `W' = diag(γ)·W`, `b' = γ ⊙ b + β` (SSF).
    Post(ScaleShift),
}

impl LayerDelta {
    /// Output width `O`.
    pub fn out_dim(&self) -> usize {
        match self {
            LayerDelta::Add(a) => a.out_dim(),
            LayerDelta::Post(s) => s.gamma.len(),
        }
    }

    /// Checks that the delta fits a layer of `out_dim × in_dim` (`what` names it in the error).
    pub fn check_fits(&self, what: &str, out_dim: usize, in_dim: usize) -> Result<()> {
        let fits = match self {
            LayerDelta::Add(a) => a.out_dim() == out_dim && a.in_dim() == in_dim,
            LayerDelta::Post(s) => s.gamma.len() == out_dim && s.beta.len() == out_dim,
        };
        if !fits {
            let have = match self {
                LayerDelta::Add(a) => format!("{}x{}", a.out_dim(), a.in_dim()),
                LayerDelta::Post(s) => format!("a scale-shift of width {}", s.gamma.len()),
            };
            return Err(Error::invalid(
                "layer delta",
                format!("{what}: the delta is {have}, the layer {out_dim}x{in_dim}"),
            ));
        }
        Ok(())
    }

    /// Folds a change `Δb` of the layer's *own* bias into the delta (methods that also train the
    /// original bias): `Add`: `a += Δb`; `Post`: `β += γ ⊙ Δb` (since `γ⊙(b+Δb) + β`).
    pub fn shift_bias(&mut self, db: &[f64]) -> Result<()> {
        if db.len() != self.out_dim() {
            return Err(Error::invalid(
                "layer delta",
                format!("a bias change of {} values for a layer of width {}", db.len(), self.out_dim()),
            ));
        }
        match self {
            LayerDelta::Add(a) => a.bias_mut().iter_mut().zip(db).for_each(|(v, d)| *v += d),
            LayerDelta::Post(s) => s.beta.iter_mut().zip(&s.gamma).zip(db).for_each(|((v, g), d)| *v += g * d),
        }
        Ok(())
    }

    /// Stage 2 for one layer: the dense layer `base` with the delta folded in (in `f64`).
    pub fn merge_into(&self, base: &Dense) -> Result<Dense> {
        self.check_fits("merge", base.out_dim, base.in_dim)?;
        let merged = match self {
            LayerDelta::Add(a) => {
                let mut d = base.clone();
                a.add_into(&mut d.weight, &mut d.bias)?;
                d
            }
            LayerDelta::Post(s) => Affine::ScaleShift(s.clone()).compose(&Affine::Dense(base.clone()))?.to_dense(),
        };
        Ok(merged)
    }

    /// Serving stage 1 without merging: given the layer's input rows `x: [R, I]` and its plain
    /// output rows `y: [R, O]`, adds the delta's effect to `y` (accumulated in `f64`).
    pub fn apply_to_output(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        match self {
            LayerDelta::Add(a) => {
                let dy = a.apply(&f64s(x))?;
                if dy.len() != y.len() {
                    return Err(Error::invalid("layer delta", format!("{} outputs for {} values", dy.len(), y.len())));
                }
                for (v, d) in y.iter_mut().zip(dy) {
                    *v = (*v as f64 + d) as f32;
                }
            }
            LayerDelta::Post(s) => {
                let o = s.gamma.len();
                if o == 0 || !y.len().is_multiple_of(o) {
                    return Err(Error::invalid("layer delta", format!("{} values are not rows of {o}", y.len())));
                }
                for row in y.chunks_exact_mut(o) {
                    for ((v, g), b) in row.iter_mut().zip(&s.gamma).zip(&s.beta) {
                        *v = (g * *v as f64 + b) as f32;
                    }
                }
            }
        }
        Ok(())
    }

    /// Bytes the delta takes when stored as `f32` values.
    pub fn storage_bytes(&self) -> usize {
        match self {
            LayerDelta::Add(a) => a.storage_bytes(),
            LayerDelta::Post(s) => 4 * (s.gamma.len() + s.beta.len()),
        }
    }

    /// Whether every value is finite.
    pub fn is_finite(&self) -> bool {
        let all = |v: &[f64]| v.iter().all(|x| x.is_finite());
        match self {
            LayerDelta::Add(Affine::Dense(d)) => all(&d.weight) && all(&d.bias),
            LayerDelta::Add(Affine::BlockDiagonal(b)) => all(&b.blocks) && all(&b.bias),
            LayerDelta::Add(Affine::Sparse(s)) => all(&s.values) && all(&s.bias),
            LayerDelta::Add(Affine::LowRank(l)) => all(&l.a) && all(&l.b) && l.scale.is_finite() && all(&l.bias),
            LayerDelta::Add(Affine::ScaleShift(s)) | LayerDelta::Post(s) => all(&s.gamma) && all(&s.beta),
        }
    }
}

/// The stored token of one grouped-connection branch: its group count, with `r` when the
/// branch reorders its input (`32`, `16r`). Method strings (`consolidator:g=8+16r`) and the
/// sparse patterns of delta files (`grouped 192x64 8,16r`) both use it.
pub fn branch_token(groups: usize, reorder: bool) -> String {
    format!("{groups}{}", if reorder { "r" } else { "" })
}

/// Parses a [`branch_token`]: `(groups, reorder)`.
pub fn parse_branch_token(s: &str) -> Option<(usize, bool)> {
    let (g, reorder) = match s.strip_suffix('r') {
        Some(g) => (g, true),
        None => (s, false),
    };
    if g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((g.parse().ok()?, reorder))
}
