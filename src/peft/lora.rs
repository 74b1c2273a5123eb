//! LoRA (Hu et al., 2021): a rank-`r` update `scale·B·A` beside a frozen linear layer,
//! `y = x·Wᵀ + b + scale·(x·Aᵀ)·Bᵀ` with `A: [r, I]` (uniform init), `B: [O, r]` (zero init),
//! `scale = α/r`. Mergeable: the update is a [`LowRank`] map.
//!
//! Options: `r` (rank, default 4), `alpha` (default 4), `layers` (default all four FC layers).
//! Keys: `<layer>.lora_a.weight`, `<layer>.lora_b.weight`.

use super::{AttachCtx, LayerSet, Method, MethodConfig, Options};
use crate::algebra::{f64s, Affine, LayerDelta, LowRank};
use crate::autograd::{Tape, Var};
use crate::nn::{LinearAdapter, VisionTransformer};
use crate::{module_keys, Error, Param, Result, Tensor};
use std::any::Any;

/// LoRA's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the update.
    pub rank: usize,
    /// Scale numerator: the update is multiplied by `alpha / rank`.
    pub alpha: f32,
    /// Which FC layers get an update.
    pub layers: LayerSet,
}

impl LoraConfig {
    /// Reads `r`, `alpha`, `layers`.
    pub fn parse(o: &mut Options, _embed_dim: usize) -> Result<Method> {
        Ok(Method::new(LoraConfig {
            rank: o.whole("r", 1, 1 << 16)?.unwrap_or(4),
            alpha: o.number("alpha", 0.0, 1e6, (true, false))?.unwrap_or(4.0),
            layers: LayerSet::option(o)?.unwrap_or(LayerSet::ALL),
        }))
    }
}

impl MethodConfig for LoraConfig {
    fn name(&self) -> &'static str {
        "lora"
    }
    fn options(&self) -> Vec<String> {
        vec![format!("r={}", self.rank), format!("alpha={}", self.alpha), format!("layers={}", self.layers)]
    }
    fn attach(&self, vit: &mut VisionTransformer, ctx: &mut AttachCtx) -> Result<()> {
        let r = self.rank;
        let widest = vit.fc_layers().iter().map(|(_, l)| l.in_dim().min(l.out_dim())).max().unwrap_or(0);
        if r == 0 || r > widest {
            return Err(Error::invalid("lora", format!("rank {r} must be in 1..={widest} (a layer's smaller width)")));
        }
        for (key, lin) in vit.fc_layers_mut() {
            if self.layers.contains(&key) {
                let (i, o) = (lin.in_dim(), lin.out_dim());
                ctx.reserve("lora", r * (i + o))?;
                let bound = 1.0 / (i as f32).sqrt();
                lin.adapter = Some(Box::new(Lora {
                    a: Param::new(Tensor::rand_uniform(&[r, i], -bound, bound, ctx.rng())),
                    b: Param::new(Tensor::zeros(&[o, r])),
                    scale: self.alpha / r as f32,
                }));
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

/// LoRA's module beside one layer.
#[derive(Clone, Debug)]
pub struct Lora {
    /// `A`, `[r, I]`.
    pub a: Param,
    /// `B`, `[O, r]` (zero-initialised).
    pub b: Param,
    /// `α/r`.
    pub scale: f32,
}

module_keys!(Lora { "lora_a.weight" => a, "lora_b.weight" => b });

impl LinearAdapter for Lora {
    fn kind(&self) -> &'static str {
        "lora"
    }
    fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>, w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Var<'t>> {
        let y = x.linear(w, b)?;
        let (a, bb) = (tape.param(&self.a), tape.param(&self.b));
        let d = x.linear(&a, None)?.linear(&bb, None)?.scale(self.scale)?;
        y.add(&d)
    }
    fn delta(&self, _weight: &Tensor, _bias: Option<&Tensor>) -> Result<LayerDelta> {
        let [rank, in_dim] = self.a.value.dims::<2>("lora_a")?;
        let [out_dim, r2] = self.b.value.dims::<2>("lora_b")?;
        if r2 != rank {
            return Err(Error::shape("lora delta", &[out_dim, rank], self.b.shape()));
        }
        // The scale is folded into B, so the stored factors multiply to the update directly.
        let b = self.b.value.data().iter().map(|&v| v as f64 * self.scale as f64).collect();
        let a = f64s(self.a.value.data());
        Ok(LayerDelta::Add(Affine::LowRank(LowRank {
            rank,
            in_dim,
            out_dim,
            a,
            b,
            scale: 1.0,
            bias: vec![0.0; out_dim],
        })))
    }
    fn clone_box(&self) -> Box<dyn LinearAdapter> {
        Box::new(self.clone())
    }
}
