//! `consolidator bench gemm | gc | vit | all [--json] [--quick] [--rounds N] [--torch FILE]`.
//!
//! `vit` runs each workload in a child process (`bench --worker NAME`) so that each reports its
//! own peak resident memory. `--torch FILE` adds the side-by-side table against the JSON of
//! `scripts/bench_torch.py`. `--rounds N` repeats every workload N times (interleaved) and keeps
//! each one's best round: the best GEMM rate, the fastest grouped forward, the lowest median.

use super::args::Args;
use consolidator::bench::{self, vit::VitRow};
use consolidator::io::json::Json;

pub fn bench(args: &Args) -> Result<(), String> {
    let what = args.positional.first().cloned().unwrap_or_else(|| "all".into());
    let json = args.has("json");
    let quick = args.has("quick");
    let worker = args.str("worker");
    let torch = args.str("torch");
    let rounds: usize = args.get("rounds", 1)?;
    args.finish(1)?;
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let e = |r: consolidator::Error| r.to_string();
    let reps = if quick { 3 } else { 7 };
    if let Some(name) = worker {
        // A child process: one workload, then its peak memory.
        for mut row in bench::vit::run_one(&name, reps).map_err(e)? {
            row.rss_mb = bench::vit::peak_rss_mb();
            println!("{}", row.to_json());
        }
        return Ok(());
    }
    let torch = match torch {
        Some(path) => {
            let bytes = std::fs::read(&path).map_err(|err| format!("cannot read {path}: {err}"))?;
            Some(Json::parse(&bytes, &path).map_err(e)?)
        }
        None => None,
    };
    let all = what == "all";
    if !all && !["gemm", "gc", "vit"].contains(&what.as_str()) {
        return Err(format!("unknown benchmark `{what}` (gemm, gc, vit, all)"));
    }
    let mut parts: Vec<(String, String)> = Vec::new();
    let (mut gemm, mut gc, mut vit) = (None, None, None);
    if all || what == "gemm" {
        let mut r = bench::gemm::run_gemm_bench(if quick { 150 } else { 600 }).map_err(e)?;
        for _ in 1..rounds {
            let again = bench::gemm::run_gemm_bench(if quick { 150 } else { 600 }).map_err(e)?;
            for (a, b) in r.rows.iter_mut().zip(again.rows) {
                if b.gflops > a.gflops {
                    *a = b;
                }
            }
        }
        parts.push(("gemm".into(), if json { r.to_json() } else { r.to_string() }));
        gemm = Some(r);
    }
    if all || what == "gc" {
        let groups: &[usize] = &[1, 2, 4, 8, 16, 32, 64, 384];
        let dims: &[usize] = if quick { &[768] } else { &[192, 384, 768] };
        let mut r = bench::gc::run_gc_bench(1576, dims, groups, reps).map_err(e)?;
        for _ in 1..rounds {
            let again = bench::gc::run_gc_bench(1576, dims, groups, reps).map_err(e)?;
            for (a, b) in r.rows.iter_mut().zip(again.rows) {
                if b.fused_fwd_ms < a.fused_fwd_ms {
                    *a = b;
                }
            }
        }
        parts.push(("gc".into(), if json { r.to_json() } else { r.to_string() }));
        gc = Some(r);
    }
    if all || what == "vit" {
        // Rounds interleave the workloads; each keeps its best (lowest-median) round.
        let mut report = bench::vit::VitReport::default();
        for round in 0..rounds {
            for name in bench::vit::workloads(quick) {
                if !json {
                    eprintln!("bench vit (round {}/{rounds}): {name}", round + 1);
                }
                let rows = run_in_child(&name, quick).or_else(|_| bench::vit::run_one(&name, reps)).map_err(e)?;
                for row in rows {
                    match report.rows.iter_mut().find(|r| r.name == row.name) {
                        Some(old) if old.ms <= row.ms => {}
                        Some(old) => *old = row,
                        None => report.rows.push(row),
                    }
                }
            }
        }
        parts.push(("vit".into(), if json { report.to_json() } else { report.to_string() }));
        vit = Some(report);
    }
    if let Some(t) = &torch {
        let rows = bench::versus::compare(t, gemm.as_ref(), gc.as_ref(), vit.as_ref());
        parts.push((
            "versus_torch".into(),
            if json { bench::versus::to_json(&rows) } else { bench::versus::to_markdown(&rows) },
        ));
    }
    if json {
        let body: Vec<String> = parts.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("{{\"threads\":{},{}}}", consolidator::par::threads(), body.join(","));
    } else {
        for (k, v) in parts {
            println!("== {k}\n{v}\n");
        }
    }
    Ok(())
}

/// Runs one ViT workload in a fresh process of this executable and reads its rows back.
fn run_in_child(name: &str, quick: bool) -> Result<Vec<VitRow>, consolidator::Error> {
    let fail = |m: String| consolidator::Error::invalid("bench vit", m);
    let exe = std::env::current_exe().map_err(|err| fail(err.to_string()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "vit", "--worker", name]);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd.output().map_err(|err| fail(err.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("worker for `{name}` failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()) {
        let j = Json::parse_str(line.trim(), "bench worker output")?;
        let f = |k: &str| j.get(k).and_then(Json::as_f64).ok_or_else(|| fail(format!("worker output lacks `{k}`")));
        let row_name = j.get("name").and_then(Json::as_str).ok_or_else(|| fail("worker output lacks `name`".into()))?;
        rows.push(VitRow {
            name: row_name.to_string(),
            batch: f("batch")? as usize,
            ms: f("ms")?,
            gemm_share: f("gemm_share")?,
            rss_mb: j.get("rss_mb").and_then(Json::as_f64),
        });
    }
    Ok(rows)
}
