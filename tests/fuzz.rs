//! The fuzz targets' bodies (`fuzz/bodies.rs`) on stable, in the normal suite: each runs over its
//! seed corpus (`fuzz/corpus/<target>/` plus seeds built here) and many random and mutated
//! inputs — bit flips, truncation at every length, huge declared sizes, shape products that
//! overflow, offsets past the end, duplicate keys, NaN/Inf — and must never panic. The hostile
//! cases that should be refused are also checked to give a clean `Err`.
//!
//! `cargo test --release --test fuzz -- --ignored write_seed_corpus` rewrites the seed corpora.

#[path = "../fuzz/bodies.rs"]
mod bodies;

use consolidator::data::Dataset;
use consolidator::io::safetensors::TensorFile;
use consolidator::model::{import_official, Model};
use consolidator::nn::{Module, Pool, VisionTransformer, VitConfig};
use consolidator::peft::Method;
use consolidator::reparam::{consolidate, TaskDelta};
use consolidator::train::{TrainConfig, Trainer};
use consolidator::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Seeds

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
        drop_path_rate: 0.0,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn idx_bytes(magic_type: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, magic_type, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// Makes the weights non-trivial (the adapted model differs from the backbone everywhere it is
/// trainable), so deltas store real values.
fn perturb(vit: &mut VisionTransformer, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    vit.visit_mut("", &mut |_, p| {
        if p.trainable {
            for v in p.value.data_mut() {
                *v += rng.gen_range(-0.2..0.2);
            }
        }
    });
}

/// The official consolidator layout of a tiny model: `<layer>.fc_origin.weight` `[O, I, 1]`,
/// `<layer>.fc_rep_branches.<k>.group_fc.{weight [O, I/g, 1], bias [O]}`.
fn official_file(groups: &[usize]) -> TensorFile {
    let vit = VisionTransformer::new(&tiny_config(), 3).unwrap();
    let mut sd = vit.state_dict();
    let mut rng = StdRng::seed_from_u64(5);
    for (key, lin) in vit.fc_layers() {
        let layer = key.trim_end_matches('.');
        let (o, i) = (lin.out_dim(), lin.in_dim());
        let w = sd.tensors.remove(&format!("{layer}.weight")).unwrap();
        sd.insert(format!("{layer}.fc_origin.weight"), w.reshape(&[o, i, 1]).unwrap());
        if let Some(b) = sd.tensors.remove(&format!("{layer}.bias")) {
            sd.insert(format!("{layer}.fc_origin.bias"), b);
        }
        for (k, &g) in groups.iter().enumerate() {
            let p = format!("{layer}.fc_rep_branches.{k}.group_fc");
            sd.insert(format!("{p}.weight"), Tensor::randn(&[o, i / g, 1], 0.1, &mut rng));
            sd.insert(format!("{p}.bias"), Tensor::randn(&[o], 0.1, &mut rng));
        }
    }
    sd
}

/// Small valid inputs for each target, built in memory (also what the corpus writer stores).
fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "safetensors" => {
            let mut f = TensorFile::new();
            f.insert("a", Tensor::new(&[2, 3], vec![1.0, -2.0, 0.5, 0.0, 3.25, -0.0]).unwrap());
            f.insert("b.weight", Tensor::new(&[1], vec![7.0]).unwrap());
            f.metadata.insert("note".into(), "seed".into());
            let mut empty = TensorFile::new();
            empty.metadata.insert("k".into(), "v".into());
            vec![f.to_bytes(), empty.to_bytes(), TensorFile::new().to_bytes()]
        }
        "json" => [
            r#"{"a": [1, 2.5, "x", true, null], "b": {"c": -1e-3}}"#,
            r#"[]"#,
            r#""esc\"aped\u00e9\n""#,
            r#"{"__metadata__":{"k":"v"},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            "  -0.0e+10 ",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "idx" => {
            let img = idx_bytes(8, &[3, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]);
            let lab = idx_bytes(8, &[3], &[0, 9, 1]);
            vec![gzip(&img), gzip(&lab), img, lab]
        }
        "optdigits" => {
            let row = |v: usize, l: usize| format!("{},{l}\n", vec![(v % 17).to_string(); 64].join(","));
            let text = format!("{}{}\n{}", row(0, 3), row(16, 9), row(5, 0));
            vec![text.clone().into_bytes(), gzip(text.as_bytes())]
        }
        "delta" => {
            let backbone = VisionTransformer::new(&tiny_config(), 1).unwrap();
            ["consolidator:g=4", "consolidator:g=2+8,reorder", "lora:r=2", "ssf", "bitfit"]
                .iter()
                .map(|m| {
                    let method = Method::parse(m, 16).unwrap();
                    let mut adapted = Model::plain(backbone.clone()).adapt(&method, 3, 7).unwrap();
                    perturb(&mut adapted.vit, 11);
                    consolidate(&adapted, &backbone).unwrap().to_file().unwrap().to_bytes()
                })
                .collect()
        }
        "checkpoint" => {
            let vit = VisionTransformer::new(&tiny_config(), 1).unwrap();
            let full = vit.state_dict();
            // Shapes only, plus the head count (16 is not a multiple of timm's head width 64).
            let mut bare = full.clone();
            bare.metadata.clear();
            bare.metadata.insert("num_heads".into(), "2".into());
            let mut avg = tiny_config();
            avg.pool = Pool::Avg;
            avg.img_size = (8, 4);
            let avg = VisionTransformer::new(&avg, 2).unwrap().state_dict();
            vec![full.to_bytes(), bare.to_bytes(), avg.to_bytes()]
        }
        "method" => [
            "consolidator",
            "consolidator:g=4+8,reorder,dp=0.1",
            "consolidator:g=2,layers=qkv,init=zero,frozen-norms",
            "lora:r=4,alpha=8",
            "adapter:dim=8,scale=0.1",
            "vpt:prompts=5",
            "ssf",
            "bitfit",
            "full",
            "linear",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "official" => vec![official_file(&[2]).to_bytes(), official_file(&[4, 8]).to_bytes()],
        "resume" => {
            // Real training checkpoints (model, method, optimiser state, position) of a few runs.
            let dir = std::env::temp_dir().join(format!("consolidator-fuzz-resume-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ck = dir.join("ck.safetensors");
            let mut rng = StdRng::seed_from_u64(3);
            let data =
                Dataset::new(Tensor::randn(&[8, 1, 8, 8], 1.0, &mut rng), (0..8).map(|i| i % 3).collect(), 3).unwrap();
            let seeds = [None, Some("consolidator:g=2+4r"), Some("lora:r=2,layers=qkv")].map(|m| {
                let backbone = Model::plain(VisionTransformer::new(&tiny_config(), 1).unwrap());
                let mut model = match m {
                    Some(m) => backbone.adapt(&Method::parse(m, 16).unwrap(), 3, 0).unwrap(),
                    None => backbone,
                };
                let cfg =
                    TrainConfig { epochs: 1, batch_size: 4, checkpoint: Some(ck.clone()), ..TrainConfig::default() };
                Trainer::new(cfg).run(&mut model, &data, None).unwrap();
                std::fs::read(&ck).unwrap()
            });
            std::fs::remove_dir_all(&dir).unwrap();
            seeds.to_vec()
        }
        "image" => image_seeds(),
        "tensor_source" => tensor_source_seeds(),
        other => panic!("no target {other}"),
    }
}

/// Small images of every decoded kind: PGM/PPM (ASCII and binary, 8- and 16-bit) and, with the
/// `image` feature, PNG (gray, 16-bit RGB, palette with transparency, interlaced gray + alpha)
/// and JPEG (gray, RGB).
fn image_seeds() -> Vec<Vec<u8>> {
    let mut v = vec![
        b"P2\n# comment\n3 2\n15\n0 3 6\n9 12 15\n".to_vec(),
        b"P3 2 1 255 255 0 0 0 128 255\n".to_vec(),
        [b"P5 3 2 255\n".as_slice(), &[0, 50, 100, 150, 200, 250]].concat(),
        [b"P6 1 2 65535\n".as_slice(), &[255, 255, 0, 0, 128, 0, 1, 2, 3, 4, 5, 6]].concat(),
    ];
    #[cfg(feature = "image")]
    {
        let png = |w: u32, h: u32, color, depth, data: &[u8], edit: &dyn Fn(&mut png::Encoder<&mut Vec<u8>>)| {
            let mut buf = Vec::new();
            {
                let mut enc = png::Encoder::new(&mut buf, w, h);
                enc.set_color(color);
                enc.set_depth(depth);
                edit(&mut enc);
                let mut wr = enc.write_header().unwrap();
                wr.write_image_data(data).unwrap();
            }
            buf
        };
        use png::{BitDepth, ColorType};
        let grad: Vec<u8> = (0..64).map(|i| (i * 4) as u8).collect();
        v.push(png(8, 8, ColorType::Grayscale, BitDepth::Eight, &grad, &|_| {}));
        v.push(png(3, 2, ColorType::Rgb, BitDepth::Sixteen, &[0x80; 36], &|_| {}));
        v.push(png(4, 1, ColorType::Indexed, BitDepth::Two, &[0b00_01_10_11], &|e| {
            e.set_palette(vec![0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]);
            e.set_trns(vec![0, 255, 128]);
        }));
        let la: Vec<u8> = (0..5 * 5 * 2).map(|i| (i * 5) as u8).collect();
        v.push(png(5, 5, ColorType::GrayscaleAlpha, BitDepth::Eight, &la, &|_| {}));
    }
    let jpeg = |w: u16, h: u16, color, data: &[u8]| {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 90).encode(data, w, h, color).unwrap();
        out
    };
    let rgb: Vec<u8> = (0..8 * 8 * 3).map(|i| (i * 3 % 256) as u8).collect();
    v.push(jpeg(8, 8, jpeg_encoder::ColorType::Rgb, &rgb));
    v.push(jpeg(9, 3, jpeg_encoder::ColorType::Luma, &rgb[..27]));
    v
}

/// Tensor-file datasets: U8 NHWC with class names, F32 NCHW with splits, NHW with I64 labels.
fn tensor_source_seeds() -> Vec<Vec<u8>> {
    use consolidator::data::{to_tensor_file, Dataset};
    let ds = Dataset::new(Tensor::full(&[3, 1, 2, 2], 0.5), vec![0, 1, 2], 3).unwrap();
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let named = to_tensor_file(&ds, &names).unwrap().to_bytes();
    let raw = |header: &str, data: &[u8]| {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    };
    let mut nhwc = vec![0u8; 2 * 2 * 2 * 3];
    nhwc.iter_mut().enumerate().for_each(|(i, v)| *v = (i * 10) as u8);
    nhwc.extend_from_slice(&[1, 0]);
    let u8_file = raw(
        r#"{"__metadata__":{"class_names":"cat,dog"},"images":{"dtype":"U8","shape":[2,2,2,3],"data_offsets":[0,24]},"labels":{"dtype":"U8","shape":[2],"data_offsets":[24,26]}}"#,
        &nhwc,
    );
    let mut nhw = vec![255u8; 2 * 3 * 2];
    for l in [1i64, 0] {
        nhw.extend_from_slice(&l.to_le_bytes());
    }
    let nhw_file = raw(
        r#"{"images":{"dtype":"U8","shape":[2,3,2],"data_offsets":[0,12]},"labels":{"dtype":"I64","shape":[2],"data_offsets":[12,28]}}"#,
        &nhw,
    );
    let mut splits = TensorFile::new();
    splits.insert("train.images", Tensor::full(&[2, 3, 2, 2], 0.25));
    splits.insert("train.labels", Tensor::new(&[2], vec![0.0, 1.0]).unwrap());
    splits.insert("test.images", Tensor::full(&[1, 3, 2, 2], 1.0));
    splits.insert("test.labels", Tensor::new(&[1], vec![1.0]).unwrap());
    vec![named, u8_file, nhw_file, splits.to_bytes()]
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

/// Seeds built here plus whatever the checked-in corpus holds.
fn all_seeds(target: &str) -> Vec<Vec<u8>> {
    let mut v = seeds(target);
    if let Ok(rd) = std::fs::read_dir(corpus_dir(target)) {
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        v.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    v
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    for (name, _) in bodies::TARGETS {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Deterministic mutants of `seed`: every truncation (small files; a sample for big ones), bit
/// flips, byte overwrites with boundary values, insertions, deletions, block duplication, and
/// splices with `other`.
fn mutants(seed: &[u8], other: &[u8], rng: &mut StdRng, n_random: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let len = seed.len();
    if len <= 4096 {
        out.extend((0..len).map(|l| seed[..l].to_vec()));
    } else {
        out.extend((0..64).map(|_| seed[..rng.gen_range(0..len)].to_vec()));
        out.extend((0..16).map(|l| seed[..l].to_vec()));
    }
    if len == 0 {
        return out;
    }
    for _ in 0..n_random {
        let mut m = seed.to_vec();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..m.len().max(1));
            match rng.gen_range(0..7) {
                0 if !m.is_empty() => m[at] ^= 1 << rng.gen_range(0..8),
                1 if !m.is_empty() => m[at] = [0, 1, 0x7f, 0x80, 0xff, b'9', b'-', b'"', b'e'][rng.gen_range(0..9)],
                2 => m.insert(at.min(m.len()), rng.gen()),
                3 if !m.is_empty() => {
                    m.remove(at);
                }
                4 if !m.is_empty() => {
                    let end = (at + rng.gen_range(1..16)).min(m.len());
                    let block = m[at..end].to_vec();
                    m.splice(at..at, block);
                }
                5 if !other.is_empty() => {
                    let from = rng.gen_range(0..other.len());
                    let end = (from + rng.gen_range(1..64)).min(other.len());
                    m.splice(at.min(m.len())..at.min(m.len()), other[from..end].iter().copied());
                }
                _ if m.len() >= 8 => {
                    // A little-endian u64 in the first 8 bytes (safetensors header length) or a
                    // big-endian u32 (IDX dimension): the interesting extremes.
                    let v: u64 = [0, 1, 7, u32::MAX as u64, u64::MAX, 1 << 40][rng.gen_range(0..6)];
                    let at = at.min(m.len() - 8);
                    m[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
                _ => {}
            }
        }
        out.push(m);
    }
    out
}

fn run_target(name: &str, n_random: usize) -> usize {
    let body = bodies::TARGETS.iter().find(|(n, _)| *n == name).unwrap().1;
    let seeds = all_seeds(name);
    let mut rng = StdRng::seed_from_u64(0xF022 ^ name.len() as u64);
    let mut runs = 0;
    for (i, s) in seeds.iter().enumerate() {
        body(s);
        let other = &seeds[(i + 1) % seeds.len()];
        for m in mutants(s, other, &mut rng, n_random) {
            body(&m);
            runs += 1;
        }
    }
    for _ in 0..200 {
        let n = rng.gen_range(0..256);
        body(&(0..n).map(|_| rng.gen()).collect::<Vec<u8>>());
        runs += 1;
    }
    runs
}

#[test]
fn fuzz_safetensors_body() {
    assert!(run_target("safetensors", 20_000) > 20_000);
}

#[test]
fn fuzz_json_body() {
    assert!(run_target("json", 20_000) > 20_000);
}

#[test]
fn fuzz_idx_body() {
    assert!(run_target("idx", 20_000) > 20_000);
}

#[test]
fn fuzz_optdigits_body() {
    assert!(run_target("optdigits", 5000) > 5000);
}

#[test]
fn fuzz_delta_body() {
    assert!(run_target("delta", 1000) > 1000);
}

#[test]
fn fuzz_checkpoint_body() {
    assert!(run_target("checkpoint", 600) > 600);
}

#[test]
fn fuzz_method_body() {
    assert!(run_target("method", 20_000) > 20_000);
}

#[test]
fn fuzz_official_body() {
    assert!(run_target("official", 400) > 400);
}

#[test]
fn fuzz_resume_body() {
    assert!(run_target("resume", 300) > 300);
}

#[test]
fn fuzz_image_body() {
    assert!(run_target("image", 3000) > 3000);
}

#[test]
fn fuzz_tensor_source_body() {
    assert!(run_target("tensor_source", 5000) > 5000);
}

#[test]
fn image_seeds_decode_and_tensor_seeds_open() {
    // The seeds must be accepted, or the fuzzer starts from nothing.
    for s in image_seeds() {
        consolidator::data::decode_image(&s, "seed").unwrap();
    }
    for s in tensor_source_seeds() {
        assert!(!consolidator::data::tensors::open_tensor_file(&s, "seed").unwrap().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile files, each refused with a clean error

/// A safetensors file from a raw header (JSON text) and data bytes.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn refused(bytes: &[u8]) -> String {
    bodies::safetensors(bytes);
    TensorFile::from_bytes(bytes, "hostile").map(|_| ()).unwrap_err().to_string()
}

#[test]
fn hostile_safetensors_are_refused() {
    let f32s = |n: usize| vec![0u8; 4 * n];
    // Declared header length far past the end, and u64::MAX.
    for len in [1u64 << 40, u64::MAX, 9] {
        let mut b = len.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        refused(&b);
    }
    // Shape products that overflow, and huge shapes with a tiny buffer.
    refused(&raw_safetensors(
        r#"{"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
        &f32s(2),
    ));
    refused(&raw_safetensors(r#"{"t":{"dtype":"F32","shape":[1000000000,1000],"data_offsets":[0,8]}}"#, &f32s(2)));
    // Offsets past the end, reversed, or overlapping.
    refused(&raw_safetensors(r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8000000000]}}"#, &f32s(2)));
    refused(&raw_safetensors(r#"{"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, &f32s(2)));
    refused(&raw_safetensors(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &f32s(3),
    ));
    // Unknown dtype, negative and fractional dims.
    refused(&raw_safetensors(r#"{"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, &f32s(2)));
    refused(&raw_safetensors(r#"{"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, &f32s(2)));
    refused(&raw_safetensors(r#"{"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#, &f32s(2)));
    // Duplicate keys: refused or one wins, never a panic.
    let dup = raw_safetensors(
        r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &f32s(2),
    );
    bodies::safetensors(&dup);
    // Deeply nested JSON in the header must not overflow the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    bodies::json(deep.as_bytes());
    refused(&raw_safetensors(&format!(r#"{{"t":{}}}"#, "[".repeat(100_000)), &[]));
}

#[test]
fn hostile_idx_are_refused() {
    use consolidator::data::idx::Idx;
    let huge = idx_bytes(8, &[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3]);
    assert!(Idx::parse(&huge, "hostile").is_err());
    assert!(Idx::parse(&gzip(&huge), "hostile").is_err());
    let short = idx_bytes(8, &[10, 28, 28], &[0; 100]);
    assert!(Idx::parse(&short, "hostile").is_err());
    assert!(Idx::parse(&gzip(&short), "hostile").is_err());
    // Gzip magic then garbage.
    assert!(Idx::parse(&[0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7], "hostile").is_err());
    // Wrong element type byte, 255 dimensions.
    assert!(Idx::parse(&idx_bytes(0x0d, &[1], &[0, 0, 0, 0]), "hostile").is_err());
    assert!(Idx::parse(&[0, 0, 8, 255], "hostile").is_err());
}

#[test]
fn hostile_optdigits_are_refused() {
    use consolidator::data::optdigits::parse_optdigits;
    let row = |s: &str| format!("{},{s}\n", vec!["1"; 64].join(","));
    for bad in [row("10"), row("-1"), row("NaN"), row("inf"), row("99999999999999999999999"), row("")] {
        assert!(parse_optdigits(bad.as_bytes(), "hostile").is_err(), "{bad}");
    }
    let pixel = format!("17,{},1\n", vec!["1"; 63].join(","));
    assert!(parse_optdigits(pixel.as_bytes(), "hostile").is_err());
}

/// A checkpoint with the tiny model's tensors but hostile metadata or shapes.
fn checkpoint_with(edit: impl FnOnce(&mut TensorFile)) -> TensorFile {
    let mut f = VisionTransformer::new(&tiny_config(), 1).unwrap().state_dict();
    edit(&mut f);
    f
}

fn assert_checkpoint_refused(f: &TensorFile, why: &str) {
    let bytes = f.to_bytes();
    bodies::checkpoint(&bytes);
    let f = TensorFile::from_bytes(&bytes, "hostile").unwrap();
    assert!(VitConfig::from_checkpoint(&f).is_err(), "{why}: config accepted");
    assert!(VisionTransformer::from_checkpoint(&f, None).is_err(), "{why}: model built");
}

#[test]
fn checkpoints_declaring_huge_models_are_refused_before_allocating() {
    // Regression: these used to build the declared model (terabytes) before the strict load
    // could notice that the file holds a few kilobytes.
    let m = |k: &'static str, v: &'static str| move |f: &mut TensorFile| drop(f.metadata.insert(k.into(), v.into()));
    assert_checkpoint_refused(&checkpoint_with(m("img_size_h", "4000000000")), "img_size_h 4e9");
    assert_checkpoint_refused(&checkpoint_with(m("img_size_w", "1048576")), "img_size_w 2^20");
    // A zero-element patch weight declaring embed_dim 10^7.
    assert_checkpoint_refused(
        &checkpoint_with(|f| f.insert("patch_embed.proj.weight", Tensor::zeros(&[10_000_000, 0, 4, 4]))),
        "embed_dim 1e7",
    );
    // Zero-element fc1 / head declaring mlp_hidden and num_classes of 10^9.
    assert_checkpoint_refused(
        &checkpoint_with(|f| f.insert("blocks.0.mlp.fc1.weight", Tensor::zeros(&[1_000_000_000, 0]))),
        "mlp_hidden 1e9",
    );
    assert_checkpoint_refused(
        &checkpoint_with(|f| f.insert("head.weight", Tensor::zeros(&[1_000_000_000, 0]))),
        "num_classes 1e9",
    );
    // Many zero-element blocks declaring depth 10^4.
    assert_checkpoint_refused(
        &checkpoint_with(|f| {
            for i in 1..10_000 {
                f.insert(format!("blocks.{i}.norm1.weight"), Tensor::zeros(&[0]));
            }
        }),
        "depth 1e4",
    );
    // Rank-0 tensors where a row count is read (used to index `[0]` of an empty shape: a panic).
    assert_checkpoint_refused(
        &checkpoint_with(|f| f.insert("head.weight", Tensor::new(&[], vec![1.0]).unwrap())),
        "scalar head",
    );
    assert_checkpoint_refused(
        &checkpoint_with(|f| f.insert("blocks.0.mlp.fc1.weight", Tensor::new(&[], vec![1.0]).unwrap())),
        "scalar fc1",
    );
    // Renamed and mis-shaped keys: the configuration may be inferred, the strict load refuses.
    let load_refused = |f: &TensorFile, why: &str| {
        bodies::checkpoint(&f.to_bytes());
        assert!(VisionTransformer::from_checkpoint(f, None).is_err(), "{why}: model built");
    };
    load_refused(
        &checkpoint_with(|f| {
            let t = f.tensors.remove("blocks.0.attn.proj.weight").unwrap();
            f.insert("blocks.0.attn.proj.weights", t);
        }),
        "renamed key",
    );
    load_refused(&checkpoint_with(|f| f.insert("blocks.0.attn.proj.weight", Tensor::zeros(&[16, 15]))), "mis-shaped");
    // The untouched file still loads.
    let ok = checkpoint_with(|_| {});
    let vit = VisionTransformer::from_checkpoint(&ok, None).unwrap();
    assert_eq!(vit.config, tiny_config());
}

#[test]
fn official_import_with_hostile_shapes_is_refused() {
    let mut f = official_file(&[2]);
    f.insert("patch_embed.proj.weight", Tensor::zeros(&[10_000_000, 0, 4, 4]));
    bodies::official(&f.to_bytes());
    assert!(import_official(&f, None, false, 0.0).is_err());
    let mut f = official_file(&[2]);
    f.insert("blocks.0.attn.qkv.fc_rep_branches.0.group_fc.weight", Tensor::zeros(&[48, 5, 1]));
    assert!(import_official(&f, None, false, 0.0).is_err());
    let mut f = official_file(&[2]);
    f.insert("blocks.0.attn.qkv.fc_rep_branches.7.group_fc.weight", Tensor::zeros(&[48, 8, 1]));
    assert!(import_official(&f, None, false, 0.0).is_err());
    // The untouched files import.
    for g in [&[2][..], &[4, 8]] {
        let f = official_file(g);
        let m = import_official(&f, None, false, 0.0).unwrap();
        assert_eq!(m.vit.config.embed_dim, 16);
        assert_eq!(
            m.method.unwrap().to_string(),
            format!(
                "consolidator:g={},dp=0,init=0.001,layers=qkv+proj+fc1+fc2",
                g.iter().map(|g| g.to_string()).collect::<Vec<_>>().join("+")
            )
        );
    }
}

/// The tiny consolidator delta, as a file to edit.
fn delta_file() -> TensorFile {
    TensorFile::from_bytes(&seeds("delta")[0], "seed").unwrap()
}

#[test]
fn hostile_deltas_are_refused() {
    let d = delta_file();
    assert!(TaskDelta::from_file(&d).is_ok());
    let layer = d.metadata.keys().find(|k| k.ends_with("delta.pattern")).unwrap().clone();
    let dims = d.metadata[&layer].split(' ').nth(1).unwrap().to_string(); // `OxI`
    let check = |f: &TensorFile, why: &str| {
        bodies::delta(&f.to_bytes());
        assert!(TaskDelta::from_file(f).is_err(), "{why}: accepted");
    };
    // Regression: a pattern declaring 2^24 × 2^24 with one group used to make `Sparse::new`
    // count 2^48 entries row by row (hours) and a `bias` pattern allocated 2^24 row pointers,
    // before the tiny stored arrays were compared with it.
    let hostile = [
        "grouped 16777216x16777216 1".to_string(),
        "bias 16777216x16777216".to_string(),
        format!("grouped {dims} 1,1,1"),
        format!("grouped {dims} {}", vec!["16"; 1000].join(",")),
        format!("grouped {dims}"),
        format!("grouped {dims} 0"),
        format!("grouped {dims} 3"),
        format!("dense {dims} 4"),
        "grouped x16 4".to_string(),
        String::new(),
    ];
    for pat in hostile {
        let mut f = d.clone();
        f.metadata.insert(layer.clone(), pat.clone());
        check(&f, &pat);
    }
    // Regression: num_classes 10^12 used to reach `reset_head` in `merge` (a 64 TB head).
    let mut f = d.clone();
    f.metadata.insert("num_classes".into(), "1000000000000".into());
    check(&f, "num_classes 1e12");
    let mut f = d.clone();
    f.tensors.remove("head.weight");
    check(&f, "no head");
    let mut f = d.clone();
    f.metadata.remove("format");
    check(&f, "no format");
    // A values tensor of the wrong length.
    let values = layer.replace("delta.pattern", "delta.values");
    let mut f = d.clone();
    f.insert(values, Tensor::zeros(&[3]));
    check(&f, "short values");
}

#[test]
fn method_strings_never_panic() {
    for s in [
        "",
        ":",
        "::",
        "lora:r=",
        "lora:r=1e400",
        "lora:r=NaN",
        "lora:r=-1",
        "consolidator:g=",
        "consolidator:g=0",
        "consolidator:g=+",
        "consolidator:g=4+",
        "consolidator:dp=inf",
        "consolidator:layers=",
        "consolidator:init=x",
        "vpt:prompts=1e30",
        "adapter:dim=0",
        "nope",
        "lora:x=1",
        "lora:r=4,,",
        "é:ü=ß",
    ] {
        bodies::method(s.as_bytes());
    }
    assert!(Method::parse("nope", 64).is_err());
    assert!(Method::parse("lora:x=1", 64).is_err());
    assert!(Method::parse("lora:r=abc", 64).is_err());
}
