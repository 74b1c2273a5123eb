//! The fuzz bodies: one function per parser of outside bytes. Shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, through `#[path]`) and by the stable test suite (`tests/fuzz.rs`),
//! so both exercise exactly the same code.
//!
//! Each body must never panic: a hostile input gets a clean `Err`. Where a parse succeeds the
//! body checks a round trip, so a fuzzer also finds values that parse but do not survive.

#![allow(dead_code)]

use consolidator::io::safetensors::TensorFile;
use consolidator::model::{import_official, LoadOptions, Model};
use consolidator::nn::{Module, VisionTransformer, VitConfig};
use consolidator::optim::Optimizer;
use consolidator::peft::Method;
use consolidator::reparam::TaskDelta;

/// safetensors reader (with a write → read round trip of what it accepts).
pub fn safetensors(bytes: &[u8]) {
    consolidator::io::fuzz::fuzz_safetensors(bytes);
}

/// JSON reader (compact and pretty round trips).
pub fn json(bytes: &[u8]) {
    consolidator::io::fuzz::fuzz_json(bytes);
}

/// IDX reader, plain or gzip'd.
pub fn idx(bytes: &[u8]) {
    consolidator::data::fuzz::fuzz_idx(bytes);
}

/// optdigits CSV reader, plain or gzip'd.
pub fn optdigits(bytes: &[u8]) {
    consolidator::data::fuzz::fuzz_optdigits(bytes);
}

/// Image files (PNG, JPEG, PGM, PPM) → `Image`, then preprocessing.
pub fn image(bytes: &[u8]) {
    consolidator::data::fuzz::fuzz_image(bytes);
}

/// Tensor-file datasets (safetensors `images` + `labels`) → sources, first and last examples.
pub fn tensor_source(bytes: &[u8]) {
    consolidator::data::fuzz::fuzz_tensor_source(bytes);
}

/// Task-delta files: an accepted delta must write back and read again with the same layers.
pub fn delta(bytes: &[u8]) {
    let Ok(f) = TensorFile::from_bytes(bytes, "fuzz input") else { return };
    let Ok(d) = TaskDelta::from_file(&f) else { return };
    let again = TaskDelta::from_file(&d.to_file().expect("an accepted delta must be writable"))
        .expect("a delta we wrote must read back");
    assert_eq!(d.layers.len(), again.layers.len());
    assert_eq!(d.dense.len(), again.dense.len());
    assert_eq!(d.storage_bytes(), again.storage_bytes());
}

/// Model checkpoints: configuration inference, then a strict load. An accepted model is never
/// bigger than the file it came from, and its state dict holds the file's tensors.
pub fn checkpoint(bytes: &[u8]) {
    let Ok(f) = TensorFile::from_bytes(bytes, "fuzz input") else { return };
    let Ok(cfg) = VitConfig::from_checkpoint(&f) else { return };
    let Ok(vit) = VisionTransformer::from_checkpoint(&f, Some(&cfg)) else { return };
    let held: usize = f.tensors.values().map(|t| t.numel()).sum();
    assert!(vit.num_params() <= held, "a model bigger than its file was built");
    let sd = vit.state_dict();
    assert_eq!(sd.tensors.len(), f.tensors.len());
}

/// Method strings (CLI `--method`), UTF-8 only: an accepted string prints losslessly.
pub fn method(bytes: &[u8]) {
    let Ok(s) = std::str::from_utf8(bytes) else { return };
    let Ok(m) = Method::parse(s, 64) else { return };
    let again = Method::parse(&m.to_string(), 64).expect("a method string we print must parse");
    assert_eq!(again, m, "`{s}` printed as `{m}` does not read back the same");
}

/// Training checkpoints as a resume reads them: the model (its method re-applied from the
/// metadata, within the file's budget), then the optimiser state checked against it.
pub fn resume(bytes: &[u8]) {
    let Ok(f) = TensorFile::from_bytes(bytes, "fuzz input") else { return };
    let Ok(model) = Model::from_file(f.clone(), &LoadOptions::default()) else { return };
    let held: usize = f.tensors.values().map(|t| t.numel()).sum();
    assert!(model.vit.num_params() <= held, "a model bigger than its file was built");
    let _ = Optimizer::adamw(0.0).load_state_dict(&f, &model.vit);
    let _ = Optimizer::sgd(0.9, 0.0).load_state_dict(&f, &model.vit);
}

/// The official consolidator state-dict import (the first byte picks the channel shuffle).
pub fn official(bytes: &[u8]) {
    let reorder = bytes.first().is_some_and(|b| b & 1 == 1);
    let Ok(f) = TensorFile::from_bytes(bytes, "fuzz input") else { return };
    if let Ok(m) = import_official(&f, None, reorder, 0.0) {
        let held: usize = f.tensors.values().map(|t| t.numel()).sum();
        assert!(m.vit.num_params() <= held, "a model bigger than its file was built");
    }
}

/// A fuzz body: bytes in, a panic only for a broken invariant.
pub type Body = fn(&[u8]);

/// Every target by name, for the test suite and the corpus writer.
pub const TARGETS: &[(&str, Body)] = &[
    ("safetensors", safetensors),
    ("json", json),
    ("idx", idx),
    ("optdigits", optdigits),
    ("delta", delta),
    ("checkpoint", checkpoint),
    ("method", method),
    ("official", official),
    ("resume", resume),
    ("image", image),
    ("tensor_source", tensor_source),
];
