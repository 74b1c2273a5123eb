//! The ViT workloads of `consolidator bench vit`, named as `scripts/bench_torch.py` names the
//! same work in PyTorch:
//!
//! * inference: timm's ViT-Tiny and ViT-Small at 224², batch 1 and 8, random weights;
//! * one training step (forward, cross-entropy, backward, AdamW) on two configurations —
//!   `vit_tiny_224_b16` (ViT-Tiny, 1000 classes, batch 16) and `vit_c32_p4_d192_l6_b64` (32²
//!   images, patch 4, width 192, depth 6, 3 heads, 10 classes, batch 64) — once with every
//!   parameter trained (`full`) and once with the backbone frozen and one g = 8 grouped branch
//!   (with bias, no reorder, no drop-path) beside qkv, proj, fc1 and fc2 of every block, the
//!   branches and the head trained (`consolidator`);
//! * ViT-Tiny at batch 8 as a backbone, with unmerged consolidator branches (the released recipe
//!   scaled to width 192), and merged: the deployed model must cost what the backbone costs;
//! * the small model this project ships and trains (`vit_mnist_tiny`: 28², patch 4, width 64,
//!   depth 4, 4 heads): a training step at batch 32 (what `adapt` and the suite use) and 128 (what
//!   `pretrain` uses), full and consolidator, and inference at batch 1 and 128. Its rows are
//!   read in images per second ([`VitRow::images_per_s`]): there fixed per-op costs dominate,
//!   not FLOPs.
//!
//! Each workload reports its median time over a few repetitions after one warm-up, and the share
//! of that time spent in the linear layers' GEMMs. The CLI runs each one in a child process to
//! report its peak resident memory too ([`peak_rss_mb`]).

use crate::autograd::{OpTime, Tape};
use crate::model::Model;
use crate::nn::{Pool, VisionTransformer, VitConfig};
use crate::optim::Optimizer;
use crate::peft::{ConsolidatorConfig, Full, Method};
use crate::reparam::{consolidate, merge};
use crate::{Error, Result, Tensor};
use rand::SeedableRng;
use std::fmt;
use std::time::Instant;

/// One measurement.
#[derive(Clone, Debug)]
pub struct VitRow {
    /// The workload's name (see [`workloads`]).
    pub name: String,
    /// Images per batch.
    pub batch: usize,
    /// Median milliseconds.
    pub ms: f64,
    /// Share of the time spent in the linear layers' GEMMs (one extra profiled run).
    pub gemm_share: f64,
    /// Peak resident memory of a process that ran only this workload, in MiB (when measured).
    pub rss_mb: Option<f64>,
}

/// The benchmark's result.
#[derive(Clone, Debug, Default)]
pub struct VitReport {
    /// One row per measurement.
    pub rows: Vec<VitRow>,
}

/// The training configurations, by the names the PyTorch script uses: (config, batch).
fn train_case(case: &str) -> Result<(VitConfig, usize)> {
    match case {
        "vit_tiny_224_b16" => Ok((VitConfig::preset("vit_tiny_patch16_224")?, 16)),
        "vit_c32_p4_d192_l6_b64" => Ok((
            VitConfig {
                img_size: (32, 32),
                patch_size: (4, 4),
                in_chans: 3,
                embed_dim: 192,
                depth: 6,
                num_heads: 3,
                mlp_hidden: 768,
                num_classes: 10,
                pool: Pool::Token,
                drop_path_rate: 0.0,
            },
            64,
        )),
        "vit_mnist_tiny_b32" => Ok((VitConfig::preset("vit_mnist_tiny")?, 32)),
        "vit_mnist_tiny_b128" => Ok((VitConfig::preset("vit_mnist_tiny")?, 128)),
        _ => Err(Error::invalid("bench vit", format!("unknown training case `{case}`"))),
    }
}

/// The training cases, in report order.
pub const TRAIN_CASES: [&str; 4] =
    ["vit_tiny_224_b16", "vit_c32_p4_d192_l6_b64", "vit_mnist_tiny_b32", "vit_mnist_tiny_b128"];

/// The method of the `consolidator` training rows (the PyTorch script's `GroupedBranch`).
pub const TRAIN_CONSOLIDATOR: &str = "consolidator:g=8,dp=0,frozen-norms,frozen-biases";

/// Every workload name, in report order (`vit_tiny b8 deploy` gives three rows: backbone,
/// unmerged and merged, timed interleaved in one process so that their ratio is fair) (`quick` leaves out ViT-Small at batch 8 and the
/// ViT-Tiny training step).
pub fn workloads(quick: bool) -> Vec<String> {
    let mut v = Vec::new();
    for (model, batches) in
        [("vit_tiny_patch16_224", [1, 8]), ("vit_small_patch16_224", [1, 8]), ("vit_mnist_tiny", [1, 128])]
    {
        for b in batches {
            if !(quick && b == 8 && model.contains("small")) {
                v.push(format!("{model} forward b{b}"));
            }
        }
    }
    for case in TRAIN_CASES {
        if !(quick && case == "vit_tiny_224_b16") {
            for mode in ["full", "consolidator"] {
                v.push(format!("train {case} {mode}"));
            }
        }
    }
    v.push("vit_tiny b8 deploy".into());
    v
}

fn images(cfg: &VitConfig, b: usize) -> Tensor {
    Tensor::randn(&[b, cfg.in_chans, cfg.img_size.0, cfg.img_size.1], 1.0, &mut rand::rngs::StdRng::seed_from_u64(1))
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

/// One training step (forward + backward + AdamW) of `vit` on a batch.
pub fn train_step(vit: &mut VisionTransformer, opt: &mut Optimizer, x: &Tensor, labels: &[usize]) -> Result<()> {
    train_step_on(&Tape::new(), vit, opt, x, labels)
}

/// [`train_step`] on a given (fresh, recording) tape, e.g. a profiled one.
fn train_step_on(
    tape: &Tape,
    vit: &mut VisionTransformer,
    opt: &mut Optimizer,
    x: &Tensor,
    labels: &[usize],
) -> Result<()> {
    crate::par::region(|| {
        let loss = vit.forward(tape, &tape.constant(x.clone()))?.cross_entropy(labels, 0.0)?;
        let grads = tape.backward(&loss)?;
        opt.step(vit, &grads, 1e-4, 1.0)
    })
}

/// A model ready for one training row: (model, images, labels).
pub fn train_setup(case: &str, mode: &str) -> Result<(VisionTransformer, Tensor, Vec<usize>)> {
    let (cfg, b) = train_case(case)?;
    let mut vit = VisionTransformer::new(&cfg, 0)?;
    let method = match mode {
        "full" => Method::new(Full),
        "consolidator" => Method::parse(TRAIN_CONSOLIDATOR, cfg.embed_dim)?,
        _ => return Err(Error::invalid("bench vit", format!("unknown training mode `{mode}`"))),
    };
    method.apply(&mut vit, cfg.num_classes, 0)?;
    let labels = (0..b).map(|i| i % cfg.num_classes).collect();
    Ok((vit, images(&cfg, b), labels))
}

/// Runs one workload by name (see [`workloads`]) with `reps` timed repetitions.
pub fn run_one(name: &str, reps: usize) -> Result<Vec<VitRow>> {
    let bad = || Error::invalid("bench vit", format!("unknown workload `{name}`"));
    let row = |batch, (ms, gemm_share)| VitRow { name: name.to_string(), batch, ms, gemm_share, rss_mb: None };
    let parts: Vec<&str> = name.split(' ').collect();
    match parts.as_slice() {
        [model, "forward", b] => {
            let b: usize = b.strip_prefix('b').and_then(|b| b.parse().ok()).ok_or_else(bad)?;
            let cfg = VitConfig::preset(model)?;
            let vit = VisionTransformer::new(&cfg, 0)?;
            let x = images(&cfg, b);
            Ok(vec![row(b, timed(reps, || vit.predict(&x).map(|_| ()))?)])
        }
        ["train", case, mode] => {
            let (mut vit, x, labels) = train_setup(case, mode)?;
            let mut opt = Optimizer::adamw(1e-4);
            Ok(vec![row(labels.len(), timed(reps, || train_step(&mut vit, &mut opt, &x, &labels))?)])
        }
        ["vit_tiny", "b8", "deploy"] => deploy_rows(reps),
        _ => Err(bad()),
    }
}

/// What [`profile_one`] returns: per-op times (most expensive first), the total wall seconds,
/// and the CPU seconds where the platform reports them.
pub type Profile = (Vec<(&'static str, OpTime)>, f64, Option<f64>);

/// Where one workload's time goes: `reps` runs (after one warm-up) on profiled tapes
/// ([`Tape::profiled`]), summed per op name, most expensive first, with the time outside the
/// tape's ops (the optimizer step, building inputs) as `(outside ops)`, and the total wall time.
/// Not for the deploy rows. Also gives the CPU time of the runs ([`cpu_seconds`]).
pub fn profile_one(name: &str, reps: usize) -> Result<Profile> {
    let parts: Vec<&str> = name.split(' ').collect();
    let mut total = std::collections::HashMap::<&'static str, OpTime>::new();
    let mut add = |tape: &Tape| {
        for (op, t) in tape.profile() {
            let e = total.entry(op).or_default();
            e.calls += t.calls;
            e.forward += t.forward;
            e.backward += t.backward;
        }
    };
    let (start, cpu0);
    match parts.as_slice() {
        [model, "forward", b] => {
            let b: usize = b.strip_prefix('b').and_then(|b| b.parse().ok()).unwrap_or(1);
            let cfg = VitConfig::preset(model)?;
            let vit = VisionTransformer::new(&cfg, 0)?;
            let x = images(&cfg, b);
            vit.predict(&x)?;
            (start, cpu0) = (Instant::now(), cpu_seconds());
            for _ in 0..reps {
                let tape = Tape::inference().profiled();
                vit.forward(&tape, &tape.constant(x.clone()))?;
                add(&tape);
            }
        }
        ["train", case, mode] => {
            let (mut vit, x, labels) = train_setup(case, mode)?;
            let mut opt = Optimizer::adamw(1e-4);
            train_step(&mut vit, &mut opt, &x, &labels)?;
            (start, cpu0) = (Instant::now(), cpu_seconds());
            for _ in 0..reps {
                let tape = Tape::new().profiled();
                train_step_on(&tape, &mut vit, &mut opt, &x, &labels)?;
                add(&tape);
            }
        }
        _ => return Err(Error::invalid("bench profile", format!("unknown workload `{name}`"))),
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
    let in_ops: f64 = total.values().map(|t| t.forward + t.backward).sum();
    total.insert("(outside ops)", OpTime { calls: 0, forward: wall - in_ops, backward: 0.0 });
    let mut v: Vec<_> = total.into_iter().collect();
    v.sort_by(|a, b| (b.1.forward + b.1.backward).total_cmp(&(a.1.forward + a.1.backward)));
    Ok((v, wall, cpu))
}

/// ViT-Tiny at batch 8 as the backbone, with unmerged branches, and merged, the three timed in
/// turn within each repetition (so machine noise hits all three alike); medians.
fn deploy_rows(reps: usize) -> Result<Vec<VitRow>> {
    let cfg = VitConfig::preset("vit_tiny_patch16_224")?;
    let backbone = Model::plain(VisionTransformer::new(&cfg, 0)?);
    let released = Method::new(ConsolidatorConfig::released(cfg.embed_dim));
    let adapted = backbone.adapt(&released, cfg.num_classes, 0)?;
    let merged = merge(&backbone, &consolidate(&adapted, &backbone.vit)?)?.model;
    let (backbone, adapted, merged) = (backbone.vit, adapted.vit, merged.vit);
    let models = [("backbone", &backbone), ("unmerged", &adapted), ("merged", &merged)];
    let x = images(&cfg, 8);
    let (mut f0, mut f1, mut f2) =
        (|| backbone.predict(&x).map(|_| ()), || adapted.predict(&x).map(|_| ()), || merged.predict(&x).map(|_| ()));
    let ms = super::median_ms_interleaved(reps.max(1) * 2, &mut [&mut f0, &mut f1, &mut f2])?;
    models
        .iter()
        .zip(ms)
        .map(|((label, m), ms)| {
            let (_, gemm_share) = timed(0, || m.predict(&x).map(|_| ()))?;
            Ok(VitRow { name: format!("vit_tiny b8 {label}"), batch: 8, ms, gemm_share, rss_mb: None })
        })
        .collect()
}

/// Runs every workload in this process (`quick`: fewer repetitions and workloads); peak memory
/// is not measured (see the CLI, which runs each workload in its own process).
pub fn run_vit_bench(quick: bool) -> Result<VitReport> {
    let reps = if quick { 3 } else { 7 };
    let mut rows = Vec::new();
    for w in workloads(quick) {
        rows.extend(run_one(&w, reps)?);
    }
    Ok(VitReport { rows })
}

/// CPU time this process has used so far (all threads, user + system), in seconds; `None` off
/// Linux. On a shared machine it does not count the time the process waited for a CPU, so
/// per-run CPU time compares one-thread runs fairly where wall time does not.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    (f.len() == 2).then(|| (f[0] + f[1]) / 100.0)
}

/// Peak resident memory of this process so far (`VmHWM`), in MiB; `None` off Linux.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl VitReport {
    /// The row of a workload.
    pub fn get(&self, name: &str) -> Option<&VitRow> {
        self.rows.iter().find(|r| r.name == name)
    }
    /// Ratios the goals are stated in: (label, value).
    pub fn ratios(&self) -> Vec<(String, f64)> {
        let mut v = Vec::new();
        let ms = |n: &str| self.get(n).map(|r| r.ms);
        for case in TRAIN_CASES {
            if let (Some(c), Some(f)) = (ms(&format!("train {case} consolidator")), ms(&format!("train {case} full"))) {
                v.push((format!("{case}: consolidator step / full fine-tuning step"), c / f));
            }
        }
        if let (Some(m), Some(b)) = (ms("vit_tiny b8 merged"), ms("vit_tiny b8 backbone")) {
            v.push(("vit_tiny b8: merged / backbone inference".into(), m / b));
        }
        if let (Some(u), Some(b)) = (ms("vit_tiny b8 unmerged"), ms("vit_tiny b8 backbone")) {
            v.push(("vit_tiny b8: unmerged branches / backbone inference".into(), u / b));
        }
        v
    }
}

impl fmt::Display for VitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| workload | batch | median ms | images/s | share in linear-layer GEMMs | peak RSS MiB |")?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|")?;
        for r in &self.rows {
            let rss = r.rss_mb.map_or("-".to_string(), |m| format!("{m:.0}"));
            let (ms, ips, share) = (r.ms, r.images_per_s(), 100.0 * r.gemm_share);
            writeln!(f, "| {} | {} | {ms:.2} | {ips:.0} | {share:.0}% | {rss} |", r.name, r.batch)?;
        }
        for (label, v) in self.ratios() {
            writeln!(f, "{label}: {v:.3}")?;
        }
        Ok(())
    }
}

impl VitRow {
    /// Images per second: the batch over the median time.
    pub fn images_per_s(&self) -> f64 {
        self.batch as f64 / self.ms * 1e3
    }
    /// The row as JSON.
    pub fn to_json(&self) -> String {
        let rss = self.rss_mb.map_or("null".to_string(), |m| format!("{m:.1}"));
        format!(
            "{{\"name\":\"{}\",\"batch\":{},\"ms\":{:.3},\"images_per_s\":{:.1},\"gemm_share\":{:.3},\"rss_mb\":{rss}}}",
            self.name,
            self.batch,
            self.ms,
            self.images_per_s(),
            self.gemm_share
        )
    }
}

impl VitReport {
    /// The report as JSON.
    pub fn to_json(&self) -> String {
        let rows: Vec<String> = self.rows.iter().map(VitRow::to_json).collect();
        let ratios: Vec<String> = self.ratios().iter().map(|(l, v)| format!("\"{l}\":{v:.4}")).collect();
        format!("{{\"rows\":[{}],\"ratios\":{{{}}}}}", rows.join(","), ratios.join(","))
    }
}
