//! What several verbs share: finding the shipped data, loading models and tasks, one adaptation
//! run, progress lines, output guards.

use super::{note, CliError, R};
use consolidator::data::suite::{build_task, Task, TaskData};
use consolidator::data::{load_mnist, load_optdigits, Source};
use consolidator::io::json::Json;
use consolidator::model::{LoadOptions, Model};
use consolidator::nn::{Module, VisionTransformer, VitConfig};
use consolidator::peft::Method;
use consolidator::reparam::consolidate;
use consolidator::train::{evaluate, Progress, StopHandle, TrainConfig, TrainReport, Trainer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The seed that builds the transfer suite's tasks.
pub const SUITE_SEED: u64 = 2023;

/// The shipped-data directory: `--data-dir`, else `$CONSOLIDATOR_DATA`, else `./data`, else
/// `data/` beside the executable (`data::locate_data_dir`); the error lists every place it
/// looked.
pub fn data_dir(explicit: Option<&Path>) -> R<PathBuf> {
    consolidator::data::locate_data_dir(explicit).map_err(|e| CliError::Msg(format!("{e}; pass --data-dir DIR")))
}

/// The given backbone file, or the shipped one.
pub fn backbone_path(explicit: Option<&Path>, data: Option<&Path>) -> R<PathBuf> {
    match explicit {
        Some(p) => Ok(p.to_path_buf()),
        None => Ok(data_dir(data)?.join("backbone.safetensors")),
    }
}

/// Loads a model file (`arch`: a preset for files without architecture metadata).
pub fn load_model(path: &Path, arch: Option<&str>) -> R<Model> {
    let arch = arch.map(VitConfig::preset).transpose()?;
    Ok(Model::load_with(path, &LoadOptions { arch, ..LoadOptions::default() })?)
}

/// Loads a plain backbone (an adapted model is refused).
pub fn load_backbone(path: &Path, arch: Option<&str>) -> R<Model> {
    if !path.exists() {
        return Err(format!(
            "backbone {} not found (see README: `consolidator pretrain`, or pass --backbone)",
            path.display()
        )
        .into());
    }
    let m = load_model(path, arch)?;
    if m.method.is_some() {
        return Err(format!("{} is an adapted model; pass a plain backbone", path.display()).into());
    }
    Ok(m)
}

/// A task of the transfer suite from the shipped data (pixel values in [0, 1]; a model
/// normalises them as its metadata says when it trains or evaluates).
pub fn load_task(task: Task, data: Option<&Path>) -> R<TaskData> {
    let dir = data_dir(data)?;
    let mnist = load_mnist(dir.join("mnist"), false)?;
    let opt = load_optdigits(dir.join("optdigits").join("optdigits-test.csv.gz"))?;
    Ok(build_task(task, &mnist, &opt, SUITE_SEED)?)
}

/// Number of backbone parameters (everything but the head and the method's modules).
pub fn backbone_params(vit: &VisionTransformer) -> usize {
    vit.backbone_params().iter().map(|(_, p)| p.numel()).sum()
}

/// Hyper-parameters of the demo's and the suite's runs of `method` at learning rate `lr`.
pub fn suite_config(method: &Method, epochs: usize, lr: f32, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        lr,
        weight_decay: if method.name() == "full" { 0.05 } else { 1e-4 },
        warmup_epochs: (epochs / 10).max(1),
        clip_grad: 1.0,
        eval_every: epochs,
        seed,
        ..TrainConfig::default()
    }
}

/// The learning-rate grid of a method in the demo and the suite (chosen on validation accuracy).
pub fn lr_grid(method: &Method) -> Vec<f32> {
    match method.name() {
        "full" => vec![2e-4, 5e-4],
        "linear" | "bitfit" | "ssf" | "vpt" => vec![5e-3, 2e-2],
        _ => vec![2e-3, 5e-3],
    }
}

/// One adaptation run and its measurements.
pub struct AdaptResult {
    pub model: Model,
    pub report: TrainReport,
    /// Last-epoch accuracy on the validation and test data, when there are such data.
    pub val_acc: Option<f32>,
    pub test_acc: Option<f32>,
    pub tunable: usize,
    pub stored_bytes: usize,
}

/// The data of one adaptation run.
pub struct AdaptData {
    pub train: Arc<dyn Source>,
    pub val: Option<Arc<dyn Source>>,
    pub test: Option<Arc<dyn Source>>,
    /// The classes' names (empty when the data names none).
    pub classes: Vec<String>,
}

impl AdaptData {
    /// A task of the transfer suite.
    pub fn task(t: &TaskData) -> AdaptData {
        AdaptData {
            train: Arc::new(t.train.clone()),
            val: Some(Arc::new(t.val.clone())),
            test: Some(Arc::new(t.test.clone())),
            classes: Vec::new(),
        }
    }
}

/// Adapts a copy of `backbone` to `data` with `method`, then measures it.
pub fn run_adapt(
    backbone: &Model,
    method: &Method,
    data: &AdaptData,
    cfg: &TrainConfig,
    label: String,
    show: bool,
    stop: Option<StopHandle>,
) -> R<AdaptResult> {
    let mut model = backbone.adapt(method, data.train.num_classes(), cfg.seed)?;
    model.classes = data.classes.clone();
    let mut cfg = cfg.clone();
    cfg.eval_every = cfg.eval_every.max(1);
    let mut trainer = Trainer::new(cfg).on_progress(progress_line(label, show));
    if let Some(s) = stop {
        trainer = trainer.with_stop(s);
    }
    let report = trainer.run(&mut model, data.train.as_ref(), data.val.as_deref())?;
    if let Some(at) = report.stopped_at {
        return Err(stopped(at));
    }
    let acc = |d: &Option<Arc<dyn Source>>| -> R<Option<f32>> {
        Ok(match d {
            Some(d) => Some(evaluate(&model, d.as_ref(), 256)?.0),
            None => None,
        })
    };
    let (val_acc, test_acc) = (acc(&data.val)?, acc(&data.test)?);
    let tunable = model.vit.num_trainable();
    let stored_bytes =
        if method.mergeable() { consolidate(&model, &backbone.vit)?.storage_bytes() } else { 4 * tunable };
    Ok(AdaptResult { model, report, val_acc, test_acc, tunable, stored_bytes })
}

/// The error of a run stopped by Ctrl-C.
pub fn stopped(at: consolidator::train::Position) -> CliError {
    let when = if at.step > 0 {
        format!("at epoch {}, step {}", at.epoch + 1, at.step)
    } else {
        format!("after epoch {}", at.epoch)
    };
    CliError::Msg(format!("stopped by request {when}; the checkpoint holds that position (continue with --resume)"))
}

/// The first Ctrl-C (SIGINT) asks training to stop after the current step (a checkpoint is
/// saved at that exact position); a second one exits at once (checkpoints are written
/// atomically, so the last one survives either way).
pub fn install_ctrlc(stop: &StopHandle) {
    let stop = stop.clone();
    // A second installation in one process fails harmlessly (the first handler stays).
    let _ = ctrlc::set_handler(move || {
        if stop.stop() {
            note!("\nsecond interrupt: exiting now");
            std::process::exit(130);
        }
        note!("\ninterrupt: stopping after the current step (Ctrl-C again to exit now)");
    });
}

/// A live progress line on stderr (at most every 250 ms; one line per epoch when stderr is not
/// a terminal).
pub fn progress_line(label: String, enabled: bool) -> impl FnMut(&Progress) {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let mut last = Instant::now() - std::time::Duration::from_secs(1);
    move |p: &Progress| {
        let done = p.epoch == p.epochs && p.step == p.steps;
        if enabled && !tty && p.step == p.steps {
            note!(
                "{label} epoch {}/{} loss {:.4} acc {:.2}% {:.0} img/s",
                p.epoch,
                p.epochs,
                p.loss,
                100.0 * p.acc,
                p.images_per_sec
            );
            return;
        }
        if !(enabled && tty) || (last.elapsed().as_millis() < 250 && !done) {
            return;
        }
        last = Instant::now();
        let eta = p.eta_secs as u64;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{label} epoch {}/{} step {}/{} loss {:.4} acc {:.1}% {:.0} img/s lr {:.2e} ETA {}:{:02}{}",
            p.epoch,
            p.epochs,
            p.step,
            p.steps,
            p.loss,
            100.0 * p.acc,
            p.images_per_sec,
            p.lr,
            eta / 60,
            eta % 60,
            if done { "\n" } else { "" }
        );
        let _ = err.flush();
    }
}

/// Formats a byte count.
pub fn bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// A JSON number of an `f32` as it prints (its shortest decimal form, not its `f64` expansion).
pub fn num32(v: f32) -> Json {
    Json::num(v.to_string().parse().unwrap_or(f64::NAN))
}

/// A JSON string of a path.
pub fn path_json(p: &Path) -> Json {
    Json::Str(p.display().to_string())
}

/// Text from a file made safe for a terminal: control characters are escaped.
pub fn printable(s: &str) -> String {
    consolidator::io::text::escape_text(s)
}

/// Refuses an output that is one of the inputs, and an output that cannot be written (a missing
/// or read-only directory, a directory or device in its place) — before any work is done.
pub fn check_output(out: &Path, inputs: &[&Path]) -> R {
    consolidator::io::fs::check_output(out, inputs)?;
    consolidator::io::check_writable(out)?;
    Ok(())
}
