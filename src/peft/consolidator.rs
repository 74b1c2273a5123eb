//! The consolidator (Hao et al., ICLR 2023): grouped-connection branches beside a frozen linear
//! layer, `y = x·Wᵀ + b + Σ_k DP(x·(BD(G_k)·Π_k)ᵀ + β_k)`.
//!
//! Branch `k` has `g_k` groups (`BD(G_k)`, a block-diagonal matrix), an optional fixed channel
//! reorder `Π_k` (a permutation matrix) and a bias `β_k`; drop-path `DP` drops a whole branch per sample in training.
//! The layer, its branches and drop-path run as one tape node (`Var::consolidated_linear`).
//! Mergeable: the branches sum to one [`Sparse`] map on the union of their supports.
//! docs/CONSOLIDATOR.md explains the operator and its two consolidation stages.
//!
//! Options (method string `consolidator:…`):
//! - `g=32+16` — the branches' group counts, joined by `+`; a group count may carry `r` to
//!   reorder that branch's input (`g=8+16r`); default one branch with `g = width/2`;
//! - `reorder` — every branch reorders its input;
//! - `dp=0.5` — drop-path rate of each branch, in [0, 1);
//! - `init=0.001` — branches start at U(−a, a), a in (0, 1]; `init=zero` starts them at zero;
//! - `layers=qkv+proj+fc1+fc2` — which FC layers of each block get branches;
//! - `frozen-norms`, `frozen-biases` — keep the LayerNorms / the layers' own biases frozen
//!   (the released recipe trains both).
//!
//! Keys: `<layer>.consolidator.<k>.weight` `[g, O/g, I/g]` and `<layer>.consolidator.<k>.bias` `[O]`.

use super::{AttachCtx, LayerSet, Method, MethodConfig, Options};
use crate::algebra::{branch_from_f32, branch_token, parse_branch_token, Affine, Dense, LayerDelta, Pattern, Sparse};
use crate::autograd::ops::grouped::{consolidated_dense, Branch};
use crate::autograd::ops::linear::DenseLinear;
use crate::autograd::{Tape, Var};
use crate::kernels::grouped::GroupSpec;
use crate::nn::{LinearAdapter, VisionTransformer};
use crate::{module_keys, Error, Param, Result, Tensor};
use std::any::Any;

/// The most branches a consolidator (and a stored pattern) may have.
pub const MAX_BRANCHES: usize = 64;

/// The largest group count accepted.
const MAX_GROUPS: usize = 1 << 20;

/// How consolidator branches start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(−a, a) for weights and biases (the released code: a = 1e-3).
    Uniform(f32),
    /// Zeros: the adapted model starts exactly at the backbone.
    Zero,
}

/// One branch's shape, independent of the layer's widths: its group count and whether it
/// reorders its input. Written as a token: `32`, `16r`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BranchConfig {
    /// Group count `g`.
    pub groups: usize,
    /// Whether the branch reorders its input.
    pub reorder: bool,
}

/// The consolidator's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsolidatorConfig {
    /// Which FC layers of each block get branches.
    pub layers: LayerSet,
    /// The branches.
    pub branches: Vec<BranchConfig>,
    /// Drop-path rate on each branch.
    pub drop_path: f32,
    /// Initialisation of the branch weights and biases.
    pub init: Init,
    /// Train every LayerNorm too (the released recipe does).
    pub train_norms: bool,
    /// Train the original biases of the wrapped FC layers too (the released recipe does).
    pub train_biases: bool,
}

impl ConsolidatorConfig {
    /// The released recipe, scaled to a model of width `embed_dim`: one branch per FC layer
    /// with `g = embed_dim / 2` (ViT-B: g = 384), no reorder, drop-path 0.5,
    /// U(−1e−3, 1e−3) init, LayerNorms and FC biases trained.
    pub fn released(embed_dim: usize) -> Self {
        ConsolidatorConfig {
            layers: LayerSet::ALL,
            branches: vec![BranchConfig { groups: (embed_dim / 2).max(1), reorder: false }],
            drop_path: 0.5,
            init: Init::Uniform(1e-3),
            train_norms: true,
            train_biases: true,
        }
    }

    /// Reads the options listed in the module docs; defaults are [`ConsolidatorConfig::released`].
    pub fn parse(o: &mut Options, embed_dim: usize) -> Result<Method> {
        let mut c = ConsolidatorConfig::released(embed_dim);
        if let Some(g) = o.value("g")? {
            c.branches = g
                .split('+')
                .map(|t| match parse_branch_token(t) {
                    Some((groups, reorder)) if (1..=MAX_GROUPS).contains(&groups) => {
                        Ok(BranchConfig { groups, reorder })
                    }
                    _ => Err(Error::invalid(
                        "method",
                        format!(
                            "`consolidator`: option `g` needs group counts in 1..={MAX_GROUPS} joined by `+` (each may end in `r` to reorder), got `{}`",
                            crate::io::text::shorten(&g, 80).escape_debug()
                        ),
                    )),
                })
                .collect::<Result<_>>()?;
            if c.branches.len() > MAX_BRANCHES {
                return Err(Error::invalid(
                    "method",
                    format!("`consolidator`: {} branches, at most {MAX_BRANCHES} are supported", c.branches.len()),
                ));
            }
        }
        if o.flag("reorder")? {
            c.branches.iter_mut().for_each(|b| b.reorder = true);
        }
        if let Some(dp) = o.number("dp", 0.0, 1.0, (false, true))? {
            c.drop_path = dp;
        }
        match o.value("init")?.as_deref() {
            None => {}
            Some("zero") => c.init = Init::Zero,
            Some(v) => {
                c.init = match v.parse::<f32>() {
                    Ok(a) if a > 0.0 && a <= 1.0 => Init::Uniform(a),
                    _ => {
                        return Err(Error::invalid(
                            "method",
                            format!(
                                "`consolidator`: option `init` needs `zero` or a number in (0, 1], got `{}`",
                                crate::io::text::shorten(v, 80).escape_debug()
                            ),
                        ))
                    }
                }
            }
        }
        c.layers = LayerSet::option(o)?.unwrap_or(LayerSet::ALL);
        c.train_norms = !o.flag("frozen-norms")?;
        c.train_biases = !o.flag("frozen-biases")?;
        Ok(Method::new(c))
    }
}

impl MethodConfig for ConsolidatorConfig {
    fn name(&self) -> &'static str {
        "consolidator"
    }
    fn options(&self) -> Vec<String> {
        let all_reorder = !self.branches.is_empty() && self.branches.iter().all(|b| b.reorder);
        let tokens: Vec<String> =
            self.branches.iter().map(|b| branch_token(b.groups, b.reorder && !all_reorder)).collect();
        let mut v = vec![format!("g={}", tokens.join("+"))];
        if all_reorder {
            v.push("reorder".into());
        }
        v.push(format!("dp={}", self.drop_path));
        v.push(match self.init {
            Init::Uniform(a) => format!("init={a}"),
            Init::Zero => "init=zero".into(),
        });
        v.push(format!("layers={}", self.layers));
        if !self.train_norms {
            v.push("frozen-norms".into());
        }
        if !self.train_biases {
            v.push("frozen-biases".into());
        }
        v
    }
    fn attach(&self, vit: &mut VisionTransformer, ctx: &mut AttachCtx) -> Result<()> {
        if !(0.0..1.0).contains(&self.drop_path) {
            return Err(Error::invalid("consolidator", format!("drop-path rate {} must be in [0, 1)", self.drop_path)));
        }
        if self.branches.is_empty() || self.branches.len() > MAX_BRANCHES {
            return Err(Error::invalid("consolidator", format!("1..={MAX_BRANCHES} branches are needed")));
        }
        for (key, lin) in vit.fc_layers_mut() {
            if !self.layers.contains(&key) {
                continue;
            }
            let (i, o) = (lin.in_dim(), lin.out_dim());
            let mut branches = Vec::new();
            for b in &self.branches {
                let spec = GroupSpec::new(i, o, b.groups, b.reorder)
                    .map_err(|e| Error::invalid("consolidator", format!("layer {key}: {e}")))?;
                ctx.reserve("consolidator", spec.weight_len() + o)?;
                let init = self.init;
                let mut init = |shape: &[usize]| match init {
                    Init::Uniform(a) if a > 0.0 => Tensor::rand_uniform(shape, -a, a, ctx.rng()),
                    _ => Tensor::zeros(shape),
                };
                let weight = Param::new(init(&spec.weight_shape()));
                let bias = Param::new(init(&[o]));
                branches.push(GroupBranch { spec, weight, bias });
            }
            if self.train_biases {
                if let Some(b) = &mut lin.bias {
                    b.trainable = true;
                }
            }
            lin.adapter = Some(Box::new(Consolidator { branches, drop_path: self.drop_path }));
        }
        if self.train_norms {
            super::train_norms(vit);
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

/// One grouped-connection branch: `x ↦ x·(BD(G)·Π)ᵀ + β`.
#[derive(Clone, Debug)]
pub struct GroupBranch {
    /// Widths, group count and reorder flag.
    pub spec: GroupSpec,
    /// `[g, O/g, I/g]`.
    pub weight: Param,
    /// `[O]`.
    pub bias: Param,
}

module_keys!(GroupBranch { "weight" => weight, "bias" => bias });

/// The consolidator beside one linear layer: its branches and their drop-path rate.
#[derive(Clone, Debug)]
pub struct Consolidator {
    /// The branches, summed into the layer output.
    pub branches: Vec<GroupBranch>,
    /// Drop-path rate of each branch in training.
    pub drop_path: f32,
}

module_keys!(Consolidator { "consolidator." => branches });

impl Consolidator {
    /// Each branch's weight and bias on the tape.
    fn vars<'t>(&self, tape: &'t Tape) -> Vec<(Var<'t>, Var<'t>)> {
        self.branches.iter().map(|br| (tape.param(&br.weight), tape.param(&br.bias))).collect()
    }
    /// The branches as the op takes them.
    fn on_tape<'a, 't>(&self, vars: &'a [(Var<'t>, Var<'t>)]) -> Vec<Branch<'a, 't>> {
        self.branches
            .iter()
            .zip(vars)
            .map(|(br, (g, beta))| Branch { spec: br.spec, weight: g, bias: Some(beta) })
            .collect()
    }
}

impl LinearAdapter for Consolidator {
    fn kind(&self) -> &'static str {
        "consolidator"
    }
    fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>, w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Var<'t>> {
        let vars = self.vars(tape);
        x.consolidated_linear(w, b, &self.on_tape(&vars), self.drop_path)
    }
    fn dense<'t>(
        &self,
        tape: &'t Tape,
        x_shape: &[usize],
        w: &Var<'t>,
        b: Option<&Var<'t>>,
    ) -> Result<Option<DenseLinear<'t>>> {
        let vars = self.vars(tape);
        consolidated_dense(x_shape, w, b, &self.on_tape(&vars), self.drop_path)
    }
    /// Stage 1: every branch added into one map (in `f64`), stored on the union of the
    /// branches' supports.
    fn delta(&self, _weight: &Tensor, _bias: Option<&Tensor>) -> Result<LayerDelta> {
        let first = self.branches.first().ok_or_else(|| Error::invalid("consolidator", "no branches"))?;
        let (o, i) = (first.spec.out_dim, first.spec.in_dim);
        let mut dense = Dense::zeros(o, i);
        for b in &self.branches {
            branch_from_f32(b.spec, b.weight.value.data(), Some(b.bias.value.data()))?
                .add_into(&mut dense.weight, &mut dense.bias)?;
        }
        let specs = self.branches.iter().map(|b| b.spec).collect();
        Ok(LayerDelta::Add(Affine::Sparse(Sparse::gather(o, i, Pattern::Grouped(specs), &dense))))
    }
    fn clone_box(&self) -> Box<dyn LinearAdapter> {
        Box::new(self.clone())
    }
}
