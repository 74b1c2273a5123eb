//! Every method on the same engine: a few training steps lower the loss, the tunable-parameter
//! count follows the method's formula, and bad inputs get clear errors.

use consolidator::data::Dataset;
use consolidator::model::Model;
use consolidator::nn::{Module, Pool, VisionTransformer, VitConfig};
use consolidator::optim::OptimizerKind;
use consolidator::peft::Method;
use consolidator::train::{evaluate, TrainConfig, TrainReport, Trainer};
use consolidator::{Error, Tensor};
use rand::{Rng, SeedableRng};

const E: usize = 16; // width
const D: usize = 2; // depth
const H: usize = 32; // MLP hidden
const K: usize = 3; // classes

fn config() -> VitConfig {
    VitConfig {
        img_size: (8, 8),
        patch_size: (4, 4),
        in_chans: 1,
        embed_dim: E,
        depth: D,
        num_heads: 2,
        mlp_hidden: H,
        num_classes: 10,
        pool: Pool::Token,
        drop_path_rate: 0.0,
    }
}

/// A learnable synthetic task: the class is which quadrant holds a bright blob.
fn dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x = vec![0.0f32; n * 64];
    let mut labels = Vec::new();
    for i in 0..n {
        let c = rng.gen_range(0..K);
        labels.push(c);
        for p in 0..64 {
            x[i * 64 + p] = rng.gen_range(-0.3..0.3);
        }
        let (r0, c0) = [(0, 0), (0, 4), (4, 2)][c];
        for r in r0..r0 + 4 {
            for cc in c0..c0 + 4 {
                x[i * 64 + r * 8 + cc] += 1.5;
            }
        }
    }
    Dataset::new(Tensor::new(&[n, 1, 8, 8], x).unwrap(), labels, K).unwrap()
}

fn cfg(lr: f32, epochs: usize) -> TrainConfig {
    TrainConfig { epochs, batch_size: 16, lr, warmup_epochs: 0, eval_every: 0, ..TrainConfig::default() }
}

fn train(model: &mut Model, data: &Dataset, cfg: TrainConfig) -> consolidator::Result<TrainReport> {
    Trainer::new(cfg).run(model, data, None)
}

/// Tunable parameters each method should have on the small config (formulas from each method's
/// definition; `head` = the new K-class head).
fn expected_tunable(name: &str) -> usize {
    let head = E * K + K;
    let fc: [(usize, usize); 4] = [(E, 3 * E), (E, E), (E, H), (H, E)]; // (in, out) of qkv, proj, fc1, fc2
    let outs: usize = fc.iter().map(|&(_, o)| o).sum();
    let norms = D * 4 * E + 2 * E;
    let total_backbone = {
        let vit = VisionTransformer::new(&config(), 0).unwrap();
        vit.num_params() - (E * 10 + 10)
    };
    match name {
        "linear" => head,
        "full" => total_backbone + head,
        // Every bias: patch embed, the four FC layers per block, every LayerNorm β.
        "bitfit" => E + D * outs + (D * 2 + 1) * E + head,
        "lora:r=2" => D * fc.iter().map(|&(i, o)| 2 * (i + o)).sum::<usize>() + head,
        "adapter:dim=4" => D * (E * 4 + 4 + 4 * E + E) + head,
        "vpt:prompts=3" => D * 3 * E + head,
        "ssf" => D * 2 * outs + head,
        // Branches (I·O/g + O each) + the original FC biases + every LayerNorm + head.
        "consolidator:g=4+8" => {
            D * fc.iter().map(|&(i, o)| i * o / 4 + o + i * o / 8 + o).sum::<usize>() + D * outs + norms + head
        }
        _ => unreachable!(),
    }
}

#[test]
fn every_method_learns_and_counts_its_parameters() {
    consolidator::par::set_threads(1);
    // A backbone pre-trained briefly on a related task (so features exist to adapt).
    let mut backbone = Model::plain(VisionTransformer::new(&config(), 0).unwrap());
    let pre = dataset(160, 9);
    let mut pre_cfg = cfg(3e-3, 6);
    pre_cfg.seed = 1;
    let mut pre10 = pre.clone();
    pre10.num_classes = 10;
    train(&mut backbone, &pre10, pre_cfg).unwrap();
    backbone.vit.freeze();
    let data = dataset(96, 1);
    for (name, lr) in [
        ("linear", 3e-2),
        ("full", 3e-3),
        ("bitfit", 2e-2),
        ("lora:r=2", 1e-2),
        ("adapter:dim=4", 1e-2),
        ("vpt:prompts=3", 1e-2),
        ("ssf", 1e-2),
        ("consolidator:g=4+8", 1e-2),
    ] {
        let method = Method::parse(name, E).unwrap();
        let mut model = backbone.adapt(&method, K, 0).unwrap();
        assert_eq!(model.vit.num_trainable(), expected_tunable(name), "{name}: tunable parameters");
        let (_, before) = evaluate(&model, &data, 64).unwrap();
        train(&mut model, &data, cfg(lr as f32, 10)).unwrap();
        let (_, after) = evaluate(&model, &data, 64).unwrap();
        assert!(after < 0.8 * before, "{name}: loss {before} → {after}");
    }
}

#[test]
fn absurd_learning_rate_stops_with_a_clear_error() {
    let backbone = Model::plain(VisionTransformer::new(&config(), 0).unwrap());
    let mut model = backbone.adapt(&Method::parse("full", E).unwrap(), K, 0).unwrap();
    // The largest learning rate the config accepts, held constant: SGD diverges.
    let mut c = cfg(10.0, 20);
    c.min_lr = 10.0;
    c.clip_grad = 0.0;
    c.optimizer = OptimizerKind::SGD;
    let e = train(&mut model, &dataset(64, 2), c).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    assert!(e.to_string().contains("training loss"), "{e}");
}

#[test]
fn data_is_prepared_as_the_model_expects_or_refused() {
    let backbone = Model::plain(VisionTransformer::new(&config(), 0).unwrap());
    let mut model = backbone.adapt(&Method::parse("linear", E).unwrap(), K, 0).unwrap();
    // Another image size, RGB instead of gray: resized (bicubic) and converted, as timm's
    // preprocessing would, then trained on.
    let big = Dataset::new(Tensor::full(&[4, 3, 9, 8], 0.5), vec![0, 1, 2, 0], K).unwrap();
    let report = train(&mut model, &big, cfg(1e-3, 1)).unwrap();
    assert_eq!(report.epochs.len(), 1);
    // More classes than the head predicts: refused, naming both counts.
    let many = Dataset::new(Tensor::zeros(&[4, 1, 8, 8]), vec![0, 1, 2, 5], 6).unwrap();
    let e = train(&mut model, &many, cfg(1e-3, 1)).unwrap_err().to_string();
    assert!(e.contains("6 classes") && e.contains("predicts 3"), "{e}");
    let e = evaluate(&model, &many, 4).unwrap_err().to_string();
    assert!(e.contains("6 classes"), "{e}");
    // An empty training set.
    let empty = Dataset::new(Tensor::zeros(&[0, 1, 8, 8]), vec![], K).unwrap();
    assert!(train(&mut model, &empty, cfg(1e-3, 1)).unwrap_err().to_string().contains("empty"));
    // A tensor of the wrong size straight into the network (no preprocessing) is refused.
    let e = model.predict(&Tensor::zeros(&[1, 1, 16, 16])).unwrap_err().to_string();
    assert!(e.contains("[B, 1, 8, 8]"), "{e}");
}

#[test]
fn bad_method_strings_are_errors() {
    for s in ["nope", "lora:r=x", "consolidator:g=5", "lora:depth=3", "consolidator:layers=qkv+mlp"] {
        let r = Method::parse(s, E).and_then(|m| {
            let mut vit = VisionTransformer::new(&config(), 0)?;
            m.apply(&mut vit, K, 0)
        });
        assert!(r.is_err(), "`{s}` was accepted");
    }
}

#[path = "common/mod.rs"]
mod common;

mod method_strings {
    use super::common::method_string;
    use consolidator::peft::{
        AdapterConfig, BitFit, ConsolidatorConfig, Full, LinearProbe, LoraConfig, Method, SsfConfig, VptConfig,
    };
    use proptest::prelude::*;

    /// The settings themselves (not only their strings) survive printing and parsing.
    fn same_settings(a: &Method, b: &Method) -> bool {
        fn eq<T: consolidator::peft::MethodConfig + PartialEq>(a: &Method, b: &Method) -> Option<bool> {
            Some(a.config::<T>()? == b.config::<T>()?)
        }
        eq::<LinearProbe>(a, b)
            .or_else(|| eq::<Full>(a, b))
            .or_else(|| eq::<BitFit>(a, b))
            .or_else(|| eq::<LoraConfig>(a, b))
            .or_else(|| eq::<AdapterConfig>(a, b))
            .or_else(|| eq::<VptConfig>(a, b))
            .or_else(|| eq::<SsfConfig>(a, b))
            .or_else(|| eq::<ConsolidatorConfig>(a, b))
            .unwrap_or(false)
    }

    proptest! {
        #[test]
        fn every_method_string_round_trips(s in method_string(), dim in prop::sample::select(vec![16usize, 64, 768])) {
            let m = Method::parse(&s, dim).map_err(|e| TestCaseError::fail(format!("`{s}`: {e}")))?;
            let printed = m.to_string();
            // Printed strings are complete: another width's defaults change nothing.
            let back = Method::parse(&printed, 1).map_err(|e| TestCaseError::fail(format!("`{printed}`: {e}")))?;
            prop_assert!(same_settings(&m, &back), "`{}` → `{}` → `{}`", s, printed, back);
            prop_assert_eq!(back.to_string(), printed);
        }
    }
}
