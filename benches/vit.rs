//! Criterion twin of `consolidator bench vit`: ViT-Tiny inference at batch 1, and one training
//! step of the small-image preset (full fine-tuning vs a frozen backbone with consolidator
//! branches), plus backbone / unmerged / merged inference.

use consolidator::autograd::Tape;
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
    let backbone = VisionTransformer::new(&cfg, 0).unwrap();
    let x = images(&cfg, 1);
    let released = Method::Consolidator(ConsolidatorConfig::released(cfg.embed_dim));
    let mut adapted = backbone.clone();
    released.apply(&mut adapted, cfg.num_classes, 0).unwrap();
    let merged = merge(&backbone, &consolidate(&adapted, &backbone, &released).unwrap()).unwrap().model;
    g.bench_function("vit_tiny forward b1 backbone", |b| b.iter(|| backbone.predict(&x).unwrap()));
    g.bench_function("vit_tiny forward b1 unmerged", |b| b.iter(|| adapted.predict(&x).unwrap()));
    g.bench_function("vit_tiny forward b1 merged", |b| b.iter(|| merged.predict(&x).unwrap()));

    let cfg = VitConfig::preset("vit_mnist_tiny").unwrap();
    let base = VisionTransformer::new(&cfg, 0).unwrap();
    let x = images(&cfg, 64);
    let labels: Vec<usize> = (0..64).map(|i| i % 10).collect();
    for (name, method) in
        [("full", Method::Full), ("consolidator", Method::Consolidator(ConsolidatorConfig::released(64)))]
    {
        let mut vit = base.clone();
        method.apply(&mut vit, 10, 0).unwrap();
        let mut opt = Optimizer::adamw(1e-4);
        g.bench_function(format!("vit_mnist_tiny train step b64 {name}"), |b| {
            b.iter(|| {
                let grads = {
                    let tape = Tape::new();
                    let loss =
                        vit.forward(&tape, &tape.constant(x.clone())).unwrap().cross_entropy(&labels, 0.0).unwrap();
                    tape.backward(&loss).unwrap()
                };
                opt.step(&mut vit, &grads, 1e-4, 1.0).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
