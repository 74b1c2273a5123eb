//! Faults in long runs: a stopped run resumes bit-identically; a writer killed with SIGKILL at any
//! moment leaves a checkpoint that loads; Ctrl-C stops training after the current step with a
//! checkpoint that resumes to completion.

use consolidator::data::Dataset;
use consolidator::io::safetensors::TensorFile;
use consolidator::model::Model;
use consolidator::nn::{Module, Pool, VisionTransformer, VitConfig};
use consolidator::optim::Optimizer;
use consolidator::peft::Method;
use consolidator::train::{load_checkpoint, Position, StopHandle, TrainConfig, Trainer};
use consolidator::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// A fresh model (with `method` applied): what a restarted process builds.
fn fresh(method: Option<&str>) -> Model {
    let backbone = Model::plain(VisionTransformer::new(&tiny_config(), 1).unwrap());
    match method {
        Some(m) => backbone.adapt(&Method::parse(m, 16).unwrap(), 3, 7).unwrap(),
        None => backbone,
    }
}

/// Trains uninterrupted; then trains again, stopping (through a [`StopHandle`], as Ctrl-C does)
/// at `stop_at` global steps, and resumes from the checkpoint into a fresh model. Both must end
/// bit-identical.
fn check_resume(method: Option<&str>, stop_at: usize, name: &str) {
    consolidator::par::set_threads(1);
    let data = tiny_dataset(40, 3);
    let val = tiny_dataset(8, 4);
    let dir = temp_dir(name);
    let ck = dir.join("run.safetensors");
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 8,
        weight_decay: 0.01,
        warmup_epochs: 1,
        clip_grad: 1.0,
        label_smoothing: 0.1,
        // The random shifts are drawn per step too: a resumed run must draw the same ones.
        shift: if method.is_none() { 1 } else { 0 },
        seed: 5,
        checkpoint: Some(ck.clone()),
        ..TrainConfig::default()
    };

    let mut straight = fresh(method);
    Trainer::new(cfg.clone()).run(&mut straight, &data, Some(&val)).unwrap();
    std::fs::remove_file(&ck).unwrap();

    let mut first = fresh(method);
    let (mut steps, stop) = (0, StopHandle::new());
    let report = Trainer::new(cfg.clone())
        .on_progress(|_| {
            steps += 1;
            if steps == stop_at {
                stop.stop();
            }
        })
        .with_stop(stop.clone())
        .run(&mut first, &data, Some(&val))
        .unwrap();
    let steps_per_epoch = 5;
    let at = Position { epoch: stop_at / steps_per_epoch, step: stop_at % steps_per_epoch };
    assert_eq!(report.stopped_at, Some(at));

    // The checkpoint holds the stopped model, exactly.
    let mut loaded = fresh(method);
    let mut opt = Optimizer::adamw(0.01);
    assert_eq!(load_checkpoint(&ck, &mut loaded, &mut opt).unwrap(), at);
    assert_eq!(weights(&loaded.vit), weights(&first.vit));
    // A fresh process resumes from it and ends where the uninterrupted run ended.
    let mut resumed = fresh(method);
    let report = Trainer::new(TrainConfig { resume: true, ..cfg }).run(&mut resumed, &data, Some(&val)).unwrap();
    assert_eq!(report.resumed_from, Some(at));
    let (a, b) = (weights(&straight.vit), weights(&resumed.vit));
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
    let mut model = Model::plain(VisionTransformer::new(&VitConfig::preset("vit_mnist_tiny").unwrap(), 0).unwrap());
    let mut opt = Optimizer::adamw(0.05);
    load_checkpoint(ck, &mut model, &mut opt).unwrap_or_else(|e| panic!("checkpoint does not load: {e}"))
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
        let mut child =
            pretrain(&dir, &ck, &out, 2, false).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
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

// ---------------------------------------------------------------------------------------------
// The table of bad inputs in docs/ROBUSTNESS.md

/// Runs the CLI; returns its exit code and the `error: …` line (or the last stderr line).
fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_consolidator"))
        .args(args)
        .env("CONSOLIDATOR_THREADS", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().rev().find(|l| l.starts_with("error:")).or(stderr.lines().last()).unwrap_or("");
    (out.status.code().unwrap_or(-1), line.to_string())
}

fn write_file(path: &Path, f: &TensorFile) {
    std::fs::write(path, f.to_bytes()).unwrap();
}

/// Prints the rows of the bad-input table (`cargo test --release --test robustness --
/// --ignored --nocapture bad_input_table`), each from a real run of the CLI.
#[test]
#[ignore = "prints the table of docs/ROBUSTNESS.md"]
fn bad_input_table() {
    let root = temp_dir("table");
    let p = |n: &str| root.join(n).display().to_string();
    let mnist = |name: &str, edit: &dyn Fn(&Path)| {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        synthetic_mnist(&d, 120, 20);
        edit(&d);
        d.display().to_string()
    };
    let good = mnist("good", &|_| {});
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut row = |case: &str, shown: &str, args: &[&str]| {
        let (code, msg) = cli(args);
        assert_ne!(code, 0, "{case}: succeeded");
        rows.push((case.into(), shown.into(), msg.replace(root.to_str().unwrap(), "$T").replace('|', "\\|")));
    };
    let pre = |data: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["pretrain", "--arch", "vit_mnist_tiny", "--epochs", "1", "--batch", "32"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(["--limit", "64", "--no-progress", "--data", data, "--out"].map(String::from));
        v.push(p("out.safetensors"));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    macro_rules! pre_row {
        ($case:expr, $shown:expr, $data:expr, $extra:expr) => {{
            let v = pre($data, $extra);
            row($case, $shown, &v.iter().map(String::as_str).collect::<Vec<_>>());
        }};
    }
    // Data.
    pre_row!("missing data directory", "pretrain --data /nonexistent", &p("nope"), &[]);
    let d = mnist("trunc", &|d| {
        let f = d.join("train-images-idx3-ubyte");
        let b = std::fs::read(&f).unwrap();
        std::fs::write(&f, &b[..1000]).unwrap();
    });
    pre_row!("truncated IDX images", "pretrain (train-images cut at 1000 bytes)", &d, &[]);
    let d = mnist("gzgarbage", &|d| {
        std::fs::remove_file(d.join("train-images-idx3-ubyte")).unwrap();
        std::fs::write(d.join("train-images-idx3-ubyte.gz"), [0x1f, 0x8b, 8, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
            .unwrap();
    });
    pre_row!("gzip garbage", "pretrain (train-images .gz = magic + junk)", &d, &[]);
    let d = mnist("labels", &|d| {
        let f = d.join("train-labels-idx1-ubyte");
        let mut b = std::fs::read(&f).unwrap();
        b[8 + 5] = 12;
        std::fs::write(&f, b).unwrap();
    });
    pre_row!("label out of range", "pretrain (label 12 in train-labels)", &d, &[]);
    let d = mnist("count", &|d| {
        std::fs::write(d.join("train-labels-idx1-ubyte"), idx(&[119], &[0; 119])).unwrap();
    });
    pre_row!("image/label count mismatch", "pretrain (120 images, 119 labels)", &d, &[]);
    let d = mnist("size", &|d| {
        std::fs::write(d.join("train-images-idx3-ubyte"), idx(&[120, 20, 20], &vec![0; 120 * 400])).unwrap();
    });
    pre_row!("image size mismatch", "pretrain (20×20 images for a 28×28 model)", &d, &[]);
    pre_row!(
        "NaN loss from an absurd learning rate",
        "pretrain --lr 1e6 --epochs 3 --checkpoint CK",
        &good,
        &["--lr", "1e6", "--epochs", "3", "--warmup", "0", "--clip", "0", "--checkpoint", &p("nan.safetensors")]
    );

    // Checkpoints (resume).
    let vit = VisionTransformer::new(&VitConfig::preset("vit_mnist_tiny").unwrap(), 0).unwrap();
    let mut ck = vit.state_dict();
    Optimizer::adamw(0.05).state_dict(&mut ck);
    ck.metadata.insert("epochs_done".into(), "1".into());
    ck.metadata.insert("steps_done".into(), "0".into());
    let bytes = ck.to_bytes();
    let resume = |name: &str| pre(&good, &["--resume", "--checkpoint", &p(name)]);
    macro_rules! resume_row {
        ($case:expr, $shown:expr, $name:expr) => {{
            let v = resume($name);
            row($case, $shown, &v.iter().map(String::as_str).collect::<Vec<_>>());
        }};
    }
    std::fs::write(root.join("trunc.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    resume_row!("truncated checkpoint", "pretrain --resume --checkpoint CK (cut in half)", "trunc.safetensors");
    let mut flipped = bytes.clone();
    flipped[20] ^= 0x04; // inside the JSON header
    std::fs::write(root.join("flip.safetensors"), &flipped).unwrap();
    resume_row!(
        "bit-flipped checkpoint header",
        "pretrain --resume (one bit of the header flipped)",
        "flip.safetensors"
    );
    let mut flipped = bytes.clone();
    flipped[0] ^= 0x40; // the header length
    std::fs::write(root.join("fliplen.safetensors"), &flipped).unwrap();
    resume_row!("bit-flipped header length", "pretrain --resume (bit 6 of the length flipped)", "fliplen.safetensors");
    let mut renamed = ck.clone();
    let t = renamed.tensors.remove("blocks.0.attn.proj.weight").unwrap();
    renamed.insert("blocks.0.attn.proj.weights", t);
    write_file(&root.join("renamed.safetensors"), &renamed);
    resume_row!("renamed key", "pretrain --resume (`…proj.weight` → `…proj.weights`)", "renamed.safetensors");
    let mut misshaped = ck.clone();
    misshaped.insert("blocks.0.attn.proj.weight", Tensor::zeros(&[64, 63]));
    write_file(&root.join("misshaped.safetensors"), &misshaped);
    resume_row!("mis-shaped tensor", "pretrain --resume (`proj.weight` [64, 63])", "misshaped.safetensors");
    write_file(&root.join("plain.safetensors"), &vit.state_dict());
    resume_row!("a model, not a training checkpoint", "pretrain --resume --checkpoint MODEL", "plain.safetensors");

    // Models.
    let input = root.join("input.safetensors");
    let mut f = TensorFile::new();
    f.insert("input", Tensor::zeros(&[2, 1, 28, 28]));
    write_file(&input, &f);
    let mut huge = vit.state_dict();
    huge.metadata.insert("img_size_h".into(), "1000000000".into());
    write_file(&root.join("huge.safetensors"), &huge);
    let mut wide = vit.state_dict();
    wide.insert("patch_embed.proj.weight", Tensor::zeros(&[10_000_000, 0, 4, 4]));
    write_file(&root.join("wide.safetensors"), &wide);
    let mut small = TensorFile::new();
    small.insert("input", Tensor::zeros(&[2, 1, 20, 20]));
    write_file(&root.join("small.safetensors"), &small);
    let fwd = |model: &str, inp: &str| {
        ["forward", "--model", &p(model), "--input", &p(inp), "--output", &p("logits.safetensors")].map(String::from)
    };
    macro_rules! fwd_row {
        ($case:expr, $shown:expr, $m:expr, $i:expr) => {{
            let v = fwd($m, $i);
            row($case, $shown, &v.iter().map(String::as_str).collect::<Vec<_>>());
        }};
    }
    fwd_row!(
        "checkpoint declaring a huge image",
        "forward --model M (metadata img_size_h = 10^9)",
        "huge.safetensors",
        "input.safetensors"
    );
    fwd_row!(
        "checkpoint declaring embed_dim 10^7",
        "forward --model M (patch weight [10^7, 0, 4, 4])",
        "wide.safetensors",
        "input.safetensors"
    );
    fwd_row!(
        "input of the wrong size",
        "forward --input X (20×20 for a 28×28 model)",
        "plain.safetensors",
        "small.safetensors"
    );
    fwd_row!("missing model file", "forward --model /nonexistent", "nope.safetensors", "input.safetensors");

    // Deltas.
    let backbone = root.join("backbone.safetensors");
    vit.save(&backbone).unwrap();
    let other = root.join("other.safetensors");
    VisionTransformer::new(&VitConfig::preset("vit_mnist_tiny").unwrap(), 1).unwrap().save(&other).unwrap();
    let method = Method::parse("consolidator:g=4", 64).unwrap();
    let adapted = Model::plain(vit.clone()).adapt(&method, 10, 7).unwrap();
    let delta = consolidator::reparam::consolidate(&adapted, &vit).unwrap();
    let delta_path = root.join("delta.safetensors");
    delta.save(&delta_path).unwrap();
    let merged = p("merged.safetensors");
    let (code, msg) =
        cli(&["merge", "--backbone", &p("backbone.safetensors"), "--delta", &p("delta.safetensors"), "--out", &merged]);
    assert_eq!(code, 0, "{msg}");
    let dfile = delta.to_file().unwrap();
    let layer = dfile.metadata.keys().find(|k| k.ends_with("delta.pattern")).unwrap().clone();
    let mut bad_pattern = dfile.clone();
    bad_pattern.metadata.insert(layer, "grouped 16777216x16777216 1".into());
    write_file(&root.join("badpattern.safetensors"), &bad_pattern);
    let mut bad_classes = dfile.clone();
    bad_classes.metadata.insert("num_classes".into(), "1000000000000".into());
    write_file(&root.join("badclasses.safetensors"), &bad_classes);
    let mg = |b: &str, d: &str| {
        ["merge", "--backbone", &p(b), "--delta", &p(d), "--out", &p("m2.safetensors")].map(String::from)
    };
    macro_rules! mg_row {
        ($case:expr, $shown:expr, $b:expr, $d:expr) => {{
            let v = mg($b, $d);
            row($case, $shown, &v.iter().map(String::as_str).collect::<Vec<_>>());
        }};
    }
    mg_row!("delta for another backbone", "merge --backbone OTHER --delta D", "other.safetensors", "delta.safetensors");
    mg_row!("merging twice", "merge --backbone MERGED --delta D", "merged.safetensors", "delta.safetensors");
    mg_row!(
        "delta with a huge pattern",
        "merge (pattern `grouped 16777216x16777216 1`)",
        "backbone.safetensors",
        "badpattern.safetensors"
    );
    mg_row!(
        "delta with num_classes 10^12",
        "merge (metadata num_classes = 10^12)",
        "backbone.safetensors",
        "badclasses.safetensors"
    );
    mg_row!("a model passed as the delta", "merge --delta MODEL", "backbone.safetensors", "backbone.safetensors");
    mg_row!("a delta passed as the backbone", "merge --backbone DELTA", "delta.safetensors", "delta.safetensors");

    // Method strings.
    for m in ["nope", "lora:x=1", "lora:r=abc", "consolidator:g=3"] {
        let shown = format!("adapt --method '{m}'");
        row(
            &format!("bad method string `{m}`"),
            &shown,
            &[
                "adapt",
                "--backbone",
                &p("backbone.safetensors"),
                "--method",
                m,
                "--task",
                "optdigits",
                "--epochs",
                "1",
                "--no-progress",
                "--out",
                &p("a.safetensors"),
            ],
        );
    }

    println!("| bad input | command | error |\n| --- | --- | --- |");
    for (case, shown, msg) in rows {
        let shown = if shown.contains('`') { shown } else { format!("`{shown}`") };
        println!("| {case} | {shown} | {msg} |");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// A training checkpoint is checked against the run that resumes from it: its optimiser state
/// (missing, extra, mis-shaped or non-finite moments), its position (against the optimiser's
/// step count and the run's length) and its method. Nothing is silently reset.
#[test]
fn a_checkpoint_that_does_not_fit_is_refused() {
    consolidator::par::set_threads(1);
    let dir = temp_dir("misfit");
    let ck = dir.join("ck.safetensors");
    let data = tiny_dataset(16, 3);
    let cfg = TrainConfig { epochs: 2, batch_size: 8, checkpoint: Some(ck.clone()), ..TrainConfig::default() };
    let method = Some("consolidator:g=4");
    let mut model = fresh(method);
    Trainer::new(TrainConfig { epochs: 1, ..cfg.clone() }).run(&mut model, &data, None).unwrap();
    let good = TensorFile::load(&ck).unwrap();
    let resume = |f: &TensorFile, method: Option<&str>, cfg: &TrainConfig| -> String {
        std::fs::write(&ck, f.to_bytes()).unwrap(); // written raw: `save` refuses the NaN ones
        let mut m = fresh(method);
        match Trainer::new(TrainConfig { resume: true, ..cfg.clone() }).run(&mut m, &data, None) {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    };
    // The untouched checkpoint resumes.
    assert_eq!(resume(&good, method, &cfg), "accepted");
    let moment = good.tensors.keys().find(|k| k.starts_with("opt.m.") && k.contains("consolidator")).unwrap().clone();
    type Edit<'a> = Box<dyn Fn(&mut TensorFile) + 'a>;
    let edits: Vec<(&str, Edit, &str)> = vec![
        ("NaN moment", Box::new(|f| f.tensors.get_mut(&moment).unwrap().data_mut()[0] = f32::NAN), "NaN"),
        ("missing moment", Box::new(|f| drop(f.tensors.remove(&moment))), "no first moment"),
        ("extra moment", Box::new(|f| f.insert("opt.m.pos_embed", Tensor::zeros(&[80]))), "not a trainable"),
        ("mis-shaped moment", Box::new(|f| f.insert(moment.clone(), Tensor::zeros(&[3]))), "values"),
        (
            "step count near 2^64",
            Box::new(|f| drop(f.metadata.insert("opt.t".into(), "18446744073709551615".into()))),
            "does not fit",
        ),
        (
            "absurd epochs_done",
            Box::new(|f| drop(f.metadata.insert("epochs_done".into(), "1000000".into()))),
            "does not fit",
        ),
        ("absurd steps_done", Box::new(|f| drop(f.metadata.insert("steps_done".into(), "9".into()))), "does not fit"),
        (
            "NaN weight",
            Box::new(|f| f.tensors.get_mut("head.weight").unwrap().data_mut()[1] = f32::INFINITY),
            "NaN or infinite",
        ),
    ];
    for (what, edit, expect) in edits {
        let mut f = good.clone();
        edit(&mut f);
        let e = resume(&f, method, &cfg);
        assert!(e.contains(expect), "{what}: {e}");
    }
    // Another method's run does not resume from it.
    let e = resume(&good, Some("lora:r=2"), &cfg);
    assert!(e.contains("made with method"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
