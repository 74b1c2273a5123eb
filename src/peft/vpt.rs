//! VPT-deep (Jia et al., 2022): `P` learned prompt tokens per block, inserted after the class
//! token for that block only and dropped from its output. Not mergeable (the prompts change
//! which tokens attention sees).
//!
//! Options: `prompts` (default 5). Key: `blocks.N.prompts` `[P, C]` (Xavier-uniform init).

use super::{AttachCtx, Method, MethodConfig, Options};
use crate::autograd::{Tape, Var};
use crate::nn::{BlockAdapter, VisionTransformer};
use crate::{module_keys, Error, Param, Result, Tensor};
use std::any::Any;

/// VPT's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct VptConfig {
    /// Prompt tokens per block.
    pub prompts: usize,
}

impl VptConfig {
    /// Reads `prompts`.
    pub fn parse(o: &mut Options, _embed_dim: usize) -> Result<Method> {
        Ok(Method::new(VptConfig { prompts: o.whole("prompts", 1, 1 << 16)?.unwrap_or(5) }))
    }
}

impl MethodConfig for VptConfig {
    fn name(&self) -> &'static str {
        "vpt"
    }
    fn options(&self) -> Vec<String> {
        vec![format!("prompts={}", self.prompts)]
    }
    fn attach(&self, vit: &mut VisionTransformer, ctx: &mut AttachCtx) -> Result<()> {
        let (n, dim) = (self.prompts, vit.config.embed_dim);
        if n == 0 || n > 4 * vit.config.tokens() {
            return Err(Error::invalid("vpt", format!("{n} prompts: use 1..={}", 4 * vit.config.tokens())));
        }
        let bound = (6.0 / (dim + dim) as f32).sqrt();
        for b in &mut vit.blocks {
            ctx.reserve("vpt", n * dim)?;
            let tokens = Param::new(Tensor::rand_uniform(&[n, dim], -bound, bound, ctx.rng()));
            b.adapter = Some(Box::new(Prompts { tokens }));
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

/// One block's prompt tokens.
#[derive(Clone, Debug)]
pub struct Prompts {
    /// `[P, C]`.
    pub tokens: Param,
}

module_keys!(Prompts { "prompts" => tokens });

impl BlockAdapter for Prompts {
    fn kind(&self) -> &'static str {
        "vpt"
    }
    fn prompts<'t>(&self, tape: &'t Tape, batch: usize, width: usize) -> Result<Option<Var<'t>>> {
        let n = self.tokens.shape()[0];
        Ok(Some(tape.param(&self.tokens).reshape(&[1, n, width])?.broadcast_to(&[batch, n, width])?))
    }
    fn clone_box(&self) -> Box<dyn BlockAdapter> {
        Box::new(self.clone())
    }
}
