//! LayerNorm over the last dimension (width `c`):
//! `y = (x − μ)·rstd ⊙ γ + β`, `rstd = 1/√(σ² + eps)` (biased variance, as PyTorch).
//!
//! Backward, with `x̂ = (x − μ)·rstd` and `g = dy ⊙ γ`:
//! `dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))`, `dγ += Σ_rows dy ⊙ x̂`, `dβ += Σ_rows dy`.

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
    layernorm_forward_scalar(x, gamma, beta, eps, out, mean, rstd)
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
    layernorm_backward_scalar(x, gamma, mean, rstd, dy, dx, dgamma, dbeta)
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
