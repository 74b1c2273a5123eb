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
    let rows = mean.len();
    if rows == 0 {
        return;
    }
    let chunk_rows = simd::rows_chunk_len(rows, c) / c;
    let split = c / W * W;
    // One work item per row range: its output rows and its statistics.
    let mut parts: Vec<_> =
        out.chunks_mut(chunk_rows * c).zip(mean.chunks_mut(chunk_rows)).zip(rstd.chunks_mut(chunk_rows)).collect();
    par::for_each_chunk_mut(&mut parts, 1, |i, p| {
        let ((os, ms), rss) = &mut p[0];
        let r0 = i * chunk_rows;
        for (j, or) in os.chunks_exact_mut(c).enumerate() {
            let xr = &x[(r0 + j) * c..(r0 + j + 1) * c];
            let (m, rs) = row_stats(xr, eps);
            (ms[j], rss[j]) = (m, rs);
            let (mv, rv) = (f32x8::splat(m), f32x8::splat(rs));
            for (((o, xv), g), b) in or[..split]
                .chunks_exact_mut(W)
                .zip(xr.chunks_exact(W))
                .zip(gamma.chunks_exact(W))
                .zip(beta.chunks_exact(W))
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
    });
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
    assert!(c > 0 && x.len() == dy.len() && x.len() == mean.len() * c);
    assert_eq!(mean.len(), rstd.len());
    let rows = mean.len();
    if let Some(dx) = dx {
        assert_eq!(dx.len(), x.len());
        let chunk_rows = simd::rows_chunk_len(rows, c) / c;
        par::for_each_chunk_mut(dx, chunk_rows * c, |i, ds| {
            let r0 = i * chunk_rows;
            for (j, dxr) in ds.chunks_exact_mut(c).enumerate() {
                let r = r0 + j;
                let (xr, dyr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
                let (mv, rv) = (f32x8::splat(mean[r]), f32x8::splat(rstd[r]));
                // Padded lanes: dy = 0 there, so g = 0 and they add nothing.
                let lanes = |k: usize| {
                    let xv = load_partial(&xr[k..], 0.0);
                    let g = load_partial(&dyr[k..], 0.0) * load_partial(&gamma[k..], 0.0);
                    (g, (xv - mv) * rv)
                };
                let (mut sg, mut sgx) = (f32x8::ZERO, f32x8::ZERO);
                for k in (0..c).step_by(W) {
                    let (g, xh) = lanes(k);
                    sg += g;
                    sgx = g.mul_add(xh, sgx);
                }
                let mg = f32x8::splat(sg.reduce_add() / c as f32);
                let mgx = f32x8::splat(sgx.reduce_add() / c as f32);
                for k in (0..c).step_by(W) {
                    let (g, xh) = lanes(k);
                    let d = rv * xh.mul_neg_add(mgx, g - mg);
                    store_partial(d, &mut dxr[k..]);
                }
            }
        });
    }
    if dgamma.is_none() && dbeta.is_none() {
        return;
    }
    // Column sums over rows: split the columns (multiples of 8) across workers.
    let t = par::threads();
    let cols = if x.len() < simd::PAR_MIN_ELEMS || t <= 1 { c } else { c.div_ceil(t).next_multiple_of(W) };
    let mut parts: Vec<_> = split_cols(dgamma, c, cols).into_iter().zip(split_cols(dbeta, c, cols)).collect();
    par::for_each_chunk_mut(&mut parts, 1, |i, p| {
        let (g, b) = &mut p[0];
        let c0 = i * cols;
        let width = cols.min(c - c0);
        for r in 0..rows {
            let xr = &x[r * c + c0..r * c + c0 + width];
            let dyr = &dy[r * c + c0..r * c + c0 + width];
            let (mv, rv) = (f32x8::splat(mean[r]), f32x8::splat(rstd[r]));
            for k in (0..width).step_by(W) {
                let d = load_partial(&dyr[k..], 0.0);
                if let Some(g) = g.as_deref_mut() {
                    let xh = (load_partial(&xr[k..], 0.0) - mv) * rv;
                    let v = d.mul_add(xh, load_partial(&g[k..], 0.0));
                    store_partial(v, &mut g[k..]);
                }
                if let Some(b) = b.as_deref_mut() {
                    let v = load_partial(&b[k..], 0.0) + d;
                    store_partial(v, &mut b[k..]);
                }
            }
        }
    });
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

/// `d` (if given, of length `c`) cut into column blocks of `cols`; `None` for every block if not.
fn split_cols(d: Option<&mut [f32]>, c: usize, cols: usize) -> Vec<Option<&mut [f32]>> {
    match d {
        Some(d) => {
            assert_eq!(d.len(), c, "layernorm_backward: parameter gradient length");
            d.chunks_mut(cols).map(Some).collect()
        }
        None => (0..c.div_ceil(cols)).map(|_| None).collect(),
    }
}
