//! Parity with timm: logits, loss and every parameter gradient against reference tensors made by
//! `scripts/gen_fixtures.py` (PyTorch + timm, committed in `tests/fixtures/`), position-embedding
//! resampling, checkpoint round trips and strict loading, and the official consolidator's state
//! dict.

use consolidator::autograd::Tape;
use consolidator::io::safetensors::TensorFile;
use consolidator::model::import_official;
use consolidator::nn::{resample_pos_embed, Module, VisionTransformer, VitConfig};
use consolidator::peft::{ConsolidatorConfig, Method};
use consolidator::reparam::{consolidate, merge};
use consolidator::{Error, Tensor};

fn fixture(name: &str) -> TensorFile {
    TensorFile::load(format!("{}/tests/fixtures/{name}.safetensors", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The model part of a fixture (timm keys only).
fn model_part(f: &TensorFile) -> TensorFile {
    let mut m = TensorFile { tensors: f.tensors.clone(), metadata: f.metadata.clone() };
    m.tensors.retain(|k, _| {
        !(k.starts_with("grad.")
            || k.starts_with("merged.")
            || k.starts_with("src.")
            || ["input", "labels", "logits", "loss"].contains(&k.as_str()))
    });
    m
}

fn labels(f: &TensorFile) -> Vec<usize> {
    f.get("labels").unwrap().data().iter().map(|&v| v as usize).collect()
}

/// max |a − b| relative to max(1, max |b|).
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.max_abs_diff(b) / b.max_abs().max(1.0)
}

fn check_fixture(name: &str) {
    let f = fixture(name);
    let vit = VisionTransformer::from_checkpoint(&model_part(&f), None).unwrap();
    let x = f.get("input").unwrap();
    let logits = vit.predict(x).unwrap();
    let err = rel_err(&logits, f.get("logits").unwrap());
    assert!(err <= 1e-4, "{name}: logits differ by {err} (relative)");
    // Loss and gradients of every parameter (eval mode, all parameters trainable).
    let mut vit = vit;
    vit.visit_mut("", &mut |_, p| p.trainable = true);
    let tape = Tape::eval();
    let loss = vit.forward(&tape, &tape.constant(x.clone())).unwrap().cross_entropy(&labels(&f), 0.0).unwrap();
    let want = f.get("loss").unwrap().data()[0];
    assert!(
        (loss.value().data()[0] - want).abs() <= 1e-5 * want.abs().max(1.0),
        "{name}: loss {} vs {want}",
        loss.value().data()[0]
    );
    let grads = tape.backward(&loss).unwrap();
    let mut checked = 0;
    vit.visit("", &mut |k, p| {
        let g = grads.param(p).unwrap_or_else(|| panic!("{name}: no gradient for {k}"));
        let want = f.get(&format!("grad.{k}")).unwrap();
        // Relative to the largest gradient of the tensor.
        let err = g.max_abs_diff(want) / want.max_abs().max(1e-12);
        assert!(err <= 1e-3, "{name}: gradient of {k} differs by {err} (relative)");
        checked += 1;
    });
    assert_eq!(checked, f.tensors.keys().filter(|k| k.starts_with("grad.")).count());
}

#[test]
fn logits_loss_and_gradients_match_timm_multi_head_token_pool() {
    check_fixture("vit_tiny_multi");
}

#[test]
fn logits_loss_and_gradients_match_timm_rectangular_avg_pool() {
    check_fixture("vit_rect_avg");
}

#[test]
fn pos_embed_resampling_matches_timm_bicubic_antialias() {
    let f = fixture("vit_posres_bicubic");
    let src = f.get("src.pos_embed").unwrap();
    let ours = resample_pos_embed(src, (4, 4), (6, 6), 1).unwrap();
    let err = ours.max_abs_diff(f.get("pos_embed").unwrap());
    assert!(err < 1e-6, "resampled pos_embed differs by {err}");
    // A model at 24×24 loading the 16×16 checkpoint resamples on the fly and matches timm.
    let base = fixture("vit_tiny_multi");
    let mut cfg = VitConfig::from_checkpoint(&model_part(&base)).unwrap();
    cfg.img_size = (24, 24);
    let mut vit = VisionTransformer::new(&cfg, 0).unwrap();
    let mut src_file = model_part(&base);
    src_file.metadata.insert("img_size_h".into(), "16".into());
    src_file.metadata.insert("img_size_w".into(), "16".into());
    let report = vit.load_state_dict(&src_file, true).unwrap();
    assert_eq!(report.resampled, Some(((4, 4), (6, 6))));
    let err = rel_err(&vit.predict(f.get("input").unwrap()).unwrap(), f.get("logits").unwrap());
    assert!(err <= 1e-4, "logits at 24×24 differ by {err}");
}

#[test]
fn save_load_round_trip_is_bit_identical() {
    let f = fixture("vit_tiny_multi");
    let vit = VisionTransformer::from_checkpoint(&model_part(&f), None).unwrap();
    let bytes = vit.state_dict().to_bytes();
    let again = VisionTransformer::from_checkpoint(&TensorFile::from_bytes(&bytes, "memory").unwrap(), None).unwrap();
    let x = f.get("input").unwrap();
    assert_eq!(vit.predict(x).unwrap().data(), again.predict(x).unwrap().data());
}

#[test]
fn strict_loading_names_the_problem() {
    let f = model_part(&fixture("vit_tiny_multi"));
    let cfg = VitConfig::from_checkpoint(&f).unwrap();
    // One key renamed.
    let mut renamed = f.clone();
    let t = renamed.tensors.remove("blocks.1.mlp.fc1.weight").unwrap();
    renamed.tensors.insert("blocks.1.mlp.fc_1.weight".into(), t);
    let e = VisionTransformer::new(&cfg, 0).unwrap().load_state_dict(&renamed, true).unwrap_err();
    assert!(matches!(&e, Error::MissingKey { key } if key == "blocks.1.mlp.fc1.weight"), "{e}");
    // Non-strict: reported and skipped.
    let r = VisionTransformer::new(&cfg, 0).unwrap().load_state_dict(&renamed, false).unwrap();
    assert_eq!(r.missing, vec!["blocks.1.mlp.fc1.weight".to_string()]);
    assert_eq!(r.unexpected, vec!["blocks.1.mlp.fc_1.weight".to_string()]);
    // One tensor mis-shaped.
    let mut bad = f.clone();
    bad.insert("head.bias", Tensor::zeros(&[7]));
    let e = VisionTransformer::new(&cfg, 0).unwrap().load_state_dict(&bad, true).unwrap_err().to_string();
    assert!(e.contains("head.bias") && e.contains("[5]") && e.contains("[7]"), "{e}");
    // A truncated file.
    let bytes = f.to_bytes();
    let e = TensorFile::from_bytes(&bytes[..bytes.len() - 100], "truncated.safetensors").unwrap_err().to_string();
    assert!(e.contains("truncated.safetensors"), "{e}");
}

fn check_official(name: &str, reorder: bool) {
    let f = fixture(name);
    let mut sd = f.clone();
    sd.tensors.retain(|k, _| {
        !(k.starts_with("grad.")
            || k.starts_with("merged.")
            || ["input", "labels", "logits", "loss"].contains(&k.as_str()))
    });
    let adapted = import_official(&sd, None, reorder, 0.0).unwrap();
    let x = f.get("input").unwrap();
    let want = f.get("logits").unwrap();
    let err = rel_err(&adapted.predict(x).unwrap(), want);
    assert!(err <= 1e-4, "{name}: unmerged logits differ by {err}");
    // Consolidate against the backbone (the fc_origin weights), merge, compare with the fixture's
    // independently merged weights and logits.
    let mut backbone = adapted.clone();
    for (_, lin) in backbone.vit.fc_layers_mut() {
        lin.adapter = None;
    }
    backbone.method = None;
    let method = Method::parse(if reorder { "consolidator:g=4+8,reorder" } else { "consolidator:g=4+8" }, 32).unwrap();
    assert_eq!(
        adapted.method.as_ref().map(|m| m.config::<ConsolidatorConfig>().unwrap().branches.clone()),
        Some(method.config::<ConsolidatorConfig>().unwrap().branches.clone())
    );
    let delta = consolidate(&adapted, &backbone.vit).unwrap();
    let merged = merge(&backbone, &delta).unwrap().model;
    for (key, lin) in merged.vit.fc_layers() {
        let w = f.get(&format!("merged.{key}weight")).unwrap();
        let b = f.get(&format!("merged.{key}bias")).unwrap();
        assert!(lin.weight.value.max_abs_diff(w) < 1e-6, "{name}: merged {key}weight");
        assert!(lin.bias.as_ref().unwrap().value.max_abs_diff(b) < 1e-6, "{name}: merged {key}bias");
    }
    let err = rel_err(&merged.predict(x).unwrap(), want);
    assert!(err <= 1e-4, "{name}: merged logits differ by {err}");
    // With the wrong reorder flag the logits differ: the flag matters and is not guessed.
    let wrong = import_official(&sd, None, !reorder, 0.0).unwrap();
    assert!(rel_err(&wrong.predict(x).unwrap(), want) > 1e-3);
}

#[test]
fn official_consolidator_state_dict_imports_merges_and_matches() {
    check_official("official_consolidator_plain", false);
    check_official("official_consolidator_shuffle", true);
}
