//! Side by side with PyTorch: our reports next to the JSON that `scripts/bench_torch.py` writes
//! for the same workloads on the same machine, one row per workload with the ratio the goal
//! (issue 16) is stated in: GFLOP/s for GEMM, milliseconds for the ViT workloads, images per
//! second for the small model (`vit_mnist_tiny`). Like for like: best rates for GEMM and the grouped connection (both
//! sides report their best repetition), and for whole-model times the best of the per-round
//! medians (`--rounds N` here, `--rounds N` there: on a shared machine the best round is the one
//! least disturbed by other tenants, on both sides).

use super::gc::GcReport;
use super::gemm::GemmReport;
use super::vit::VitReport;
use crate::io::json::Json;

/// One compared workload.
#[derive(Clone, Debug, PartialEq)]
pub struct VersusRow {
    /// What was measured.
    pub work: String,
    /// Our number.
    pub ours: f64,
    /// PyTorch's number.
    pub torch: f64,
    /// Unit of both numbers: `GFLOP/s` or `img/s` (higher is better), `ms` or `MiB` (lower is
    /// better).
    pub unit: &'static str,
    /// The ratio the goal is stated in.
    pub ratio: f64,
    /// Whether `ratio` is ours/torch (else torch/ours).
    pub ours_over_torch: bool,
    /// What the ratio is and the goal for it.
    pub goal: &'static str,
}

impl VersusRow {
    fn new(work: String, ours: f64, torch: f64, unit: &'static str, ours_over_torch: bool, goal: &'static str) -> Self {
        let ratio = if ours_over_torch { ours / torch } else { torch / ours };
        VersusRow { work, ours, torch, unit, ratio, ours_over_torch, goal }
    }
}

/// Rows of several rounds (each round: PyTorch's run, then ours) merged into one: per workload
/// each side keeps its best number over the rounds (the highest rate, the lowest time or
/// memory), and the ratio is recomputed from those.
pub fn best_of_rounds(rounds: &[Vec<VersusRow>]) -> Vec<VersusRow> {
    let mut out: Vec<VersusRow> = Vec::new();
    for r in rounds.iter().flatten() {
        let better = |a: f64, b: f64| if r.unit.ends_with("/s") { a.max(b) } else { a.min(b) };
        match out.iter_mut().find(|o| o.work == r.work) {
            Some(o) => {
                *o = VersusRow::new(
                    o.work.clone(),
                    better(o.ours, r.ours),
                    better(o.torch, r.torch),
                    o.unit,
                    o.ours_over_torch,
                    o.goal,
                )
            }
            None => out.push(r.clone()),
        }
    }
    out
}

fn num(j: &Json, k: &str) -> Option<f64> {
    j.get(k).and_then(Json::as_f64)
}

fn rows_of<'a>(torch: &'a Json, section: &str) -> &'a [Json] {
    torch.get(section).and_then(Json::as_array).unwrap_or(&[])
}

/// Every workload present on both sides.
pub fn compare(
    torch: &Json,
    gemm: Option<&GemmReport>,
    gc: Option<&GcReport>,
    vit: Option<&VitReport>,
) -> Vec<VersusRow> {
    let mut out = Vec::new();
    if let Some(g) = gemm {
        for r in &g.rows {
            let t = rows_of(torch, "sgemm").iter().find(|t| {
                [("m", r.m), ("k", r.k), ("n", r.n)].iter().all(|(k, v)| t.get(k).and_then(Json::as_usize) == Some(*v))
            });
            if let Some(tg) = t.and_then(|t| num(t, "gflops_best_all").or_else(|| num(t, "gflops_best"))) {
                let work = format!("sgemm {}×{}×{}", r.m, r.k, r.n);
                out.push(VersusRow::new(work, r.gflops, tg, "GFLOP/s", true, "ours/torch ≥ 0.95"));
            }
            // Both sides multiply by a linear layer's weight, stored `[n, k]`; MKL's product
            // with a row-major `B[k, n]` is shown beside it, for reference (no goal).
            if let Some(nn) = t.and_then(|t| num(t, "gflops_nn_best_all").or_else(|| num(t, "gflops_nn_best"))) {
                let work = format!("sgemm {}×{}×{}, PyTorch's B row-major", r.m, r.k, r.n);
                out.push(VersusRow::new(work, r.gflops, nn, "GFLOP/s", true, "reference"));
            }
        }
    }
    if let Some(gc) = gc {
        for r in gc.rows.iter().filter(|r| r.dim == 768 && r.groups > 1) {
            let t = rows_of(torch, "grouped").iter().find(|t| {
                t.get("g").and_then(Json::as_usize) == Some(r.groups)
                    && t.get("D").and_then(Json::as_usize) == Some(768)
                    && t.get("T").and_then(Json::as_usize) == Some(gc.tokens)
            });
            if let Some(tms) = t.and_then(|t| num(t, "best_ms_min")) {
                let work = format!("grouped linear fwd T={} D=768 g={}", gc.tokens, r.groups);
                let goal = if r.groups >= 16 { "torch/ours ≥ 2" } else { "torch/ours ≥ 1" };
                out.push(VersusRow::new(work, r.fused_fwd_ms, tms, "ms", false, goal));
            }
        }
    }
    if let Some(v) = vit {
        for r in &v.rows {
            let parts: Vec<&str> = r.name.split(' ').collect();
            let (t, goal) = match parts.as_slice() {
                [model, "forward", _] => (
                    rows_of(torch, "vit_fwd").iter().find(|t| {
                        t.get("model").and_then(Json::as_str) == Some(model)
                            && t.get("batch").and_then(Json::as_usize) == Some(r.batch)
                    }),
                    "ours/torch ≤ 1.0",
                ),
                ["train", case, mode] => (
                    rows_of(torch, "train").iter().find(|t| {
                        t.get("case").and_then(Json::as_str) == Some(case)
                            && t.get("mode").and_then(Json::as_str) == Some(mode)
                    }),
                    if *mode == "consolidator" { "ours/torch ≤ 0.7" } else { "ours/torch ≤ 0.9" },
                ),
                _ => (None, ""),
            };
            let Some(t) = t else { continue };
            if let Some(tms) = num(t, "ms_best_median").or_else(|| num(t, "ms")) {
                if r.name.contains("mnist") {
                    // The small model: images per second, the goal's unit.
                    let ips = |ms: f64| r.batch as f64 / ms * 1e3;
                    let row = VersusRow::new(r.name.clone(), ips(r.ms), ips(tms), "img/s", true, "ours/torch ≥ 1.5");
                    out.push(row);
                } else {
                    out.push(VersusRow::new(r.name.clone(), r.ms, tms, "ms", true, goal));
                }
            }
            if let (Some(ours), Some(trss)) = (r.rss_mb, num(t, "peak_rss_mb")) {
                out.push(VersusRow::new(format!("{} peak RSS", r.name), ours, trss, "MiB", false, "torch/ours ≥ 2"));
            }
        }
    }
    out
}

/// The comparison as a Markdown table.
pub fn to_markdown(rows: &[VersusRow]) -> String {
    let mut s = String::from("| workload | ours | PyTorch | unit | ratio | goal |\n|---|---:|---:|---|---:|---|\n");
    for r in rows {
        s += &format!("| {} | {:.1} | {:.1} | {} | {:.2} | {} |\n", r.work, r.ours, r.torch, r.unit, r.ratio, r.goal);
    }
    s
}

/// The comparison as JSON.
pub fn to_json(rows: &[VersusRow]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"work\":\"{}\",\"ours\":{:.4},\"torch\":{:.4},\"unit\":\"{}\",\"ratio\":{:.4},\"goal\":\"{}\"}}",
                r.work, r.ours, r.torch, r.unit, r.ratio, r.goal
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}
