//! Criterion benchmark of `kernels::gemm` on the shapes of `consolidator bench gemm`
//! (`C = A·Bᵀ`, B stored `[N, K]` as a linear layer's weight). Throughput is reported in
//! elements of `C`; multiply by `2·K` for flops. Small samples keep the run to a couple of
//! minutes: `cargo bench --bench gemm`.

use consolidator::bench::gemm::SHAPES;
use consolidator::kernels::gemm::{gemm, MatRef};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

fn bench_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for &(m, k, n) in &SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((m * n) as u64));
        let id = BenchmarkId::from_parameter(format!("{m}x{k}x{n}"));
        group.bench_function(id, |bch| {
            bch.iter(|| {
                let (av, bv) = (MatRef::new(&a, m, k), MatRef::new(&w, n, k).t());
                gemm(1.0, av, bv, 0.0, &mut out, n);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
