//! The grouped-connection benchmark: the fused kernel ([`crate::kernels::grouped`]) against
//! (a) a dense GEMM with the block-diagonal matrix materialised and (b) a loop of per-group GEMMs,
//! forward and forward+backward, reported as *useful* GFLOP/s (`2·T·I·O/g` per product).

use crate::kernels::gemm::{gemm, MatRef};
use crate::kernels::grouped::{grouped_backward_input, grouped_backward_weight, grouped_forward, GroupSpec};
use crate::Result;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::time::Instant;

/// One (width, groups) measurement, times in milliseconds.
#[derive(Clone, Debug)]
pub struct GcRow {
    /// Layer width `D` (a `D × D` layer).
    pub dim: usize,
    /// Group count `g`.
    pub groups: usize,
    /// Forward, fused grouped kernel.
    pub fused_fwd_ms: f64,
    /// Forward, the same layer as a dense GEMM.
    pub dense_fwd_ms: f64,
    /// Forward, one small GEMM per group (the naive way).
    pub loop_fwd_ms: f64,
    /// Forward and backward, fused.
    pub fused_fwdbwd_ms: f64,
    /// Forward and backward, dense.
    pub dense_fwdbwd_ms: f64,
    /// Forward and backward, per-group loop.
    pub loop_fwdbwd_ms: f64,
    /// Useful GFLOP/s of the fused forward.
    pub fused_fwd_gflops: f64,
    /// Bytes moved by the fused forward (read x, read+write y, read G) per second, GB/s.
    pub fused_fwd_gbs: f64,
}

/// The benchmark's result.
#[derive(Clone, Debug)]
pub struct GcReport {
    /// Rows (tokens) per measurement.
    pub tokens: usize,
    /// One row per (width, groups).
    pub rows: Vec<GcRow>,
    /// A plain copy of a `T × D` f32 matrix, GB/s (read + write), for the largest width.
    pub copy_gbs: f64,
}

fn best_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// Runs widths `dims` × group counts `groups` at `tokens` rows, `reps` repetitions each.
pub fn run_gc_bench(tokens: usize, dims: &[usize], groups: &[usize], reps: usize) -> Result<GcReport> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut rows = Vec::new();
    let mut copy_gbs = 0.0;
    for &d in dims {
        let x: Vec<f32> = (0..tokens * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let dy: Vec<f32> = (0..tokens * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut y = vec![0.0f32; tokens * d];
        let mut dx = vec![0.0f32; tokens * d];
        let mut copy = vec![0.0f32; tokens * d];
        let c_ms = best_ms(reps, || copy.copy_from_slice(&x));
        copy_gbs = (8 * tokens * d) as f64 / (c_ms * 1e6);
        for &g in groups {
            if d % g != 0 {
                continue;
            }
            let spec = GroupSpec::new(d, d, g, false)?;
            let w: Vec<f32> = (0..spec.weight_len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut dw = vec![0.0f32; spec.weight_len()];
            // (a) the block-diagonal matrix, materialised.
            let (ci, co) = (spec.ci(), spec.co());
            let mut bd = vec![0.0f32; d * d];
            for i in 0..g {
                for r in 0..co {
                    for s in 0..ci {
                        bd[(i * co + r) * d + i * ci + s] = w[(i * co + r) * ci + s];
                    }
                }
            }
            let mut dbd = vec![0.0f32; d * d];
            let fused_fwd = |y: &mut [f32]| grouped_forward(&spec, 1.0, &x, &w, None, y).expect("sizes agree");
            let dense_fwd =
                |y: &mut [f32]| gemm(1.0, MatRef::new(&x, tokens, d), MatRef::new(&bd, d, d).t(), 0.0, y, d);
            let loop_fwd = |y: &mut [f32]| {
                for i in 0..g {
                    gemm(
                        1.0,
                        MatRef::strided(&x[i * ci..], tokens, ci, d, 1),
                        MatRef::new(&w[i * co * ci..], co, ci).t(),
                        0.0,
                        &mut y[i * co..],
                        d,
                    );
                }
            };
            let fused_fwd_ms = best_ms(reps, || fused_fwd(&mut y));
            let dense_fwd_ms = best_ms(reps, || dense_fwd(&mut y));
            let loop_fwd_ms = best_ms(reps, || loop_fwd(&mut y));
            let fused_fwdbwd_ms = best_ms(reps, || {
                fused_fwd(&mut y);
                grouped_backward_input(&spec, 1.0, &dy, &w, &mut dx).expect("sizes agree");
                grouped_backward_weight(&spec, 1.0, &x, &dy, &mut dw, None).expect("sizes agree");
            });
            let dense_fwdbwd_ms = best_ms(reps, || {
                dense_fwd(&mut y);
                gemm(1.0, MatRef::new(&dy, tokens, d), MatRef::new(&bd, d, d), 0.0, &mut dx, d);
                gemm(1.0, MatRef::new(&dy, tokens, d).t(), MatRef::new(&x, tokens, d), 0.0, &mut dbd, d);
            });
            let loop_fwdbwd_ms = best_ms(reps, || {
                loop_fwd(&mut y);
                for i in 0..g {
                    let dyi = MatRef::strided(&dy[i * co..], tokens, co, d, 1);
                    gemm(1.0, dyi, MatRef::new(&w[i * co * ci..], co, ci), 0.0, &mut dx[i * ci..], d);
                    gemm(
                        1.0,
                        dyi.t(),
                        MatRef::strided(&x[i * ci..], tokens, ci, d, 1),
                        0.0,
                        &mut dw[i * co * ci..],
                        ci,
                    );
                }
            });
            let useful = 2.0 * (tokens * d * d / g) as f64;
            let moved = 4.0 * (tokens * d * 3 + spec.weight_len()) as f64;
            rows.push(GcRow {
                dim: d,
                groups: g,
                fused_fwd_ms,
                dense_fwd_ms,
                loop_fwd_ms,
                fused_fwdbwd_ms,
                dense_fwdbwd_ms,
                loop_fwdbwd_ms,
                fused_fwd_gflops: useful / (fused_fwd_ms * 1e6),
                fused_fwd_gbs: moved / (fused_fwd_ms * 1e6),
            });
        }
    }
    Ok(GcReport { tokens, rows, copy_gbs })
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "grouped connection, T = {} tokens, useful GFLOP/s (2·T·D²/g per product; fwd+bwd = 3 products)",
            self.tokens
        )?;
        writeln!(f, "|   D |   g | fused fwd | dense fwd | loop fwd | fused f+b | dense f+b | loop f+b | fused vs best fwd | fused vs best f+b | fused fwd GB/s |")?;
        writeln!(f, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &self.rows {
            let useful = 2.0 * (self.tokens * r.dim * r.dim / r.groups) as f64;
            let gf = |ms: f64, passes: f64| passes * useful / (ms * 1e6);
            let best_f = r.dense_fwd_ms.min(r.loop_fwd_ms);
            let best_fb = r.dense_fwdbwd_ms.min(r.loop_fwdbwd_ms);
            writeln!(
                f,
                "| {:>3} | {:>3} | {:>9.1} | {:>9.1} | {:>8.1} | {:>9.1} | {:>9.1} | {:>8.1} | {:>16.2}× | {:>16.2}× | {:>14.1} |",
                r.dim,
                r.groups,
                gf(r.fused_fwd_ms, 1.0),
                gf(r.dense_fwd_ms, 1.0),
                gf(r.loop_fwd_ms, 1.0),
                gf(r.fused_fwdbwd_ms, 3.0),
                gf(r.dense_fwdbwd_ms, 3.0),
                gf(r.loop_fwdbwd_ms, 3.0),
                best_f / r.fused_fwd_ms,
                best_fb / r.fused_fwdbwd_ms,
                r.fused_fwd_gbs
            )?;
        }
        write!(f, "plain copy of a T×D matrix: {:.1} GB/s", self.copy_gbs)
    }
}

impl GcReport {
    /// The report as JSON.
    pub fn to_json(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"dim\":{},\"groups\":{},\"fused_fwd_ms\":{:.4},\"dense_fwd_ms\":{:.4},\"loop_fwd_ms\":{:.4},\"fused_fwdbwd_ms\":{:.4},\"dense_fwdbwd_ms\":{:.4},\"loop_fwdbwd_ms\":{:.4},\"fused_fwd_gflops\":{:.2},\"fused_fwd_gbs\":{:.2}}}",
                    r.dim, r.groups, r.fused_fwd_ms, r.dense_fwd_ms, r.loop_fwd_ms, r.fused_fwdbwd_ms, r.dense_fwdbwd_ms, r.loop_fwdbwd_ms, r.fused_fwd_gflops, r.fused_fwd_gbs
                )
            })
            .collect();
        format!("{{\"tokens\":{},\"copy_gbs\":{:.2},\"rows\":[{}]}}", self.tokens, self.copy_gbs, rows.join(","))
    }
}
