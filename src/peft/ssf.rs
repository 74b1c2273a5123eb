//! SSF (Lian et al., 2022): a per-channel scale and shift after a frozen linear layer,
//! `y = γ ⊙ (x·Wᵀ + b) + β`, `γ ~ N(1, 0.02²)`, `β ~ N(0, 0.02²)`. Mergeable: `W' = diag(γ)·W`,
//! `b' = γ ⊙ b + β` (a [`LayerDelta::Post`]).
//!
//! Options: `layers` (default all four FC layers). Keys: `<layer>.ssf_scale`, `<layer>.ssf_shift`.

use super::{AttachCtx, LayerSet, Method, MethodConfig, Options};
use crate::algebra::{f64s, LayerDelta, ScaleShift};
use crate::autograd::{Tape, Var};
use crate::nn::{LinearAdapter, VisionTransformer};
use crate::{module_keys, Param, Result, Tensor};
use std::any::Any;

/// SSF's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SsfConfig {
    /// Which FC layers get a scale and shift.
    pub layers: LayerSet,
}

impl SsfConfig {
    /// Reads `layers`.
    pub fn parse(o: &mut Options, _embed_dim: usize) -> Result<Method> {
        Ok(Method::new(SsfConfig { layers: LayerSet::option(o)?.unwrap_or(LayerSet::ALL) }))
    }
}

impl MethodConfig for SsfConfig {
    fn name(&self) -> &'static str {
        "ssf"
    }
    fn options(&self) -> Vec<String> {
        vec![format!("layers={}", self.layers)]
    }
    fn attach(&self, vit: &mut VisionTransformer, ctx: &mut AttachCtx) -> Result<()> {
        for (key, lin) in vit.fc_layers_mut() {
            if self.layers.contains(&key) {
                let o = lin.out_dim();
                ctx.reserve("ssf", 2 * o)?;
                let mut scale = Tensor::randn(&[o], 0.02, ctx.rng());
                scale.data_mut().iter_mut().for_each(|v| *v += 1.0);
                let shift = Tensor::randn(&[o], 0.02, ctx.rng());
                lin.adapter = Some(Box::new(Ssf { scale: Param::new(scale), shift: Param::new(shift) }));
            }
        }
        Ok(())
    }
    fn mergeable(&self) -> bool {
        true
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// SSF's module after one layer.
#[derive(Clone, Debug)]
pub struct Ssf {
    /// Per-channel scale `γ`, `[O]`.
    pub scale: Param,
    /// Per-channel shift `β`, `[O]`.
    pub shift: Param,
}

module_keys!(Ssf { "ssf_scale" => scale, "ssf_shift" => shift });

impl LinearAdapter for Ssf {
    fn kind(&self) -> &'static str {
        "ssf"
    }
    fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>, w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Var<'t>> {
        let y = x.linear(w, b)?;
        y.mul(&tape.param(&self.scale))?.add(&tape.param(&self.shift))
    }
    fn delta(&self, _weight: &Tensor, _bias: Option<&Tensor>) -> Result<LayerDelta> {
        Ok(LayerDelta::Post(ScaleShift { gamma: f64s(self.scale.value.data()), beta: f64s(self.shift.value.data()) }))
    }
    fn clone_box(&self) -> Box<dyn LinearAdapter> {
        Box::new(self.clone())
    }
}
