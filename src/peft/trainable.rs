//! The methods that attach nothing: they only choose which backbone tensors train.
//!
//! - `linear` (linear probe): only the new head.
//! - `full` (full fine-tuning): everything.
//! - `bitfit`: every bias (FC layers, LayerNorm `β`, the patch embedding) and the head.
//!
//! All three are mergeable: the trained tensors are stored as they are.

use super::{AttachCtx, Method, MethodConfig, Options};
use crate::nn::{Module, VisionTransformer};
use crate::Result;
use std::any::Any;

/// Linear probe: only the new head trains.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinearProbe;

/// Full fine-tuning: every parameter trains.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Full;

/// BitFit: every bias trains (and the head).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BitFit;

impl LinearProbe {
    /// Takes no options.
    pub fn parse(_: &mut Options, _embed_dim: usize) -> Result<Method> {
        Ok(Method::new(LinearProbe))
    }
}

impl Full {
    /// Takes no options.
    pub fn parse(_: &mut Options, _embed_dim: usize) -> Result<Method> {
        Ok(Method::new(Full))
    }
}

impl BitFit {
    /// Takes no options.
    pub fn parse(_: &mut Options, _embed_dim: usize) -> Result<Method> {
        Ok(Method::new(BitFit))
    }
}

impl MethodConfig for LinearProbe {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn options(&self) -> Vec<String> {
        Vec::new()
    }
    fn attach(&self, _vit: &mut VisionTransformer, _ctx: &mut AttachCtx) -> Result<()> {
        Ok(())
    }
    fn mergeable(&self) -> bool {
        true
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl MethodConfig for Full {
    fn name(&self) -> &'static str {
        "full"
    }
    fn options(&self) -> Vec<String> {
        Vec::new()
    }
    fn attach(&self, vit: &mut VisionTransformer, _ctx: &mut AttachCtx) -> Result<()> {
        vit.visit_mut("", &mut |_, p| p.trainable = true);
        Ok(())
    }
    fn mergeable(&self) -> bool {
        true
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl MethodConfig for BitFit {
    fn name(&self) -> &'static str {
        "bitfit"
    }
    fn options(&self) -> Vec<String> {
        Vec::new()
    }
    fn attach(&self, vit: &mut VisionTransformer, _ctx: &mut AttachCtx) -> Result<()> {
        // timm's keys name every bias `…bias` (FC layers, LayerNorm β, the patch embedding).
        vit.visit_mut("", &mut |k, p| p.trainable = k.ends_with("bias"));
        Ok(())
    }
    fn mergeable(&self) -> bool {
        true
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
