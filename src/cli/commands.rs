//! The subcommands.

use super::args::Args;
use super::common::*;
use consolidator::data::suite::{Task, TaskData};
use consolidator::data::Dataset;
use consolidator::io::safetensors::TensorFile;
use consolidator::nn::{Module, VisionTransformer, VitConfig};
use consolidator::optim::Optimizer;
use consolidator::peft::Method;
use consolidator::reparam::{consolidate as stage1, merge as stage2, TaskDelta};
use consolidator::train::{evaluate, load_checkpoint, train, Position, TrainConfig, TrainReport};
use std::path::PathBuf;
use std::time::Instant;

type R<T = ()> = Result<T, String>;

fn e<T>(r: consolidator::Result<T>) -> R<T> {
    r.map_err(|e| e.to_string())
}

/// Training hyper-parameters from flags, with per-method defaults.
fn train_config(args: &Args, method: Option<&Method>, epochs: usize) -> R<TrainConfig> {
    let lr_default = match method.map(|m| m.name()) {
        None => 1e-3,
        Some("full") => 5e-4,
        Some("linear") | Some("bitfit") | Some("ssf") | Some("vpt") => 5e-3,
        Some(_) => 2e-3,
    };
    Ok(TrainConfig {
        epochs: args.get("epochs", epochs)?,
        batch_size: args.get("batch", 32)?,
        lr: args.get("lr", lr_default)?,
        weight_decay: args.get("wd", 1e-4)?,
        sgd: args.has("sgd"),
        warmup_epochs: args.get("warmup", 2)?,
        warmup_lr: 1e-6,
        min_lr: 1e-5,
        clip_grad: args.get("clip", 1.0)?,
        label_smoothing: args.get("label-smoothing", 0.0)?,
        seed: args.get("seed", 0)?,
        eval_every: args.get("eval-every", 5)?,
        checkpoint: args.str("checkpoint").map(PathBuf::from),
        checkpoint_every: args.get("checkpoint-every", 1)?,
    })
}

fn install_ctrlc() {
    // The first Ctrl-C (SIGINT) asks training to stop after the current step: `train` then saves
    // a checkpoint at that exact position and returns "stopped by request". A second Ctrl-C exits
    // at once (checkpoints are written atomically, so the last one survives either way). The
    // handler can be installed once per process; a second call is a harmless no-op.
    #[cfg(feature = "cli")]
    {
        use std::sync::atomic::Ordering;
        let _ = ctrlc::set_handler(|| {
            if consolidator::train::STOP.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting now");
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: stopping after the current step (Ctrl-C again to exit now)");
        });
    }
}

// ---------------------------------------------------------------------------------------------
// pretrain

pub fn pretrain(args: &Args) -> R {
    let data = PathBuf::from(args.str("data").unwrap_or_else(|| "../shared/data/mnist".into()));
    let arch = args.str("arch").unwrap_or_else(|| "vit_mnist_tiny".into());
    let out = PathBuf::from(args.str("out").unwrap_or_else(|| default_backbone().display().to_string()));
    let mut cfg = train_config(args, None, 10)?;
    cfg.batch_size = args.get("batch", 128)?;
    cfg.weight_decay = args.get("wd", 0.05)?;
    cfg.warmup_epochs = args.get("warmup", 1)?;
    cfg.eval_every = args.get("eval-every", 1)?;
    let drop_path: f32 = args.get("drop-path", 0.0)?;
    let resume = args.has("resume");
    let quiet = args.has("no-progress");
    let limit: usize = args.get("limit", 0)?;
    args.finish(0)?;
    let train_all = e(load_mnist_normalised(&data, true))
        .map_err(|m| format!("cannot load the MNIST training set ({m}); pass --data DIR"))?;
    let test = e(load_mnist_normalised(&data, false))?;
    let n = train_all.len();
    let n_val = 5000.min(n / 10);
    let mut train_idx: Vec<usize> = (0..n - n_val).collect();
    if limit > 0 {
        train_idx.truncate(limit);
    }
    let val_idx: Vec<usize> = (n - n_val..n).collect();
    let train_set = e(train_all.subset(&train_idx))?;
    let val = e(train_all.subset(&val_idx))?;
    let mut vcfg = e(VitConfig::preset(&arch))?;
    vcfg.drop_path_rate = drop_path;
    let mut vit = e(VisionTransformer::new(&vcfg, cfg.seed))?;
    let mut opt = if cfg.sgd { Optimizer::sgd(0.9, cfg.weight_decay) } else { Optimizer::adamw(cfg.weight_decay) };
    let mut start = Position::default();
    if resume {
        let ck = cfg.checkpoint.clone().ok_or("--resume needs --checkpoint PATH")?;
        if ck.exists() {
            start = e(load_checkpoint(&ck, &mut vit, &mut opt))?;
            eprintln!("resuming from {} at epoch {}, step {}", ck.display(), start.epoch + 1, start.step);
        }
    }
    println!(
        "pretraining {arch} ({} parameters) on {} MNIST images, {} held out for validation",
        vit.num_params(),
        train_set.len(),
        val.len()
    );
    install_ctrlc();
    let t0 = Instant::now();
    let report = e(train(
        &mut vit,
        &mut opt,
        &train_set,
        Some(&val),
        &cfg,
        start,
        &mut progress_line("pretrain".into(), !quiet),
    ))?;
    for ep in &report.epochs {
        println!(
            "epoch {:>3}  loss {:.4}  train acc {:.2}%  val acc {}  lr {:.2e}  {:.1}s",
            ep.epoch,
            ep.train_loss,
            100.0 * ep.train_acc,
            ep.val_acc.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a)),
            ep.lr,
            ep.seconds
        );
    }
    let (test_acc, test_loss) = e(evaluate(&vit, &test, 256))?;
    let secs = t0.elapsed().as_secs_f32();
    println!("MNIST test accuracy {:.2}% (loss {test_loss:.4}) after {:.1} min", 100.0 * test_acc, secs / 60.0);
    let command = format!("consolidator pretrain {}", std::env::args().skip(2).collect::<Vec<_>>().join(" "));
    vit.freeze();
    e(save_model(
        &out,
        &vit,
        &[
            ("pretrain_command", command),
            ("pretrain_seed", cfg.seed.to_string()),
            ("mnist_test_accuracy", format!("{test_acc:.4}")),
            ("pretrain_minutes", format!("{:.1}", secs / 60.0)),
            ("normalization", format!("mean {MEAN} std {STD}")),
        ],
    ))?;
    println!("saved {}", out.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// adapt

/// One adaptation run and its measurements.
pub struct AdaptResult {
    pub model: VisionTransformer,
    pub report: TrainReport,
    pub val_acc: f32,
    pub test_acc: f32,
    pub tunable: usize,
    pub stored_bytes: usize,
}

/// Adapts a copy of `backbone` to `task` with `method` (continuing from `cfg.checkpoint` if
/// `resume` and it exists).
pub fn run_adapt(
    backbone: &VisionTransformer,
    method: &Method,
    task: &TaskData,
    cfg: &TrainConfig,
    resume: bool,
    label: String,
    show: bool,
) -> consolidator::Result<AdaptResult> {
    let mut vit = backbone.clone();
    method.apply(&mut vit, task.train.num_classes, cfg.seed)?;
    let mut opt = if cfg.sgd { Optimizer::sgd(0.9, cfg.weight_decay) } else { Optimizer::adamw(cfg.weight_decay) };
    let mut cfg = cfg.clone();
    let mut start = Position::default();
    if let Some(ck) = &cfg.checkpoint {
        if resume && ck.exists() {
            start = load_checkpoint(ck, &mut vit, &mut opt)?;
        }
    }
    cfg.eval_every = cfg.eval_every.max(1);
    let report = train(&mut vit, &mut opt, &task.train, Some(&task.val), &cfg, start, &mut progress_line(label, show))?;
    let (val_acc, _) = evaluate(&vit, &task.val, 256)?;
    let (test_acc, _) = evaluate(&vit, &task.test, 256)?;
    let tunable = vit.num_trainable();
    let stored_bytes = if method.mergeable() { stage1(&vit, backbone, method)?.storage_bytes() } else { 4 * tunable };
    Ok(AdaptResult { model: vit, report, val_acc, test_acc, tunable, stored_bytes })
}

fn parse_task(args: &Args) -> R<Task> {
    let t = args.str("task").ok_or("--task is required (optdigits, orientation, location, counting, shift)")?;
    t.parse::<Task>().map_err(|e| e.to_string())
}

pub fn adapt(args: &Args) -> R {
    let backbone_path = PathBuf::from(args.str("backbone").unwrap_or_else(|| default_backbone().display().to_string()));
    let (backbone, m) = e(load_model(&backbone_path, args.str("arch").as_deref()))?;
    if m.is_some() {
        return Err(format!("{} is an adapted model; pass a plain backbone", backbone_path.display()));
    }
    let method =
        e(Method::parse(&args.str("method").unwrap_or_else(|| "consolidator".into()), backbone.config.embed_dim))?;
    let task = parse_task(args)?;
    let cfg = train_config(args, Some(&method), 30)?;
    let out = PathBuf::from(
        args.str("out").unwrap_or_else(|| format!("runs/adapt-{}-{}.safetensors", method.name(), task.name())),
    );
    let json = args.has("json");
    let resume = args.has("resume");
    let quiet = args.has("no-progress");
    args.finish(0)?;
    let data = e(load_task(task))?;
    let r = e(run_adapt(
        &backbone,
        &method,
        &data,
        &cfg,
        resume,
        format!("{} on {}", method.name(), task.name()),
        !quiet && !json,
    ))?;
    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p).map_err(|err| format!("cannot create {}: {err}", p.display()))?;
    }
    e(save_model(
        &out,
        &r.model,
        &[
            ("method", method_string(&method)),
            ("task", task.name().into()),
            ("backbone_file", backbone_path.display().to_string()),
        ],
    ))?;
    let bb = backbone_params(&backbone);
    if json {
        println!(
            "{{\"method\":\"{}\",\"task\":\"{}\",\"val_acc\":{:.4},\"test_acc\":{:.4},\"tunable\":{},\"tunable_pct\":{:.4},\"stored_bytes\":{},\"train_seconds\":{:.2},\"out\":\"{}\"}}",
            method.name(),
            task.name(),
            r.val_acc,
            r.test_acc,
            r.tunable,
            100.0 * r.tunable as f64 / bb as f64,
            r.stored_bytes,
            r.report.seconds,
            out.display()
        );
    } else {
        println!(
            "{} on {}: val {:.1}%, test {:.1}%, {} tunable parameters ({:.2}% of the backbone), {} to store, {:.1}s; saved {}",
            method.name(),
            task.name(),
            100.0 * r.val_acc,
            100.0 * r.test_acc,
            r.tunable,
            100.0 * r.tunable as f64 / bb as f64,
            bytes(r.stored_bytes),
            r.report.seconds,
            out.display()
        );
    }
    Ok(())
}

/// The method string stored in adapted checkpoints (parsable by `Method::parse`).
fn method_string(m: &Method) -> String {
    match m {
        Method::LinearProbe | Method::Full | Method::BitFit => m.name().into(),
        Method::Lora { rank, alpha, layers } => format!("lora:r={rank},alpha={alpha},layers={}", layer_string(layers)),
        Method::Adapter { dim, scale } => format!("adapter:dim={dim},scale={scale}"),
        Method::Vpt { prompts } => format!("vpt:prompts={prompts}"),
        Method::Ssf { layers } => format!("ssf:layers={}", layer_string(layers)),
        Method::Consolidator(c) => {
            let mut s = format!(
                "consolidator:g={},dp={},layers={}",
                c.branches.iter().map(|b| b.0.to_string()).collect::<Vec<_>>().join("+"),
                c.drop_path,
                layer_string(&c.layers)
            );
            if c.branches.iter().any(|b| b.1) {
                s.push_str(",reorder");
            }
            if !c.train_norms {
                s.push_str(",frozen-norms");
            }
            if !c.train_biases {
                s.push_str(",frozen-biases");
            }
            s
        }
    }
}

fn layer_string(l: &consolidator::peft::LayerSet) -> String {
    let mut v = Vec::new();
    for (on, n) in [(l.qkv, "qkv"), (l.proj, "proj"), (l.fc1, "fc1"), (l.fc2, "fc2")] {
        if on {
            v.push(n);
        }
    }
    v.join("+")
}

// ---------------------------------------------------------------------------------------------
// consolidate / merge

pub fn consolidate(args: &Args) -> R {
    let backbone_path = PathBuf::from(args.str("backbone").unwrap_or_else(|| default_backbone().display().to_string()));
    let model_path = PathBuf::from(args.str("model").ok_or("--model FILE (an adapted model) is required")?);
    let out = PathBuf::from(args.str("out").ok_or("--out FILE is required")?);
    args.finish(0)?;
    let (backbone, _) = e(load_model(&backbone_path, None))?;
    let (adapted, method) = e(load_model(&model_path, None))?;
    let method = method
        .ok_or_else(|| format!("{} has no `method` metadata: it is not an adapted model", model_path.display()))?;
    let delta = e(stage1(&adapted, &backbone, &method))?;
    e(delta.save(&out))?;
    let full = 4 * adapted
        .named_params()
        .iter()
        .filter(|(k, _)| !k.contains(".consolidator.") && !k.contains(".lora_") && !k.contains(".ssf_"))
        .map(|(_, p)| p.numel())
        .sum::<usize>();
    let trained = adapted.num_trainable();
    println!("stage 1: {} → {}", model_path.display(), out.display());
    println!("  stored      {:>10}  ({} values)", bytes(delta.storage_bytes()), delta.storage_bytes() / 4);
    println!("  trained     {:>10}  ({trained} values)", bytes(4 * trained));
    println!(
        "  full model  {:>10}  ({:.3}% of it is stored per task)",
        bytes(full),
        100.0 * delta.storage_bytes() as f64 / full as f64
    );
    Ok(())
}

pub fn merge(args: &Args) -> R {
    let backbone_path = PathBuf::from(args.str("backbone").unwrap_or_else(|| default_backbone().display().to_string()));
    let delta_path = PathBuf::from(args.str("delta").ok_or("--delta FILE is required")?);
    let out = PathBuf::from(args.str("out").ok_or("--out FILE is required")?);
    args.finish(0)?;
    let (backbone, m) = e(load_model(&backbone_path, None))?;
    if m.is_some() {
        return Err(format!("{} is an adapted model, not a backbone", backbone_path.display()));
    }
    let delta = e(TaskDelta::load(&delta_path))?;
    let merged = e(stage2(&backbone, &delta))?;
    e(save_model(&out, &merged.model, &[]))?;
    println!(
        "stage 2: {} + {} → {} (a plain ViT: {} parameters, as the backbone with a {}-class head)",
        backbone_path.display(),
        delta_path.display(),
        out.display(),
        merged.model.num_params(),
        delta.num_classes
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// eval / forward / inspect

pub fn eval(args: &Args) -> R {
    let model_path = PathBuf::from(args.str("model").ok_or("--model FILE is required")?);
    let json = args.has("json");
    let task = parse_task(args)?;
    let split = args.str("split").unwrap_or_else(|| "test".into());
    args.finish(0)?;
    let (vit, _) = e(load_model(&model_path, None))?;
    let data = e(load_task(task))?;
    let ds: &Dataset = match split.as_str() {
        "test" => &data.test,
        "val" => &data.val,
        "train" => &data.train,
        s => return Err(format!("--split must be train, val or test, not `{s}`")),
    };
    let t = Instant::now();
    let (acc, loss) = e(evaluate(&vit, ds, 256))?;
    let secs = t.elapsed().as_secs_f64();
    if json {
        println!("{{\"model\":\"{}\",\"task\":\"{}\",\"split\":\"{split}\",\"accuracy\":{acc:.4},\"loss\":{loss:.5},\"examples\":{},\"seconds\":{secs:.3}}}", model_path.display(), task.name(), ds.len());
    } else {
        println!(
            "{} on {} ({split}, {} examples): accuracy {:.2}%, loss {loss:.4}, {:.2}s",
            model_path.display(),
            task.name(),
            ds.len(),
            100.0 * acc,
            secs
        );
    }
    Ok(())
}

pub fn forward(args: &Args) -> R {
    let model_path = PathBuf::from(args.str("model").ok_or("--model FILE is required")?);
    let input =
        PathBuf::from(args.str("input").ok_or("--input FILE is required (safetensors with key `input` [B, C, H, W])")?);
    let output = PathBuf::from(args.str("output").ok_or("--output FILE is required")?);
    let arch = args.str("arch");
    args.finish(0)?;
    let (vit, _) = e(load_model(&model_path, arch.as_deref()))?;
    let f = e(TensorFile::load(&input))?;
    let x = e(f.get("input"))?;
    let t = Instant::now();
    let logits = e(vit.predict(x))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let mut out = TensorFile::new();
    out.insert("logits", logits.clone());
    e(out.save(&output))?;
    println!("logits {:?} written to {} ({ms:.1} ms)", logits.shape(), output.display());
    Ok(())
}

pub fn inspect(args: &Args) -> R {
    let path = PathBuf::from(args.positional.first().ok_or("usage: consolidator inspect FILE")?);
    args.finish(1)?;
    let f = e(TensorFile::load(&path))?;
    let total: usize = f.tensors.values().map(|t| t.numel()).sum();
    let kind = if f.metadata.get("format").map(String::as_str) == Some("consolidator-delta") {
        "task delta (stage 1)"
    } else if f.metadata.contains_key("epochs_done") {
        "training checkpoint"
    } else if f.metadata.contains_key("method") {
        "adapted model (with method modules)"
    } else if f.tensors.contains_key("patch_embed.proj.weight") {
        if f.metadata.contains_key("merged_deltas") {
            "merged ViT (plain)"
        } else {
            "ViT (plain)"
        }
    } else {
        "tensor file"
    };
    println!("{}: {kind}, {} tensors, {total} values ({})", path.display(), f.tensors.len(), bytes(4 * total));
    for (k, v) in &f.metadata {
        println!("  {k}: {v}");
    }
    if kind == "task delta (stage 1)" {
        let d = e(TaskDelta::from_file(&f))?;
        println!(
            "  layers changed: {}, dense tensors: {}, stored {}",
            d.layers.len(),
            d.dense.len(),
            bytes(d.storage_bytes())
        );
    }
    if let Ok(cfg) = VitConfig::from_checkpoint(&f) {
        println!(
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
        println!("  {g:<14} {n:>4} tensors {v:>12} values");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// demo / suite / bench: in the following sections.

pub fn demo(args: &Args) -> R {
    super::demo::demo(args)
}

pub fn suite(args: &Args) -> R {
    super::demo::suite(args)
}

pub fn bench(args: &Args) -> R {
    super::bench::bench(args)
}
