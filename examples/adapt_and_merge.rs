//! The consolidator's whole life on a small ViT: adapt → consolidate (stage 1) → merge (stage 2).
//!
//! 1. A backbone: `data/backbone.safetensors` if present, else a `vit_mnist_tiny` pre-trained
//!    here for a few seconds on synthetic patterns (stripes, checkerboard, flat).
//! 2. `Method::parse("consolidator", dim)` — the released recipe scaled to the model (one branch
//!    with g = dim/2 beside all four FC layers of every block) — is applied: the backbone is
//!    frozen, branches and a fresh head are attached.
//! 3. Four epochs of `train::Trainer` on a downstream task: the same patterns with inverted intensities.
//! 4. `reparam::consolidate` folds every layer's branches into one sparse delta (stage 1);
//!    `reparam::merge` adds the delta into the dense weights (stage 2).
//! 5. Checks: the merged plain ViT gives the adapted model's logits — exactly with one branch per
//!    layer, to float rounding otherwise, and why (see the comment at step 5); the stored values
//!    per layer equal the size of the union of the branch supports, next to the values trained.
//!
//! Steps 2–5 run twice: the recipe (one branch), then `consolidator:g=8+32,reorder`, whose two
//! reordered branches overlap only in part, so the delta stores fewer values than were trained
//! but more than either branch alone.
//!
//! Run: `cargo run --release --example adapt_and_merge [-- METHOD]` (one method instead of both).

use consolidator::algebra::{Affine, LayerDelta, Pattern};
use consolidator::data::Dataset;
use consolidator::model::Model;
use consolidator::nn::{Module, VisionTransformer, VitConfig};
use consolidator::peft::Method;
use consolidator::reparam::{attach_delta, consolidate, merge};
use consolidator::train::{TrainConfig, Trainer};
use consolidator::{Result, Tensor};
use rand::{Rng, SeedableRng};

/// `n` images `[1, H, W]`: horizontal stripes, vertical stripes, a checkerboard or flat grey
/// (the label), each with a random phase and noise.
/// `invert` flips the intensities (`v → 1 − v`): the downstream task is the upstream one under a
/// domain shift, as in the demo's `shift` task.
fn patterns(n: usize, h: usize, w: usize, invert: bool, seed: u64) -> Result<Dataset> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n * h * w);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.gen_range(0..4usize);
        let (pr, pc) = (rng.gen_range(0..4usize), rng.gen_range(0..4usize));
        for r in 0..h {
            for c in 0..w {
                let (sr, sc) = (((r + pr) / 2) % 2, ((c + pc) / 2) % 2);
                let v = match class {
                    0 => sr as f32,
                    1 => sc as f32,
                    2 => ((sr + sc) % 2) as f32,
                    _ => 0.5,
                };
                let v = if invert { 1.0 - v } else { v };
                data.push(v + rng.gen_range(-0.3..0.3f32));
            }
        }
        labels.push(class);
    }
    Dataset::new(Tensor::new(&[n, 1, h, w], data)?, labels, 4)
}

fn main() -> Result<()> {
    // 1. The backbone.
    let path = std::path::Path::new("data/backbone.safetensors");
    let backbone = if path.exists() {
        println!("backbone: {}", path.display());
        Model::load(path)?
    } else {
        // A random ViT has no features worth adapting: pre-train one briefly (full training on
        // the upright patterns), standing in for the shipped pre-trained backbone.
        println!("backbone: vit_mnist_tiny, pre-trained here for 3 epochs (data/backbone.safetensors not found)");
        let cfg = VitConfig::preset("vit_mnist_tiny")?;
        let mut model = Model::plain(VisionTransformer::new(&cfg, 0)?).adapt(&Method::parse("full", 0)?, 4, 0)?;
        let upstream = patterns(384, cfg.img_size.0, cfg.img_size.1, false, 1)?;
        let tc = TrainConfig { epochs: 3, batch_size: 32, lr: 1e-3, weight_decay: 0.05, ..TrainConfig::default() };
        Trainer::new(tc).run(&mut model, &upstream, None)?;
        model.vit.freeze();
        Model::plain(model.vit)
    };
    anyhow_like(backbone.vit.config.in_chans == 1, "this example makes 1-channel images")?;

    // 2–5, once per method: by default the released recipe (one branch per layer), then two
    // branches with reorder, whose supports overlap only in part.
    let specs: Vec<String> = match std::env::args().nth(1) {
        // Any mergeable method string works here, e.g. `-- lora:r=4` or `-- consolidator:g=16+32,reorder`.
        Some(spec) => vec![spec],
        None => vec!["consolidator".into(), "consolidator:g=8+32,reorder".into()],
    };
    for spec in &specs {
        adapt_consolidate_merge(&backbone, spec)?;
    }
    Ok(())
}

fn adapt_consolidate_merge(backbone: &Model, spec: &str) -> Result<()> {
    let cfg = &backbone.vit.config;
    let (h, w) = cfg.img_size;

    // 2. The method.
    let method = Method::parse(spec, cfg.embed_dim)?;
    let mut model = backbone.adapt(&method, 4, 1)?;
    println!(
        "\n== method: {method}\nparameters: {} in the backbone, {} trainable after adapt",
        backbone.vit.num_params(),
        model.vit.num_trainable()
    );

    // 3. Adapt.
    let (train_set, val_set) = (patterns(256, h, w, true, 10)?, patterns(128, h, w, true, 11)?);
    let lr = std::env::var("LR").ok().and_then(|v| v.parse().ok()).unwrap_or(1e-2);
    let tc = TrainConfig { epochs: 4, batch_size: 32, lr, warmup_epochs: 0, ..TrainConfig::default() };
    let report = Trainer::new(tc).run(&mut model, &train_set, Some(&val_set))?;
    for e in &report.epochs {
        println!("epoch {}  loss {:.4}  val accuracy {:.3}", e.epoch, e.train_loss, e.val_acc.unwrap_or(f32::NAN));
    }

    // 4. Stage 1 and stage 2.
    let delta = consolidate(&model, &backbone.vit)?;
    let served = attach_delta(backbone, &delta)?; // stage 1 served on the fly (no folding)
    let merged = merge(backbone, &delta)?; // stage 2: a plain ViT

    // 5. Checks.
    let images = &val_set.images;
    let (adapted, on_the_fly, plain) = (model.predict(images)?, served.predict(images)?, merged.model.predict(images)?);
    let (d1, d2) = (adapted.max_abs_diff(&on_the_fly), adapted.max_abs_diff(&plain));
    println!("max |logit difference|: adapted vs stage 1 {d1:.2e}, adapted vs merged {d2:.2e}");
    assert!(d1 < 1e-4 && d2 < 1e-4, "merging must not change the logits");
    assert!(!merged.model.vit.has_adapters(), "the merged model is a plain ViT");

    // Why the two differ. With the backbone frozen, the adapted model computes each layer in
    // evaluation as ONE product with the folded weight W + BD(G)·Π, summed in f32. Stage 2
    // writes W + S, summed in f64 and rounded once; with one branch per layer that is the same
    // f32 number (the exact sum of two f32 values, rounded once), so the merged model runs the
    // same GEMM on the same weights: the logits agree exactly. Stage 1 served on the fly keeps
    // the delta apart: x·Wᵀ + b, then x·Sᵀ added, two products rounded separately, so the
    // logits agree to float rounding (~1e-6). With several branches per layer the f32 fold
    // W + BD₁ + BD₂ rounds twice where the merge rounds once: both agree to rounding.
    let one_branch = delta.layers.values().all(|l| match l {
        LayerDelta::Add(Affine::Sparse(s)) => matches!(&s.pattern, Pattern::Grouped(g) if g.len() == 1),
        _ => false,
    });
    if one_branch {
        println!("one branch per layer: merged weights are the adapted model's folded weights, bit for bit");
        assert_eq!(d2, 0.0, "one branch per layer: the merge writes exactly the weights the adapted model ran");
    }

    let (mut trained_values, mut stored_values) = (0, 0);
    for (key, layer) in &delta.layers {
        let LayerDelta::Add(Affine::Sparse(s)) = layer else { panic!("{key}: a consolidator delta is sparse") };
        let Pattern::Grouped(specs) = &s.pattern else { panic!("{key}: the support is derived from the specs") };
        assert_eq!(s.values.len(), s.pattern.nnz(s.out_dim), "{key}: stored values = union support");
        let trained: usize = specs.iter().map(|g| g.weight_len()).sum();
        trained_values += trained;
        stored_values += s.values.len();
        if key == "blocks.0.attn.qkv." {
            let per_branch: Vec<String> = specs
                .iter()
                .map(|g| format!("g={}{}: {}", g.groups, if g.reorder { " reordered" } else { "" }, g.weight_len()))
                .collect();
            println!(
                "{key}: {}x{} layer; trained values per branch [{}] = {trained}; stored (their union) {}",
                s.out_dim,
                s.in_dim,
                per_branch.join(", "),
                s.values.len()
            );
        }
    }
    println!(
        "all layers: {trained_values} branch values trained, {stored_values} stored (overlaps counted once; biases: one per layer)"
    );
    let backbone_bytes = 4 * backbone.vit.num_params();
    let delta_bytes = delta.storage_bytes();
    println!(
        "stored: {} layer deltas, {} dense tensors (head, norms); {delta_bytes} bytes = {:.2}% of the backbone's {backbone_bytes}",
        delta.layers.len(),
        delta.dense.len(),
        100.0 * delta_bytes as f64 / backbone_bytes as f64
    );
    println!("merged model: {} parameters (backbone + the task's head)", merged.model.vit.num_params());
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
