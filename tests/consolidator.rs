//! The consolidator end to end on a small ViT: unmerged, stage 1 (sparse deltas applied on the
//! fly) and stage 2 (a plain dense ViT) give the same logits; the delta file round-trips; the
//! storage counts are those of the specification; the merge contract holds.

use consolidator::model::Model;
use consolidator::nn::{Module, Pool, VisionTransformer, VitConfig};
use consolidator::peft::{BranchConfig, ConsolidatorConfig, Init, LayerSet, Method};
use consolidator::reparam::{attach_delta, consolidate, fingerprint, merge, TaskDelta};
use consolidator::Tensor;
use rand::{Rng, SeedableRng};

fn small_config() -> VitConfig {
    VitConfig {
        img_size: (8, 12),
        patch_size: (4, 4),
        in_chans: 2,
        embed_dim: 16,
        depth: 2,
        num_heads: 2,
        mlp_hidden: 32,
        num_classes: 5,
        pool: Pool::Token,
        drop_path_rate: 0.1,
    }
}

/// Perturbs every trainable parameter so that nothing passes trivially (non-zero branches,
/// changed norms, biases and head).
fn perturb(model: &mut Model, seed: u64) {
    let vit = &mut model.vit;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    vit.visit_mut("", &mut |_, p| {
        if p.trainable {
            for v in p.value.data_mut() {
                *v += rng.gen_range(-0.2..0.2);
            }
        }
    });
}

fn images(n: usize, seed: u64) -> Tensor {
    Tensor::randn(&[n, 2, 8, 12], 1.0, &mut rand::rngs::StdRng::seed_from_u64(seed))
}

fn scale(t: &Tensor) -> f32 {
    t.max_abs().max(1.0)
}

fn backbone() -> Model {
    Model::plain(VisionTransformer::new(&small_config(), 1).unwrap())
}

fn check_method(method: Method) {
    let backbone = backbone();
    let mut adapted = backbone.adapt(&method, 3, 7).unwrap();
    perturb(&mut adapted, 11);
    let x = images(4, 3);
    let unmerged = adapted.predict(&x).unwrap();
    let base_logits = {
        let mut b = backbone.vit.clone();
        b.reset_head(3, 7);
        b.predict(&x).unwrap()
    };
    let delta = consolidate(&adapted, &backbone.vit).unwrap();
    // Round trip through the file format.
    let delta = TaskDelta::from_file(&delta.to_file().unwrap()).unwrap();
    let served = attach_delta(&backbone, &delta).unwrap().predict(&x).unwrap();
    let merged = merge(&backbone, &delta).unwrap();
    let deployed = merged.model.predict(&x).unwrap();
    let tol = 1e-5 * scale(&unmerged);
    assert!(
        served.max_abs_diff(&unmerged) <= tol,
        "{}: stage 1 differs by {}",
        method.name(),
        served.max_abs_diff(&unmerged)
    );
    assert!(
        deployed.max_abs_diff(&unmerged) <= tol,
        "{}: stage 2 differs by {}",
        method.name(),
        deployed.max_abs_diff(&unmerged)
    );
    // The adaptation changed the function (no zero-init free pass) — against the backbone with
    // the same fresh head.
    assert!(deployed.max_abs_diff(&base_logits) > 1e-3, "{}: merged model equals the backbone", method.name());
    // A plain ViT: same parameter count as the backbone, no method modules.
    let mut b3 = backbone.vit.clone();
    b3.reset_head(3, 0);
    assert_eq!(merged.model.vit.num_params(), b3.num_params());
    assert!(!merged.model.vit.has_adapters());
    // Merging the same delta into the merged model is refused; unmerge is bit-exact.
    let again = merge(&merged.model, &delta).map(|_| ()).unwrap_err().to_string();
    assert!(again.contains("already has a delta merged"), "{again}");
    let restored = merged.unmerge();
    assert_eq!(fingerprint(&restored.vit), fingerprint(&backbone.vit));
    assert_eq!(restored.predict(&x).unwrap().data(), backbone.predict(&x).unwrap().data());
}

#[test]
fn consolidator_unmerged_stage1_stage2_agree() {
    for (branches, reorder) in [(vec![4], false), (vec![2, 4], true), (vec![8, 16, 4], false), (vec![1, 16], true)] {
        let cfg = ConsolidatorConfig {
            layers: LayerSet::ALL,
            branches: branches.iter().map(|&groups| BranchConfig { groups, reorder }).collect(),
            drop_path: 0.5,
            init: Init::Uniform(1e-3),
            train_norms: true,
            train_biases: true,
        };
        check_method(Method::new(cfg));
    }
}

/// Every registered method, through the seam: the mergeable ones reproduce their outputs after
/// stage 1 and stage 2, the others refuse to consolidate.
#[test]
fn every_method_merges_exactly_or_refuses() {
    let mut checked = 0;
    for method in Method::all(16)
        .into_iter()
        .chain(["lora:r=3,layers=qkv+fc2", "consolidator:g=4+8r"].map(|m| Method::parse(m, 16).unwrap()))
    {
        if method.mergeable() {
            check_method(method);
            checked += 1;
        } else {
            let adapted = backbone().adapt(&method, 3, 7).unwrap();
            let e = consolidate(&adapted, &backbone().vit).unwrap_err().to_string();
            assert!(e.contains("not mergeable"), "{e}");
        }
    }
    assert_eq!(checked, 8, "linear, full, bitfit, lora ×2, ssf, consolidator ×2");
}

#[test]
fn non_mergeable_methods_still_run() {
    for m in ["adapter", "vpt"] {
        let adapted = backbone().adapt(&Method::parse(m, 16).unwrap(), 3, 7).unwrap();
        assert_eq!(adapted.predict(&images(2, 1)).unwrap().shape(), &[2, 3]);
    }
}

#[test]
fn a_delta_for_another_backbone_is_refused() {
    let backbone = backbone();
    let other = Model::plain(VisionTransformer::new(&small_config(), 2).unwrap());
    let adapted = backbone.adapt(&Method::parse("consolidator:g=4", 16).unwrap(), 3, 7).unwrap();
    let delta = consolidate(&adapted, &backbone.vit).unwrap();
    let e = merge(&other, &delta).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("made for backbone"), "{e}");
}

#[test]
fn unmerge_is_bit_exact_over_many_cycles() {
    let backbone = backbone();
    let method = Method::parse("consolidator:g=2+4,reorder", 16).unwrap();
    let mut current = backbone.clone();
    for cycle in 0..20 {
        let mut adapted = current.adapt(&method, 3, cycle).unwrap();
        perturb(&mut adapted, cycle);
        let delta = consolidate(&adapted, &current.vit).unwrap();
        current = merge(&current, &delta).unwrap().unmerge();
    }
    let (a, b) = (backbone.vit.state_dict(), current.vit.state_dict());
    for (k, t) in &a.tensors {
        if !k.starts_with("head.") {
            assert_eq!(t.data(), b.tensors[k].data(), "{k} drifted");
        }
    }
}

/// Spec §1.2: ViT-B/16 with one g = 384 branch on all four FC layers of every block.
#[test]
fn vit_b_branch_parameter_count_matches_the_paper() {
    let cfg = VitConfig::preset("vit_base_patch16_224").unwrap();
    // Count from the shapes alone (no need to build 86M random weights twice).
    let layers = [(768, 2304), (768, 768), (768, 3072), (3072, 768)];
    let mut weights = 0;
    let mut biases = 0;
    for (i, o) in layers {
        let spec = consolidator::kernels::grouped::GroupSpec::new(i, o, 384, false).unwrap();
        weights += spec.weight_len();
        biases += o;
    }
    assert_eq!(weights * cfg.depth, 221_184);
    assert_eq!((weights + biases) * cfg.depth, 304_128);
    let vit = VisionTransformer::new(&cfg, 0).unwrap();
    let backbone_no_head = vit.num_params() - 768 * 1000 - 1000;
    assert_eq!(backbone_no_head, 85_798_656);
    let pct = 100.0 * 304_128.0 / backbone_no_head as f64;
    assert!((pct - 0.3545).abs() < 5e-4, "{pct}");
    // And the module built by the released preset counts the same.
    let mut adapted = vit;
    Method::new(ConsolidatorConfig::released(768)).apply(&mut adapted, 1000, 0).unwrap();
    let branch_params: usize = adapted.adapter_params().iter().map(|(_, p)| p.numel()).sum();
    assert_eq!(branch_params, 304_128);
}

#[test]
fn drop_path_is_identity_in_eval_and_active_in_training() {
    let mut adapted = backbone().adapt(&Method::parse("consolidator:g=4,dp=0.9", 16).unwrap(), 3, 7).unwrap();
    perturb(&mut adapted, 1);
    let adapted = adapted.vit;
    let x = images(8, 2);
    let eval1 = adapted.predict(&x).unwrap();
    let eval2 = adapted.predict(&x).unwrap();
    assert_eq!(eval1.data(), eval2.data());
    let tape = consolidator::autograd::Tape::new().with_seed(3);
    let train = adapted.forward(&tape, &tape.constant(x)).unwrap();
    assert!(train.value().max_abs_diff(&eval1) > 1e-4);
}

/// A consolidator step with drop-path (dozens of runs of kept samples, spread over the workers)
/// gives the same loss and gradients, bit for bit, on one thread and on all of them. (No other
/// test in this file changes the thread count.)
#[test]
fn consolidator_step_does_not_depend_on_the_thread_count() {
    let cfg = small_config();
    let step = || {
        let mut vit = VisionTransformer::new(&cfg, 0).unwrap();
        Method::parse("consolidator:g=4+8r,dp=0.5,init=0.05", cfg.embed_dim).unwrap().apply(&mut vit, 5, 0).unwrap();
        let labels: Vec<usize> = (0..64).map(|i| i % 5).collect();
        let tape = consolidator::autograd::Tape::new().with_seed(11);
        let loss = vit.forward(&tape, &tape.constant(images(64, 5))).unwrap().cross_entropy(&labels, 0.0).unwrap();
        let grads = tape.backward(&loss).unwrap();
        let mut bits = vec![loss.value().data()[0].to_bits()];
        let mut branch_grads = 0;
        for (key, p) in vit.named_params() {
            let g = grads.param(&p).map(|g| g.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            branch_grads += usize::from(key.contains("consolidator") && g.is_some());
            bits.extend(g.unwrap_or_default());
            bits.push(key.len() as u32);
        }
        assert_eq!(branch_grads, cfg.depth * 4 * 2 * 2, "every branch's weight and bias get a gradient");
        bits
    };
    let all = step();
    let before = consolidator::par::threads();
    consolidator::par::set_threads(1);
    let one = step();
    consolidator::par::set_threads(before);
    assert!(all == one, "gradients differ between {before} thread(s) and one");
}
