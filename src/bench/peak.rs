//! Floating-point peak: how many `f32` fused multiply-adds per second the cores can retire.
//!
//! [`fma_peak_gflops`] runs, on each of `threads` threads, a loop over 12 independent
//! accumulators (`acc = acc·m + a`): 12 chains cover the FMA latency (4–5 cycles) times the
//! number of FMA ports (2), so the loop is throughput-bound. Where the CPU has AVX-512 (the
//! engine's GEMM then runs its 16-lane kernels) the accumulators are 16-lane `__m512`
//! registers; elsewhere `wide::f32x8`, which is **AVX2 + FMA** when the build targets
//! x86-64-v3 (a baseline x86-64 build measures SSE multiply-then-add instead).
//! [`peak_isa`] names which one was measured.
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

/// The instructions [`fma_peak_gflops`] measures on this CPU: `"AVX-512 f32x16"` or
/// `"f32x8"` (AVX2 + FMA in builds for x86-64-v3).
pub fn peak_isa() -> &'static str {
    if has_avx512() {
        "AVX-512 f32x16"
    } else {
        "f32x8"
    }
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Measured `f32` FMA throughput in GFLOP/s (one FMA = 2 flops) of `threads` threads running
/// together for about `duration_ms` milliseconds. Each thread reports its best 20 ms window (the
/// machine may be shared with other work); the result is the sum over the threads.
pub fn fma_peak_gflops(threads: usize, duration_ms: u64) -> f64 {
    let threads = threads.max(1);
    let budget = Duration::from_millis(duration_ms.max(1));
    let flops_per_sec: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    #[cfg(target_arch = "x86_64")]
                    if has_avx512() {
                        // SAFETY: the CPU has AVX-512F (checked above).
                        return unsafe { one_thread_avx512(t, budget) };
                    }
                    one_thread(t, budget)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    flops_per_sec / 1e9
}

/// Runs `step` (one burst of FMAs worth `flops_per_step`, on accumulators passed by value so they
/// stay in registers) for about `budget` in windows of [`WINDOW`]; returns the best window's
/// rate in flops per second (the machine may be shared: the best window is the closest to what
/// the hardware can do).
fn best_window_rate<S>(budget: Duration, flops_per_step: f64, mut acc: S, step: impl Fn(S) -> S) -> f64 {
    let window = WINDOW.min(budget);
    let start = Instant::now();
    let mut best = 0.0f64;
    while start.elapsed() < budget || best == 0.0 {
        let w0 = Instant::now();
        let mut steps: u64 = 0;
        while w0.elapsed() < window {
            acc = black_box(step(acc));
            steps += 1;
        }
        best = best.max(steps as f64 * flops_per_step / w0.elapsed().as_secs_f64());
    }
    black_box(acc);
    best
}

/// This thread's FMA rate with 8-lane `wide` accumulators.
fn one_thread(seed: usize, budget: Duration) -> f64 {
    let m = black_box(f32x8::splat(0.999_999));
    let a = black_box(f32x8::splat(1e-7 * (seed as f32 + 1.0)));
    let acc: [f32x8; CHAINS] = std::array::from_fn(|i| f32x8::splat(i as f32));
    best_window_rate(budget, (INNER * CHAINS * 8 * 2) as f64, acc, |mut acc| {
        for _ in 0..INNER {
            for v in acc.iter_mut() {
                *v = v.mul_add(m, a);
            }
        }
        acc
    })
}

/// [`one_thread`] with 16-lane AVX-512 accumulators (the closure inherits the target feature,
/// so its FMAs compile to AVX-512 instructions).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn one_thread_avx512(seed: usize, budget: Duration) -> f64 {
    use std::arch::x86_64::*;
    let m = black_box(_mm512_set1_ps(0.999_999));
    let a = black_box(_mm512_set1_ps(1e-7 * (seed as f32 + 1.0)));
    let acc: [__m512; CHAINS] = std::array::from_fn(|i| _mm512_set1_ps(i as f32));
    best_window_rate(budget, (INNER * CHAINS * 16 * 2) as f64, acc, |mut acc| {
        for _ in 0..INNER {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, m, a);
            }
        }
        acc
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_is_positive_and_finite() {
        let g = super::fma_peak_gflops(1, 10);
        assert!(g.is_finite() && g > 0.0);
    }
}
