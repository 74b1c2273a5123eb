//! The ViT benchmark: inference latency of timm's ViT-Tiny and ViT-Small at batch 1 and 8; one
//! training step (forward, backward, AdamW) on this project's small-image preset, full
//! fine-tuning against a frozen backbone with consolidator branches; and the latency of a
//! backbone, the same model with unmerged branches, and the merged model, side by side.

use crate::autograd::Tape;
use crate::nn::{VisionTransformer, VitConfig};
use crate::optim::Optimizer;
use crate::peft::{ConsolidatorConfig, Method};
use crate::reparam::{consolidate, merge};
use crate::{Result, Tensor};
use rand::SeedableRng;
use std::fmt;
use std::time::Instant;

/// One measurement.
#[derive(Clone, Debug)]
pub struct VitRow {
    /// What was measured.
    pub name: String,
    /// Images per batch.
    pub batch: usize,
    /// Median milliseconds.
    pub ms: f64,
    /// Share of the time spent in the linear layers' GEMMs (one extra profiled run).
    pub gemm_share: f64,
}

/// The benchmark's result.
#[derive(Clone, Debug, Default)]
pub struct VitReport {
    /// One row per measurement.
    pub rows: Vec<VitRow>,
}

/// Median milliseconds of `f` (see [`super::median_ms`]) and, from one extra profiled run, the
/// share of its time spent in the linear layers' GEMMs.
fn timed(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    let ms = super::median_ms(reps, &mut f)?;
    crate::kernels::gemm::profile_gemm(true);
    let t = Instant::now();
    f()?;
    let share = crate::kernels::gemm::gemm_seconds() / t.elapsed().as_secs_f64();
    crate::kernels::gemm::profile_gemm(false);
    Ok((ms, share))
}

fn images(cfg: &VitConfig, b: usize) -> Tensor {
    Tensor::randn(&[b, cfg.in_chans, cfg.img_size.0, cfg.img_size.1], 1.0, &mut rand::rngs::StdRng::seed_from_u64(1))
}

/// One training step (forward + backward + AdamW) of `vit` on a batch.
fn train_step(vit: &mut VisionTransformer, opt: &mut Optimizer, x: &Tensor, labels: &[usize]) -> Result<()> {
    let grads = {
        let tape = Tape::new();
        let loss = vit.forward(&tape, &tape.constant(x.clone()))?.cross_entropy(labels, 0.0)?;
        tape.backward(&loss)?
    };
    opt.step(vit, &grads, 1e-4, 1.0)
}

/// Runs the benchmark (`quick` uses fewer repetitions and skips ViT-Small at batch 8).
pub fn run_vit_bench(quick: bool) -> Result<VitReport> {
    let reps = if quick { 3 } else { 7 };
    let mut report = VitReport::default();
    for name in ["vit_tiny_patch16_224", "vit_small_patch16_224"] {
        let cfg = VitConfig::preset(name)?;
        let vit = VisionTransformer::new(&cfg, 0)?;
        for b in [1, 8] {
            if quick && b == 8 && name.contains("small") {
                continue;
            }
            let x = images(&cfg, b);
            let (ms, gemm_share) = timed(reps, || vit.predict(&x).map(|_| ()))?;
            report.rows.push(VitRow { name: format!("{name} forward"), batch: b, ms, gemm_share });
        }
    }
    // Training steps on the small-image preset.
    let cfg = VitConfig::preset("vit_mnist_tiny")?;
    let base = VisionTransformer::new(&cfg, 0)?;
    let b = 64;
    let x = images(&cfg, b);
    let labels: Vec<usize> = (0..b).map(|i| i % 10).collect();
    let released = Method::Consolidator(ConsolidatorConfig::released(cfg.embed_dim));
    for (label, method) in
        [("full fine-tuning", Method::Full), ("consolidator (frozen backbone + branches)", released.clone())]
    {
        let mut vit = base.clone();
        method.apply(&mut vit, 10, 0)?;
        let mut opt = Optimizer::adamw(1e-4);
        let (ms, gemm_share) = timed(reps, || train_step(&mut vit, &mut opt, &x, &labels))?;
        report.rows.push(VitRow { name: format!("vit_mnist_tiny train step, {label}"), batch: b, ms, gemm_share });
    }
    // Backbone, unmerged, merged: ViT-Tiny with the released recipe scaled to width 192.
    let cfg = VitConfig::preset("vit_tiny_patch16_224")?;
    let backbone = VisionTransformer::new(&cfg, 0)?;
    let released = Method::Consolidator(ConsolidatorConfig::released(cfg.embed_dim));
    let mut adapted = backbone.clone();
    released.apply(&mut adapted, cfg.num_classes, 0)?;
    let merged = merge(&backbone, &consolidate(&adapted, &backbone, &released)?)?.model;
    let x = images(&cfg, 8);
    for (label, m) in [("backbone", &backbone), ("unmerged (branches)", &adapted), ("merged", &merged)] {
        let (ms, gemm_share) = timed(reps, || m.predict(&x).map(|_| ()))?;
        report.rows.push(VitRow { name: format!("vit_tiny {label} forward"), batch: 8, ms, gemm_share });
    }
    Ok(report)
}

impl fmt::Display for VitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| workload | batch | median ms | share in linear-layer GEMMs |")?;
        writeln!(f, "|---|---:|---:|---:|")?;
        for r in &self.rows {
            writeln!(f, "| {} | {} | {:.1} | {:.0}% |", r.name, r.batch, r.ms, 100.0 * r.gemm_share)?;
        }
        Ok(())
    }
}

impl VitReport {
    /// The report as JSON.
    pub fn to_json(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"name\":\"{}\",\"batch\":{},\"ms\":{:.3},\"gemm_share\":{:.3}}}",
                    r.name, r.batch, r.ms, r.gemm_share
                )
            })
            .collect();
        format!("{{\"rows\":[{}]}}", rows.join(","))
    }
}
