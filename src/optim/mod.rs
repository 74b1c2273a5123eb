//! Optimisers (AdamW, SGD with momentum), the cosine schedule with linear warm-up, and global
//! gradient-norm clipping.
//!
//! Weight decay follows timm: no decay for biases, 1-D parameters (norms, SSF) and the
//! `cls_token` / `pos_embed`. Optimiser state is keyed by parameter *name*, so it can be saved
//! and resumed in another process.
//!
//! ```
//! use consolidator::autograd::Tape;
//! use consolidator::nn::{Linear, Module};
//! use consolidator::optim::Optimizer;
//! use consolidator::Tensor;
//! use rand::SeedableRng;
//! let mut layer = Linear::new(3, 2, true, &mut rand::rngs::StdRng::seed_from_u64(0));
//! let mut opt = Optimizer::adamw(0.0);
//! let x = Tensor::full(&[4, 3], 1.0);
//! let loss_at = |l: &Linear| -> consolidator::Result<f32> {
//!     let tape = Tape::inference();
//!     let e = l.forward(&tape, &tape.constant(x.clone()))?.add_scalar(-1.0)?;
//!     Ok(e.mul(&e)?.sum()?.value().data()[0])
//! };
//! let before = loss_at(&layer)?;
//! for _ in 0..10 {
//!     let tape = Tape::new();
//!     let e = layer.forward(&tape, &tape.constant(x.clone()))?.add_scalar(-1.0)?;
//!     let grads = e.mul(&e)?.sum()?.backward()?; // minimise Σ (y − 1)²
//!     opt.step(&mut layer, &grads, 0.05, 1.0)?;
//! }
//! assert!(loss_at(&layer)? < 0.5 * before);
//! # Ok::<(), consolidator::Error>(())
//! ```

use crate::autograd::Gradients;
use crate::io::safetensors::TensorFile;
use crate::nn::Module;
use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;

/// Whether timm would apply weight decay to the parameter `key` of shape `shape`.
pub fn decays(key: &str, shape: &[usize]) -> bool {
    shape.len() > 1 && !key.ends_with("bias") && !key.ends_with("cls_token") && !key.ends_with("pos_embed")
}

/// The optimiser kinds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// AdamW (decoupled weight decay).
    AdamW {
        /// Decay of the first moment.
        beta1: f32,
        /// Decay of the second moment.
        beta2: f32,
        /// Added to the root of the second moment.
        eps: f32,
    },
    /// SGD with (heavy-ball) momentum.
    Sgd {
        /// Momentum factor.
        momentum: f32,
    },
}

impl OptimizerKind {
    /// AdamW with β = (0.9, 0.999), ε = 1e-8.
    pub const ADAMW: OptimizerKind = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    /// SGD with momentum 0.9.
    pub const SGD: OptimizerKind = OptimizerKind::Sgd { momentum: 0.9 };
}

/// An optimiser with per-parameter state.
#[derive(Clone, Debug)]
pub struct Optimizer {
    /// AdamW or SGD, with their hyper-parameters.
    pub kind: OptimizerKind,
    /// Weight decay (decoupled for AdamW), on the parameters [`decays`] selects.
    pub weight_decay: f32,
    /// Steps taken.
    pub t: u64,
    /// Per parameter name: first (and, for AdamW, second) moment.
    state: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
}

impl Optimizer {
    /// An optimiser of `kind` with weight decay `weight_decay`.
    pub fn new(kind: OptimizerKind, weight_decay: f32) -> Self {
        Optimizer { kind, weight_decay, t: 0, state: BTreeMap::new() }
    }
    /// AdamW with β = (0.9, 0.999), ε = 1e-8.
    pub fn adamw(weight_decay: f32) -> Self {
        Optimizer::new(OptimizerKind::ADAMW, weight_decay)
    }
    /// SGD with momentum.
    pub fn sgd(momentum: f32, weight_decay: f32) -> Self {
        Optimizer::new(OptimizerKind::Sgd { momentum }, weight_decay)
    }

    /// One update of every trainable parameter of `model` that has a gradient, at learning rate
    /// `lr`, with gradients multiplied by `grad_scale` (from [`clip_scale`]).
    pub fn step(&mut self, model: &mut dyn Module, grads: &Gradients, lr: f32, grad_scale: f32) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let wd = self.weight_decay;
        let kind = self.kind;
        let state = &mut self.state;
        model.visit_mut("", &mut |key, p| {
            if !p.trainable {
                return;
            }
            // Every trainable parameter has state from the first step on (zeros until it gets a
            // gradient), so a checkpoint's state can be checked against the model exactly.
            let n = p.numel();
            let second = if matches!(kind, OptimizerKind::AdamW { .. }) { n } else { 0 };
            let (m, v) = state.entry(key.to_string()).or_insert_with(|| (vec![0.0; n], vec![0.0; second]));
            let Some(g) = grads.param(p) else { return };
            let decay = if decays(key, p.shape()) { wd } else { 0.0 };
            let w = p.value.data_mut();
            match kind {
                OptimizerKind::AdamW { beta1, beta2, eps } => {
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    // Elementwise, so split across workers (large tensors) with identical results.
                    let chunk = crate::par::row_chunk(n, 1 << 15);
                    let mut parts: Vec<_> = w
                        .chunks_mut(chunk)
                        .zip(m.chunks_mut(chunk))
                        .zip(v.chunks_mut(chunk))
                        .zip(g.data().chunks(chunk))
                        .collect();
                    crate::par::for_each_chunk_mut(&mut parts, 1, |_, part| {
                        let (((w, m), v), g) = &mut part[0];
                        for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g.iter()) {
                            let gi = g * grad_scale;
                            *m = beta1 * *m + (1.0 - beta1) * gi;
                            *v = beta2 * *v + (1.0 - beta2) * gi * gi;
                            let (mh, vh) = (*m / bc1, *v / bc2);
                            *w -= lr * (mh / (vh.sqrt() + eps) + decay * *w);
                        }
                    });
                }
                OptimizerKind::Sgd { momentum } => {
                    for i in 0..n {
                        let gi = g.data()[i] * grad_scale + decay * w[i];
                        m[i] = momentum * m[i] + gi;
                        w[i] -= lr * m[i];
                    }
                }
            }
        });
        Ok(())
    }

    /// The optimiser state as tensors (`opt.m.<key>`, `opt.v.<key>`) plus metadata.
    pub fn state_dict(&self, f: &mut TensorFile) {
        for (k, (m, v)) in &self.state {
            f.insert(format!("opt.m.{k}"), Tensor::new(&[m.len()], m.clone()).expect("1-D"));
            if !v.is_empty() {
                f.insert(format!("opt.v.{k}"), Tensor::new(&[v.len()], v.clone()).expect("1-D"));
            }
        }
        f.metadata.insert("opt.t".into(), self.t.to_string());
    }

    /// Restores the state written by [`Optimizer::state_dict`] for `model`, checking it: the
    /// state must cover exactly the model's trainable parameters (once a step was taken), with
    /// their sizes, finite values, and the second moments AdamW needs (none for SGD).
    pub fn load_state_dict(&mut self, f: &TensorFile, model: &dyn Module) -> Result<()> {
        let bad = |msg: String| Error::format("checkpoint optimiser state", msg);
        let t: u64 = f
            .metadata
            .get("opt.t")
            .ok_or_else(|| bad("no step count (opt.t)".into()))?
            .parse()
            .map_err(|_| bad("opt.t is not a whole number".into()))?;
        let mut trainable = BTreeMap::new();
        model.visit("", &mut |k, p| {
            if p.trainable {
                trainable.insert(k.to_string(), p.numel());
            }
        });
        let adam = matches!(self.kind, OptimizerKind::AdamW { .. });
        let mut state = BTreeMap::new();
        for (k, tensor) in &f.tensors {
            let (name, first) = match (k.strip_prefix("opt.m."), k.strip_prefix("opt.v.")) {
                (Some(n), _) => (n, true),
                (_, Some(n)) => (n, false),
                _ => continue,
            };
            let Some(&n) = trainable.get(name) else {
                return Err(bad(format!(
                    "`{k}` is state for `{name}`, which is not a trainable parameter of the model"
                )));
            };
            if tensor.numel() != n {
                return Err(bad(format!("`{k}` holds {} values, the parameter has {n}", tensor.numel())));
            }
            if !tensor.all_finite() {
                return Err(bad(format!("`{k}` holds NaN or infinite values")));
            }
            if !first && !adam {
                return Err(bad(format!("`{k}` is a second moment, which SGD does not keep")));
            }
            let e: &mut (Vec<f32>, Vec<f32>) = state.entry(name.to_string()).or_default();
            if first {
                e.0 = tensor.data().to_vec();
            } else {
                e.1 = tensor.data().to_vec();
            }
        }
        if t > 0 {
            for (name, &n) in &trainable {
                match state.get(name) {
                    None => return Err(bad(format!("no state for the trainable parameter `{name}`"))),
                    Some((m, _)) if m.len() != n => return Err(bad(format!("no first moment for `{name}`"))),
                    Some((_, v)) if adam && v.len() != n => return Err(bad(format!("no second moment for `{name}`"))),
                    _ => {}
                }
            }
        } else if !state.is_empty() {
            return Err(bad("it holds moments but no step was taken (opt.t = 0)".into()));
        }
        self.t = t;
        self.state = state;
        Ok(())
    }
}

/// The factor that scales gradients down to a global L2 norm of at most `max_norm`
/// (1 when they are within it, or when `max_norm ≤ 0`), and the norm itself.
pub fn clip_scale(model: &dyn Module, grads: &Gradients, max_norm: f32) -> (f32, f32) {
    let mut sq = 0.0f64;
    model.visit("", &mut |_, p| {
        if let Some(g) = grads.param(p) {
            sq += g.data().iter().map(|&v| v as f64 * v as f64).sum::<f64>();
        }
    });
    let norm = sq.sqrt() as f32;
    let scale = if max_norm > 0.0 && norm > max_norm { max_norm / (norm + 1e-6) } else { 1.0 };
    (scale, norm)
}

/// Cosine decay with linear warm-up, per step.
#[derive(Clone, Copy, Debug)]
pub struct CosineSchedule {
    /// Peak learning rate, reached at the end of warm-up.
    pub base_lr: f32,
    /// Learning rate at step 0.
    pub warmup_lr: f32,
    /// Learning rate at the last step.
    pub min_lr: f32,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Total steps of the run.
    pub total_steps: usize,
}

impl CosineSchedule {
    /// The learning rate at `step` (0-based).
    pub fn lr(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            let f = step as f32 / self.warmup_steps as f32;
            return self.warmup_lr + f * (self.base_lr - self.warmup_lr);
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let f = ((step - self.warmup_steps) as f32 / span as f32).min(1.0);
        self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f32::consts::PI * f).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let s = CosineSchedule { base_lr: 1.0, warmup_lr: 0.0, min_lr: 0.1, warmup_steps: 10, total_steps: 110 };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-6);
        assert!((s.lr(10) - 1.0).abs() < 1e-6);
        assert!((s.lr(60) - 0.55).abs() < 1e-5);
        assert!((s.lr(110) - 0.1).abs() < 1e-6);
        assert!((s.lr(500) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn decay_filter_matches_timm() {
        assert!(decays("blocks.0.attn.qkv.weight", &[6, 2]));
        assert!(!decays("blocks.0.attn.qkv.bias", &[6]));
        assert!(!decays("norm.weight", &[2]));
        assert!(!decays("pos_embed", &[1, 5, 2]));
        assert!(!decays("cls_token", &[1, 1, 2]));
    }
}
