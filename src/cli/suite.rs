//! `suite`: every method × every task of the transfer suite, the learning rate chosen on
//! validation; Markdown, CSV and SVG results.

use super::args;
use super::common::*;
use super::{note, say, R};
use consolidator::data::suite::Task;
use consolidator::io::json::Json;
use consolidator::io::write_atomic;
use consolidator::peft::Method;
use consolidator::reparam::{consolidate, merge};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `consolidator suite`: every method × every task in this process; or, with `--plan`, `--job`
/// and `--gather`, the budget sweep as independent runs for any runner (docs/SCALE.md).
#[derive(clap::Args)]
pub struct SuiteArgs {
    /// Epochs of each run [default: 20; 30 with --plan]
    #[arg(long, value_parser = args::epochs)]
    epochs: Option<usize>,
    /// Write the sweep's runs to DIR (one job file and one command each)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["gather", "job"])]
    plan: Option<PathBuf>,
    /// Run one job file of a plan and write its result
    #[arg(long, value_name = "FILE", conflicts_with = "gather")]
    job: Option<PathBuf>,
    /// Choose settings on validation, plan the seed runs, build tables and plot from DIR's results
    #[arg(long, value_name = "DIR")]
    gather: Option<PathBuf>,
    /// Seeds of each chosen setting (with --plan)
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    seeds: u64,
    /// Evaluate validation and test every N epochs (with --plan: the paper's protocol reads these)
    #[arg(long, value_name = "N", value_parser = args::every, default_value_t = 10)]
    eval_every: usize,
    /// Sweep configs, separated by `,` (with --plan) [default: all: linear, bitfit, ssf, full,
    /// lora-r{1,2,4,8}, adapter-d{2,4,8}, vpt-p{1,5,10}, consolidator-g{32,16,8},
    /// consolidator-g8+16+32, consolidator-g8+16+32r]
    #[arg(long)]
    configs: Option<String>,
    /// Methods, separated by `;` [default: every method with its defaults]
    #[arg(long)]
    methods: Option<String>,
    /// Tasks, separated by `,` [default: all five]
    #[arg(long)]
    tasks: Option<String>,
    /// Where to write results.{md,csv,svg} (sweep.{md,csv,svg} with --gather: default its DIR)
    #[arg(long, value_name = "DIR", default_value = "runs/suite")]
    out: PathBuf,
    /// The backbone [default: the shipped one]
    #[arg(long, value_name = "FILE")]
    backbone: Option<PathBuf>,
    /// Print the table as JSON
    #[arg(long)]
    json: bool,
    /// No progress lines on standard error
    #[arg(long)]
    no_progress: bool,
}

impl SuiteArgs {
    /// `--out`, or `dir` when `--out` was left at its default.
    fn out_or(&self, dir: &Path) -> PathBuf {
        if self.out == Path::new("runs/suite") {
            dir.to_path_buf()
        } else {
            self.out.clone()
        }
    }
}

struct SuiteRow {
    method: String,
    acc: Vec<f32>,
    lrs: Vec<f32>,
    tunable_pct: f64,
    stored: usize,
    train_secs: f32,
    latency_ms: f64,
}

pub fn suite(a: &SuiteArgs, data: Option<&Path>) -> R {
    let tasks: Vec<Task> = match &a.tasks {
        Some(list) => list.split(',').map(args::task).collect::<Result<_, String>>()?,
        None => Task::all().to_vec(),
    };
    if let Some(job) = &a.job {
        return super::sweep::run_job(job, a.no_progress);
    }
    if let Some(dir) = &a.gather {
        return super::sweep::gather(dir, &a.out_or(dir));
    }
    let bb_path = backbone_path(a.backbone.as_deref(), data)?;
    if let Some(dir) = &a.plan {
        let o = super::sweep::PlanOptions {
            epochs: a.epochs.unwrap_or(30),
            eval_every: a.eval_every,
            seeds: a.seeds,
            tasks,
            configs: a.configs.as_ref().map(|c| c.split(',').map(String::from).collect()),
        };
        return super::sweep::plan(dir, &bb_path, &data_dir(data)?, &o);
    }
    let backbone = load_backbone(&bb_path, None)?;
    let (epochs, out_dir, quiet, json) = (a.epochs.unwrap_or(20), &a.out, a.no_progress, a.json);
    std::fs::create_dir_all(out_dir).map_err(|err| format!("cannot create {}: {err}", out_dir.display()))?;
    let dim = backbone.vit.config.embed_dim;
    let methods: Vec<Method> = match &a.methods {
        Some(list) => list.split(';').map(|m| Method::parse(m, dim)).collect::<consolidator::Result<_>>()?,
        None => Method::all(dim),
    };
    let bb = backbone_params(&backbone.vit);
    let datas: Vec<_> = tasks.iter().map(|&t| load_task(t, data)).collect::<R<_>>()?;
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
        for (t, task_data) in tasks.iter().zip(&datas) {
            let data = &AdaptData::task(task_data);
            // Choose the learning rate on the 200 validation examples; report test accuracy.
            let mut best: Option<(f32, f32, AdaptResult)> = None;
            for lr in lr_grid(m) {
                let r = run_adapt(
                    &backbone,
                    m,
                    data,
                    &suite_config(m, epochs, lr, 0),
                    format!("{:<12} {:<11} lr {lr:.0e}", m.name(), t.name()),
                    !quiet,
                    None,
                )?;
                row.train_secs += r.report.seconds;
                let val = r.val_acc.unwrap_or(f32::NAN);
                if best.as_ref().is_none_or(|b| val > b.1) {
                    best = Some((lr, val, r));
                }
            }
            let (lr, _, r) = best.expect("grid is not empty");
            let test_acc = r.test_acc.unwrap_or(f32::NAN);
            row.acc.push(test_acc);
            row.lrs.push(lr);
            row.tunable_pct = 100.0 * r.tunable as f64 / bb as f64;
            row.stored = r.stored_bytes;
            let xb =
                backbone.preprocess().batch(&task_data.test, &(0..64.min(task_data.test.len())).collect::<Vec<_>>())?.0;
            let deploy =
                if m.mergeable() { merge(&backbone, &consolidate(&r.model, &backbone.vit)?)?.model } else { r.model };
            row.latency_ms = consolidator::bench::median_ms(7, || deploy.predict(&xb).map(|_| ()))?;
            if !quiet {
                note!("{:<12} {:<11} test {:.1}% (lr {lr:.0e})", m.name(), t.name(), 100.0 * test_acc);
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
        write_atomic(&out_dir.join(name), body.as_bytes())?;
    }
    if json {
        say!("{}", csv_to_json(&csv));
    } else {
        say!("{md}");
        say!("wrote {}/results.{{md,csv,svg}}", out_dir.display());
    }
    Ok(())
}

fn csv_to_json(csv: &str) -> Json {
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    Json::Arr(
        lines
            .map(|l| {
                Json::obj(l.split(',').zip(&head).map(|(v, h)| {
                    (h.to_string(), v.parse::<f64>().map(Json::num).unwrap_or_else(|_| Json::Str(v.to_string())))
                }))
            })
            .collect(),
    )
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
