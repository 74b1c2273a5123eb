//! Exact-erf GELU, `gelu_erf(x) = x·Φ(x) = ½·x·(1 + erf(x/√2))`, and its derivative
//! `Φ(x) + x·φ(x)` with `φ(x) = exp(−x²/2)/√(2π)`. (The tanh approximation is a different
//! function; timm's ViT uses this exact one.)
//!
//! The fast GELU kernels evaluate `Φ` with one `exp` per lane, shared with the backward's
//! density `φ` (`exp(−x²/2)` is both `e^{−z²}` for `z = |x|/√2` and `√(2π)·φ(x)`):
//! `erfc(z) = t·P(t)·e^{−z²}`, `t = 1/(1 + p·z)`, `P` of degree 4 (Abramowitz & Stegun 7.1.26,
//! abs error ≤ 1.5e-7), then `Φ(x) = 1 − ½·erfc(z)` for `x ≥ 0` and `½·erfc(z)` below. The
//! product form keeps the tails free of cancellation. [`erf_slice`] is a separate, more precise
//! vectorised `erf` (abs error ≤ 2e-7 after `f32` rounding against [`erf_f64`]):
//!
//! * `|z| < 1`: `erf(z) = z·P(z²)`, `P` of degree 6 (least-squares fit on Chebyshev nodes,
//!   error 1.2e-9 before rounding);
//! * `1 ≤ |z| < 3.92`: `erfc(|z|) = exp(Q(|z| − 2.45))`, `Q` of degree 8 fitted to `ln erfc`
//!   (error 4e-10 before rounding);
//! * `|z| ≥ 3.92`: `erfc(|z|) < 3e-8`, taken as 0.
//!
//! GELU values differ from the scalar twins (which round `erf` to `f32` first) by at most
//! `1e-6·max(1, |x|)`. Large inputs (≥ 64K values) are split across [`crate::par`] workers.

use super::simd::{self, exp8};
use crate::par;
use std::mem::MaybeUninit;
use wide::{f32x8, CmpGe, CmpLt};

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `erf(x)`: [`erf_f64`] rounded to `f32` (the oracle's precision, not a fast path).
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
            if t.abs() <= 1e-17 * sum.abs() {
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

/// `out[i] = gelu_erf(x[i])`: 16 lanes at a time where the CPU has AVX-512 (the same lane
/// arithmetic, so the same values, as [`gelu_erf_x8`]), else 8.
pub fn gelu_erf(x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len());
    let chunk = simd::flat_chunk_len(x.len());
    par::for_each_chunk_mut(out, chunk, |i, o| gelu_here(&x[i * chunk..i * chunk + o.len()], &[], o));
}

/// On the calling thread: [`gelu_erf`] (`dy` empty) or [`gelu_erf_backward`] of `x` into `out`.
fn gelu_here(x: &[f32], dy: &[f32], out: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx512::usable() {
        // SAFETY: AVX-512F is present; the slices have equal lengths (`dy` unless empty).
        done = unsafe { avx512::gelu(x, dy, out) };
    }
    match dy {
        [] => gelu_erf_x8(&x[done..], &mut out[done..]),
        _ => gelu_erf_backward_x8(&x[done..], &dy[done..], &mut out[done..]),
    }
}

/// On the calling thread: `a = gelu_erf(h)`, and `h` replaced by the slope `gelu_erf'(h)`
/// that the backward multiplies its `dy` by, from one evaluation of `Φ` and `φ`. The slope has
/// the bits [`gelu_erf_backward`] multiplies by, so `dy·slope` is its result bit for bit.
pub fn gelu_and_slope(h: &mut [f32], a: &mut [MaybeUninit<f32>]) {
    assert_eq!(h.len(), a.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx512::usable() {
        // SAFETY: AVX-512F is present; the slices have equal lengths.
        done = unsafe { avx512::gelu_and_slope(h, a) };
    }
    for (h, a) in h[done..].chunks_mut(simd::W).zip(a[done..].chunks_mut(simd::W)) {
        let v = simd::load_partial(h, 0.0);
        let (cdf, gauss) = phi_and_gauss8(v);
        let slope = slope8(v, cdf, gauss).to_array();
        for ((h, a), (y, s)) in h.iter_mut().zip(a).zip((v * cdf).to_array().into_iter().zip(slope)) {
            a.write(y);
            *h = s;
        }
    }
}

/// [`gelu_erf`] eight lanes at a time, on the calling thread (the portable kernel, and the
/// twin the AVX-512 kernel must match bit for bit).
pub fn gelu_erf_x8(x: &[f32], out: &mut [f32]) {
    simd::map1(x, out, |v| v * phi_and_gauss8(v).0);
}
/// Scalar twin of [`gelu_erf`].
pub fn gelu_erf_scalar(x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2));
    }
}

/// `dx[i] = dy[i] · gelu_erf'(x[i])`, 16 lanes at a time with AVX-512 (as [`gelu_erf`]).
pub fn gelu_erf_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(x.len() == dy.len() && x.len() == dx.len());
    let chunk = simd::flat_chunk_len(x.len());
    par::for_each_chunk_mut(dx, chunk, |i, d| {
        let r = i * chunk..i * chunk + d.len();
        gelu_here(&x[r.clone()], &dy[r], d)
    });
}

/// [`gelu_erf_backward`] eight lanes at a time, on the calling thread (the AVX-512 kernel's
/// twin).
pub fn gelu_erf_backward_x8(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    simd::map2(x, dy, dx, |v, g| {
        let (cdf, gauss) = phi_and_gauss8(v);
        g * slope8(v, cdf, gauss)
    });
}

/// The slope `gelu_erf'(v) = Φ(v) + v·φ(v)` from `phi_and_gauss8`'s `(Φ(v), e^{−v²/2})`.
#[inline]
fn slope8(v: f32x8, cdf: f32x8, gauss: f32x8) -> f32x8 {
    v.mul_add(gauss * f32x8::splat(FRAC_1_SQRT_2PI), cdf)
}

/// The GELU kernels on 16 lanes: `phi_and_gauss8` and `exp8` instruction for instruction
/// (same constants, same order of operations, FMAs where they have them), so every value is
/// bit-identical to the 8-lane kernels'.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{AS_A, AS_P, FRAC_1_SQRT_2, FRAC_1_SQRT_2PI};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// The CPU has AVX-512F and the 8-lane kernels fuse their multiply-adds (a build for
    /// x86-64-v3 or above), so both give the same values and chunk boundaries (which follow the
    /// thread count) cannot change a result.
    pub(super) fn usable() -> bool {
        cfg!(target_feature = "fma") && is_x86_feature_detected!("avx512f")
    }

    /// `(Φ(v), e^{−v²/2})`, as `phi_and_gauss8`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn phi_and_gauss(v: __m512) -> (__m512, __m512) {
        let s = _mm512_set1_ps;
        // exp8(−½·x·x)
        let e = _mm512_mul_ps(_mm512_mul_ps(s(-0.5), v), v);
        let ec = _mm512_min_ps(_mm512_max_ps(e, s(-87.5)), s(88.0));
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            ec,
            s(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(k, s(0.693_145_75), ec);
        let r = _mm512_fnmadd_ps(k, s(1.428_606_8e-6), r);
        let mut p = s(1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, s(c));
        }
        let two_k = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)));
        let y = _mm512_mul_ps(p, _mm512_castsi512_ps(two_k));
        let gauss = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(e, s(-87.3)), y, _mm512_setzero_ps());
        // Φ(x) from erfc(|x|/√2) (A&S 7.1.26)
        let z = _mm512_mul_ps(_mm512_abs_ps(v), s(FRAC_1_SQRT_2));
        let t = _mm512_div_ps(s(1.0), _mm512_fmadd_ps(z, s(AS_P), s(1.0)));
        let mut h = s(AS_A[4]);
        for &a in AS_A[..4].iter().rev() {
            h = _mm512_fmadd_ps(h, t, s(a));
        }
        let half_erfc = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(s(0.5), t), h), gauss);
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
        (_mm512_mask_blend_ps(neg, _mm512_sub_ps(s(1.0), half_erfc), half_erfc), gauss)
    }

    /// The slope `Φ(v) + v·φ(v)`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn slope(v: __m512, cdf: __m512, gauss: __m512) -> __m512 {
        _mm512_fmadd_ps(v, _mm512_mul_ps(gauss, _mm512_set1_ps(FRAC_1_SQRT_2PI)), cdf)
    }

    /// The forward (`dy` empty) or the backward of the first `16·⌊len/16⌋` values into `out`;
    /// returns how many were done.
    ///
    /// # Safety
    /// AVX-512F present; `out.len() == x.len()`, and `dy.len() == x.len()` unless empty.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu(x: &[f32], dy: &[f32], out: &mut [f32]) -> usize {
        let n = x.len() / 16 * 16;
        for i in (0..n).step_by(16) {
            let v = _mm512_loadu_ps(x[i..i + 16].as_ptr());
            let (cdf, gauss) = phi_and_gauss(v);
            let o = if dy.is_empty() {
                _mm512_mul_ps(v, cdf)
            } else {
                _mm512_mul_ps(_mm512_loadu_ps(dy[i..i + 16].as_ptr()), slope(v, cdf, gauss))
            };
            _mm512_storeu_ps(out[i..i + 16].as_mut_ptr(), o);
        }
        n
    }

    /// [`super::gelu_and_slope`] of the first `16·⌊len/16⌋` values; returns how many.
    ///
    /// # Safety
    /// AVX-512F present; `a.len() == h.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu_and_slope(h: &mut [f32], a: &mut [MaybeUninit<f32>]) -> usize {
        let n = h.len() / 16 * 16;
        for i in (0..n).step_by(16) {
            let v = _mm512_loadu_ps(h[i..i + 16].as_ptr());
            let (cdf, gauss) = phi_and_gauss(v);
            _mm512_storeu_ps(a[i..i + 16].as_mut_ptr().cast(), _mm512_mul_ps(v, cdf));
            _mm512_storeu_ps(h[i..i + 16].as_mut_ptr(), slope(v, cdf, gauss));
        }
        n
    }
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

/// `out[i] = erf(x[i])`, vectorised; abs error ≤ 2e-7 against [`erf_f64`] (see the module doc).
pub fn erf_slice(x: &[f32], out: &mut [f32]) {
    simd::map1(x, out, erf8);
}

/// `erf(z) = z·P(z²)` for `|z| < 1` (the fit's constant term is `2/√π` to `f32` precision).
const ERF_SMALL: [f32; 7] = [
    std::f32::consts::FRAC_2_SQRT_PI,
    -0.37612626,
    0.11283597,
    -0.026854329,
    0.005189312,
    -0.0008018855,
    7.8824974e-05,
];
/// `ln erfc(a) = Q(a − ERFC_CENTER)` for `1 ≤ a < ERFC_ZERO`.
const ERFC_LOG: [f32; 9] = [
    -7.5415397,
    -5.2583737,
    -0.9422319,
    -0.011302198,
    0.0022733065,
    -0.000444126,
    8.204321e-05,
    -1.39396425e-05,
    1.6449659e-06,
];
/// Centre of the `ln erfc` fit on `[1, 3.92]`.
const ERFC_CENTER: f32 = 2.45;
/// Beyond this `erfc` is below 3e-8 and is taken as zero.
const ERFC_ZERO: f32 = 3.92;

/// Horner evaluation of `c[0] + c[1]·t + …`.
#[inline(always)]
fn horner(c: &[f32], t: f32x8) -> f32x8 {
    let mut p = f32x8::splat(c[c.len() - 1]);
    for &k in c[..c.len() - 1].iter().rev() {
        p = p.mul_add(t, f32x8::splat(k));
    }
    p
}

/// `(erf(z) for |z| < 1, erfc(|z|) for |z| ≥ 1, mask |z| < 1)`, lane-wise.
#[inline(always)]
fn erf_parts(z: f32x8) -> (f32x8, f32x8, f32x8) {
    let a = z.abs();
    let small = z * horner(&ERF_SMALL, z * z);
    let t = a.min(f32x8::splat(ERFC_ZERO)) - f32x8::splat(ERFC_CENTER);
    let tail = exp8(horner(&ERFC_LOG, t));
    let tail = a.cmp_ge(f32x8::splat(ERFC_ZERO)).blend(f32x8::ZERO, tail);
    (small, tail, a.cmp_lt(f32x8::ONE))
}

/// Vectorised `erf`.
#[inline(always)]
fn erf8(z: f32x8) -> f32x8 {
    let (small, tail, is_small) = erf_parts(z);
    let big = (f32x8::ONE - tail).copysign(z);
    is_small.blend(small, big)
}

/// Abramowitz & Stegun 7.1.26: `erfc(z) ≈ t·(a₁ + a₂t + a₃t² + a₄t³ + a₅t⁴)·e^{−z²}`, `t = 1/(1 + p·z)`.
const AS_P: f32 = 0.327_591_1;
const AS_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152, 1.061_405_4];

/// `(Φ(x), exp(−x²/2))` lane-wise: the standard normal CDF and the unnormalised density, with one
/// `exp` for both (see the module doc).
#[inline(always)]
fn phi_and_gauss8(x: f32x8) -> (f32x8, f32x8) {
    let z = x.abs() * f32x8::splat(FRAC_1_SQRT_2);
    let t = f32x8::ONE / z.mul_add(f32x8::splat(AS_P), f32x8::ONE);
    let gauss = exp8(f32x8::splat(-0.5) * x * x);
    let half_erfc = f32x8::splat(0.5) * t * horner(&AS_A, t) * gauss;
    (x.cmp_lt(f32x8::ZERO).blend(half_erfc, f32x8::ONE - half_erfc), gauss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised `erf` on a dense grid over [−6, 6]: abs error ≤ 2e-7.
    #[test]
    fn erf_slice_is_within_2e_7() {
        let x: Vec<f32> = (-600_000..=600_000).map(|i| i as f32 * 1e-5).collect();
        let mut y = vec![0.0; x.len()];
        erf_slice(&x, &mut y);
        let worst = x.iter().zip(&y).map(|(&v, &e)| (e as f64 - erf_f64(v as f64)).abs()).fold(0.0f64, f64::max);
        assert!(worst <= 2e-7, "max abs error {worst:e}");
    }
}
