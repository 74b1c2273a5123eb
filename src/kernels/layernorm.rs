//! LayerNorm over the last dimension (width `c`):
//! `y = (x − μ)·rstd ⊙ γ + β`, `rstd = 1/√(σ² + eps)` (biased variance, as PyTorch).
//!
//! Backward, with `x̂ = (x − μ)·rstd` and `g = dy ⊙ γ`:
//! `dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))`, `dγ += Σ_rows dy ⊙ x̂`, `dβ += Σ_rows dy`.
//!
//! The fast kernels run eight lanes at a time. The forward statistics use a corrected two-pass
//! scheme in `f32` (a first mean `m₀`, then `Σ(x − m₀)` and `Σ(x − m₀)²`, so a large common offset
//! costs no accuracy); outputs differ from the `f64` scalar twin by ≤ 1e-5 for `|x̂| ≲ 100`.
//! Row work (`out`, `dx`) is split across [`crate::par`] workers at row boundaries; `dγ`, `dβ` are
//! split by columns, each column adding its rows in order, so nothing depends on the thread
//! count.

use super::simd::{self, load, load_partial, store, store_partial, W};
use crate::par;
use wide::f32x8;

/// Lane sums of `f(x)` over the full 8-value chunks of a row (the tail is the caller's).
#[inline(always)]
fn row_sum(x: &[f32], f: impl Fn(f32x8) -> f32x8) -> f32x8 {
    let split = x.len() / W * W;
    let mut acc = [f32x8::ZERO; 2];
    let mut it = x[..split].chunks_exact(2 * W);
    for c in &mut it {
        acc[0] += f(load(c));
        acc[1] += f(load(&c[W..]));
    }
    for c in it.remainder().chunks_exact(W) {
        acc[0] += f(load(c));
    }
    acc[0] + acc[1]
}

/// Mean and `1/√(σ² + eps)` of one row (`f32` vector sums, corrected two-pass).
#[inline]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let c = x.len();
    let split = c / W * W;
    let tail = &x[split..];
    let s0 = (row_sum(x, |v| v) + load_partial(tail, 0.0)).reduce_add();
    let m0 = s0 / c as f32;
    let mv = f32x8::splat(m0);
    // Padded lanes must contribute zero: pad the tail with m0 itself.
    let dt = load_partial(tail, m0) - mv;
    let s1 = (row_sum(x, |v| v - mv) + dt).reduce_add();
    let s2 = row_sum(x, |v| {
        let d = v - mv;
        d * d
    });
    let s2 = dt.mul_add(dt, s2).reduce_add();
    let d1 = s1 as f64 / c as f64;
    let var = (s2 as f64 / c as f64 - d1 * d1).max(0.0);
    let mean = m0 as f64 + d1;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}

/// Forward. Writes `out`, and per row `mean[r]` and `rstd[r]` for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let c = gamma.len();
    assert!(c > 0 && beta.len() == c && x.len() == out.len() && x.len() == mean.len() * c);
    assert_eq!(mean.len(), rstd.len());
    if mean.is_empty() {
        return;
    }
    let chunk_rows = simd::rows_chunk_len(mean.len(), c) / c;
    // One work item per row range: its output rows and its statistics.
    let mut parts: Vec<_> =
        out.chunks_mut(chunk_rows * c).zip(mean.chunks_mut(chunk_rows)).zip(rstd.chunks_mut(chunk_rows)).collect();
    par::for_each_chunk_mut(&mut parts, 1, |i, p| {
        let ((os, ms), rss) = &mut p[0];
        forward_rows(&x[i * chunk_rows * c..][..os.len()], gamma, beta, eps, os, ms, rss);
    });
}

/// [`layernorm_forward`] into a new output (built chunk by chunk: no zeroing pass first).
pub fn layernorm_forward_new(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    mean: &mut [f32],
    rstd: &mut [f32],
) -> Vec<f32> {
    let c = gamma.len();
    assert!(c > 0 && beta.len() == c && x.len() == mean.len() * c && mean.len() == rstd.len());
    let rows = (BLOCK / c).max(1);
    let mut side: Vec<_> = mean.chunks_mut(rows).zip(rstd.chunks_mut(rows)).collect();
    par::build_with(x.len(), rows * c, &mut side, |i, os, (ms, rss)| {
        forward_rows(&x[i * rows * c..][..os.len()], gamma, beta, eps, os, ms, rss)
    })
}

/// Values per block of rows in the `*_new` kernels (whole rows; 64 KiB).
const BLOCK: usize = 1 << 14;

/// The forward of whole rows on the calling thread.
fn forward_rows(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32], mean: &mut [f32], rstd: &mut [f32]) {
    let c = gamma.len();
    let split = c / W * W;
    for (j, (or, xr)) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)).enumerate() {
        let (m, rs) = row_stats(xr, eps);
        (mean[j], rstd[j]) = (m, rs);
        let (mv, rv) = (f32x8::splat(m), f32x8::splat(rs));
        for (((o, xv), g), b) in
            or[..split].chunks_exact_mut(W).zip(xr.chunks_exact(W)).zip(gamma.chunks_exact(W)).zip(beta.chunks_exact(W))
        {
            let xh = (load(xv) - mv) * rv;
            store(xh.mul_add(load(g), load(b)), o);
        }
        if split < c {
            let xh = (load_partial(&xr[split..], 0.0) - mv) * rv;
            let y = xh.mul_add(load_partial(&gamma[split..], 0.0), load_partial(&beta[split..], 0.0));
            store_partial(y, &mut or[split..]);
        }
    }
}

/// Scalar twin of [`layernorm_forward`].
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward_scalar(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let c = gamma.len();
    assert!(c > 0 && beta.len() == c && x.len() == out.len() && x.len() == mean.len() * c);
    assert_eq!(mean.len(), rstd.len());
    for (r, (xr, or)) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)).enumerate() {
        let m = xr.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = xr.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c as f64;
        let rs = 1.0 / (var + eps as f64).sqrt();
        for (((o, &v), &g), &b) in or.iter_mut().zip(xr).zip(gamma).zip(beta) {
            *o = ((v as f64 - m) * rs) as f32 * g + b;
        }
        mean[r] = m as f32;
        rstd[r] = rs as f32;
    }
}

/// Backward. Writes `dx` (if given) and adds into `dgamma`, `dbeta` (if given).
///
/// One pass over `x` and `dy`: each block of `SUM_ROWS` rows writes its `dx` rows and its own
/// column sums for `dγ`, `dβ`; the blocks' sums are then added in block order, so nothing
/// depends on how blocks are shared among workers.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) {
    let c = gamma.len();
    let rows = check_backward(x, gamma, mean, rstd, dy);
    let sums = dgamma.is_some() || dbeta.is_some();
    let mut partial = vec![0.0; if sums { rows.div_ceil(SUM_ROWS) * 2 * c } else { 0 }];
    let mut parts: Vec<_> = partial.chunks_mut(2 * c).map(Some).collect();
    parts.resize_with(rows.div_ceil(SUM_ROWS), || None);
    match dx {
        Some(dx) => {
            assert_eq!(dx.len(), x.len());
            let mut items: Vec<_> = dx.chunks_mut(SUM_ROWS * c).zip(&mut parts).collect();
            par::for_each_chunk_mut(&mut items, 1, |i, p| {
                let (d, s) = &mut p[0];
                backward_rows(x, gamma, mean, rstd, dy, i * SUM_ROWS, Some(d), s.as_deref_mut());
            });
        }
        None => par::for_each_chunk_mut(&mut parts, 1, |i, s| {
            backward_rows(x, gamma, mean, rstd, dy, i * SUM_ROWS, None, s[0].as_deref_mut())
        }),
    }
    add_partial_sums(&partial, c, dgamma, dbeta);
}

/// [`layernorm_backward`] with `dx` returned as a new buffer (built block by block: no zeroing
/// pass first).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward_new(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Vec<f32> {
    let c = gamma.len();
    let rows = check_backward(x, gamma, mean, rstd, dy);
    let sums = dgamma.is_some() || dbeta.is_some();
    let mut partial = vec![0.0; rows.div_ceil(SUM_ROWS) * 2 * c];
    let mut parts: Vec<_> = partial.chunks_mut(2 * c).map(|p| sums.then_some(p)).collect();
    let dx = par::build_with(x.len(), SUM_ROWS * c, &mut parts, |i, d, s| {
        backward_rows(x, gamma, mean, rstd, dy, i * SUM_ROWS, Some(d), s.as_deref_mut())
    });
    add_partial_sums(&partial, c, dgamma, dbeta);
    dx
}

/// Rows per block of the backward's column sums.
const SUM_ROWS: usize = 64;

fn check_backward(x: &[f32], gamma: &[f32], mean: &[f32], rstd: &[f32], dy: &[f32]) -> usize {
    let c = gamma.len();
    assert!(c > 0 && x.len() == dy.len() && x.len() == mean.len() * c);
    assert_eq!(mean.len(), rstd.len());
    mean.len()
}

/// Rows `r0..` (as many as `dx` holds, or [`SUM_ROWS`]) of the backward: `dx` if given, and the
/// rows' column sums `[Σ dy ⊙ x̂ ; Σ dy]` into `sums` (`2c` values) if given.
#[allow(clippy::too_many_arguments)]
fn backward_rows(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    r0: usize,
    mut dx: Option<&mut [f32]>,
    mut sums: Option<&mut [f32]>,
) {
    let c = gamma.len();
    let n = dx.as_ref().map_or(SUM_ROWS.min(mean.len() - r0), |d| d.len() / c);
    for r in r0..r0 + n {
        let (xr, dyr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        let (mv, rv) = (f32x8::splat(mean[r]), f32x8::splat(rstd[r]));
        // Padded lanes: dy = 0 there, so g = 0 and they add nothing.
        let lanes = |k: usize| {
            let (xv, d) = (load_partial(&xr[k..], 0.0), load_partial(&dyr[k..], 0.0));
            (d, d * load_partial(&gamma[k..], 0.0), (xv - mv) * rv)
        };
        if let Some(s) = sums.as_deref_mut() {
            let (sg, sb) = s.split_at_mut(c);
            for k in (0..c).step_by(W) {
                let (d, _, xh) = lanes(k);
                store_partial(d.mul_add(xh, load_partial(&sg[k..], 0.0)), &mut sg[k..]);
                store_partial(load_partial(&sb[k..], 0.0) + d, &mut sb[k..]);
            }
        }
        let Some(dx) = dx.as_deref_mut() else { continue };
        let (mut sg, mut sgx) = (f32x8::ZERO, f32x8::ZERO);
        for k in (0..c).step_by(W) {
            let (_, g, xh) = lanes(k);
            sg += g;
            sgx = g.mul_add(xh, sgx);
        }
        let mg = f32x8::splat(sg.reduce_add() / c as f32);
        let mgx = f32x8::splat(sgx.reduce_add() / c as f32);
        let dxr = &mut dx[(r - r0) * c..(r - r0 + 1) * c];
        for k in (0..c).step_by(W) {
            let (_, g, xh) = lanes(k);
            store_partial(rv * xh.mul_neg_add(mgx, g - mg), &mut dxr[k..]);
        }
    }
}

/// Adds the blocks' column sums (`[dγ ; dβ]` per block), in block order, into the gradients.
fn add_partial_sums(partial: &[f32], c: usize, dgamma: Option<&mut [f32]>, dbeta: Option<&mut [f32]>) {
    for (i, d) in [dgamma, dbeta].into_iter().enumerate() {
        if let Some(d) = d {
            assert_eq!(d.len(), c, "layernorm_backward: parameter gradient length");
            for block in partial.chunks_exact(2 * c) {
                d.iter_mut().zip(&block[i * c..(i + 1) * c]).for_each(|(a, &v)| *a += v);
            }
        }
    }
}

/// Scalar twin of [`layernorm_backward`].
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward_scalar(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    mut dgamma: Option<&mut [f32]>,
    mut dbeta: Option<&mut [f32]>,
) {
    let c = gamma.len();
    assert!(c > 0 && x.len() == dy.len() && x.len() == mean.len() * c);
    for (r, (xr, dyr)) in x.chunks_exact(c).zip(dy.chunks_exact(c)).enumerate() {
        let (m, rs) = (mean[r], rstd[r]);
        let mut mg = 0.0f32;
        let mut mgx = 0.0f32;
        for i in 0..c {
            let xh = (xr[i] - m) * rs;
            let g = dyr[i] * gamma[i];
            mg += g;
            mgx += g * xh;
            if let Some(dg) = dgamma.as_deref_mut() {
                dg[i] += dyr[i] * xh;
            }
            if let Some(db) = dbeta.as_deref_mut() {
                db[i] += dyr[i];
            }
        }
        mg /= c as f32;
        mgx /= c as f32;
        if let Some(dx) = dx.as_deref_mut() {
            for i in 0..c {
                let xh = (xr[i] - m) * rs;
                dx[r * c + i] = rs * (dyr[i] * gamma[i] - mg - xh * mgx);
            }
        }
    }
}
