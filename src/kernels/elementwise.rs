//! Elementwise kernels and reductions on slices.
//!
//! Each public kernel has a `*_scalar` twin: the plain loop, used as the test oracle.
//! (The fast versions use `wide::f32x8`; see the property tests in `tests/kernels.rs`.)

/// `out[i] = a[i] + b[i]`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    add_scalar(a, b, out)
}
/// Scalar twin of [`add`].
pub fn add_scalar(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == b.len() && a.len() == out.len());
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// `out[i] = a[i] * b[i]`.
pub fn mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    mul_scalar(a, b, out)
}
/// Scalar twin of [`mul`].
pub fn mul_scalar(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == b.len() && a.len() == out.len());
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x * y;
    }
}

/// `x[i] *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    scale_scalar(x, s)
}
/// Scalar twin of [`scale`].
pub fn scale_scalar(x: &mut [f32], s: f32) {
    for v in x {
        *v *= s;
    }
}

/// `y[i] += alpha * x[i]`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_scalar(alpha, x, y)
}
/// Scalar twin of [`axpy`].
pub fn axpy_scalar(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (v, a) in y.iter_mut().zip(x) {
        *v += alpha * a;
    }
}

/// Sum of the values.
pub fn sum(x: &[f32]) -> f32 {
    sum_scalar(x)
}
/// Scalar twin of [`sum`] (accumulates in `f64`).
pub fn sum_scalar(x: &[f32]) -> f32 {
    x.iter().map(|&v| v as f64).sum::<f64>() as f32
}

/// Dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_scalar(a, b)
}
/// Scalar twin of [`dot`] (accumulates in `f64`).
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() as f32
}

/// Column sums of a row-major `rows × cols` matrix, added into `out[cols]` (bias gradients).
pub fn sum_rows_into(x: &[f32], cols: usize, out: &mut [f32]) {
    sum_rows_into_scalar(x, cols, out)
}
/// Scalar twin of [`sum_rows_into`].
pub fn sum_rows_into_scalar(x: &[f32], cols: usize, out: &mut [f32]) {
    assert_eq!(out.len(), cols);
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact(cols) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}
