//! Side by side with PyTorch: our reports next to the JSON that `scripts/bench_torch.py` writes
//! for the same workloads on the same machine, one row per workload with the ratio the goal of
//! issue 7 is stated in. Like for like: best rates for GEMM and the grouped connection (both
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
    /// Unit of both numbers.
    pub unit: &'static str,
    /// The ratio the goal is stated in.
    pub ratio: f64,
    /// What the ratio is and the goal for it.
    pub goal: &'static str,
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
                out.push(VersusRow {
                    work: format!("sgemm {}×{}×{}", r.m, r.k, r.n),
                    ours: r.gflops,
                    torch: tg,
                    unit: "GFLOP/s",
                    ratio: r.gflops / tg,
                    goal: "ours/torch ≥ 0.85",
                });
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
                out.push(VersusRow {
                    work: format!("grouped linear fwd T={} D=768 g={}", gc.tokens, r.groups),
                    ours: r.fused_fwd_ms,
                    torch: tms,
                    unit: "ms",
                    ratio: tms / r.fused_fwd_ms,
                    goal: if r.groups >= 16 { "speed-up ≥ 2" } else { "speed-up ≥ 1" },
                });
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
                    if *mode == "consolidator" { "ours/torch ≤ 0.5" } else { "ours/torch (no goal)" },
                ),
                _ => (None, ""),
            };
            let Some(t) = t else { continue };
            if let Some(tms) = num(t, "ms_best_median").or_else(|| num(t, "ms")) {
                out.push(VersusRow {
                    work: r.name.clone(),
                    ours: r.ms,
                    torch: tms,
                    unit: "ms",
                    ratio: r.ms / tms,
                    goal,
                });
            }
            if let (Some(ours), Some(trss)) = (r.rss_mb, num(t, "peak_rss_mb")) {
                out.push(VersusRow {
                    work: format!("{} peak RSS", r.name),
                    ours,
                    torch: trss,
                    unit: "MiB",
                    ratio: trss / ours,
                    goal: "torch/ours ≥ 2",
                });
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
