//! The verbs that read and write models: `consolidate`, `merge`, `eval`, `forward`, `inspect`.

use super::args;
use super::common::*;
use super::{say, R};
use consolidator::data::suite::Task;
use consolidator::data::{open, Source};
use consolidator::io::json::Json;
use consolidator::io::safetensors::TensorFile;
use consolidator::nn::{Module, VitConfig};
use consolidator::reparam::{consolidate as stage1, merge as stage2, TaskDelta};
use consolidator::train::evaluate;
use consolidator::Tensor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// `consolidator consolidate`: stage 1.
#[derive(clap::Args)]
pub struct ConsolidateArgs {
    /// The plain backbone the model was adapted from [default: the shipped one]
    #[arg(long, value_name = "FILE")]
    backbone: Option<PathBuf>,
    /// The adapted model
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Where to write the task delta
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
}

pub fn consolidate(a: &ConsolidateArgs, data: Option<&Path>) -> R {
    let backbone_path = backbone_path(a.backbone.as_deref(), data)?;
    check_output(&a.out, &[&backbone_path, &a.model])?;
    let backbone = load_backbone(&backbone_path, None)?;
    let adapted = load_model(&a.model, None)?;
    if adapted.method.is_none() {
        return Err(format!("{} has no `method` metadata: it is not an adapted model", a.model.display()).into());
    }
    let delta = stage1(&adapted, &backbone.vit)?;
    delta.save(&a.out)?;
    let own: usize = adapted.vit.adapter_params().iter().map(|(_, p)| p.numel()).sum();
    let full = 4 * (adapted.vit.num_params() - own);
    let (stored, trained) = (delta.storage_bytes(), adapted.vit.num_trainable());
    if a.json {
        let j = Json::obj([
            ("model", path_json(&a.model)),
            ("out", path_json(&a.out)),
            ("method", Json::Str(delta.method.to_string())),
            ("stored_bytes", Json::from(stored)),
            ("trained_values", Json::from(trained)),
            ("model_bytes", Json::from(full)),
        ]);
        say!("{j}");
        return Ok(());
    }
    say!("stage 1: {} → {}", a.model.display(), a.out.display());
    say!("  stored      {:>10}  ({} values)", bytes(stored), stored / 4);
    say!("  trained     {:>10}  ({trained} values)", bytes(4 * trained));
    say!("  full model  {:>10}  ({:.3}% of it is stored per task)", bytes(full), 100.0 * stored as f64 / full as f64);
    Ok(())
}

/// `consolidator merge`: stage 2.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// The plain backbone [default: the shipped one]
    #[arg(long, value_name = "FILE")]
    backbone: Option<PathBuf>,
    /// The task delta (from `consolidate`)
    #[arg(long, value_name = "FILE")]
    delta: PathBuf,
    /// Where to write the merged, plain ViT
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn merge(a: &MergeArgs, data: Option<&Path>) -> R {
    let backbone_path = backbone_path(a.backbone.as_deref(), data)?;
    check_output(&a.out, &[&backbone_path, &a.delta])?;
    let backbone = load_backbone(&backbone_path, None)?;
    let delta = TaskDelta::load(&a.delta)?;
    let merged = stage2(&backbone, &delta)?;
    merged.model.save(&a.out)?;
    say!(
        "stage 2: {} + {} → {} (a plain ViT: {} parameters, as the backbone with a {}-class head)",
        backbone_path.display(),
        a.delta.display(),
        a.out.display(),
        merged.model.vit.num_params(),
        delta.num_classes
    );
    Ok(())
}

/// `consolidator eval`: accuracy on a task's split.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["task", "data"])))]
pub struct EvalArgs {
    /// The model (plain, adapted or merged)
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// A task of the transfer suite
    #[arg(long, value_parser = args::task)]
    task: Option<Task>,
    /// Your data: a folder of class folders, split folders, a safetensors dataset, an IDX
    /// directory (e.g. data/mnist), an optdigits CSV
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Which split (for data without splits: the whole of it)
    #[arg(long, default_value = "test", value_parser = ["train", "val", "test"])]
    split: String,
    /// Architecture preset, for a file without architecture metadata
    #[arg(long)]
    arch: Option<String>,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
}

pub fn eval(a: &EvalArgs, data: Option<&Path>) -> R {
    let model = load_model(&a.model, a.arch.as_deref())?;
    let (source, what): (Arc<dyn Source>, String) = match (&a.task, &a.data) {
        (Some(t), _) => {
            let task = load_task(*t, data)?;
            let ds = match a.split.as_str() {
                "val" => task.val,
                "train" => task.train,
                _ => task.test,
            };
            (Arc::new(ds), t.name().to_string())
        }
        (None, Some(p)) => {
            let opened = open(p)?;
            let s = if opened.splits.contains_key(&a.split) { opened.split(&a.split)? } else { opened.single()? };
            // A model that names its classes is evaluated on data with the same names.
            let names = s.class_names();
            if !model.classes.is_empty() && !names.is_empty() && names != model.classes {
                return Err(format!(
                    "{} names its classes {}, the model {}: evaluating would compare different labels",
                    p.display(),
                    printable(&names.join(", ")),
                    printable(&model.classes.join(", "))
                )
                .into());
            }
            (s, p.display().to_string())
        }
        (None, None) => unreachable!("clap requires --task or --data"),
    };
    let t = Instant::now();
    let (acc, loss) = evaluate(&model, source.as_ref(), 256)?;
    let secs = t.elapsed().as_secs_f64();
    if a.json {
        let j = Json::obj([
            ("model", path_json(&a.model)),
            ("data", Json::Str(what)),
            ("split", Json::Str(a.split.clone())),
            ("accuracy", num32(acc)),
            ("loss", num32(loss)),
            ("examples", Json::from(source.len())),
            ("seconds", Json::num(secs)),
        ]);
        say!("{j}");
    } else {
        say!(
            "{} on {} ({}, {} examples): accuracy {:.2}%, loss {loss:.4}, {:.2}s",
            a.model.display(),
            printable(&what),
            a.split,
            source.len(),
            100.0 * acc,
            secs
        );
    }
    Ok(())
}

/// `consolidator forward`: logits of a model on an input tensor.
#[derive(clap::Args)]
pub struct ForwardArgs {
    /// The model
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// A safetensors file with key `input`: images [B, C, H, W], already normalised
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Where to write the logits (key `logits`, [B, classes])
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Architecture preset, for a model file without architecture metadata
    #[arg(long)]
    arch: Option<String>,
    /// Images per inference batch (memory stays bounded whatever the input holds)
    #[arg(long, value_parser = args::batch, default_value_t = 64)]
    batch: usize,
}

pub fn forward(a: &ForwardArgs) -> R {
    check_output(&a.output, &[&a.model, &a.input])?;
    let model = load_model(&a.model, a.arch.as_deref())?;
    let f = TensorFile::load(&a.input)?;
    let x = f.get("input")?;
    model.vit.check_images(x.shape())?;
    let n = x.shape()[0];
    let per = x.numel() / n.max(1);
    let t = Instant::now();
    let mut logits = Vec::with_capacity(n * model.vit.config.num_classes);
    for start in (0..n).step_by(a.batch) {
        let end = (start + a.batch).min(n);
        let mut shape = x.shape().to_vec();
        shape[0] = end - start;
        let chunk = Tensor::new(&shape, x.data()[start * per..end * per].to_vec())?;
        logits.extend_from_slice(model.predict(&chunk)?.data());
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let logits = Tensor::new(&[n, model.vit.config.num_classes], logits)?;
    if !logits.all_finite() {
        return Err("the logits hold NaN or infinite values (is the input finite?); nothing was written".into());
    }
    let mut out = TensorFile::new();
    out.insert("logits", logits);
    out.save(&a.output)?;
    say!("logits [{n}, {}] written to {} ({ms:.1} ms)", model.vit.config.num_classes, a.output.display());
    Ok(())
}

/// `consolidator inspect`: what a file holds.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// A model, delta or checkpoint file
    file: PathBuf,
}

pub fn inspect(a: &InspectArgs) -> R {
    let path = &a.file;
    let f = TensorFile::load(path)?;
    let total: usize = f.tensors.values().map(|t| t.numel()).sum();
    let m = &f.metadata;
    let kind = if m.get("format").map(String::as_str) == Some("consolidator-delta") {
        "task delta (stage 1)"
    } else if m.contains_key("epochs_done") {
        "training checkpoint"
    } else if m.contains_key("method") {
        "adapted model (with method modules)"
    } else if f.tensors.contains_key("patch_embed.proj.weight") {
        if m.contains_key("merged_deltas") {
            "merged ViT (plain)"
        } else {
            "ViT (plain)"
        }
    } else {
        "tensor file"
    };
    say!(
        "{}: {kind}, {} tensors, {total} values ({})",
        printable(&path.display().to_string()),
        f.tensors.len(),
        bytes(4 * total)
    );
    for (k, v) in m {
        say!("  {}: {}", printable(k), printable(v));
    }
    if kind == "task delta (stage 1)" {
        let d = TaskDelta::from_file(&f)?;
        say!(
            "  layers changed: {}, dense tensors: {}, stored {}",
            d.layers.len(),
            d.dense.len(),
            bytes(d.storage_bytes())
        );
    }
    if let Ok(cfg) = VitConfig::from_checkpoint(&f) {
        say!(
            "  architecture: {}x{} image, patch {:?}, {} channels, width {}, depth {}, {} heads, mlp {}, {} classes",
            cfg.img_size.0,
            cfg.img_size.1,
            cfg.patch_size,
            cfg.in_chans,
            cfg.embed_dim,
            cfg.depth,
            cfg.num_heads,
            cfg.mlp_hidden,
            cfg.num_classes
        );
    }
    let mut groups: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (k, t) in &f.tensors {
        let g = k.split('.').next().unwrap_or(k).to_string();
        let en = groups.entry(g).or_default();
        en.0 += 1;
        en.1 += t.numel();
    }
    for (g, (n, v)) in groups {
        say!("  {:<14} {n:>4} tensors {v:>12} values", printable(&g));
    }
    for (k, t) in &f.tensors {
        let bad = t.data().iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            say!("  warning: `{}` holds {bad} NaN or infinite values", printable(k));
        }
    }
    Ok(())
}

/// `consolidator import-official`: a model trained by the official PyTorch code.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The official model's state dict, as safetensors (see README for the two lines of Python)
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Where to write the adapted model
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The backbone's architecture preset (the file names none; e.g. vit_base_patch16_224)
    #[arg(long)]
    arch: Option<String>,
    /// The branches reordered their input (the official `with_channel_shuffle=True`; its
    /// VTAB scripts train without it)
    #[arg(long)]
    reorder: bool,
    /// Drop-path rate of the branches, recorded in the method string
    #[arg(long, value_parser = args::rate, default_value_t = 0.0)]
    drop_path: f32,
}

pub fn import_official(a: &ImportArgs) -> R {
    check_output(&a.out, &[&a.input])?;
    let f = TensorFile::load(&a.input)?;
    let cfg = match &a.arch {
        Some(name) => {
            let mut c = VitConfig::preset(name)?;
            c.num_classes = f.get("head.weight")?.dims::<2>("head.weight")?[0];
            Some(c)
        }
        None => None,
    };
    let model = consolidator::model::import_official(&f, cfg.as_ref(), a.reorder, a.drop_path)?;
    model.save(&a.out)?;
    let method = model.method.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let branches = model.vit.fc_layers().iter().filter(|(_, l)| l.adapter.is_some()).count();
    say!("imported {} → {} ({branches} layers with branches; method `{method}`)", a.input.display(), a.out.display());
    Ok(())
}
