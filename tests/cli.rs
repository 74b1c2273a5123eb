//! The command line as a user meets it: per-verb help, `--version`, values checked when read,
//! repeated and missing flags, an output that is an input, a closed pipe, the shipped data found
//! without the build directory, files that lie about themselves. Each case runs the binary.

use consolidator::io::safetensors::TensorFile;
use consolidator::model::Model;
use consolidator::nn::{Module, VisionTransformer, VitConfig};
use consolidator::peft::Method;
use consolidator::reparam::consolidate;
use consolidator::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_consolidator"));
    c.env("CONSOLIDATOR_THREADS", "1").env_remove("CONSOLIDATOR_DATA").stdin(Stdio::null());
    c
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], cwd: &Path) -> Output {
    bin().args(args).current_dir(cwd).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A scratch directory with a copy of the shipped data (`data/`), as the reproductions use.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("consolidator-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::copy(repo().join("data/backbone.safetensors"), d.join("data/backbone.safetensors")).unwrap();
    d
}

fn tiny_model() -> Model {
    let cfg = VitConfig { depth: 1, ..VitConfig::preset("vit_mnist_tiny").unwrap() };
    Model::plain(VisionTransformer::new(&cfg, 0).unwrap())
}

#[test]
fn help_and_version() {
    let cwd = repo();
    let o = run(&["--version"], &cwd);
    assert!(o.status.success());
    assert_eq!(stdout(&o).trim(), format!("consolidator {}", env!("CARGO_PKG_VERSION")));
    // Per-verb help lists that verb's own flags, one line each.
    for (verb, flags) in [
        ("adapt", &["--method", "--task", "--lr", "--resume"][..]),
        ("merge", &["--backbone", "--delta", "--out"][..]),
        ("forward", &["--model", "--input", "--output", "--batch"][..]),
    ] {
        let o = run(&[verb, "-h"], &cwd);
        assert!(o.status.success(), "{verb} -h");
        let text = stdout(&o);
        for f in flags {
            let line = text.lines().find(|l| l.trim_start().starts_with(f)).unwrap_or_else(|| panic!("{verb}: no {f}"));
            assert!(line.len() > f.len() + 10, "{verb} {f}: no description on its line: `{line}`");
        }
        assert!(!text.contains("--epochs") || verb == "adapt", "{verb} lists another verb's flags");
    }
}

#[test]
fn values_are_checked_when_read() {
    let cwd = repo();
    for (args, expect) in [
        (&["adapt", "--task", "shift", "--lr", "-1"][..], "--lr"),
        (&["adapt", "--task", "shift", "--lr", "inf"][..], "--lr"),
        (&["adapt", "--task", "shift", "--clip", "nan"][..], "--clip"),
        (&["adapt", "--task", "shift", "--warmup", "18446744073709551615"][..], "--warmup"),
        (&["adapt", "--task", "shift", "--epochs", "18446744073709551615"][..], "--epochs"),
        (&["adapt", "--task", "shift", "--epochs", "0"][..], "--epochs"),
        (&["adapt", "--task", "shift", "--task", "counting"][..], "cannot be used multiple times"),
        (&["eval", "--model", "--task", "shift"][..], "--model"),
        (&["adapt", "--task", "nope"][..], "nope"),
        (&["adapt", "--task", "shift", "--method", "consolidator:init=nan"][..], "init"),
        (&["adapt", "--task", "shift", "--method", "consolidator:init=1e30"][..], "init"),
        (&["adapt", "--task", "shift", "--method", "consolidator:g=-1"][..], "`g`"),
        (&["adapt", "--task", "shift", "--method", "consolidator:g=99999999999999999999"][..], "`g`"),
        (&["adapt", "--task", "shift", "--method", "lora:r=2,r=3"][..], "twice"),
    ] {
        let o = run(args, &cwd);
        // 2: refused by the parser (usage); 1: refused by the library.
        assert!(matches!(o.status.code(), Some(1 | 2)), "{args:?}: {:?}", o.status);
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
    // 65 branches: refused when parsed (a delta with them could not be read back).
    let g = vec!["2"; 65].join("+");
    let o = run(&["adapt", "--task", "shift", "--method", &format!("consolidator:g={g}")], &cwd);
    assert!(stderr(&o).contains("at most 64"), "{}", stderr(&o));
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let d = scratch("same");
    let bb = d.join("data/backbone.safetensors");
    let before = std::fs::read(&bb).unwrap();
    let backbone = Model::load(&bb).unwrap();
    let adapted = backbone.adapt(&Method::parse("consolidator:g=16", 64).unwrap(), 3, 0).unwrap();
    adapted.save(d.join("a.safetensors")).unwrap();
    consolidate(&adapted, &backbone.vit).unwrap().save(d.join("d.safetensors")).unwrap();
    let mut input = TensorFile::new();
    input.insert("input", Tensor::zeros(&[2, 1, 28, 28]));
    input.save(d.join("x.safetensors")).unwrap();
    let cases: [&[&str]; 5] = [
        &[
            "merge",
            "--backbone",
            "data/backbone.safetensors",
            "--delta",
            "d.safetensors",
            "--out",
            "data/backbone.safetensors",
        ],
        &["merge", "--backbone", "data/backbone.safetensors", "--delta", "d.safetensors", "--out", "./d.safetensors"],
        &[
            "consolidate",
            "--backbone",
            "data/backbone.safetensors",
            "--model",
            "a.safetensors",
            "--out",
            "a.safetensors",
        ],
        &["forward", "--model", "a.safetensors", "--input", "x.safetensors", "--output", "x.safetensors"],
        &[
            "adapt",
            "--task",
            "shift",
            "--backbone",
            "data/backbone.safetensors",
            "--out",
            "data/../data/backbone.safetensors",
        ],
    ];
    for args in cases {
        let inputs: Vec<Vec<u8>> = ["data/backbone.safetensors", "a.safetensors", "d.safetensors", "x.safetensors"]
            .iter()
            .map(|f| std::fs::read(d.join(f)).unwrap())
            .collect();
        let o = run(args, &d);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("refusing to overwrite an input"), "{args:?}: {}", stderr(&o));
        for (f, b) in
            ["data/backbone.safetensors", "a.safetensors", "d.safetensors", "x.safetensors"].iter().zip(inputs)
        {
            assert_eq!(std::fs::read(d.join(f)).unwrap(), b, "{args:?} changed {f}");
        }
    }
    assert_eq!(std::fs::read(&bb).unwrap(), before);
    // An output in a missing directory fails before any training.
    let t = std::time::Instant::now();
    let o = run(&["adapt", "--task", "shift", "--out", "no/such/dir/m.safetensors"], &d);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(t.elapsed().as_secs() < 30, "it trained first");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_closed_pipe_ends_quietly_and_a_full_disk_is_an_error() {
    let cwd = repo();
    for args in [&["inspect", "data/backbone.safetensors"][..], &["help"][..], &["--help"][..]] {
        let mut child =
            bin().args(args).current_dir(&cwd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader goes away before the first line
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).is_empty(), "{args:?}: {}", stderr(&o));
    }
    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let o = bin().args(["inspect", "data/backbone.safetensors"]).current_dir(&cwd).stdout(full).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("cannot write to standard output"), "{}", stderr(&o));
    }
}

#[test]
fn the_shipped_data_is_found_without_the_build_directory() {
    let empty = std::env::temp_dir().join(format!("consolidator-cli-nodata-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let model = repo().join("data/backbone.safetensors");
    let m = model.to_str().unwrap();
    // Nowhere to look: the error lists where it looked.
    let o = run(&["eval", "--model", m, "--task", "location", "--split", "val"], &empty);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("./data") && stderr(&o).contains("--data-dir"), "{}", stderr(&o));
    // The flag, then the environment variable.
    let data = repo().join("data");
    let o = run(
        &["--data-dir", data.to_str().unwrap(), "eval", "--model", m, "--task", "location", "--split", "val"],
        &empty,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin()
        .args(["eval", "--model", m, "--task", "location", "--split", "val", "--json"])
        .env("CONSOLIDATOR_DATA", &data)
        .current_dir(&empty)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let j = consolidator::io::json::Json::parse(&o.stdout, "eval --json").unwrap();
    assert_eq!(j.get("examples").and_then(|v| v.as_usize()), Some(200));
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn files_that_lie_are_refused() {
    let d = scratch("lie");
    let write = |name: &str, f: &TensorFile| f.save(d.join(name)).unwrap();
    let base = tiny_model();
    base.save(d.join("base.safetensors")).unwrap();
    // Metadata that contradicts the tensors.
    let mut f = base.to_file().unwrap();
    f.metadata.insert("depth".into(), "4".into());
    write("depth.safetensors", &f);
    // A head with a huge declared row count and no values, loaded with a preset.
    let mut f = base.vit.state_dict();
    f.metadata.clear();
    f.insert("head.weight", Tensor::zeros(&[1_000_000_000, 0]));
    write("head.safetensors", &f);
    // A method string asking for 100,000 branches.
    let mut f = base.to_file().unwrap();
    f.metadata.insert("method".into(), format!("consolidator:g={}", vec!["1"; 100_000].join("+")));
    write("branches.safetensors", &f);
    // A method asking for more parameters than the file holds (64 dense branches).
    let mut f = base.to_file().unwrap();
    f.metadata.insert("method".into(), format!("consolidator:g={}", vec!["1"; 64].join("+")));
    write("budget.safetensors", &f);
    let mut input = TensorFile::new();
    input.insert("input", Tensor::zeros(&[1, 1, 28, 28]));
    write("x.safetensors", &input);
    for (model, arch, expect) in [
        ("depth.safetensors", None, "depth = 4"),
        ("head.safetensors", Some("vit_mnist_tiny"), "holds only"),
        ("branches.safetensors", None, "at most 64"),
        ("budget.safetensors", None, "available"),
    ] {
        let mut args = vec!["forward", "--model", model, "--input", "x.safetensors", "--output", "y.safetensors"];
        if let Some(a) = arch {
            args.extend(["--arch", a]);
        }
        let o = run(&args, &d);
        assert_eq!(o.status.code(), Some(1), "{model}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{model}: {}", stderr(&o));
        assert!(!d.join("y.safetensors").exists());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn nothing_non_finite_is_loaded_or_saved() {
    let d = scratch("nan");
    let bb = Model::load(d.join("data/backbone.safetensors")).unwrap();
    // A model with a NaN weight is refused (by every verb that loads it).
    let mut broken = bb.clone();
    broken.vit.visit_mut("", &mut |k, p| {
        if k == "blocks.0.mlp.fc1.weight" {
            p.value.data_mut()[7] = f32::NAN;
        }
    });
    let mut f = broken.to_file().unwrap();
    f.tensors.insert("blocks.0.mlp.fc1.weight".into(), broken.vit.blocks[0].mlp.fc1.weight.value.clone());
    std::fs::write(d.join("nan.safetensors"), f.to_bytes()).unwrap();
    let o = run(&["eval", "--model", "nan.safetensors", "--task", "shift"], &d);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("blocks.0.mlp.fc1.weight") && stderr(&o).contains("NaN"), "{}", stderr(&o));
    // NaN branch weights: the adapted model is refused before any delta is written.
    let adapted = bb.adapt(&Method::parse("consolidator:g=16", 64).unwrap(), 3, 0).unwrap();
    let mut f = adapted.to_file().unwrap();
    let key = "blocks.1.attn.proj.consolidator.0.weight";
    let mut t = f.tensors[key].clone();
    t.data_mut()[0] = f32::INFINITY;
    f.tensors.insert(key.into(), t);
    std::fs::write(d.join("inf.safetensors"), f.to_bytes()).unwrap();
    let o = run(&["consolidate", "--model", "inf.safetensors", "--out", "delta.safetensors"], &d);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(key), "{}", stderr(&o));
    assert!(!d.join("delta.safetensors").exists());
    // Overlapping branches whose sum leaves the f32 range: no delta is written.
    let mut big = bb.adapt(&Method::parse("consolidator:g=16+32", 64).unwrap(), 3, 0).unwrap();
    big.vit.visit_mut("", &mut |k, p| {
        if k.contains(".consolidator.") && k.ends_with("weight") {
            p.value.data_mut().iter_mut().for_each(|v| *v = 3e38);
        }
    });
    big.save(d.join("big.safetensors")).unwrap();
    let o = run(&["consolidate", "--model", "big.safetensors", "--out", "big_delta.safetensors"], &d);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("f32 range"), "{}", stderr(&o));
    assert!(!d.join("big_delta.safetensors").exists());
    // LoRA factors of 1e38 store fine, but their product does not fit: the merge is refused.
    let mut lora = bb.adapt(&Method::parse("lora:r=2", 64).unwrap(), 3, 0).unwrap();
    lora.vit.visit_mut("", &mut |k, p| {
        if k.contains(".lora_") {
            p.value.data_mut().iter_mut().for_each(|v| *v = 1e38);
        }
    });
    lora.save(d.join("lora.safetensors")).unwrap();
    let o = run(&["consolidate", "--model", "lora.safetensors", "--out", "lora_delta.safetensors"], &d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["merge", "--delta", "lora_delta.safetensors", "--out", "merged.safetensors"], &d);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("non-finite"), "{}", stderr(&o));
    assert!(!d.join("merged.safetensors").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_delta_may_only_change_what_its_method_trains() {
    let d = scratch("delta");
    let bb = Model::load(d.join("data/backbone.safetensors")).unwrap();
    let adapted = bb.adapt(&Method::parse("consolidator:g=16", 64).unwrap(), 3, 0).unwrap();
    let delta = consolidate(&adapted, &bb.vit).unwrap().to_file().unwrap();
    for (name, edit, expect) in [
        (
            "pos",
            Box::new(|f: &mut TensorFile| {
                f.insert("pos_embed", Tensor::zeros(&[1, 50, 64]));
            }) as Box<dyn Fn(&mut TensorFile)>,
            "does not train",
        ),
        (
            "weight",
            Box::new(|f: &mut TensorFile| {
                f.insert("blocks.0.mlp.fc1.weight", Tensor::zeros(&[256, 64]));
            }),
            "does not train",
        ),
        (
            "version",
            Box::new(|f: &mut TensorFile| {
                f.metadata.insert("format_version".into(), "2".into());
            }),
            "version",
        ),
    ] {
        let mut f = delta.clone();
        edit(&mut f);
        f.save(d.join(format!("{name}.safetensors"))).unwrap();
        let o = run(&["merge", "--delta", &format!("{name}.safetensors"), "--out", "m.safetensors"], &d);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{name}: {}", stderr(&o));
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn untrusted_text_is_printed_escaped() {
    let d = scratch("text");
    let mut f = tiny_model().to_file().unwrap();
    f.metadata.insert("note\u{1b}[31m".into(), "red\u{1b}[0m\u{7}bell".into());
    f.save(d.join("m.safetensors")).unwrap();
    let o = run(&["inspect", "m.safetensors"], &d);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "raw control characters printed");
    assert!(out.contains("\\x1b[31m"), "{out}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `import-official` turns an official-format state dict (made by the official PyTorch module in
/// `scripts/gen_fixtures.py`) into an adapted model that every verb takes: `forward` on it gives
/// the official logits, `consolidate` and `merge` work on it.
#[test]
fn import_official_reproduces_the_official_logits() {
    let d = scratch("official");
    for (name, reorder) in [("official_consolidator_plain", false), ("official_consolidator_shuffle", true)] {
        let fx = TensorFile::load(repo().join(format!("tests/fixtures/{name}.safetensors"))).unwrap();
        let mut sd = fx.clone();
        sd.tensors.retain(|k, _| {
            !(k.starts_with("grad.")
                || k.starts_with("merged.")
                || ["input", "labels", "logits", "loss"].contains(&k.as_str()))
        });
        sd.save(d.join("official.safetensors")).unwrap();
        let mut input = TensorFile::new();
        input.insert("input", fx.get("input").unwrap().clone());
        input.save(d.join("x.safetensors")).unwrap();
        let mut args = vec!["import-official", "--in", "official.safetensors", "--out", "imported.safetensors"];
        if reorder {
            args.push("--reorder");
        }
        let o = run(&args, &d);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stdout(&o).contains("consolidator:g=4+8"), "{}", stdout(&o));
        let o = run(
            &["forward", "--model", "imported.safetensors", "--input", "x.safetensors", "--output", "y.safetensors"],
            &d,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let y = TensorFile::load(d.join("y.safetensors")).unwrap();
        let (got, want) = (y.get("logits").unwrap(), fx.get("logits").unwrap());
        let err = got.max_abs_diff(want) / want.max_abs().max(1.0);
        assert!(err <= 1e-4, "{name}: logits differ by {err} of their scale");
        // The imported model is an adapted model like any other: consolidate against its
        // backbone and merge.
        let imported = Model::load(d.join("imported.safetensors")).unwrap();
        let mut backbone = imported.clone();
        for (_, lin) in backbone.vit.fc_layers_mut() {
            lin.adapter = None;
        }
        backbone.method = None;
        backbone.save(d.join("backbone.safetensors")).unwrap();
        let o = run(
            &[
                "consolidate",
                "--backbone",
                "backbone.safetensors",
                "--model",
                "imported.safetensors",
                "--out",
                "delta.safetensors",
            ],
            &d,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let o = run(
            &[
                "merge",
                "--backbone",
                "backbone.safetensors",
                "--delta",
                "delta.safetensors",
                "--out",
                "merged.safetensors",
            ],
            &d,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
    // Without metadata the head count cannot be read from the shapes: it is asked for, not guessed.
    let mut sd = TensorFile::load(d.join("official.safetensors")).unwrap();
    sd.metadata.clear();
    sd.save(d.join("bare.safetensors")).unwrap();
    let o = run(&["import-official", "--in", "bare.safetensors", "--out", "i2.safetensors"], &d);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--arch"), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

/// `suite --plan` writes one job per run, two local workers run them, `suite --gather` chooses
/// on validation, plans the seed runs, and after those builds the tables; a missing run is listed.
#[test]
fn a_sweep_fans_out_and_gathers() {
    let d = scratch("sweep");
    let data = repo().join("data");
    let plan_dir = d.join("sweep");
    let o = bin()
        .args(["suite", "--plan", "sweep", "--epochs", "1", "--eval-every", "1", "--tasks", "location"])
        .args(["--configs", "linear,lora-r1", "--seeds", "2", "--data-dir", data.to_str().unwrap()])
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Two workers share the command list, as `parallel -j 2` would.
    let run_all = |list: &str| {
        let lines: Vec<String> =
            std::fs::read_to_string(plan_dir.join(list)).unwrap().lines().map(String::from).collect();
        let queue = std::sync::Mutex::new(lines);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    let Some(cmd) = queue.lock().unwrap().pop() else { break };
                    let st = Command::new("sh")
                        .arg("-c")
                        .arg(format!("{cmd} --no-progress"))
                        .env("CONSOLIDATOR_THREADS", "1")
                        .output()
                        .unwrap();
                    assert!(st.status.success(), "{cmd}: {}", stderr(&st));
                });
            }
        });
    };
    run_all("commands.txt");
    assert_eq!(std::fs::read_dir(plan_dir.join("results")).unwrap().count(), 4, "2 configs × 2 learning rates");
    let gather = || bin().args(["suite", "--gather", "sweep"]).current_dir(&d).output().unwrap();
    let o = gather();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 seed runs"), "{}", stderr(&o));
    run_all("commands-seeds.txt");
    let o = gather();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "nothing is missing: {}", stderr(&o));
    let md = std::fs::read_to_string(plan_dir.join("sweep.md")).unwrap();
    assert!(md.contains("| linear |") && md.contains("| lora-r1 |") && md.contains(" ± "), "{md}");
    let csv = std::fs::read_to_string(plan_dir.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6, "one row per run and seed");
    assert!(std::fs::read_to_string(plan_dir.join("sweep.svg")).unwrap().contains("<circle"));
    // A lost result is listed, not skipped silently.
    let lost = std::fs::read_dir(plan_dir.join("results")).unwrap().next().unwrap().unwrap().path();
    std::fs::remove_file(&lost).unwrap();
    let o = gather();
    let id = lost.file_stem().unwrap().to_str().unwrap().to_string();
    assert!(stderr(&o).contains(&id), "{}", stderr(&o));
    assert!(std::fs::read_to_string(plan_dir.join("missing.txt")).unwrap().contains(&id));
    std::fs::remove_dir_all(&d).unwrap();
}
