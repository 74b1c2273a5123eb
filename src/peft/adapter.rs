//! AdaptFormer (Chen et al., 2022): a bottleneck `scale·up(relu(down(x)))` parallel to each
//! block's MLP, reading the MLP's input. `up` starts at zero. Not mergeable (the ReLU sits
//! between the two linear maps).
//!
//! Options: `dim` (bottleneck width, default 8), `scale` (default 0.1).
//! Keys: `blocks.N.adapter.down.{weight,bias}`, `blocks.N.adapter.up.{weight,bias}`.

use super::{AttachCtx, Method, MethodConfig, Options};
use crate::autograd::{Tape, Var};
use crate::nn::{BlockAdapter, Linear, VisionTransformer};
use crate::{module_keys, Error, Result, Tensor};
use std::any::Any;

/// AdaptFormer's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    /// Bottleneck width.
    pub dim: usize,
    /// Output scale.
    pub scale: f32,
}

impl AdapterConfig {
    /// Reads `dim`, `scale`.
    pub fn parse(o: &mut Options, _embed_dim: usize) -> Result<Method> {
        Ok(Method::new(AdapterConfig {
            dim: o.whole("dim", 1, 1 << 16)?.unwrap_or(8),
            scale: o.number("scale", -1e6, 1e6, (false, false))?.unwrap_or(0.1),
        }))
    }
}

impl MethodConfig for AdapterConfig {
    fn name(&self) -> &'static str {
        "adapter"
    }
    fn options(&self) -> Vec<String> {
        vec![format!("dim={}", self.dim), format!("scale={}", self.scale)]
    }
    fn attach(&self, vit: &mut VisionTransformer, ctx: &mut AttachCtx) -> Result<()> {
        let (d, dim) = (self.dim, vit.config.embed_dim);
        if d == 0 || d > dim {
            return Err(Error::invalid("adapter", format!("bottleneck width {d} must be in 1..={dim}")));
        }
        for b in &mut vit.blocks {
            ctx.reserve("adapter", 2 * d * dim + d + dim)?;
            // Drawn in this order (the initial weights are replaced below) so seeded runs repeat.
            let mut up = Linear::new(d, dim, true, ctx.rng());
            up.weight.value = Tensor::zeros(&[dim, d]);
            let bound = 1.0 / (dim as f32).sqrt();
            let mut down = Linear::new(dim, d, true, ctx.rng());
            down.weight.value = Tensor::rand_uniform(&[d, dim], -bound, bound, ctx.rng());
            b.adapter = Some(Box::new(AdaptFormer { down, up, scale: self.scale }));
        }
        Ok(())
    }
    fn mergeable(&self) -> bool {
        false
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The bottleneck beside one block's MLP.
#[derive(Clone, Debug)]
pub struct AdaptFormer {
    /// `C → dim`.
    pub down: Linear,
    /// `dim → C` (zero-initialised).
    pub up: Linear,
    /// Output scale.
    pub scale: f32,
}

module_keys!(AdaptFormer { "adapter.down." => down, "adapter.up." => up });

impl BlockAdapter for AdaptFormer {
    fn kind(&self) -> &'static str {
        "adapter"
    }
    fn beside_mlp<'t>(&self, tape: &'t Tape, x: &Var<'t>) -> Result<Option<Var<'t>>> {
        Ok(Some(self.up.forward(tape, &self.down.forward(tape, x)?.relu()?)?.scale(self.scale)?))
    }
    fn clone_box(&self) -> Box<dyn BlockAdapter> {
        Box::new(self.clone())
    }
}
