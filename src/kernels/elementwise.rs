//! Elementwise kernels and reductions on slices.
//!
//! Each public kernel has a `*_scalar` twin: the plain loop, used as the test oracle.
//! The fast versions use `wide::f32x8`; see the property tests in `tests/kernels.rs`.
//!
//! `add`, `mul`, `scale`, `axpy` and `sum_rows_into` give bit-for-bit the results of their twins
//! (same operations, same order per value; `axpy` deliberately does not fuse its multiply-add).
//! `sum` and `dot` add in `f32` within blocks of [`BLOCK`] values (32 lanes, then a fixed
//! reduction tree), and add the block sums in `f64`: error ≤ 2e-6·Σ|xᵢ| against the `f64` twins.
//! Large inputs (≥ 64K values) of the elementwise kernels and `sum_rows_into` are split across
//! [`crate::par`] workers; `sum` and `dot` (bandwidth-bound) stay on the calling thread.

use super::simd::{self, load, W};
use crate::par;
use wide::f32x8;

/// Values per `f32` block in [`sum`] and [`dot`]; the block sums are added in `f64`.
pub const BLOCK: usize = 256;

/// `out[i] = a[i] + b[i]`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == b.len() && a.len() == out.len());
    let chunk = simd::flat_chunk_len(out.len());
    par::for_each_chunk_mut(out, chunk, |i, o| {
        let r = i * chunk..i * chunk + o.len();
        simd::map2(&a[r.clone()], &b[r], o, |x, y| x + y);
    });
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
    assert!(a.len() == b.len() && a.len() == out.len());
    let chunk = simd::flat_chunk_len(out.len());
    par::for_each_chunk_mut(out, chunk, |i, o| {
        let r = i * chunk..i * chunk + o.len();
        simd::map2(&a[r.clone()], &b[r], o, |x, y| x * y);
    });
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
    let chunk = simd::flat_chunk_len(x.len());
    let sv = f32x8::splat(s);
    par::for_each_chunk_mut(x, chunk, |_, xs| {
        let mut c = xs.chunks_exact_mut(W);
        for v in &mut c {
            simd::store(load(v) * sv, v);
        }
        for v in c.into_remainder() {
            *v *= s;
        }
    });
}
/// Scalar twin of [`scale`].
pub fn scale_scalar(x: &mut [f32], s: f32) {
    for v in x {
        *v *= s;
    }
}

/// `y[i] += alpha * x[i]`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    let chunk = simd::flat_chunk_len(y.len());
    let av = f32x8::splat(alpha);
    par::for_each_chunk_mut(y, chunk, |i, ys| {
        let xs = &x[i * chunk..i * chunk + ys.len()];
        let mut yc = ys.chunks_exact_mut(W);
        let mut xc = xs.chunks_exact(W);
        for (yv, xv) in (&mut yc).zip(&mut xc) {
            // Multiply, then add: two roundings, exactly as the scalar twin.
            simd::store(load(yv) + av * load(xv), yv);
        }
        for (v, a) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
            *v += alpha * a;
        }
    });
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
    x.chunks(BLOCK).map(|b| block_dot(b, None) as f64).sum::<f64>() as f32
}
/// Scalar twin of [`sum`] (accumulates in `f64`).
pub fn sum_scalar(x: &[f32]) -> f32 {
    x.iter().map(|&v| v as f64).sum::<f64>() as f32
}

/// Dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.chunks(BLOCK).zip(b.chunks(BLOCK)).map(|(x, y)| block_dot(x, Some(y)) as f64).sum::<f64>() as f32
}
/// Scalar twin of [`dot`] (accumulates in `f64`).
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() as f32
}

/// Column sums of a row-major `rows × cols` matrix, added into `out[cols]` (bias gradients).
pub fn sum_rows_into(x: &[f32], cols: usize, out: &mut [f32]) {
    assert_eq!(out.len(), cols);
    if cols == 0 {
        return;
    }
    let rows = x.len() / cols;
    let x = &x[..rows * cols];
    // Split the columns (in multiples of 8) across threads; every column still adds its rows
    // in order, one addition per row, so the result is the scalar twin's, bit for bit.
    let t = par::threads();
    let chunk = if rows * cols < simd::PAR_MIN_ELEMS || t <= 1 { cols } else { cols.div_ceil(t).next_multiple_of(W) };
    par::for_each_chunk_mut(out, chunk, |i, o| sum_rows_strided(&x[i * chunk..], rows, cols, o));
}

/// `out[c] += Σ_r x[r·ld + c]` for `c < out.len()`, on the calling thread: the column sums of
/// a block of a row-major matrix whose rows are `ld` apart, each column adding its rows in order.
/// Up to 64 columns at a time are summed in registers over all rows.
pub(crate) fn sum_rows_strided(x: &[f32], rows: usize, ld: usize, out: &mut [f32]) {
    if rows == 0 {
        return;
    }
    for (b, ob) in out.chunks_mut(8 * W).enumerate() {
        let xb = &x[b * 8 * W..];
        match ob.len() / W {
            8 => sum_cols::<8>(xb, rows, ld, ob),
            7 => sum_cols::<7>(xb, rows, ld, ob),
            6 => sum_cols::<6>(xb, rows, ld, ob),
            5 => sum_cols::<5>(xb, rows, ld, ob),
            4 => sum_cols::<4>(xb, rows, ld, ob),
            3 => sum_cols::<3>(xb, rows, ld, ob),
            2 => sum_cols::<2>(xb, rows, ld, ob),
            1 => sum_cols::<1>(xb, rows, ld, ob),
            _ => sum_cols::<0>(xb, rows, ld, ob),
        }
    }
}

/// [`sum_rows_strided`] for `out.len()` in `N·8..N·8 + 8`: `N` vectors in registers, the rest
/// (fewer than 8 columns) one by one.
#[inline(always)]
fn sum_cols<const N: usize>(x: &[f32], rows: usize, ld: usize, out: &mut [f32]) {
    let mut acc: [f32x8; N] = std::array::from_fn(|j| load(&out[j * W..]));
    let (head, tail) = out.split_at_mut(N * W);
    for r in 0..rows {
        let row = &x[r * ld..r * ld + N * W + tail.len()];
        for (j, a) in acc.iter_mut().enumerate() {
            *a += load(&row[j * W..]);
        }
        for (t, v) in tail.iter_mut().zip(&row[N * W..]) {
            *t += v;
        }
    }
    for (j, a) in acc.iter().enumerate() {
        simd::store(*a, &mut head[j * W..]);
    }
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

/// Sum of `x` (or of `x ⊙ y`) for one block of at most [`BLOCK`] values, in `f32`:
/// four 8-lane accumulators, combined in a fixed order, then a scalar tail.
#[inline]
fn block_dot(x: &[f32], y: Option<&[f32]>) -> f32 {
    let mut acc = [f32x8::ZERO; 4];
    let n4 = x.len() / (4 * W) * (4 * W);
    let n1 = x.len() / W * W;
    match y {
        None => {
            for c in x[..n4].chunks_exact(4 * W) {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a += load(&c[j * W..]);
                }
            }
            for c in x[n4..n1].chunks_exact(W) {
                acc[0] += load(c);
            }
        }
        Some(y) => {
            for (c, d) in x[..n4].chunks_exact(4 * W).zip(y[..n4].chunks_exact(4 * W)) {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = load(&c[j * W..]).mul_add(load(&d[j * W..]), *a);
                }
            }
            for (c, d) in x[n4..n1].chunks_exact(W).zip(y[n4..n1].chunks_exact(W)) {
                acc[0] = load(c).mul_add(load(d), acc[0]);
            }
        }
    }
    let mut total = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
    match y {
        None => total += x[n1..].iter().sum::<f32>(),
        Some(y) => total += x[n1..].iter().zip(&y[n1..]).map(|(a, b)| a * b).sum::<f32>(),
    }
    total
}
