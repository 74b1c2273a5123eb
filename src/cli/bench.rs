//! `consolidator bench gemm | gc | vit | all [--json] [--quick]`.

use super::args::Args;
use consolidator::bench;

pub fn bench(args: &Args) -> Result<(), String> {
    let what = args.positional.first().cloned().unwrap_or_else(|| "all".into());
    let json = args.has("json");
    let quick = args.has("quick");
    args.finish(1)?;
    let e = |r: consolidator::Error| r.to_string();
    let mut parts: Vec<(String, String)> = Vec::new();
    let all = what == "all";
    let mut known = all;
    if all || what == "gemm" {
        known = true;
        let r = bench::gemm::run_gemm_bench(if quick { 150 } else { 600 }).map_err(e)?;
        parts.push(("gemm".into(), if json { r.to_json() } else { r.to_string() }));
    }
    if all || what == "gc" {
        known = true;
        let groups: &[usize] = &[1, 2, 4, 8, 16, 32, 64, 384];
        let dims: &[usize] = if quick { &[768] } else { &[192, 384, 768] };
        let r = bench::gc::run_gc_bench(1576, dims, groups, if quick { 3 } else { 7 }).map_err(e)?;
        parts.push(("gc".into(), if json { r.to_json() } else { r.to_string() }));
    }
    if all || what == "vit" {
        known = true;
        let r = bench::vit::run_vit_bench(quick).map_err(e)?;
        parts.push(("vit".into(), if json { r.to_json() } else { r.to_string() }));
    }
    if !known {
        return Err(format!("unknown benchmark `{what}` (gemm, gc, vit, all)"));
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
