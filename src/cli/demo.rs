//! The main job (`demo`) and the transfer suite (`suite`).

use super::args::Args;
use super::commands::run_adapt;
use super::common::*;
use consolidator::data::suite::Task;
use consolidator::io::write_atomic;
use consolidator::nn::VisionTransformer;
use consolidator::peft::Method;
use consolidator::reparam::{attach_delta, consolidate, merge, TaskDelta};
use consolidator::train::TrainConfig;
use consolidator::Tensor;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

type R<T = ()> = Result<T, String>;

fn e<T>(r: consolidator::Result<T>) -> R<T> {
    r.map_err(|e| e.to_string())
}

fn load_backbone(args: &Args) -> R<(PathBuf, VisionTransformer)> {
    let path = PathBuf::from(args.str("backbone").unwrap_or_else(|| default_backbone().display().to_string()));
    if !path.exists() {
        return Err(format!("backbone {} not found: run `consolidator pretrain` first (see README)", path.display()));
    }
    let (vit, m) = e(load_model(&path, None))?;
    if m.is_some() {
        return Err(format!("{} is an adapted model, not a backbone", path.display()));
    }
    Ok((path, vit))
}

/// Hyper-parameters of a method for the demo and the suite (learning rate from the grid).
fn config(method: &Method, epochs: usize, lr: f32, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        lr,
        weight_decay: if matches!(method, Method::Full) { 0.05 } else { 1e-4 },
        warmup_epochs: (epochs / 10).max(1),
        clip_grad: 1.0,
        eval_every: epochs,
        seed,
        ..TrainConfig::default()
    }
}

/// Learning-rate grid per method (chosen on validation accuracy).
fn lr_grid(method: &Method) -> Vec<f32> {
    match method {
        Method::Full => vec![2e-4, 5e-4],
        Method::LinearProbe | Method::BitFit | Method::Ssf { .. } | Method::Vpt { .. } => {
            vec![5e-3, 2e-2]
        }
        _ => vec![2e-3, 5e-3],
    }
}

fn latency_ms(vit: &VisionTransformer, x: &Tensor) -> R<f64> {
    e(consolidator::bench::median_ms(7, || vit.predict(x).map(|_| ())))
}

pub fn demo(args: &Args) -> R {
    let (bb_path, backbone) = load_backbone(args)?;
    let task: Task =
        args.str("task").unwrap_or_else(|| "shift".into()).parse().map_err(|e: consolidator::Error| e.to_string())?;
    let epochs: usize = args.get("epochs", 12)?;
    let out_dir = PathBuf::from(args.str("out").unwrap_or_else(|| "runs/demo".into()));
    let quiet = args.has("no-progress");
    args.finish(0)?;
    std::fs::create_dir_all(&out_dir).map_err(|err| format!("cannot create {}: {err}", out_dir.display()))?;
    let t_start = Instant::now();
    let data = e(load_task(task))?;
    let bb = backbone_params(&backbone);
    println!("consolidator demo: adapting the shipped backbone {} ({bb} parameters)", bb_path.display());
    println!(
        "task `{}`: {} ({} train, {} val, {} test)\n",
        task.name(),
        data.description,
        data.train.len(),
        data.val.len(),
        data.test.len()
    );
    let methods = [
        Method::LinearProbe,
        Method::Full,
        Method::Consolidator(consolidator::peft::ConsolidatorConfig::released(backbone.config.embed_dim)),
    ];
    let mut rows = Vec::new();
    let mut adapted_consolidator = None;
    for m in &methods {
        let lr = lr_grid(m)[0];
        let r =
            e(run_adapt(&backbone, m, &data, &config(m, epochs, lr, 0), false, format!("{:<13}", m.name()), !quiet))?;
        if matches!(m, Method::Consolidator(_)) {
            adapted_consolidator = Some(r.model.clone());
        }
        rows.push((m.name(), r.val_acc, r.test_acc, r.tunable, r.stored_bytes, r.report.seconds));
    }
    // Stage 1 and stage 2 on the consolidator, through files, then verify.
    let method = &methods[2];
    let adapted = adapted_consolidator.expect("the consolidator ran");
    let delta = e(consolidate(&adapted, &backbone, method))?;
    let delta_path = out_dir.join("delta.safetensors");
    e(delta.save(&delta_path))?;
    let delta = e(TaskDelta::load(&delta_path))?;
    let merged = e(merge(&backbone, &delta))?;
    let merged_path = out_dir.join("merged.safetensors");
    e(save_model(&merged_path, &merged.model, &[]))?;
    let (merged_model, _) = e(load_model(&merged_path, None))?;
    let served = e(attach_delta(&backbone, &delta))?;
    let x = data.test.images.clone();
    let unmerged_logits = e(adapted.predict(&x))?;
    let merged_logits = e(merged_model.predict(&x))?;
    let stage1_logits = e(served.predict(&x))?;
    let scale = unmerged_logits.max_abs().max(1.0);
    let d2 = merged_logits.max_abs_diff(&unmerged_logits);
    let d1 = stage1_logits.max_abs_diff(&unmerged_logits);
    let agree = argmax_agreement(&merged_logits, &unmerged_logits);
    if d2 > 1e-4 * scale || d1 > 1e-4 * scale {
        return Err(format!(
            "merged logits differ from unmerged ones by {d2:.3e} (stage 1: {d1:.3e}; logit scale {scale:.2})"
        ));
    }
    // Latency of one batch of 64 test images.
    let xb = e(data.test.subset(&(0..64.min(data.test.len())).collect::<Vec<_>>()))?.images;
    let mut base = backbone.clone();
    base.reset_head(data.train.num_classes, 0);
    // Timed in turn within each repetition, so the ratios are not at the mercy of machine noise.
    let (mut f0, mut f1, mut f2) = (
        || base.predict(&xb).map(|_| ()),
        || adapted.predict(&xb).map(|_| ()),
        || merged_model.predict(&xb).map(|_| ()),
    );
    let lat = e(consolidator::bench::median_ms_interleaved(15, &mut [&mut f0, &mut f1, &mut f2]))?;
    let (lat_base, lat_unmerged, lat_merged) = (lat[0], lat[1], lat[2]);

    println!("\n| method | val acc | test acc | tunable params | % of backbone | stored per task | train time |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, va, ta, tun, st, secs) in &rows {
        println!(
            "| {name} | {:.1}% | {:.1}% | {tun} | {:.2}% | {} | {secs:.1}s |",
            100.0 * va,
            100.0 * ta,
            100.0 * *tun as f64 / bb as f64,
            bytes(*st)
        );
    }
    println!(
        "\nconsolidator, stage 1 → {} ({}), stage 2 → {}",
        delta_path.display(),
        bytes(delta.storage_bytes()),
        merged_path.display()
    );
    println!(
        "merged vs unmerged logits on {} test images: max |diff| {d2:.2e} (stage 1 on the fly: {d1:.2e}; logit scale {scale:.1}); predictions agree on {:.2}%",
        x.shape()[0],
        100.0 * agree
    );
    println!("\ninference latency, batch of {} images (median of 15, the three timed in turn):", xb.shape()[0]);
    println!("| model | latency | vs backbone |");
    println!("|---|---:|---:|");
    for (n, l) in
        [("backbone", lat_base), ("unmerged (with branches)", lat_unmerged), ("merged (plain ViT)", lat_merged)]
    {
        println!("| {n} | {l:.2} ms | {:.2}× |", l / lat_base);
    }
    println!("\ndone in {:.1}s", t_start.elapsed().as_secs_f32());
    Ok(())
}

fn argmax_agreement(a: &Tensor, b: &Tensor) -> f64 {
    let k = a.shape()[1];
    let arg = |r: &[f32]| r.iter().enumerate().fold(0, |m, (j, &v)| if v > r[m] { j } else { m });
    let n = a.shape()[0];
    (0..n).filter(|&i| arg(&a.data()[i * k..(i + 1) * k]) == arg(&b.data()[i * k..(i + 1) * k])).count() as f64
        / n as f64
}

// ---------------------------------------------------------------------------------------------

struct SuiteRow {
    method: String,
    acc: Vec<f32>,
    lrs: Vec<f32>,
    tunable_pct: f64,
    stored: usize,
    train_secs: f32,
    latency_ms: f64,
}

pub fn suite(args: &Args) -> R {
    let (_, backbone) = load_backbone(args)?;
    let epochs: usize = args.get("epochs", 20)?;
    let out_dir = PathBuf::from(args.str("out").unwrap_or_else(|| "runs/suite".into()));
    let only: Option<String> = args.str("methods");
    let tasks_arg: Option<String> = args.str("tasks");
    let quiet = args.has("no-progress");
    let json = args.has("json");
    args.finish(0)?;
    std::fs::create_dir_all(&out_dir).map_err(|err| format!("cannot create {}: {err}", out_dir.display()))?;
    let dim = backbone.config.embed_dim;
    let methods: Vec<Method> = match &only {
        Some(list) => list.split(';').map(|m| e(Method::parse(m, dim))).collect::<R<_>>()?,
        None => Method::all(dim),
    };
    let tasks: Vec<Task> = match &tasks_arg {
        Some(list) => {
            list.split(',').map(|t| t.parse().map_err(|e: consolidator::Error| e.to_string())).collect::<R<_>>()?
        }
        None => Task::all().to_vec(),
    };
    let bb = backbone_params(&backbone);
    let datas: Vec<_> = tasks.iter().map(|&t| e(load_task(t))).collect::<R<_>>()?;
    let mut rows = Vec::new();
    for m in &methods {
        let mut row = SuiteRow {
            method: m.name().into(),
            acc: vec![],
            lrs: vec![],
            tunable_pct: 0.0,
            stored: 0,
            train_secs: 0.0,
            latency_ms: 0.0,
        };
        for (t, data) in tasks.iter().zip(&datas) {
            // Choose the learning rate on the 200 validation examples; report test accuracy.
            let mut best: Option<(f32, f32, super::commands::AdaptResult)> = None;
            for lr in lr_grid(m) {
                let r = e(run_adapt(
                    &backbone,
                    m,
                    data,
                    &config(m, epochs, lr, 0),
                    false,
                    format!("{:<12} {:<11} lr {lr:.0e}", m.name(), t.name()),
                    !quiet,
                ))?;
                row.train_secs += r.report.seconds;
                if best.as_ref().is_none_or(|b| r.val_acc > b.1) {
                    best = Some((lr, r.val_acc, r));
                }
            }
            let (lr, _, r) = best.expect("grid is not empty");
            row.acc.push(r.test_acc);
            row.lrs.push(lr);
            row.tunable_pct = 100.0 * r.tunable as f64 / bb as f64;
            row.stored = r.stored_bytes;
            let xb = e(data.test.subset(&(0..64.min(data.test.len())).collect::<Vec<_>>()))?.images;
            let deploy = if m.mergeable() {
                e(merge(&backbone, &e(consolidate(&r.model, &backbone, m))?))?.model
            } else {
                r.model.clone()
            };
            row.latency_ms = latency_ms(&deploy, &xb)?;
            if !quiet {
                eprintln!("{:<12} {:<11} test {:.1}% (lr {lr:.0e})", m.name(), t.name(), 100.0 * r.test_acc);
            }
        }
        rows.push(row);
    }
    // Outputs: Markdown, CSV, SVG.
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| method | {} | mean | tunable % | stored per task | train time (all runs) | latency (64 images) |",
        tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(md, "|---|{}---:|---:|---:|---:|---:|", "---:|".repeat(tasks.len()));
    let mut csv = format!(
        "method,{},mean,tunable_pct,stored_bytes,train_seconds,latency_ms\n",
        tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(",")
    );
    for r in &rows {
        let mean = r.acc.iter().sum::<f32>() / r.acc.len() as f32;
        let _ = writeln!(
            md,
            "| {} | {} | **{:.1}** | {:.2}% | {} | {:.0}s | {:.2} ms |",
            r.method,
            r.acc.iter().map(|a| format!("{:.1}", 100.0 * a)).collect::<Vec<_>>().join(" | "),
            100.0 * mean,
            r.tunable_pct,
            bytes(r.stored),
            r.train_secs,
            r.latency_ms
        );
        let _ = writeln!(
            csv,
            "{},{},{:.4},{:.4},{},{:.1},{:.3}",
            r.method,
            r.acc.iter().map(|a| format!("{a:.4}")).collect::<Vec<_>>().join(","),
            mean,
            r.tunable_pct,
            r.stored,
            r.train_secs,
            r.latency_ms
        );
    }
    let _ = writeln!(
        md,
        "\nTest accuracy (%) per task; learning rate chosen per method and task on the 200 validation examples from the method's two-value grid; {epochs} epochs, batch 32, AdamW, cosine schedule."
    );
    let svg = plot(&rows);
    for (name, body) in [("results.md", &md), ("results.csv", &csv), ("results.svg", &svg)] {
        e(write_atomic(&out_dir.join(name), body.as_bytes()))?;
    }
    if json {
        println!("{}", csv_to_json(&csv));
    } else {
        println!("{md}");
        println!("wrote {}/results.{{md,csv,svg}}", out_dir.display());
    }
    Ok(())
}

fn csv_to_json(csv: &str) -> String {
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let rows: Vec<String> = lines
        .map(|l| {
            let cells: Vec<String> = l
                .split(',')
                .zip(&head)
                .map(
                    |(v, h)| {
                        if v.parse::<f64>().is_ok() {
                            format!("\"{h}\":{v}")
                        } else {
                            format!("\"{h}\":\"{v}\"")
                        }
                    },
                )
                .collect();
            format!("{{{}}}", cells.join(","))
        })
        .collect();
    format!("[{}]", rows.join(","))
}

/// Mean accuracy against stored bytes per task (log scale), one point per method.
fn plot(rows: &[SuiteRow]) -> String {
    let (w, h, m) = (640.0, 420.0, 60.0);
    let pts: Vec<(f64, f64, &str)> = rows
        .iter()
        .map(|r| {
            (
                (r.stored.max(1) as f64).log10(),
                100.0 * r.acc.iter().sum::<f32>() as f64 / r.acc.len().max(1) as f64,
                r.method.as_str(),
            )
        })
        .collect();
    let (xmin, xmax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0.floor()), b.max(p.0.ceil())));
    let (ymin, ymax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (ymin, ymax) = ((ymin - 5.0).floor(), (ymax + 5.0).ceil().min(100.0));
    let sx = |x: f64| m + (x - xmin) / (xmax - xmin).max(1e-9) * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - ymin) / (ymax - ymin).max(1e-9) * (h - 2.0 * m);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(s, "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>", h - m, w - m, h - m, h - m);
    let mut d = xmin;
    while d <= xmax + 1e-9 {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            sx(d),
            h - m + 18.0,
            bytes(10f64.powf(d) as usize)
        );
        d += 1.0;
    }
    for k in 0..=4 {
        let y = ymin + (ymax - ymin) * k as f64 / 4.0;
        let _ = writeln!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.0}</text>", m - 6.0, sy(y) + 4.0);
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">stored bytes per task (log scale)</text>",
        w / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        s,
        "<text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">mean test accuracy (%)</text>",
        h / 2.0,
        h / 2.0
    );
    for (x, y, n) in pts {
        let color = if n == "consolidator" { "#d62728" } else { "#1f77b4" };
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{n}</text>",
            sx(x),
            sy(y),
            sx(x) + 8.0,
            sy(y) - 6.0
        );
    }
    s.push_str("</svg>\n");
    s
}
