//! The method switch: one value per method, parsed from a short string, applied in one call.

use super::{Adapter, Consolidator, GroupBranch, Lora, Ssf};
use crate::kernels::grouped::GroupSpec;
use crate::nn::{Linear, LinearPeft, Module, VisionTransformer};
use crate::{Error, Param, Result, Tensor};
use rand::{Rng, SeedableRng};

/// Which of a block's four FC layers a method touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSet {
    /// `attn.qkv`.
    pub qkv: bool,
    /// `attn.proj`.
    pub proj: bool,
    /// `mlp.fc1`.
    pub fc1: bool,
    /// `mlp.fc2`.
    pub fc2: bool,
}

impl LayerSet {
    /// All four.
    pub const ALL: LayerSet = LayerSet { qkv: true, proj: true, fc1: true, fc2: true };
    fn contains(&self, key: &str) -> bool {
        (self.qkv && key.ends_with("attn.qkv."))
            || (self.proj && key.ends_with("attn.proj."))
            || (self.fc1 && key.ends_with("mlp.fc1."))
            || (self.fc2 && key.ends_with("mlp.fc2."))
    }
    fn parse(s: &str) -> Result<Self> {
        let mut l = LayerSet { qkv: false, proj: false, fc1: false, fc2: false };
        for part in s.split('+') {
            match part {
                "qkv" => l.qkv = true,
                "proj" => l.proj = true,
                "fc1" => l.fc1 = true,
                "fc2" => l.fc2 = true,
                "all" => l = LayerSet::ALL,
                _ => {
                    return Err(Error::invalid("method", format!("unknown layer `{part}` (qkv, proj, fc1, fc2, all)")))
                }
            }
        }
        Ok(l)
    }
}

/// Initialisation of consolidator branches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(−a, a) for weights and biases (the released code: a = 1e-3).
    Uniform(f32),
    /// Zeros: the adapted model starts exactly at the backbone.
    Zero,
}

/// A consolidator configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsolidatorConfig {
    /// Which FC layers of each block get branches.
    pub layers: LayerSet,
    /// Branches as (group count, reorder).
    pub branches: Vec<(usize, bool)>,
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
            branches: vec![((embed_dim / 2).max(1), false)],
            drop_path: 0.5,
            init: Init::Uniform(1e-3),
            train_norms: true,
            train_biases: true,
        }
    }
}

/// A parameter-efficient method (or a full/linear baseline).
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// Only the new head trains.
    LinearProbe,
    /// Everything trains.
    Full,
    /// Every bias (and the head) trains.
    BitFit,
    /// Rank-`rank` updates `(alpha/rank)·B·A` on the chosen layers.
    Lora {
        /// Rank `r` of the update.
        rank: usize,
        /// Scale numerator: the update is multiplied by `alpha / rank`.
        alpha: f32,
        /// Which FC layers get an update.
        layers: LayerSet,
    },
    /// AdaptFormer bottleneck of width `dim` beside every MLP, output scaled by `scale`.
    Adapter {
        /// Bottleneck width.
        dim: usize,
        /// Output scale.
        scale: f32,
    },
    /// VPT-deep: `prompts` learned tokens per block.
    Vpt {
        /// Prompt tokens per block.
        prompts: usize,
    },
    /// SSF scale and shift after the chosen layers.
    Ssf {
        /// Which FC layers get a scale and shift.
        layers: LayerSet,
    },
    /// The consolidator.
    Consolidator(ConsolidatorConfig),
}

impl Method {
    /// Every method with its default settings, for a model of width `embed_dim`.
    pub fn all(embed_dim: usize) -> Vec<Method> {
        vec![
            Method::LinearProbe,
            Method::Full,
            Method::BitFit,
            Method::Lora { rank: 4, alpha: 4.0, layers: LayerSet::ALL },
            Method::Adapter { dim: 8, scale: 0.1 },
            Method::Vpt { prompts: 5 },
            Method::Ssf { layers: LayerSet::ALL },
            Method::Consolidator(ConsolidatorConfig::released(embed_dim)),
        ]
    }

    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::LinearProbe => "linear",
            Method::Full => "full",
            Method::BitFit => "bitfit",
            Method::Lora { .. } => "lora",
            Method::Adapter { .. } => "adapter",
            Method::Vpt { .. } => "vpt",
            Method::Ssf { .. } => "ssf",
            Method::Consolidator(_) => "consolidator",
        }
    }

    /// Whether the trained model deploys as a plain ViT (through the reparameterization algebra).
    pub fn mergeable(&self) -> bool {
        !matches!(self, Method::Adapter { .. } | Method::Vpt { .. })
    }

    /// Parses `name[:key=value,...]`, e.g. `consolidator:g=32+64,reorder,dp=0.2`, `lora:r=8,layers=qkv`,
    /// `adapter:dim=16`, `vpt:prompts=10`, or just `linear`, `full`, `bitfit`, `ssf`.
    /// `embed_dim` sizes the defaults.
    pub fn parse(s: &str, embed_dim: usize) -> Result<Method> {
        let (name, opts) = s.split_once(':').unwrap_or((s, ""));
        let opts: Vec<(&str, &str)> =
            opts.split(',').filter(|o| !o.is_empty()).map(|o| o.split_once('=').unwrap_or((o, ""))).collect();
        let bad = |k: &str| Error::invalid("method", format!("`{name}` has no option `{k}`"));
        let num = |k: &str, v: &str| {
            v.parse::<f64>().map_err(|_| Error::invalid("method", format!("option `{k}` needs a number, got `{v}`")))
        };
        let mut m = Method::all(embed_dim).into_iter().find(|m| m.name() == name).ok_or_else(|| {
            Error::invalid(
                "method",
                format!("unknown method `{name}` (linear, full, bitfit, lora, adapter, vpt, ssf, consolidator)"),
            )
        })?;
        let mut reorder = false;
        let mut groups: Option<Vec<usize>> = None;
        for (k, v) in opts {
            match (&mut m, k) {
                (Method::Lora { rank, .. }, "r") => *rank = num(k, v)? as usize,
                (Method::Lora { alpha, .. }, "alpha") => *alpha = num(k, v)? as f32,
                (Method::Lora { layers, .. }, "layers") | (Method::Ssf { layers }, "layers") => {
                    *layers = LayerSet::parse(v)?
                }
                (Method::Adapter { dim, .. }, "dim") => *dim = num(k, v)? as usize,
                (Method::Adapter { scale, .. }, "scale") => *scale = num(k, v)? as f32,
                (Method::Vpt { prompts }, "prompts") => *prompts = num(k, v)? as usize,
                (Method::Consolidator(_), "g") => {
                    groups = Some(v.split('+').map(|g| num(k, g).map(|g| g as usize)).collect::<Result<_>>()?);
                }
                (Method::Consolidator(_), "reorder") => reorder = true,
                (Method::Consolidator(c), "dp") => c.drop_path = num(k, v)? as f32,
                (Method::Consolidator(c), "layers") => c.layers = LayerSet::parse(v)?,
                (Method::Consolidator(c), "init") => {
                    c.init = if v == "zero" { Init::Zero } else { Init::Uniform(num(k, v)? as f32) }
                }
                (Method::Consolidator(c), "frozen-norms") => c.train_norms = false,
                (Method::Consolidator(c), "frozen-biases") => c.train_biases = false,
                _ => return Err(bad(k)),
            }
        }
        if let Method::Consolidator(c) = &mut m {
            let gs = groups.unwrap_or_else(|| c.branches.iter().map(|b| b.0).collect());
            c.branches = gs.into_iter().map(|g| (g, reorder)).collect();
        }
        Ok(m)
    }

    /// Prepares `vit` for adaptation with this method: freezes the backbone as the method
    /// requires, attaches the method's modules, and installs a fresh trainable head with
    /// `num_classes` outputs. Deterministic in `seed`.
    pub fn apply(&self, vit: &mut VisionTransformer, num_classes: usize, seed: u64) -> Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        vit.freeze();
        vit.reset_head(num_classes, seed);
        let dim = vit.config.embed_dim;
        match self {
            Method::LinearProbe => {}
            Method::Full => vit.visit_mut("", &mut |_, p| p.trainable = true),
            Method::BitFit => vit.visit_mut("", &mut |k, p| p.trainable = k.ends_with("bias")),
            Method::Lora { rank, alpha, layers } => {
                let widest = vit.fc_layers().iter().map(|(_, l)| l.in_dim().min(l.out_dim())).max().unwrap_or(0);
                if *rank == 0 || *rank > widest {
                    return Err(Error::invalid(
                        "lora",
                        format!("rank {rank} must be in 1..={widest} (a layer's smaller width)"),
                    ));
                }
                for (key, lin) in vit.fc_layers_mut() {
                    if layers.contains(&key) {
                        let bound = 1.0 / (lin.in_dim() as f32).sqrt();
                        lin.peft = LinearPeft::Lora(Lora {
                            a: Param::new(Tensor::rand_uniform(&[*rank, lin.in_dim()], -bound, bound, &mut rng)),
                            b: Param::new(Tensor::zeros(&[lin.out_dim(), *rank])),
                            scale: alpha / *rank as f32,
                        });
                    }
                }
            }
            Method::Adapter { dim: d, scale } => {
                if *d == 0 || *d > dim {
                    return Err(Error::invalid("adapter", format!("bottleneck width {d} must be in 1..={dim}")));
                }
                for b in &mut vit.blocks {
                    let mut up = Linear::new(*d, dim, true, &mut rng);
                    up.weight.value = Tensor::zeros(&[dim, *d]);
                    let bound = 1.0 / (dim as f32).sqrt();
                    let mut down = Linear::new(dim, *d, true, &mut rng);
                    down.weight.value = Tensor::rand_uniform(&[*d, dim], -bound, bound, &mut rng);
                    b.adapter = Some(Adapter { down, up, scale: *scale });
                }
            }
            Method::Vpt { prompts } => {
                if *prompts == 0 || *prompts > 4 * vit.config.tokens() {
                    return Err(Error::invalid(
                        "vpt",
                        format!("{prompts} prompts: use 1..={}", 4 * vit.config.tokens()),
                    ));
                }
                let bound = (6.0 / (dim + dim) as f32).sqrt();
                for b in &mut vit.blocks {
                    b.prompts = Some(Param::new(Tensor::rand_uniform(&[*prompts, dim], -bound, bound, &mut rng)));
                }
            }
            Method::Ssf { layers } => {
                for (key, lin) in vit.fc_layers_mut() {
                    if layers.contains(&key) {
                        let o = lin.out_dim();
                        let mut scale = Tensor::randn(&[o], 0.02, &mut rng);
                        scale.data_mut().iter_mut().for_each(|v| *v += 1.0);
                        lin.peft = LinearPeft::Ssf(Ssf {
                            scale: Param::new(scale),
                            shift: Param::new(Tensor::randn(&[o], 0.02, &mut rng)),
                        });
                    }
                }
            }
            Method::Consolidator(c) => {
                if !(0.0..1.0).contains(&c.drop_path) {
                    return Err(Error::invalid(
                        "consolidator",
                        format!("drop-path rate {} must be in [0, 1)", c.drop_path),
                    ));
                }
                if c.branches.is_empty() {
                    return Err(Error::invalid("consolidator", "at least one branch is needed"));
                }
                for (key, lin) in vit.fc_layers_mut() {
                    if !c.layers.contains(&key) {
                        continue;
                    }
                    let (i, o) = (lin.in_dim(), lin.out_dim());
                    let mut branches = Vec::new();
                    for &(g, reorder) in &c.branches {
                        let spec = GroupSpec::new(i, o, g, reorder)
                            .map_err(|e| Error::invalid("consolidator", format!("layer {key}: {e}")))?;
                        let init = |shape: &[usize], rng: &mut rand::rngs::StdRng| match c.init {
                            Init::Uniform(a) if a > 0.0 => Tensor::rand_uniform(shape, -a, a, rng),
                            _ => Tensor::zeros(shape),
                        };
                        branches.push(GroupBranch {
                            spec,
                            weight: Param::new(init(&spec.weight_shape(), &mut rng)),
                            bias: Param::new(init(&[o], &mut rng)),
                        });
                    }
                    if c.train_biases {
                        if let Some(b) = &mut lin.bias {
                            b.trainable = true;
                        }
                    }
                    lin.peft = LinearPeft::Consolidator(Consolidator { branches, drop_path: c.drop_path });
                }
                if c.train_norms {
                    vit.visit_mut("", &mut |k, p| {
                        if k.contains("norm") {
                            p.trainable = true
                        }
                    });
                }
            }
        }
        // The head always trains.
        vit.head.weight.trainable = true;
        if let Some(b) = &mut vit.head.bias {
            b.trainable = true;
        }
        let _ = rng.gen::<u32>();
        Ok(())
    }
}
