//! `consolidator bench gemm | gc | vit | all [--json] [--quick] [--rounds N] [--torch FILE [--torch-run CMD]]`.
//!
//! `vit` runs each workload in a child process (`bench --worker NAME`) so that each reports its
//! own peak resident memory. `--torch FILE` adds the side-by-side table against the JSON of
//! `scripts/bench_torch.py`; with `--torch-run CMD` that command (which must write FILE) runs at
//! the start of every round, so PyTorch and this engine take turns on the machine. `--rounds N`
//! repeats everything N times and keeps each workload's best round on each side: the best GEMM
//! rate, the fastest grouped forward, the lowest median.

use super::{note, say, R};
use consolidator::bench::{self, gc::GcReport, gemm::GemmReport, vit::VitReport, vit::VitRow};
use consolidator::io::json::Json;

/// `consolidator bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Which benchmarks
    #[arg(default_value = "all", value_parser = ["gemm", "gc", "vit", "all"])]
    what: String,
    /// Print the results as JSON
    #[arg(long)]
    json: bool,
    /// Fewer repetitions and workloads
    #[arg(long)]
    quick: bool,
    /// Repeat everything N times; each workload keeps its best round
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    rounds: u64,
    /// Side by side with PyTorch: the JSON file of scripts/bench_torch.py
    #[arg(long, value_name = "FILE")]
    torch: Option<String>,
    /// A command that writes the --torch file, run at the start of every round
    #[arg(long, value_name = "CMD", requires = "torch")]
    torch_run: Option<String>,
    /// (internal) run one ViT workload in this process and print its row with its peak memory
    #[arg(long, hide = true)]
    worker: Option<String>,
}

pub fn bench(a: &BenchArgs) -> R {
    let (what, json, quick, worker, torch, torch_run) =
        (a.what.clone(), a.json, a.quick, a.worker.clone(), a.torch.clone(), a.torch_run.clone());
    let rounds = a.rounds as usize;
    let e = |r: consolidator::Error| r.to_string();
    let reps = if quick { 3 } else { 7 };
    if let Some(name) = worker {
        // A child process: one workload, then its peak memory.
        for mut row in bench::vit::run_one(&name, reps).map_err(e)? {
            row.rss_mb = bench::vit::peak_rss_mb();
            say!("{}", row.to_json());
        }
        return Ok(());
    }
    let all = what == "all";
    if !all && !["gemm", "gc", "vit"].contains(&what.as_str()) {
        return Err(format!("unknown benchmark `{what}` (gemm, gc, vit, all)").into());
    }
    let read_torch = |path: &str| -> Result<Json, String> {
        let bytes = std::fs::read(path).map_err(|err| format!("cannot read {path}: {err}"))?;
        Json::parse(&bytes, path).map_err(e)
    };
    if let (Some(path), None) = (&torch, &torch_run) {
        read_torch(path)?; // fail before measuring anything
    }
    let (mut gemm, mut gc, mut vit): (Option<GemmReport>, Option<GcReport>, Option<VitReport>) = (None, None, None);
    let mut versus_rounds = Vec::new();
    for round in 1..=rounds {
        let say = |m: &str| {
            if !json {
                note!("bench (round {round}/{rounds}): {m}");
            }
        };
        if let Some(cmd) = &torch_run {
            say(&format!("PyTorch: {cmd}"));
            let status = std::process::Command::new("sh").arg("-c").arg(cmd).status();
            if !status.is_ok_and(|s| s.success()) {
                return Err(format!("--torch-run command failed: {cmd}").into());
            }
        }
        // This round's reports; each section keeps its best round.
        let (mut g1, mut c1, mut v1) = (None, None, None);
        if all || what == "gemm" {
            say("gemm");
            g1 = Some(bench::gemm::run_gemm_bench(if quick { 150 } else { 600 }).map_err(e)?);
        }
        if all || what == "gc" {
            say("grouped connection");
            let groups: &[usize] = &[1, 2, 4, 8, 16, 32, 64, 384];
            let dims: &[usize] = if quick { &[768] } else { &[192, 384, 768] };
            c1 = Some(bench::gc::run_gc_bench(1576, dims, groups, reps).map_err(e)?);
        }
        if all || what == "vit" {
            let mut report = VitReport::default();
            for name in bench::vit::workloads(quick) {
                say(&name);
                let rows = run_in_child(&name, quick).or_else(|err| {
                    note!("bench: {err}; running `{name}` in this process (no peak memory)");
                    bench::vit::run_one(&name, reps)
                });
                report.rows.extend(rows.map_err(e)?);
            }
            v1 = Some(report);
        }
        if let Some(path) = &torch {
            let t = read_torch(path)?;
            versus_rounds.push(bench::versus::compare(&t, g1.as_ref(), c1.as_ref(), v1.as_ref()));
        }
        keep_best(&mut gemm, g1, |a, b| {
            for (x, y) in a.rows.iter_mut().zip(b.rows) {
                if y.gflops > x.gflops {
                    *x = y;
                }
            }
        });
        keep_best(&mut gc, c1, |a, b| {
            for (x, y) in a.rows.iter_mut().zip(b.rows) {
                if y.fused_fwd_ms < x.fused_fwd_ms {
                    *x = y;
                }
            }
        });
        keep_best(&mut vit, v1, |a, b| {
            for (x, y) in a.rows.iter_mut().zip(b.rows) {
                if y.ms < x.ms {
                    *x = y;
                }
            }
        });
    }
    let mut parts: Vec<(&str, String)> = Vec::new();
    if let Some(r) = &gemm {
        parts.push(("gemm", if json { r.to_json() } else { r.to_string() }));
    }
    if let Some(r) = &gc {
        parts.push(("gc", if json { r.to_json() } else { r.to_string() }));
    }
    if let Some(r) = &vit {
        parts.push(("vit", if json { r.to_json() } else { r.to_string() }));
    }
    if torch.is_some() {
        let rows = bench::versus::best_of_rounds(&versus_rounds);
        parts.push((
            "versus_torch",
            if json { bench::versus::to_json(&rows) } else { bench::versus::to_markdown(&rows) },
        ));
    }
    if json {
        let body: Vec<String> = parts.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        say!("{{\"threads\":{},\"rounds\":{rounds},{}}}", consolidator::par::threads(), body.join(","));
    } else {
        for (k, v) in parts {
            say!("== {k}\n{v}\n");
        }
    }
    Ok(())
}

/// Folds one round's report into the best so far.
fn keep_best<T>(best: &mut Option<T>, new: Option<T>, merge: impl FnOnce(&mut T, T)) {
    match (best.as_mut(), new) {
        (Some(b), Some(n)) => merge(b, n),
        (None, n) => *best = n,
        (Some(_), None) => {}
    }
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
