//! `pretrain` and `adapt`: the verbs that train.

use super::args::{self, TrainFlags};
use super::common::*;
use super::{note, say, R};
use consolidator::data::suite::Task;
use consolidator::data::{load_mnist, Dataset};
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
    let norm = Normalization::mnist();
    let load = |train: bool| -> R<Dataset> {
        let mut d = load_mnist(&a.data, train)?;
        d.normalize(norm.mean[0], norm.std[0])?;
        Ok(d)
    };
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
    model.normalization = norm.clone();
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
    let (test_acc, test_loss) = evaluate(&model.vit, &test, 256)?;
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
pub struct AdaptArgs {
    /// The method (see `consolidator --help`)
    #[arg(long, default_value = "consolidator")]
    method: String,
    /// A task of the transfer suite
    #[arg(long, value_parser = args::task)]
    task: Task,
    /// The backbone [default: the shipped one]
    #[arg(long, value_name = "FILE")]
    backbone: Option<PathBuf>,
    /// Architecture preset, for a backbone file without architecture metadata
    #[arg(long)]
    arch: Option<String>,
    /// Where to save the adapted model [default: runs/adapt-METHOD-TASK.safetensors]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    train: TrainFlags,
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

pub fn adapt(a: &AdaptArgs, data: Option<&Path>) -> R {
    let backbone_path = backbone_path(a.backbone.as_deref(), data)?;
    let backbone = load_backbone(&backbone_path, a.arch.as_deref())?;
    let method = Method::parse(&a.method, backbone.vit.config.embed_dim)?;
    let cfg = a.train.config(adapt_defaults(&method));
    cfg.validate()?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/adapt-{}-{}.safetensors", method.name(), a.task.name())));
    if a.out.is_none() {
        std::fs::create_dir_all("runs").map_err(|e| format!("cannot create runs/: {e}"))?;
    }
    check_output(&out, &[&backbone_path])?;
    let task = load_task(a.task, data, &backbone.normalization)?;
    let stop = StopHandle::new();
    install_ctrlc(&stop);
    let label = format!("{} on {}", method.name(), a.task.name());
    let mut r = run_adapt(&backbone, &method, &task, &cfg, label, !a.train.no_progress && !a.json, Some(stop))?;
    r.model.metadata.insert("task".into(), a.task.name().into());
    r.model.metadata.insert("backbone_file".into(), backbone_path.display().to_string());
    r.model.save(&out)?;
    let bb = backbone_params(&backbone.vit) as f64;
    if a.json {
        let j = Json::obj([
            ("method", Json::Str(method.to_string())),
            ("task", Json::Str(a.task.name().into())),
            ("val_acc", num32(r.val_acc)),
            ("test_acc", num32(r.test_acc)),
            ("tunable", Json::from(r.tunable)),
            ("tunable_pct", num(100.0 * r.tunable as f64 / bb)),
            ("stored_bytes", Json::from(r.stored_bytes)),
            ("train_seconds", num32(r.report.seconds)),
            ("out", path_json(&out)),
        ]);
        say!("{j}");
    } else {
        say!(
            "{} on {}: val {:.1}%, test {:.1}%, {} tunable parameters ({:.2}% of the backbone), {} to store, {:.1}s; saved {}",
            method.name(),
            a.task.name(),
            100.0 * r.val_acc,
            100.0 * r.test_acc,
            r.tunable,
            100.0 * r.tunable as f64 / bb,
            bytes(r.stored_bytes),
            r.report.seconds,
            out.display()
        );
    }
    Ok(())
}
