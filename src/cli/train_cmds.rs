//! `pretrain` and `adapt`: the verbs that train.

use super::args::{self, TrainFlags};
use super::common::*;
use super::{note, say, R};
use consolidator::data::suite::Task;
use consolidator::data::{load_mnist, open, Dataset, Source};
use consolidator::io::json::Json;
use consolidator::model::{Model, Normalization};
use consolidator::nn::{Module, VisionTransformer, VitConfig};
use consolidator::peft::Method;
use consolidator::train::{evaluate, StopHandle, TrainConfig, Trainer};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `consolidator pretrain`: a small ViT trained from scratch on MNIST.
#[derive(clap::Args)]
pub struct PretrainArgs {
    /// MNIST directory (train-images-idx3-ubyte[.gz], train-labels…, t10k-…)
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Architecture preset
    #[arg(long, default_value = "vit_mnist_tiny")]
    arch: String,
    /// Where to save the backbone
    #[arg(long, value_name = "FILE", default_value = "runs/pretrain/backbone.safetensors")]
    out: PathBuf,
    /// Stochastic depth of the last block
    #[arg(long, value_parser = args::rate, default_value_t = 0.0)]
    drop_path: f32,
    /// Train on the first N training images only (0: all)
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[command(flatten)]
    train: TrainFlags,
}

pub fn pretrain(a: &PretrainArgs) -> R {
    let cfg = a.train.config(TrainConfig {
        epochs: 10,
        batch_size: 128,
        lr: 1e-3,
        weight_decay: 0.05,
        warmup_epochs: 1,
        clip_grad: 1.0,
        eval_every: 1,
        ..TrainConfig::default()
    });
    cfg.validate()?;
    let mut vcfg = VitConfig::preset(&a.arch)?;
    vcfg.drop_path_rate = a.drop_path;
    if a.out == Path::new("runs/pretrain/backbone.safetensors") {
        std::fs::create_dir_all("runs/pretrain").map_err(|e| format!("cannot create runs/pretrain: {e}"))?;
    }
    check_output(&a.out, &[&a.data])?;
    let load = |train: bool| -> R<Dataset> { Ok(load_mnist(&a.data, train)?) };
    let train_all =
        load(true).map_err(|m| format!("cannot load the MNIST training set from {} ({m:?})", a.data.display()))?;
    let test = load(false)?;
    let n = train_all.len();
    let n_val = 5000.min(n / 10);
    let mut train_idx: Vec<usize> = (0..n - n_val).collect();
    if a.limit > 0 {
        train_idx.truncate(a.limit);
    }
    let train_set = train_all.subset(&train_idx)?;
    let val = train_all.subset(&(n - n_val..n).collect::<Vec<_>>())?;
    let mut model = Model::plain(VisionTransformer::new(&vcfg, cfg.seed)?);
    model.normalization = Normalization::mnist();
    say!(
        "pretraining {} ({} parameters) on {} MNIST images, {} held out for validation",
        a.arch,
        model.vit.num_params(),
        train_set.len(),
        val.len()
    );
    if let Some(ck) = cfg.checkpoint.as_ref().filter(|p| cfg.resume && p.exists()) {
        note!("resuming from {}", ck.display());
    }
    let stop = StopHandle::new();
    install_ctrlc(&stop);
    let t0 = Instant::now();
    let report = Trainer::new(cfg.clone())
        .on_progress(progress_line("pretrain".into(), !a.train.no_progress))
        .with_stop(stop)
        .run(&mut model, &train_set, Some(&val))?;
    if let Some(at) = report.resumed_from {
        note!("resumed at epoch {}, step {}", at.epoch + 1, at.step);
    }
    if let Some(at) = report.stopped_at {
        return Err(stopped(at));
    }
    for ep in &report.epochs {
        say!(
            "epoch {:>3}  loss {:.4}  train acc {:.2}%  val acc {}  lr {:.2e}  {:.1}s",
            ep.epoch,
            ep.train_loss,
            100.0 * ep.train_acc,
            ep.val_acc.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a)),
            ep.lr,
            ep.seconds
        );
    }
    let (test_acc, test_loss) = evaluate(&model, &test, 256)?;
    let secs = t0.elapsed().as_secs_f32();
    say!("MNIST test accuracy {:.2}% (loss {test_loss:.4}) after {:.1} min", 100.0 * test_acc, secs / 60.0);
    let command: Vec<String> = std::env::args_os().skip(1).map(|s| s.to_string_lossy().into_owned()).collect();
    model.vit.freeze();
    model.classes = (0..10).map(|d| d.to_string()).collect();
    for (k, v) in [
        ("pretrain_command", format!("consolidator {}", command.join(" "))),
        ("pretrain_seed", cfg.seed.to_string()),
        ("mnist_test_accuracy", format!("{test_acc:.4}")),
        ("pretrain_minutes", format!("{:.1}", secs / 60.0)),
    ] {
        model.metadata.insert(k.into(), v);
    }
    model.save(&a.out)?;
    say!("saved {}", a.out.display());
    Ok(())
}

/// `consolidator adapt`: a backbone adapted to a task with a method.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("data").required(true).args(["task", "train"])))]
pub struct AdaptArgs {
    /// The method (see `consolidator --help`)
    #[arg(long, default_value = "consolidator")]
    method: String,
    /// A task of the transfer suite (its own train, val and test splits)
    #[arg(long, value_parser = args::task)]
    task: Option<Task>,
    /// Your training data: a folder of class folders, split folders, a safetensors dataset, IDX
    #[arg(long, value_name = "PATH")]
    train: Option<PathBuf>,
    /// Validation data [default: the data's `val` split, else --val-split of --train]
    #[arg(long, value_name = "PATH", requires = "train")]
    val: Option<PathBuf>,
    /// Fraction of --train held out for validation (seeded, per class) when there is no --val
    #[arg(long, value_name = "F", default_value_t = 0.2, value_parser = args::split_fraction, requires = "train")]
    val_split: f32,
    /// Test data [default: the data's `test` split, if any]
    #[arg(long, value_name = "PATH", requires = "train")]
    test: Option<PathBuf>,
    /// The backbone [default: the shipped one]
    #[arg(long, value_name = "FILE")]
    backbone: Option<PathBuf>,
    /// Architecture preset, for a backbone file without architecture metadata (timm as published)
    #[arg(long)]
    arch: Option<String>,
    /// Where to save the adapted model [default: runs/adapt-METHOD-TASK.safetensors]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    train_flags: TrainFlags,
}

/// The defaults of an adaptation run with `method` (learning rate by method family).
pub fn adapt_defaults(method: &Method) -> TrainConfig {
    TrainConfig {
        epochs: 30,
        batch_size: 32,
        lr: match method.name() {
            "full" => 5e-4,
            "linear" | "bitfit" | "ssf" | "vpt" => 5e-3,
            _ => 2e-3,
        },
        weight_decay: 1e-4,
        warmup_epochs: 2,
        clip_grad: 1.0,
        eval_every: 5,
        ..TrainConfig::default()
    }
}

/// The same classes in two splits: the same names in the same order (or names on neither side).
fn same_classes(a: &dyn Source, b: &dyn Source, what: &str) -> R {
    let (na, nb) = (a.class_names(), b.class_names());
    if a.num_classes() != b.num_classes() || (!na.is_empty() && !nb.is_empty() && na != nb) {
        return Err(format!(
            "the {what} data's classes ({}) are not the training data's ({}): use the same class folders (or labels) in every split",
            describe_classes(b),
            describe_classes(a)
        )
        .into());
    }
    Ok(())
}

fn describe_classes(s: &dyn Source) -> String {
    let names = s.class_names();
    if names.is_empty() {
        format!("{} unnamed", s.num_classes())
    } else {
        printable(&names.join(", "))
    }
}

/// The data of `adapt --train PATH [--val PATH | --val-split F] [--test PATH]`.
fn user_data(a: &AdaptArgs, train_path: &Path, seed: u64) -> R<AdaptData> {
    let opened = open(train_path)?;
    let (train, val) = match &a.val {
        Some(v) => (opened.train_val(0.0, seed)?.0, Some(open(v)?.single()?)),
        None => opened.train_val(a.val_split, seed)?,
    };
    let test = match &a.test {
        Some(t) => {
            let o = open(t)?;
            Some(if o.splits.contains_key("test") { o.split("test")? } else { o.single()? })
        }
        None => opened.splits.get("test").cloned(),
    };
    if train.num_classes() < 2 {
        return Err(format!("{}: one class only; a classifier needs at least 2", train_path.display()).into());
    }
    for (what, s) in [("validation", &val), ("test", &test)] {
        if let Some(s) = s {
            same_classes(train.as_ref(), s.as_ref(), what)?;
        }
    }
    Ok(AdaptData { classes: train.class_names(), train, val, test })
}

pub fn adapt(a: &AdaptArgs, data: Option<&Path>) -> R {
    let backbone_path = backbone_path(a.backbone.as_deref(), data)?;
    let backbone = load_backbone(&backbone_path, a.arch.as_deref())?;
    let method = Method::parse(&a.method, backbone.vit.config.embed_dim)?;
    let cfg = a.train_flags.config(adapt_defaults(&method));
    cfg.validate()?;
    let what = match (&a.task, &a.train) {
        (Some(t), _) => t.name().to_string(),
        (None, Some(p)) => p.file_name().map_or("data".into(), |n| n.to_string_lossy().into_owned()),
        (None, None) => unreachable!("clap requires --task or --train"),
    };
    let out =
        a.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/adapt-{}-{what}.safetensors", method.name())));
    if a.out.is_none() {
        std::fs::create_dir_all("runs").map_err(|e| format!("cannot create runs/: {e}"))?;
    }
    let mut inputs: Vec<&Path> = vec![&backbone_path];
    inputs.extend([&a.train, &a.val, &a.test].into_iter().flatten().map(PathBuf::as_path));
    check_output(&out, &inputs)?;
    let adapt_data = match (&a.task, &a.train) {
        (Some(t), _) => AdaptData::task(&load_task(*t, data)?),
        (None, Some(p)) => user_data(a, p, cfg.seed)?,
        (None, None) => unreachable!("clap requires --task or --train"),
    };
    let stop = StopHandle::new();
    install_ctrlc(&stop);
    let label = format!("{} on {what}", method.name());
    let show = !a.train_flags.no_progress && !a.json;
    let mut r = run_adapt(&backbone, &method, &adapt_data, &cfg, label, show, Some(stop))?;
    match (&a.task, &a.train) {
        (Some(t), _) => r.model.metadata.insert("task".into(), t.name().into()),
        (_, Some(p)) => r.model.metadata.insert("train_data".into(), p.display().to_string()),
        _ => None,
    };
    r.model.metadata.insert("backbone_file".into(), backbone_path.display().to_string());
    r.model.save(&out)?;
    let bb = backbone_params(&backbone.vit) as f64;
    let opt = |v: Option<f32>| v.map_or(Json::Null, num32);
    if a.json {
        let j = Json::obj([
            ("method", Json::Str(method.to_string())),
            ("data", Json::Str(what.clone())),
            ("classes", Json::from(adapt_data.train.num_classes())),
            ("val_acc", opt(r.val_acc)),
            ("test_acc", opt(r.test_acc)),
            ("tunable", Json::from(r.tunable)),
            ("tunable_pct", Json::num(100.0 * r.tunable as f64 / bb)),
            ("stored_bytes", Json::from(r.stored_bytes)),
            ("train_seconds", num32(r.report.seconds)),
            ("out", path_json(&out)),
        ]);
        say!("{j}");
    } else {
        let pct = |v: Option<f32>| v.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v));
        say!(
            "{} on {}: val {}, test {}, {} tunable parameters ({:.2}% of the backbone), {} to store, {:.1}s; saved {}",
            method.name(),
            printable(&what),
            pct(r.val_acc),
            pct(r.test_acc),
            r.tunable,
            100.0 * r.tunable as f64 / bb,
            bytes(r.stored_bytes),
            r.report.seconds,
            out.display()
        );
    }
    Ok(())
}
