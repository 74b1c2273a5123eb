//! Criterion twin of `consolidator bench vit`: ViT-Tiny inference at batch 1 as backbone,
//! unmerged and merged, and one training step of the `vit_c32_p4_d192_l6_b64` case (full
//! fine-tuning vs a frozen backbone with g = 8 consolidator branches).

use consolidator::bench::vit::{train_setup, train_step};
use consolidator::model::Model;
use consolidator::nn::{VisionTransformer, VitConfig};
use consolidator::optim::Optimizer;
use consolidator::peft::{ConsolidatorConfig, Method};
use consolidator::reparam::{consolidate, merge};
use consolidator::Tensor;
use criterion::{criterion_group, criterion_main, Criterion};
use rand::SeedableRng;

fn images(cfg: &VitConfig, b: usize) -> Tensor {
    Tensor::randn(&[b, cfg.in_chans, cfg.img_size.0, cfg.img_size.1], 1.0, &mut rand::rngs::StdRng::seed_from_u64(1))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("vit");
    g.sample_size(10);
    let cfg = VitConfig::preset("vit_tiny_patch16_224").unwrap();
    let backbone = Model::plain(VisionTransformer::new(&cfg, 0).unwrap());
    let x = images(&cfg, 1);
    let released = Method::new(ConsolidatorConfig::released(cfg.embed_dim));
    let adapted = backbone.adapt(&released, cfg.num_classes, 0).unwrap();
    let merged = merge(&backbone, &consolidate(&adapted, &backbone.vit).unwrap()).unwrap().model;
    g.bench_function("vit_tiny forward b1 backbone", |b| b.iter(|| backbone.predict(&x).unwrap()));
    g.bench_function("vit_tiny forward b1 unmerged", |b| b.iter(|| adapted.predict(&x).unwrap()));
    g.bench_function("vit_tiny forward b1 merged", |b| b.iter(|| merged.predict(&x).unwrap()));

    for mode in ["full", "consolidator"] {
        let (mut vit, x, labels) = train_setup("vit_c32_p4_d192_l6_b64", mode).unwrap();
        let mut opt = Optimizer::adamw(1e-4);
        g.bench_function(format!("vit_c32_p4_d192_l6 train step b64 {mode}"), |b| {
            b.iter(|| train_step(&mut vit, &mut opt, &x, &labels).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
