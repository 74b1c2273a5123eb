//! The hostile battery: every verb, fed files that lie, files that are not files, misused
//! arguments, under a 4 GB address-space limit (`ulimit -v 4000000`) and a 60 s timeout. No run
//! may abort (134), panic (101), die of a signal or time out; no input file may change; and
//! whatever a run writes with exit 0 holds only finite numbers.

#![cfg(unix)]

use consolidator::io::safetensors::TensorFile;
use consolidator::model::Model;
use consolidator::nn::Module;
use consolidator::optim::Optimizer;
use consolidator::peft::Method;
use consolidator::reparam::consolidate;
use consolidator::Tensor;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A safetensors file from a raw header and data, as a hostile writer would make it.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn idx(dims: &[u32], data_len: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.resize(b.len() + data_len, 0);
    b
}

/// Every regular file below `dir` with its bytes' hash (inputs must not change).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p);
            } else if m.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with("out") {
                let bytes = std::fs::read(&p).unwrap();
                let h =
                    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
                out.insert(p, h);
            }
        }
    }
    out
}

/// Builds the battery's files in `d`.
fn build(d: &Path) {
    let w = |name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).unwrap();
    std::fs::copy(repo().join("data/backbone.safetensors"), d.join("bb.safetensors")).unwrap();
    let bb = Model::load(d.join("bb.safetensors")).unwrap();
    let adapted = bb.adapt(&Method::parse("consolidator:g=16+32", 64).unwrap(), 3, 0).unwrap();
    adapted.save(d.join("adapted.safetensors")).unwrap();
    let delta = consolidate(&adapted, &bb.vit).unwrap();
    delta.save(d.join("delta.safetensors")).unwrap();
    let mut x = TensorFile::new();
    x.insert("input", Tensor::full(&[3, 1, 28, 28], 0.1));
    x.save(d.join("x.safetensors")).unwrap();
    // Files that lie about their size or shape.
    w("empty.safetensors", b"");
    let full = std::fs::read(d.join("bb.safetensors")).unwrap();
    w("truncated.safetensors", &full[..full.len() / 3]);
    w("hugeheader.safetensors", &u64::MAX.to_le_bytes());
    w("garbage.safetensors", &[0x5a; 4096]);
    w("offsets.safetensors", &raw(r#"{"a":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4]}}"#, &[0; 4]));
    w(
        "overflow.safetensors",
        &raw(r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#, &[]),
    );
    let mut head = bb.vit.state_dict();
    head.metadata.clear();
    head.insert("head.weight", Tensor::zeros(&[1_000_000_000, 0]));
    head.save(d.join("head.safetensors")).unwrap();
    for (name, method) in [
        ("branches.safetensors", format!("consolidator:g={}", vec!["1"; 100_000].join("+"))),
        ("dense64.safetensors", format!("consolidator:g={}", vec!["1"; 64].join("+"))),
        ("lora.safetensors", "lora:r=65536".to_string()),
        ("vpt.safetensors", "vpt:prompts=65536".to_string()),
    ] {
        let mut f = bb.to_file().unwrap();
        f.metadata.insert("method".into(), method);
        f.save(d.join(name)).unwrap();
    }
    let mut big_img = bb.to_file().unwrap();
    big_img.metadata.insert("img_size_h".into(), "1000000000".into());
    big_img.save(d.join("bigimage.safetensors")).unwrap();
    // Non-finite values.
    let mut nan = bb.to_file().unwrap();
    nan.tensors.get_mut("blocks.0.attn.qkv.weight").unwrap().data_mut()[3] = f32::NAN;
    w("nan.safetensors", &nan.to_bytes());
    let mut ck = adapted.to_file().unwrap();
    let mut opt = Optimizer::adamw(0.0);
    opt.t = 3;
    opt.state_dict(&mut ck);
    for (k, p) in adapted.vit.named_params() {
        if p.trainable {
            ck.insert(format!("opt.m.{k}"), Tensor::full(&[p.numel()], f32::NAN));
            ck.insert(format!("opt.v.{k}"), Tensor::zeros(&[p.numel()]));
        }
    }
    ck.metadata.insert("epochs_done".into(), "0".into());
    ck.metadata.insert("steps_done".into(), "3".into());
    w("nanck.safetensors", &ck.to_bytes());
    let mut far = ck.clone();
    far.metadata.insert("opt.t".into(), "18446744073709551615".into());
    w("farck.safetensors", &far.to_bytes());
    // Deltas that claim too much.
    let df = delta.to_file().unwrap();
    let mut pos = df.clone();
    pos.insert("pos_embed", Tensor::zeros(&[1, 50, 64]));
    w("posdelta.safetensors", &pos.to_bytes());
    let mut ver = df.clone();
    ver.metadata.insert("format_version".into(), "99".into());
    w("verdelta.safetensors", &ver.to_bytes());
    let mut pat = df.clone();
    let k = pat.metadata.keys().find(|k| k.ends_with("delta.pattern")).unwrap().clone();
    pat.metadata.insert(k, format!("grouped 64x64 {}", vec!["1"; 100_000].join(",")));
    w("patdelta.safetensors", &pat.to_bytes());
    let mut bigd = df.clone();
    for t in bigd.tensors.values_mut() {
        t.data_mut().iter_mut().for_each(|v| *v = 3.0e38);
    }
    w("bigdelta.safetensors", &bigd.to_bytes());
    // Data directories: a gzip bomb (1 GiB of zeros behind a header that declares little), a
    // header that declares far more than the file holds, a PNG declaring 100000 × 100000 pixels.
    std::fs::create_dir_all(d.join("bomb")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&idx(&[100, 28, 28], 0)).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        gz.write_all(&zeros).unwrap();
    }
    std::fs::write(d.join("bomb/train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(d.join("bomb/train-labels-idx1-ubyte"), idx(&[100], 100)).unwrap();
    std::fs::write(d.join("bomb/t10k-images-idx3-ubyte"), idx(&[10, 28, 28], 7840)).unwrap();
    std::fs::write(d.join("bomb/t10k-labels-idx1-ubyte"), idx(&[10], 10)).unwrap();
    std::fs::create_dir_all(d.join("liar")).unwrap();
    std::fs::write(d.join("liar/train-images-idx3-ubyte"), idx(&[4_000_000_000, 28, 28], 64)).unwrap();
    std::fs::write(d.join("liar/train-labels-idx1-ubyte"), idx(&[4_000_000_000], 64)).unwrap();
    std::fs::write(d.join("liar/t10k-images-idx3-ubyte"), idx(&[10, 28, 28], 7840)).unwrap();
    std::fs::write(d.join("liar/t10k-labels-idx1-ubyte"), idx(&[10], 10)).unwrap();
    for class in ["a", "b"] {
        std::fs::create_dir_all(d.join("imgs").join(class)).unwrap();
        std::fs::write(d.join("imgs").join(class).join("ok.pgm"), "P2 2 2 255 0 50 100 255\n").unwrap();
    }
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 0]);
    std::fs::write(d.join("imgs/a/huge.png"), png).unwrap();
    std::fs::write(d.join("imgs/b/pgm.pgm"), "P5 100000 100000 65535\n\x00\x00").unwrap();
    // Things that are not regular files.
    std::fs::create_dir_all(d.join("dir.safetensors")).unwrap();
    let fifo = d.join("fifo.safetensors");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
}

/// Runs the binary under the limits; returns (code, stderr), or panics on abort, panic,
/// signal or timeout.
fn hostile_run(d: &Path, args: &[&str]) -> (i32, String) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4000000; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_consolidator"))
        .args(args)
        .current_dir(d)
        .env("CONSOLIDATOR_THREADS", "2")
        .env("CONSOLIDATOR_DATA", repo().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Standard error is drained while the child runs (a long message must not block it).
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    });
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    let code = status.code().unwrap_or_else(|| panic!("{args:?}: killed by a signal ({status:?}); stderr: {stderr}"));
    assert!(code != 101 && code != 134 && !stderr.contains("panicked"), "{args:?}: exit {code}: {stderr}");
    (code, stderr)
}

#[test]
fn the_hostile_battery() {
    let d = std::env::temp_dir().join(format!("consolidator-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    build(&d);
    let before = snapshot(&d);
    let models = [
        "empty",
        "truncated",
        "hugeheader",
        "garbage",
        "offsets",
        "overflow",
        "head",
        "branches",
        "dense64",
        "lora",
        "vpt",
        "bigimage",
        "nan",
        "nanck",
        "farck",
        "dir",
        "fifo",
        "delta",
        "posdelta",
    ];
    let mut cases: Vec<Vec<String>> = Vec::new();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for m in models {
        let f = format!("{m}.safetensors");
        cases.push(s(&["inspect", &f]));
        cases.push(s(&["forward", "--model", &f, "--input", "x.safetensors", "--output", "out-y.safetensors"]));
        cases.push(s(&[
            "forward",
            "--arch",
            "vit_mnist_tiny",
            "--model",
            &f,
            "--input",
            "x.safetensors",
            "--output",
            "out-y.safetensors",
        ]));
        cases.push(s(&["eval", "--model", &f, "--task", "location", "--split", "val"]));
        cases.push(s(&["consolidate", "--backbone", "bb.safetensors", "--model", &f, "--out", "out-d.safetensors"]));
        cases.push(s(&["merge", "--backbone", &f, "--delta", "delta.safetensors", "--out", "out-m.safetensors"]));
        cases.push(s(&["predict", "--model", &f, "imgs/a/ok.pgm"]));
        cases.push(s(&[
            "adapt",
            "--task",
            "location",
            "--epochs",
            "1",
            "--backbone",
            &f,
            "--no-progress",
            "--out",
            "out-a.safetensors",
        ]));
    }
    for dl in ["posdelta", "verdelta", "patdelta", "bigdelta", "nan", "garbage", "fifo", "dir", "adapted"] {
        cases.push(s(&[
            "merge",
            "--backbone",
            "bb.safetensors",
            "--delta",
            &format!("{dl}.safetensors"),
            "--out",
            "out-m.safetensors",
        ]));
        cases.push(s(&[
            "predict",
            "--backbone",
            "bb.safetensors",
            "--delta",
            &format!("{dl}.safetensors"),
            "imgs/a/ok.pgm",
        ]));
    }
    for ck in ["nanck", "farck", "truncated", "fifo"] {
        cases.push(s(&[
            "adapt",
            "--task",
            "location",
            "--method",
            "consolidator:g=16+32",
            "--epochs",
            "1",
            "--no-progress",
            "--checkpoint",
            &format!("{ck}.safetensors"),
            "--resume",
            "--out",
            "out-a.safetensors",
        ]));
    }
    for data in ["bomb", "liar"] {
        cases.push(s(&[
            "pretrain",
            "--data",
            data,
            "--epochs",
            "1",
            "--limit",
            "8",
            "--no-progress",
            "--out",
            "out-p.safetensors",
        ]));
        cases.push(s(&["eval", "--model", "bb.safetensors", "--data", data]));
    }
    cases.push(s(&[
        "adapt",
        "--train",
        "imgs",
        "--val-split",
        "0.5",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        "out-a.safetensors",
    ]));
    cases.push(s(&["predict", "--model", "bb.safetensors", "imgs"]));
    cases.push(s(&["inspect", "/dev/zero"]));
    cases.push(s(&["eval", "--model", "/dev/zero", "--data", "imgs"]));
    cases.push(s(&[
        "adapt",
        "--task",
        "shift",
        "--method",
        "linear",
        "--lr",
        "10",
        "--clip",
        "0",
        "--warmup",
        "0",
        "--batch",
        "1000",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        "out-a.safetensors",
    ]));
    let mut refused = 0;
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = hostile_run(&d, &args);
        if code == 0 {
            // Whatever was written with success holds finite numbers only.
            for out in ["out-y", "out-d", "out-m", "out-a", "out-p"] {
                let p = d.join(format!("{out}.safetensors"));
                if p.exists() {
                    let f = TensorFile::load(&p).unwrap();
                    assert!(f.tensors.values().all(|t| t.all_finite()), "{args:?} wrote non-finite values to {out}");
                    std::fs::remove_file(p).unwrap();
                }
            }
        } else {
            refused += 1;
            assert!(stderr.contains("error"), "{args:?}: exit {code} without an error message: {stderr}");
        }
        assert_eq!(snapshot(&d), before, "{args:?} changed an input file");
    }
    assert!(refused * 10 > cases.len() * 8, "most of the battery must be refused ({refused} of {})", cases.len());
    std::fs::remove_dir_all(&d).unwrap();
}
