//! The GEMM benchmark: GFLOP/s of [`crate::kernels::gemm()`] on the Vision Transformer's shapes,
//! next to the measured FMA peak of the same number of threads ([`super::peak`]).
//!
//! Shapes are `M×K×N` for `C[M×N] = A[M×K]·B[K×N]`: ViT-Tiny/Small token matrices
//! (`M = 8·197` tokens) through qkv, MLP and projection widths, `B` given transposed as the
//! linear layers do (`x·Wᵀ` with `W: [out, in]`), plus a square 2048³ product.
//!
//! ```no_run
//! let report = consolidator::bench::gemm::run_gemm_bench(300).unwrap();
//! println!("{report}");
//! println!("{}", report.to_json());
//! ```

use crate::kernels::gemm::{gemm, MatRef};
use crate::par;
use crate::Result;
use std::fmt;
use std::time::{Duration, Instant};

/// The benchmarked shapes, `(M, K, N)`.
pub const SHAPES: [(usize, usize, usize); 7] = [
    (1576, 192, 576),
    (1576, 192, 768),
    (1576, 768, 192),
    (1576, 384, 1152),
    (1576, 384, 1536),
    (1576, 1536, 384),
    (2048, 2048, 2048),
];

/// One measured shape.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmRow {
    /// Rows of `A` and `C`.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of `B` and `C`.
    pub n: usize,
    /// Best observed rate, `2·M·K·N` flops per second, in GFLOP/s.
    pub gflops: f64,
    /// `gflops / peak_gflops`.
    pub ratio_to_peak: f64,
}

/// The whole benchmark: thread count, the FMA peak it is compared with, one row per shape.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmReport {
    /// Worker threads the GEMM was allowed ([`crate::par::threads`]).
    pub threads: usize,
    /// [`super::peak::fma_peak_gflops`] for that many threads.
    pub peak_gflops: f64,
    /// One row per shape of [`SHAPES`].
    pub rows: Vec<GemmRow>,
}

/// Runs every shape of [`SHAPES`] for about `reps_ms` milliseconds each (after one warm-up
/// product, at least 3 timed runs) and reports the best rate, next to the FMA peak of the same
/// thread count (the better of a run before and a run after the shapes).
pub fn run_gemm_bench(reps_ms: u64) -> Result<GemmReport> {
    let threads = par::threads();
    let peak_ms = reps_ms.clamp(50, 1000);
    let peak_before = super::peak::fma_peak_gflops(threads, peak_ms);
    let rates: Vec<_> =
        SHAPES.iter().map(|&(m, k, n)| (m, k, n, time_shape(m, k, n, Duration::from_millis(reps_ms)))).collect();
    // Best of a peak run before and one after: on a shared machine either may be disturbed.
    let peak_gflops = peak_before.max(super::peak::fma_peak_gflops(threads, peak_ms));
    let rows = rates
        .into_iter()
        .map(|(m, k, n, gflops)| GemmRow { m, k, n, gflops, ratio_to_peak: gflops / peak_gflops })
        .collect();
    Ok(GemmReport { threads, peak_gflops, rows })
}

/// Best GFLOP/s of `C = A·Bᵀ` (B stored `[n, k]`, as a linear layer's weight) within `budget`,
/// timed inside one [`par::region`]: as the model's products run (a forward, a backward and a
/// training step each open one), with the workers waiting between products instead of being
/// woken for each — as PyTorch's OpenMP workers wait between its calls. Outside a region each
/// call pays a wake-up (3–8 % of a 1,576-row product on the 2-core machine).
fn time_shape(m: usize, k: usize, n: usize, budget: Duration) -> f64 {
    par::region(|| time_shape_here(m, k, n, budget))
}

fn time_shape_here(m: usize, k: usize, n: usize, budget: Duration) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let w: Vec<f32> = (0..n * k).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let mut c = vec![0.0f32; m * n];
    let run = |c: &mut [f32]| gemm(1.0, MatRef::new(&a, m, k), MatRef::new(&w, n, k).t(), 0.0, c, n);
    run(&mut c); // warm-up: page faults, packing buffers, thread pool
    let flops = 2.0 * (m * k * n) as f64;
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut reps = 0;
    while reps < 3 || start.elapsed() < budget {
        let t = Instant::now();
        run(&mut c);
        best = best.min(t.elapsed().as_secs_f64());
        reps += 1;
        if reps >= 1000 {
            break;
        }
    }
    std::hint::black_box(&c);
    flops / best / 1e9
}

impl fmt::Display for GemmReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "GEMM, {} thread(s); FMA peak ({}) {:.1} GFLOP/s",
            self.threads,
            super::peak::peak_isa(),
            self.peak_gflops
        )?;
        writeln!(f, "{:>6} {:>6} {:>6} {:>10} {:>8}", "M", "K", "N", "GFLOP/s", "of peak")?;
        for r in &self.rows {
            writeln!(f, "{:>6} {:>6} {:>6} {:>10.1} {:>7.1}%", r.m, r.k, r.n, r.gflops, 100.0 * r.ratio_to_peak)?;
        }
        Ok(())
    }
}

impl GemmReport {
    /// The report as a JSON object:
    /// `{"threads":2,"peak_gflops":…,"rows":[{"m":…,"k":…,"n":…,"gflops":…,"ratio_to_peak":…}]}`.
    pub fn to_json(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"m\":{},\"k\":{},\"n\":{},\"gflops\":{},\"ratio_to_peak\":{}}}",
                    r.m,
                    r.k,
                    r.n,
                    json_num(r.gflops),
                    json_num(r.ratio_to_peak)
                )
            })
            .collect();
        format!(
            "{{\"threads\":{},\"peak_gflops\":{},\"rows\":[{}]}}",
            self.threads,
            json_num(self.peak_gflops),
            rows.join(",")
        )
    }
}

/// A finite number with 4 decimals, or `null` (JSON has no NaN or infinity).
fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "null".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_table_have_every_row() {
        let report = GemmReport {
            threads: 2,
            peak_gflops: 100.0,
            rows: vec![GemmRow { m: 1, k: 2, n: 3, gflops: 50.0, ratio_to_peak: 0.5 }],
        };
        assert_eq!(
            report.to_json(),
            "{\"threads\":2,\"peak_gflops\":100.0000,\"rows\":[{\"m\":1,\"k\":2,\"n\":3,\
             \"gflops\":50.0000,\"ratio_to_peak\":0.5000}]}"
        );
        assert!(report.to_string().contains("50.0%"));
    }
}
