//! `predict`: class probabilities for images. With `--model`, one model; with `--backbone` and
//! `--delta`s, one backbone serving several tasks: for each task its delta is merged, the images
//! predicted, and the backbone given back (bit for bit) before the next — the serving story that
//! makes the consolidator's storage claim useful.

use super::args;
use super::common::*;
use super::{say, R};
use consolidator::data::folder::ImageList;
use consolidator::data::Source;
use consolidator::io::json::Json;
use consolidator::model::Model;
use consolidator::reparam::{fingerprint, merge, TaskDelta};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `consolidator predict`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["model", "backbone"])))]
pub struct PredictArgs {
    /// Images, or folders of images (searched below)
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// A model (plain, adapted or merged)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["backbone", "delta"])]
    model: Option<PathBuf>,
    /// A backbone serving the tasks of --delta
    #[arg(long, value_name = "FILE", requires = "delta")]
    backbone: Option<PathBuf>,
    /// A task delta (from `consolidate`); repeat for several tasks
    #[arg(long, value_name = "FILE")]
    delta: Vec<PathBuf>,
    /// Classes listed per image
    #[arg(long, value_name = "K", default_value_t = 3, value_parser = args::every)]
    top_k: usize,
    /// Images per inference batch
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = args::batch)]
    batch: usize,
    /// One JSON object per image (per task with --delta)
    #[arg(long)]
    json: bool,
}

/// Softmax of each row of `logits` `[B, K]`, then the `k` most probable classes of each.
fn top_k(logits: &[f32], classes: usize, k: usize) -> Vec<Vec<(usize, f32)>> {
    logits
        .chunks_exact(classes)
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
            let sum: f64 = e.iter().sum();
            let mut p: Vec<(usize, f32)> = e.iter().enumerate().map(|(j, v)| (j, (v / sum) as f32)).collect();
            p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            p.truncate(k);
            p
        })
        .collect()
}

/// Predicts every image of `list` with `model`, printing one line (or JSON object) per image.
fn predict_all(model: &Model, list: &ImageList, a: &PredictArgs, task: Option<&str>) -> R {
    let prep = model.preprocess();
    let classes = model.vit.config.num_classes;
    let all: Vec<usize> = (0..list.len()).collect();
    for chunk in all.chunks(a.batch) {
        let (x, _) = prep.batch(list, chunk)?;
        let logits = model.predict(&x)?;
        for (&i, top) in chunk.iter().zip(top_k(logits.data(), classes, a.top_k.min(classes))) {
            let file = list.describe(i);
            if a.json {
                let mut pairs = vec![("image".to_string(), Json::Str(file))];
                if let Some(t) = task {
                    pairs.push(("task".to_string(), Json::Str(t.to_string())));
                }
                let top = top.iter().map(|&(c, p)| {
                    Json::obj([
                        ("class", Json::Str(model.class_name(c))),
                        ("index", Json::from(c)),
                        ("p", Json::num(p as f64)),
                    ])
                });
                pairs.push(("top".to_string(), Json::Arr(top.collect())));
                say!("{}", Json::Obj(pairs));
            } else {
                let shown: Vec<String> = top
                    .iter()
                    .map(|&(c, p)| format!("{} {:.1}%", printable(&model.class_name(c)), 100.0 * p))
                    .collect();
                let prefix = task.map(|t| format!("[{}] ", printable(t))).unwrap_or_default();
                say!("{prefix}{}: {}", printable(&file), shown.join(", "));
            }
        }
    }
    Ok(())
}

fn name_of(p: &Path) -> String {
    p.file_stem().map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into_owned())
}

pub fn predict(a: &PredictArgs) -> R {
    let list = ImageList::new(&a.paths)?;
    if let Some(m) = &a.model {
        return predict_all(&load_model(m, None)?, &list, a, None);
    }
    let bb_path = a.backbone.as_ref().expect("clap requires --model or --backbone");
    let mut backbone = load_backbone(bb_path, None)?;
    let fp = fingerprint(&backbone.vit);
    for d in &a.delta {
        let delta = TaskDelta::load(d)?;
        let t = Instant::now();
        let merged = merge(&backbone, &delta)?;
        let merge_ms = t.elapsed().as_secs_f64() * 1e3;
        predict_all(&merged.model, &list, a, Some(&name_of(d)))?;
        let t = Instant::now();
        backbone = merged.unmerge();
        let unmerge_ms = t.elapsed().as_secs_f64() * 1e3;
        let back = fingerprint(&backbone.vit);
        if back != fp {
            return Err(
                format!("unmerging {} did not give the backbone back ({back}, expected {fp})", d.display()).into()
            );
        }
        let report = format!(
            "task {}: merged in {merge_ms:.1} ms, unmerged in {unmerge_ms:.2} ms (backbone fingerprint {back} restored)",
            printable(&name_of(d))
        );
        if a.json {
            let j = Json::obj([
                ("task", Json::Str(name_of(d))),
                ("merge_ms", Json::num(merge_ms)),
                ("unmerge_ms", Json::num(unmerge_ms)),
                ("backbone_restored", Json::Bool(true)),
            ]);
            say!("{j}");
        } else {
            say!("{report}");
        }
    }
    Ok(())
}
