//! Helpers shared by the subcommands: data loading, model files, progress lines, tables.

use consolidator::data::suite::{build_task, Task, TaskData};
use consolidator::data::{load_mnist, load_optdigits, shipped_data_dir, Dataset};
use consolidator::io::safetensors::TensorFile;
use consolidator::nn::{Module, VisionTransformer, VitConfig};
use consolidator::peft::Method;
use consolidator::train::Progress;
use consolidator::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// MNIST pixel statistics; every dataset of this project is normalised with them.
pub const MEAN: f32 = 0.1307;
pub const STD: f32 = 0.3081;

/// The seed that builds the transfer suite's tasks.
pub const SUITE_SEED: u64 = 2023;

/// The shipped backbone.
pub fn default_backbone() -> PathBuf {
    shipped_data_dir().join("backbone.safetensors")
}

/// Loads a task of the transfer suite from the shipped data, normalised.
pub fn load_task(task: Task) -> Result<TaskData> {
    let dir = shipped_data_dir();
    let mnist = load_mnist(dir.join("mnist"), false)?;
    let opt = load_optdigits(dir.join("optdigits").join("optdigits-test.csv.gz"))?;
    let mut t = build_task(task, &mnist, &opt, SUITE_SEED)?;
    for ds in [&mut t.train, &mut t.val, &mut t.test] {
        ds.normalize(MEAN, STD)?;
    }
    Ok(t)
}

/// Loads MNIST from `dir`, normalised.
pub fn load_mnist_normalised(dir: &Path, train: bool) -> Result<Dataset> {
    let mut d = load_mnist(dir, train)?;
    d.normalize(MEAN, STD)?;
    Ok(d)
}

/// Loads a model file: a plain ViT, or an adapted one (metadata `method`), whose method is
/// re-applied before the strict load.
pub fn load_model(path: &Path, arch: Option<&str>) -> Result<(VisionTransformer, Option<Method>)> {
    let f = TensorFile::load(path)?;
    if f.metadata.get("format").map(String::as_str) == Some("consolidator-delta") {
        return Err(Error::invalid(
            "load model",
            format!("{} is a task delta, not a model: merge it into a backbone first", path.display()),
        ));
    }
    let cfg = match arch {
        Some(a) => {
            let mut c = VitConfig::preset(a)?;
            c.num_classes = f.get("head.weight")?.dims::<2>("head.weight")?[0];
            c
        }
        None => VitConfig::from_checkpoint(&f)?,
    };
    let mut vit = VisionTransformer::new(&cfg, 0)?;
    let method = match f.metadata.get("method") {
        Some(m) => {
            let m = Method::parse(m, cfg.embed_dim)?;
            m.apply(&mut vit, cfg.num_classes, 0)?;
            Some(m)
        }
        None => None,
    };
    let mut f = f;
    f.tensors.retain(|k, _| !k.starts_with("opt."));
    vit.load_state_dict(&f, true)?;
    vit.merged_deltas =
        f.metadata.get("merged_deltas").map(|s| s.split(';').map(String::from).collect()).unwrap_or_default();
    Ok((vit, method))
}

/// Saves a model with extra metadata.
pub fn save_model(path: &Path, vit: &VisionTransformer, extra: &[(&str, String)]) -> Result<()> {
    let mut f = vit.state_dict();
    for (k, v) in extra {
        f.metadata.insert(k.to_string(), v.clone());
    }
    f.save(path)
}

/// A live progress line on stderr (at most every 250 ms).
pub fn progress_line(label: String, enabled: bool) -> impl FnMut(&Progress) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let mut last = Instant::now() - std::time::Duration::from_secs(1);
    move |p: &Progress| {
        let done = p.epoch == p.epochs && p.step == p.steps;
        if enabled && !tty && p.step == p.steps {
            // Logs (not a terminal): one line per epoch.
            eprintln!(
                "{label} epoch {}/{} loss {:.4} acc {:.2}% {:.0} img/s",
                p.epoch,
                p.epochs,
                p.loss,
                100.0 * p.acc,
                p.images_per_sec
            );
            return;
        }
        let enabled = enabled && tty;
        if !enabled || (last.elapsed().as_millis() < 250 && !done) {
            return;
        }
        last = Instant::now();
        let eta = p.eta_secs as u64;
        eprint!(
            "\r\x1b[2K{label} epoch {}/{} step {}/{} loss {:.4} acc {:.1}% {:.0} img/s lr {:.2e} ETA {}:{:02}",
            p.epoch,
            p.epochs,
            p.step,
            p.steps,
            p.loss,
            100.0 * p.acc,
            p.images_per_sec,
            p.lr,
            eta / 60,
            eta % 60
        );
        if done {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
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

/// Number of backbone parameters (everything but the head).
pub fn backbone_params(vit: &VisionTransformer) -> usize {
    let mut n = 0;
    vit.visit("", &mut |k, p| {
        if !k.starts_with("head.")
            && !k.contains(".consolidator.")
            && !k.contains(".lora_")
            && !k.contains(".ssf_")
            && !k.contains(".adapter.")
            && !k.ends_with(".prompts")
        {
            n += p.numel()
        }
    });
    n
}
