//! Grouped connection, fused kernel against its two baselines, on a few representative shapes
//! (T = 1576 tokens, the ViT-B/16 batch of 8 images):
//!
//! - `fused`: [`grouped_forward`] (+ [`grouped_backward_input`] and [`grouped_backward_weight`]);
//! - `dense`: one GEMM with the block-diagonal matrix materialised (`D×D`);
//! - `loop`: one GEMM per group on strided views.
//!
//! The full table over every width and group count is `consolidator bench gc`.

use consolidator::kernels::gemm::{gemm, MatRef};
use consolidator::kernels::grouped::{grouped_backward_input, grouped_backward_weight, grouped_forward, GroupSpec};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use std::time::Duration;

const T: usize = 1576;

struct Case {
    spec: GroupSpec,
    x: Vec<f32>,
    dy: Vec<f32>,
    w: Vec<f32>,
    bd: Vec<f32>,
}

impl Case {
    fn new(d: usize, g: usize) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let spec = GroupSpec::new(d, d, g, false).expect("g divides d");
        let mut rv = |n: usize| (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect::<Vec<_>>();
        let (x, dy, w) = (rv(T * d), rv(T * d), rv(spec.weight_len()));
        let (ci, co) = (spec.ci(), spec.co());
        let mut bd = vec![0.0f32; d * d];
        for i in 0..g {
            for r in 0..co {
                bd[(i * co + r) * d + i * ci..][..ci].copy_from_slice(&w[(i * co + r) * ci..][..ci]);
            }
        }
        Case { spec, x, dy, w, bd }
    }

    fn fused(&self, y: &mut [f32], bwd: Option<(&mut [f32], &mut [f32])>) {
        grouped_forward(&self.spec, 1.0, &self.x, &self.w, None, y).expect("sizes agree");
        if let Some((dx, dw)) = bwd {
            grouped_backward_input(&self.spec, 1.0, &self.dy, &self.w, dx).expect("sizes agree");
            grouped_backward_weight(&self.spec, 1.0, &self.x, &self.dy, &mut dw[..self.spec.weight_len()], None)
                .expect("sizes agree");
        }
    }

    fn dense(&self, y: &mut [f32], bwd: Option<(&mut [f32], &mut [f32])>) {
        let d = self.spec.in_dim;
        gemm(1.0, MatRef::new(&self.x, T, d), MatRef::new(&self.bd, d, d).t(), 0.0, y, d);
        if let Some((dx, dbd)) = bwd {
            gemm(1.0, MatRef::new(&self.dy, T, d), MatRef::new(&self.bd, d, d), 0.0, dx, d);
            gemm(1.0, MatRef::new(&self.dy, T, d).t(), MatRef::new(&self.x, T, d), 0.0, dbd, d);
        }
    }

    fn looped(&self, y: &mut [f32], mut bwd: Option<(&mut [f32], &mut [f32])>) {
        let (d, g, ci, co) = (self.spec.in_dim, self.spec.groups, self.spec.ci(), self.spec.co());
        for i in 0..g {
            let xi = MatRef::strided(&self.x[i * ci..], T, ci, d, 1);
            let wi = MatRef::new(&self.w[i * co * ci..], co, ci);
            gemm(1.0, xi, wi.t(), 0.0, &mut y[i * co..], d);
            if let Some((dx, dw)) = bwd.as_mut() {
                let dyi = MatRef::strided(&self.dy[i * co..], T, co, d, 1);
                gemm(1.0, dyi, wi, 0.0, &mut dx[i * ci..], d);
                gemm(1.0, dyi.t(), xi, 0.0, &mut dw[i * co * ci..], ci);
            }
        }
    }
}

type Method = fn(&Case, &mut [f32], Option<(&mut [f32], &mut [f32])>);

fn bench_gc(c: &mut Criterion) {
    let methods: [(&str, Method); 3] = [("fused", Case::fused), ("dense", Case::dense), ("loop", Case::looped)];
    for (d, g) in [(768, 8), (384, 16), (768, 64), (768, 384)] {
        let case = Case::new(d, g);
        let useful = 2 * T * d * d / g;
        for backward in [false, true] {
            let mut group = c.benchmark_group(format!("gc_{}_D{d}_g{g}", if backward { "fwdbwd" } else { "fwd" }));
            group.throughput(Throughput::Elements((useful * if backward { 3 } else { 1 }) as u64));
            let mut y = vec![0.0f32; T * d];
            let mut dx = vec![0.0f32; T * d];
            let mut dw = vec![0.0f32; d * d]; // big enough for the dense dBD
            for (name, f) in methods {
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter(|| f(&case, &mut y, backward.then_some((&mut dx[..], &mut dw[..]))))
                });
            }
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_gc
}
criterion_main!(benches);
