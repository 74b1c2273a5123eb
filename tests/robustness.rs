//! Faults in long runs: a stopped run resumes bit-identically; a writer killed with SIGKILL at any
//! moment leaves a checkpoint that loads; Ctrl-C stops training after the current step with a
//! checkpoint that resumes to completion.

use consolidator::data::Dataset;
use consolidator::io::safetensors::TensorFile;
use consolidator::nn::{Module, Pool, VisionTransformer, VitConfig};
use consolidator::optim::Optimizer;
use consolidator::peft::Method;
use consolidator::train::{load_checkpoint, train, Position, TrainConfig, STOP};
use consolidator::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `STOP` is one flag per process: the tests that raise it run one at a time.
static STOP_LOCK: Mutex<()> = Mutex::new(());

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("consolidator-robustness-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_config() -> VitConfig {
    VitConfig {
        img_size: (8, 8),
        patch_size: (4, 4),
        in_chans: 1,
        embed_dim: 16,
        depth: 1,
        num_heads: 2,
        mlp_hidden: 32,
        num_classes: 3,
        pool: Pool::Token,
        drop_path_rate: 0.1,
    }
}

fn tiny_dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let images = Tensor::randn(&[n, 1, 8, 8], 1.0, &mut rng);
    let labels = (0..n).map(|_| rng.gen_range(0..3)).collect();
    Dataset::new(images, labels, 3).unwrap()
}

/// Every parameter's bits, by key.
fn weights(vit: &VisionTransformer) -> Vec<(String, Vec<u32>)> {
    let mut v = Vec::new();
    vit.visit("", &mut |k, p| v.push((k.to_string(), p.value.data().iter().map(|x| x.to_bits()).collect())));
    v
}

/// A fresh model (with `method` applied) and optimiser: what a restarted process builds.
fn fresh(method: Option<&str>) -> (VisionTransformer, Optimizer) {
    let mut vit = VisionTransformer::new(&tiny_config(), 1).unwrap();
    if let Some(m) = method {
        Method::parse(m, 16).unwrap().apply(&mut vit, 3, 7).unwrap();
    }
    (vit, Optimizer::adamw(0.01))
}

/// Trains uninterrupted; then trains again, stopping (through `STOP`, as Ctrl-C does) at
/// `stop_at` global steps, and resumes from the checkpoint into a fresh model and optimiser.
/// Both must end bit-identical.
fn check_resume(method: Option<&str>, stop_at: usize, name: &str) {
    let _guard = STOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    consolidator::par::set_threads(1);
    let data = tiny_dataset(40, 3);
    let val = tiny_dataset(8, 4);
    let dir = temp_dir(name);
    let ck = dir.join("run.safetensors");
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 8,
        warmup_epochs: 1,
        clip_grad: 1.0,
        label_smoothing: 0.1,
        seed: 5,
        checkpoint: Some(ck.clone()),
        ..TrainConfig::default()
    };

    STOP.store(false, Ordering::SeqCst);
    let (mut straight, mut opt) = fresh(method);
    train(&mut straight, &mut opt, &data, Some(&val), &cfg, Position::default(), &mut |_| {}).unwrap();
    std::fs::remove_file(&ck).unwrap();

    let (mut first, mut opt) = fresh(method);
    let mut steps = 0;
    let stopped = train(&mut first, &mut opt, &data, Some(&val), &cfg, Position::default(), &mut |_| {
        steps += 1;
        if steps == stop_at {
            STOP.store(true, Ordering::SeqCst);
        }
    });
    STOP.store(false, Ordering::SeqCst);
    let msg = stopped.unwrap_err().to_string();
    assert!(msg.contains("stopped by request"), "{msg}");

    let (mut resumed, mut opt) = fresh(method);
    let at = load_checkpoint(&ck, &mut resumed, &mut opt).unwrap();
    let steps_per_epoch = 5;
    assert_eq!(at, Position { epoch: stop_at / steps_per_epoch, step: stop_at % steps_per_epoch });
    // The resumed model is the stopped one, exactly.
    assert_eq!(weights(&resumed), weights(&first));
    train(&mut resumed, &mut opt, &data, Some(&val), &cfg, at, &mut |_| {}).unwrap();
    let (a, b) = (weights(&straight), weights(&resumed));
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(va == vb, "{name}: `{ka}` differs after resume at step {stop_at}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_equals_uninterrupted() {
    // Mid-epoch (epoch 1 step 3; epoch 2 step 2) and at an epoch boundary (after epoch 2).
    for stop_at in [3, 7, 10] {
        check_resume(None, stop_at, &format!("plain-{stop_at}"));
    }
}

#[test]
fn resume_equals_uninterrupted_with_a_method() {
    for (m, stop_at) in [("consolidator:g=4", 7), ("consolidator:g=2+4,reorder", 4), ("lora:r=2", 6)] {
        check_resume(Some(m), stop_at, &format!("method-{}", m.replace([':', '=', '+', ','], "_")));
    }
}

// ---------------------------------------------------------------------------------------------
// The CLI as a separate process

fn idx(magic_type_dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, magic_type_dims.len() as u8];
    for d in magic_type_dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// A tiny MNIST directory: random 28×28 images with random labels.
fn synthetic_mnist(dir: &Path, n_train: usize, n_test: usize) {
    let mut rng = StdRng::seed_from_u64(9);
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let pixels: Vec<u8> = (0..n * 784).map(|_| rng.gen()).collect();
        let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..10)).collect();
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), idx(&[n as u32, 28, 28], &pixels)).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), idx(&[n as u32], &labels)).unwrap();
    }
}

fn pretrain(data: &Path, ck: &Path, out: &Path, epochs: usize, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_consolidator"));
    c.args(["pretrain", "--arch", "vit_mnist_tiny", "--batch", "32", "--limit", "128", "--no-progress"])
        .args(["--epochs", &epochs.to_string()])
        .arg("--data")
        .arg(data)
        .arg("--checkpoint")
        .arg(ck)
        .arg("--out")
        .arg(out)
        .env("CONSOLIDATOR_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .stdin(Stdio::null());
    if resume {
        c.arg("--resume");
    }
    c
}

/// The checkpoint loads strictly into a fresh `vit_mnist_tiny` and its optimiser.
fn checkpoint_loads(ck: &Path) -> Position {
    let mut vit = VisionTransformer::new(&VitConfig::preset("vit_mnist_tiny").unwrap(), 0).unwrap();
    let mut opt = Optimizer::adamw(0.05);
    load_checkpoint(ck, &mut vit, &mut opt).unwrap_or_else(|e| panic!("checkpoint does not load: {e}"))
}

#[test]
fn sigkill_mid_save_keeps_the_previous_checkpoint() {
    let dir = temp_dir("sigkill");
    synthetic_mnist(&dir, 300, 40);
    let ck = dir.join("ck.safetensors");
    let out = dir.join("model.safetensors");
    // Time one uninterrupted run, to spread the kills over all of it (saves included).
    let t0 = Instant::now();
    let status = pretrain(&dir, &ck, &out, 2, false).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(status.success());
    let full = t0.elapsed();
    checkpoint_loads(&ck);
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..6 {
        let mut child = pretrain(&dir, &ck, &out, 2, false).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(full.mul_f64(rng.gen_range(0.05..1.0)));
        let _ = child.kill(); // SIGKILL: no handler, no cleanup
        let _ = child.wait();
        checkpoint_loads(&ck);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two different training checkpoints `[a, b]` of the tiny model: the writer alternates them.
fn two_checkpoints() -> [Vec<u8>; 2] {
    [1, 2].map(|seed| {
        let vit = VisionTransformer::new(&tiny_config(), seed).unwrap();
        let mut f = vit.state_dict();
        f.metadata.insert("epochs_done".into(), seed.to_string());
        f.metadata.insert("steps_done".into(), "0".into());
        f.to_bytes()
    })
}

/// Run as a child process by `sigkill_during_saves_never_tears_the_file`: saves the two
/// checkpoints alternately, forever, through `TensorFile::save` (the engine's only way to write
/// a checkpoint).
#[test]
#[ignore = "a child process of sigkill_during_saves_never_tears_the_file"]
fn endless_writer() {
    let Ok(path) = std::env::var("CONSOLIDATOR_ENDLESS_WRITER") else { return };
    let files = two_checkpoints().map(|b| TensorFile::from_bytes(&b, "memory").unwrap());
    for i in 0.. {
        files[i % 2].save(&path).unwrap();
    }
}

#[test]
fn sigkill_during_saves_never_tears_the_file() {
    // The child does nothing but save, so most kills land inside a save: the file must always be
    // one of the two complete checkpoints.
    let dir = temp_dir("endless");
    let path = dir.join("ck.safetensors");
    let expected = two_checkpoints();
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..25 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["endless_writer", "--exact", "--ignored", "--test-threads", "1"])
            .env("CONSOLIDATOR_ENDLESS_WRITER", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..200)));
        let _ = child.kill();
        let _ = child.wait();
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(bytes == expected[0] || bytes == expected[1], "a torn checkpoint ({} bytes)", bytes.len());
            TensorFile::from_bytes(&bytes, "after SIGKILL").unwrap();
        }
    }
    assert!(path.exists(), "the writer never completed a save");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_stops_with_a_checkpoint_that_resumes() {
    let dir = temp_dir("sigint");
    synthetic_mnist(&dir, 300, 40);
    let ck = dir.join("ck.safetensors");
    let out = dir.join("model.safetensors");
    let mut child = pretrain(&dir, &ck, &out, 30, false).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // "pretraining …" is printed just before the handler is installed and training starts.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("pretraining"), "{line}");
    std::thread::sleep(Duration::from_millis(1500));
    let kill = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("stopped by request"), "stderr: {stderr}");
    let at = checkpoint_loads(&ck);
    assert!(at.epoch < 30, "{at:?}");
    // Resume to the end of a short run from where it stopped.
    let epochs = at.epoch + 1;
    let resumed = pretrain(&dir, &ck, &out, epochs, true).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("resuming from"), "stderr: {stderr}");
    assert_eq!(checkpoint_loads(&ck), Position { epoch: epochs, step: 0 });
    assert!(out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
