//! The `consolidator bench` workloads (the criterion benches in `benches/` mirror them).

pub mod gc;
pub mod gemm;
pub mod peak;
pub mod versus;
pub mod vit;

use crate::Result;
use std::time::Instant;

/// Median wall time of `f` over `reps` runs (after one warm-up run), in milliseconds.
pub fn median_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    Ok(median_ms_interleaved(reps, &mut [&mut f])?[0])
}

/// Median wall times (milliseconds, in input order) of several workloads timed in turn within
/// each of `reps` repetitions, after one warm-up round: machine noise hits all of them alike, so
/// their ratios are fair (backbone vs merged, say).
pub fn median_ms_interleaved(reps: usize, fs: &mut [&mut dyn FnMut() -> Result<()>]) -> Result<Vec<f64>> {
    let mut times = vec![Vec::with_capacity(reps.max(1)); fs.len()];
    for rep in 0..=reps.max(1) {
        for (f, v) in fs.iter_mut().zip(&mut times) {
            let t = Instant::now();
            f()?;
            if rep > 0 {
                v.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(times
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect())
}
