//! Floating-point peak: how many `f32` fused multiply-adds per second the cores can retire.
//!
//! [`fma_peak_gflops`] runs, on each of `threads` threads, a loop over 12 independent
//! `wide::f32x8` accumulators (`acc = acc·m + a`): 12 chains cover the FMA latency (4–5 cycles)
//! times the number of FMA ports (2), so the loop is throughput-bound. It measures what **AVX2 +
//! FMA** (8-lane, 256-bit) can do on this machine when the build targets x86-64-v3; a baseline
//! x86-64 build measures SSE multiply-then-add instead. Cores with AVX-512 can go up to twice as
//! high with 16-lane instructions (which `matrixmultiply` uses when it detects them), so a GEMM
//! may exceed this "peak".
//!
//! ```
//! let gflops = consolidator::bench::peak::fma_peak_gflops(1, 20);
//! assert!(gflops > 0.0);
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};
use wide::f32x8;

/// Independent accumulator chains per thread.
const CHAINS: usize = 12;
/// Inner iterations between clock reads.
const INNER: usize = 4096;
/// Length of one timed window; the best window counts.
const WINDOW: Duration = Duration::from_millis(20);

/// Measured `f32` FMA throughput in GFLOP/s (one FMA = 2 flops) of `threads` threads running
/// together for about `duration_ms` milliseconds. Each thread reports its best 20 ms window (the
/// machine may be shared with other work); the result is the sum over the threads.
pub fn fma_peak_gflops(threads: usize, duration_ms: u64) -> f64 {
    let threads = threads.max(1);
    let budget = Duration::from_millis(duration_ms.max(1));
    let flops_per_sec: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || one_thread(t, budget))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    flops_per_sec / 1e9
}

/// Runs the FMA loop for about `budget` in windows of [`WINDOW`]; returns this thread's best
/// window rate in flops per second (the machine may be shared: the best window is the closest
/// to what the hardware can do).
fn one_thread(seed: usize, budget: Duration) -> f64 {
    let m = black_box(f32x8::splat(0.999_999));
    let a = black_box(f32x8::splat(1e-7 * (seed as f32 + 1.0)));
    let mut acc = [f32x8::ZERO; CHAINS];
    for (i, v) in acc.iter_mut().enumerate() {
        *v = f32x8::splat(i as f32);
    }
    let window = WINDOW.min(budget);
    let flops_per_iter = (CHAINS * 8 * 2) as f64;
    let start = Instant::now();
    let mut best = 0.0f64;
    while start.elapsed() < budget || best == 0.0 {
        let w0 = Instant::now();
        let mut iters: u64 = 0;
        while w0.elapsed() < window {
            for _ in 0..INNER {
                for v in acc.iter_mut() {
                    *v = v.mul_add(m, a);
                }
            }
            acc = black_box(acc);
            iters += INNER as u64;
        }
        best = best.max(iters as f64 * flops_per_iter / w0.elapsed().as_secs_f64());
    }
    black_box(acc);
    best
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_is_positive_and_finite() {
        let g = super::fma_peak_gflops(1, 10);
        assert!(g.is_finite() && g > 0.0);
    }
}
