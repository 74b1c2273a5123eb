//! Your model, your data, from the command line: a folder of PNG and JPEG images (3 classes,
//! mixed sizes, RGB and gray) goes through `adapt --train … --val …` → `consolidate` → `merge` →
//! `predict`, which prints the folder names as classes; a timm-saved checkpoint (no metadata)
//! adapts with `--arch`; one backbone serves two tasks through `predict --delta`; bad data gets
//! errors that name the file. The images are drawn here (no fixture, no Python).

#![cfg(feature = "image")]

use consolidator::io::safetensors::TensorFile;
use consolidator::nn::{VisionTransformer, VitConfig};
use consolidator::Tensor;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_consolidator"));
    c.env("CONSOLIDATOR_THREADS", "2").env_remove("CONSOLIDATOR_DATA").stdin(Stdio::null());
    c
}

fn run(args: &[&str], cwd: &Path) -> Output {
    bin().args(args).current_dir(cwd).output().unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("consolidator-yourdata-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `w × h` picture of class `k` as gray values in [0, 1]: 0 a disc, 1 a square, 2 stripes,
/// with a random position, size and brightness.
fn draw(k: usize, w: usize, h: usize, rng: &mut impl Rng) -> Vec<f32> {
    let (cx, cy) = (rng.gen_range(0.35..0.65) * w as f32, rng.gen_range(0.35..0.65) * h as f32);
    let r = rng.gen_range(0.2..0.3) * w.min(h) as f32;
    let (fg, bg) = (rng.gen_range(0.7..1.0), rng.gen_range(0.0..0.2));
    let period = rng.gen_range(3..5);
    let mut px = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let on = match k {
                0 => dx * dx + dy * dy < r * r,
                1 => dx.abs() < r && dy.abs() < r,
                _ => (y / period) % 2 == 0,
            };
            px.push(if on { fg } else { bg });
        }
    }
    px
}

fn png(w: usize, h: usize, channels: usize, px: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, w as u32, h as u32);
        enc.set_color(if channels == 3 { png::ColorType::Rgb } else { png::ColorType::Grayscale });
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(px).unwrap();
    }
    buf
}

fn jpeg(w: usize, h: usize, channels: usize, px: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let color = if channels == 3 { jpeg_encoder::ColorType::Rgb } else { jpeg_encoder::ColorType::Luma };
    jpeg_encoder::Encoder::new(&mut buf, 95).encode(px, w as u16, h as u16, color).unwrap();
    buf
}

const CLASSES: [&str; 3] = ["disc", "square", "stripes"];

/// `root/<class>/*.{png,jpg}`: `n` images per class, sizes 20–44 px, RGB or gray, PNG or JPEG.
fn image_folder(root: &Path, n: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (k, class) in CLASSES.iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            let (w, h) = (rng.gen_range(20..45), rng.gen_range(20..45));
            let gray = draw(k, w, h, &mut rng);
            let channels = if rng.gen_bool(0.5) { 3 } else { 1 };
            let tint: [f32; 3] = [rng.gen_range(0.7..1.0), rng.gen_range(0.7..1.0), rng.gen_range(0.7..1.0)];
            let px: Vec<u8> = gray
                .iter()
                .flat_map(|&v| {
                    (0..channels).map(move |c| (255.0 * v * if channels == 3 { tint[c] } else { 1.0 }) as u8)
                })
                .collect();
            let (name, bytes) = if i % 2 == 0 {
                (format!("{i}.png"), png(w, h, channels, &px))
            } else {
                (format!("{i}.jpg"), jpeg(w, h, channels, &px))
            };
            std::fs::write(root.join(class).join(name), bytes).unwrap();
        }
    }
}

fn backbone() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/backbone.safetensors").display().to_string()
}

#[test]
fn a_folder_of_images_to_a_merged_model_and_predictions() {
    let d = scratch("folder");
    image_folder(&d.join("train"), 24, 1);
    image_folder(&d.join("val"), 6, 2);
    image_folder(&d.join("test"), 6, 3);
    let bb = backbone();
    let o = run(
        &[
            "adapt",
            "--method",
            "consolidator",
            "--train",
            "train",
            "--val",
            "val",
            "--test",
            "test",
            "--backbone",
            &bb,
            "--epochs",
            "6",
            "--batch",
            "8",
            "--lr",
            "5e-3",
            "--no-progress",
            "--json",
            "--out",
            "shapes.safetensors",
        ],
        &d,
    );
    assert!(o.status.success(), "{}", err(&o));
    let j = consolidator::io::json::Json::parse(&o.stdout, "adapt --json").unwrap();
    assert_eq!(j.get("classes").and_then(|v| v.as_usize()), Some(3));
    let test_acc = j.get("test_acc").and_then(|v| v.as_f64()).unwrap();
    assert!(test_acc > 0.5, "the shapes are easy: test accuracy {test_acc}");
    let o = run(&["consolidate", "--backbone", &bb, "--model", "shapes.safetensors", "--out", "shapes.delta"], &d);
    assert!(o.status.success(), "{}", err(&o));
    let o = run(&["merge", "--backbone", &bb, "--delta", "shapes.delta", "--out", "merged.safetensors"], &d);
    assert!(o.status.success(), "{}", err(&o));
    // Predictions name the folders' classes, one line per image, the top class first.
    let o = run(&["predict", "--model", "merged.safetensors", "--top-k", "2", "test"], &d);
    assert!(o.status.success(), "{}", err(&o));
    let lines: Vec<String> = out(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 18, "{}", out(&o));
    let right = lines
        .iter()
        .filter(|l| {
            CLASSES
                .iter()
                .any(|c| l.contains(&format!("/{c}/")) && l.split(": ").nth(1).is_some_and(|p| p.starts_with(c)))
        })
        .count();
    assert!(right >= 9, "{right}/18 predictions right:\n{}", out(&o));
    // The merged model evaluates on the folder like the adapted one.
    let o = run(&["eval", "--model", "merged.safetensors", "--data", "test", "--json"], &d);
    assert!(o.status.success(), "{}", err(&o));
    let j = consolidator::io::json::Json::parse(&o.stdout, "eval --json").unwrap();
    let merged_acc = j.get("accuracy").and_then(|v| v.as_f64()).unwrap();
    assert!((merged_acc - test_acc).abs() < 1e-6, "merged {merged_acc} vs adapted {test_acc}");
    // Split folders in one path: train/val/test found by name; --val-split without a val folder.
    let o = run(
        &[
            "adapt",
            "--method",
            "linear",
            "--train",
            ".",
            "--backbone",
            &bb,
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            "lin.safetensors",
        ],
        &d,
    );
    assert!(o.status.success(), "{}", err(&o));
    std::fs::rename(d.join("val"), d.join("held")).unwrap();
    let o = run(
        &[
            "adapt",
            "--method",
            "linear",
            "--train",
            "train",
            "--val-split",
            "0.25",
            "--backbone",
            &bb,
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            "lin2.safetensors",
        ],
        &d,
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("test –"), "no test data was given: {}", out(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn one_backbone_serves_two_tasks() {
    let d = scratch("serve");
    image_folder(&d.join("shapes"), 8, 4);
    let bb = backbone();
    for (task, method) in [("a", "consolidator:g=16"), ("b", "lora:r=2")] {
        let m = format!("{task}.safetensors");
        let o = run(
            &[
                "adapt",
                "--method",
                method,
                "--train",
                "shapes",
                "--backbone",
                &bb,
                "--epochs",
                "1",
                "--no-progress",
                "--out",
                &m,
            ],
            &d,
        );
        assert!(o.status.success(), "{}", err(&o));
        let o = run(&["consolidate", "--backbone", &bb, "--model", &m, "--out", &format!("{task}.delta")], &d);
        assert!(o.status.success(), "{}", err(&o));
    }
    let o = run(
        &[
            "predict",
            "--backbone",
            &bb,
            "--delta",
            "a.delta",
            "--delta",
            "b.delta",
            "--top-k",
            "1",
            "shapes/disc/0.png",
        ],
        &d,
    );
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    assert!(text.contains("[a] ") && text.contains("[b] "), "{text}");
    assert!(
        text.contains("task a: merged in") && text.contains("task b: merged in") && text.contains("restored"),
        "{text}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_timm_checkpoint_without_metadata_adapts_with_arch() {
    let d = scratch("timm");
    image_folder(&d.join("shapes"), 4, 5);
    // timm as published: timm's keys, no metadata at all, a 1000-class head.
    let vit = VisionTransformer::new(&VitConfig::preset("vit_tiny_patch16_224").unwrap(), 7).unwrap();
    let mut f = vit.state_dict();
    f.metadata.clear();
    f.save(d.join("vit_tiny.safetensors")).unwrap();
    let base = [
        "adapt",
        "--method",
        "consolidator:g=96",
        "--train",
        "shapes",
        "--backbone",
        "vit_tiny.safetensors",
        "--epochs",
        "1",
        "--batch",
        "6",
        "--val-split",
        "0.25",
        "--no-progress",
    ];
    // Without --arch the head count cannot be read from the shapes: asked for, not guessed.
    let o = run(&[&base[..], &["--out", "t0.safetensors"]].concat(), &d);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("--arch"), "{}", err(&o));
    let o = run(&[&base[..], &["--arch", "vit_tiny_patch16_224", "--out", "t.safetensors"]].concat(), &d);
    assert!(o.status.success(), "{}", err(&o));
    // The adapted model has a 3-class head, ImageNet's normalisation, the folders' names.
    let m = consolidator::model::Model::load(d.join("t.safetensors")).unwrap();
    assert_eq!(m.vit.config.num_classes, 3);
    assert_eq!(m.classes, CLASSES);
    assert_eq!(m.normalization, consolidator::model::Normalization::imagenet());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_data_gets_errors_that_name_the_file() {
    let d = scratch("bad");
    let bb = backbone();
    let adapt = |train: &str| {
        run(
            &[
                "adapt",
                "--method",
                "linear",
                "--train",
                train,
                "--backbone",
                &bb,
                "--epochs",
                "1",
                "--no-progress",
                "--out",
                "m.safetensors",
            ],
            &d,
        )
    };
    // An unreadable image: the error names it (when its batch is decoded).
    image_folder(&d.join("broken"), 4, 6);
    std::fs::write(d.join("broken/disc/0.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let o = adapt("broken");
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("disc/0.png"), "{}", err(&o));
    // A class folder without images.
    image_folder(&d.join("empty"), 2, 7);
    std::fs::create_dir_all(d.join("empty/zebra")).unwrap();
    let o = adapt("empty");
    assert!(err(&o).contains("zebra") && err(&o).contains("no images"), "{}", err(&o));
    // One class only.
    std::fs::create_dir_all(d.join("one/cat")).unwrap();
    std::fs::write(d.join("one/cat/a.pgm"), "P2 1 1 255 0\n").unwrap();
    let o = adapt("one");
    assert!(err(&o).contains("2 classes"), "{}", err(&o));
    // A tensor file whose labels leave the class range its metadata declares.
    let mut f = TensorFile::new();
    f.insert("images", Tensor::full(&[4, 28, 28], 0.5));
    f.insert("labels", Tensor::new(&[4], vec![0.0, 1.0, 2.0, 7.0]).unwrap());
    f.metadata.insert("class_names".into(), "[\"a\",\"b\",\"c\"]".into());
    f.save(d.join("labels.safetensors")).unwrap();
    let o = adapt("labels.safetensors");
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("labels.safetensors"), "{}", err(&o));
    // A path that is nothing of the kind.
    std::fs::write(d.join("notes.txt"), "hello").unwrap();
    let o = adapt("notes.txt");
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("notes.txt"), "{}", err(&o));
    std::fs::remove_dir_all(&d).unwrap();
}
