//! The consolidator's whole life on a small ViT: adapt → consolidate (stage 1) → merge (stage 2).
//!
//! 1. A backbone: `data/backbone.safetensors` if present, else a random `vit_mnist_tiny`.
//! 2. `Method::parse("consolidator", dim)` — the released recipe scaled to the model (one branch
//!    with g = dim/2 beside all four FC layers of every block) — is applied: the backbone is
//!    frozen, branches and a fresh head are attached.
//! 3. A few epochs of `train::train` on a synthetic task (which quadrant of the image is bright).
//! 4. `reparam::consolidate` folds every layer's branches into one sparse delta (stage 1);
//!    `reparam::merge` adds the delta into the dense weights (stage 2).
//! 5. Checks: the merged plain ViT gives the adapted model's logits; the stored values per layer
//!    equal the size of the union of the branch supports. Prints the sizes.
//!
//! Run: `cargo run --release --example adapt_and_merge`

use consolidator::data::Dataset;
use consolidator::nn::{LinearPeft, Module, VisionTransformer, VitConfig};
use consolidator::optim::Optimizer;
use consolidator::peft::Method;
use consolidator::reparam::{attach_delta, consolidate, merge, Affine, LayerDelta, Pattern};
use consolidator::train::{train, Position, TrainConfig};
use consolidator::{Result, Tensor};
use rand::{Rng, SeedableRng};

/// `n` images `[1, H, W]` of noise with one bright quadrant; the label is the quadrant.
fn quadrants(n: usize, h: usize, w: usize, seed: u64) -> Result<Dataset> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n * h * w);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let q = rng.gen_range(0..4usize);
        for r in 0..h {
            for c in 0..w {
                let inside = (r >= h / 2) == (q / 2 == 1) && (c >= w / 2) == (q % 2 == 1);
                data.push(rng.gen_range(-0.5..0.5f32) + if inside { 1.0 } else { 0.0 });
            }
        }
        labels.push(q);
    }
    Dataset::new(Tensor::new(&[n, 1, h, w], data)?, labels, 4)
}

fn main() -> Result<()> {
    // 1. The backbone.
    let path = std::path::Path::new("data/backbone.safetensors");
    let backbone = if path.exists() {
        println!("backbone: {}", path.display());
        VisionTransformer::load(path)?
    } else {
        println!("backbone: a random vit_mnist_tiny (data/backbone.safetensors not found)");
        VisionTransformer::new(&VitConfig::preset("vit_mnist_tiny")?, 0)?
    };
    let cfg = backbone.config.clone();
    anyhow_like(cfg.in_chans == 1, "this example makes 1-channel images")?;
    let (h, w) = cfg.img_size;

    // 2. The method.
    let method = Method::parse("consolidator", cfg.embed_dim)?;
    let mut model = backbone.clone();
    method.apply(&mut model, 4, 1)?;
    println!(
        "method {method:?}\nparameters: {} in the backbone, {} trainable after apply",
        backbone.num_params(),
        model.num_trainable()
    );

    // 3. Adapt.
    let (train_set, val_set) = (quadrants(256, h, w, 10)?, quadrants(128, h, w, 11)?);
    let tc = TrainConfig { epochs: 3, batch_size: 32, lr: 3e-3, warmup_epochs: 0, ..TrainConfig::default() };
    let report = train(
        &mut model,
        &mut Optimizer::adamw(0.0),
        &train_set,
        Some(&val_set),
        &tc,
        Position::default(),
        &mut |_| {},
    )?;
    for e in &report.epochs {
        println!("epoch {}  loss {:.4}  val accuracy {:.3}", e.epoch + 1, e.train_loss, e.val_acc.unwrap_or(f32::NAN));
    }

    // 4. Stage 1 and stage 2.
    let delta = consolidate(&model, &backbone, &method)?;
    let served = attach_delta(&backbone, &delta)?; // stage 1 served on the fly (no folding)
    let merged = merge(&backbone, &delta)?; // stage 2: a plain ViT

    // 5. Checks.
    let images = &val_set.images;
    let (adapted, on_the_fly, plain) = (model.predict(images)?, served.predict(images)?, merged.model.predict(images)?);
    let (d1, d2) = (adapted.max_abs_diff(&on_the_fly), adapted.max_abs_diff(&plain));
    println!("max |logit difference|: adapted vs stage 1 {d1:.2e}, adapted vs merged {d2:.2e}");
    assert!(d1 < 1e-4 && d2 < 1e-4, "merging must not change the logits");
    assert!(merged.model.fc_layers().iter().all(|(_, l)| matches!(l.peft, LinearPeft::None)));

    let mut stored_values = 0;
    for (key, layer) in &delta.layers {
        let LayerDelta::Add(Affine::Sparse(s)) = layer else { panic!("{key}: a consolidator delta is sparse") };
        let Pattern::Grouped(specs) = &s.pattern else { panic!("{key}: the support is derived from the specs") };
        assert_eq!(s.values.len(), s.pattern.nnz(s.out_dim), "{key}: stored values = union support");
        stored_values += s.values.len();
        if key == "blocks.0.attn.qkv." {
            println!(
                "{key}: {}x{} layer, g = {:?}, {} stored values",
                s.out_dim,
                s.in_dim,
                specs.iter().map(|s| s.groups).collect::<Vec<_>>(),
                s.values.len()
            );
        }
    }
    let backbone_bytes = 4 * backbone.num_params();
    let delta_bytes = delta.storage_bytes();
    println!(
        "stored: {} layer deltas ({stored_values} values), {} dense tensors (head, norms); {delta_bytes} bytes = {:.2}% of the backbone's {backbone_bytes}",
        delta.layers.len(),
        delta.dense.len(),
        100.0 * delta_bytes as f64 / backbone_bytes as f64
    );
    println!("merged model: {} parameters (backbone + the task's head)", merged.model.num_params());
    Ok(())
}

/// A readable precondition failure.
fn anyhow_like(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(consolidator::Error::invalid("adapt_and_merge", what.to_string()))
    }
}
