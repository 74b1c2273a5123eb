//! Row softmax, numerically stable (subtract the row max), and its backward
//! `dx = y ⊙ (dy − ⟨dy, y⟩)` per row.
//!
//! The fast kernels use a vectorised `exp` of our own (Cody–Waite reduction and a degree-7
//! polynomial, relative error ≤ ~2e-7), eight lanes at a time; a row's tail is one window over
//! its last eight values whose lanes already covered by the full chunks are masked out of the
//! max and the sum (rows shorter than eight are padded with `−∞`). Values differ from the scalar twins by
//! ≤ 1e-6. Rows are independent and large inputs (≥ 64K values) are split across
//! [`crate::par`] workers at row boundaries, so results do not depend on the thread count.

use super::simd::{self, exp8, load, load_last, load_partial, store, store_last, W};
use crate::par;
use wide::f32x8;

/// In place: each row of `x` (length `n`) becomes its softmax.
pub fn softmax_rows(x: &mut [f32], n: usize) {
    if n == 0 {
        return;
    }
    let rows = x.len() / n;
    let x = &mut x[..rows * n];
    let chunk = simd::rows_chunk_len(rows, n);
    par::for_each_chunk_mut(x, chunk, |_, xs| {
        for rows in xs.chunks_mut(GROUP * n) {
            softmax_group(rows, n);
        }
    });
}

/// Rows handled together, each pass over all of them before the next pass: a row alone is a
/// chain of dependent steps (max, its horizontal reduction, `exp`, the sum's reduction, the
/// division), and interleaving rows lets the CPU overlap their latencies.
const GROUP: usize = 4;

/// Up to [`GROUP`] rows of length `n`, in place: max, then `exp(x − max)` and its sum, then
/// scaling by `1/sum`. A tail after the full chunks is one window over the last eight values,
/// computed from the input before the chunks are overwritten and stored after them (its
/// overlap with the last chunk holds the same values); only its new lanes count in the max
/// and the sum.
fn softmax_group(rows: &mut [f32], n: usize) {
    if n < W {
        for row in rows.chunks_exact_mut(n) {
            let mut v = [f32::NEG_INFINITY; W];
            v[..n].copy_from_slice(row);
            softmax_short(&mut v);
            row.copy_from_slice(&v[..n]);
        }
        return;
    }
    let split = n / W * W;
    let lanes = (split < n).then(|| simd::tail_lanes(n));
    let (mut tail, mut max, mut sum) = ([f32x8::ZERO; GROUP], [f32x8::ZERO; GROUP], [f32x8::ZERO; GROUP]);
    for (i, row) in rows.chunks_exact(n).enumerate() {
        let mut mx = f32x8::splat(f32::NEG_INFINITY);
        for c in row[..split].chunks_exact(W) {
            mx = mx.max(load(c));
        }
        if lanes.is_some() {
            tail[i] = load_last(row);
            mx = mx.max(tail[i]);
        }
        max[i] = f32x8::splat(mx.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max));
    }
    for (i, row) in rows.chunks_exact_mut(n).enumerate() {
        if let Some(l) = lanes {
            tail[i] = exp8(tail[i] - max[i]);
            sum[i] = l.blend(tail[i], f32x8::ZERO);
        }
        for c in row[..split].chunks_exact_mut(W) {
            let e = exp8(load(c) - max[i]);
            sum[i] += e;
            store(e, c);
        }
    }
    for (i, row) in rows.chunks_exact_mut(n).enumerate() {
        let inv = f32x8::splat(1.0 / sum[i].reduce_add());
        for c in row[..split].chunks_exact_mut(W) {
            store(load(c) * inv, c);
        }
        if lanes.is_some() {
            store_last(tail[i] * inv, row);
        }
    }
}

/// Softmax of one 8-lane row padded with `−∞` (rows shorter than eight).
fn softmax_short(v: &mut [f32; W]) {
    let x = load(v);
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
    let e = exp8(x - f32x8::splat(max));
    store(e * f32x8::splat(1.0 / e.reduce_add()), v);
}

/// Scalar twin of [`softmax_rows`].
pub fn softmax_rows_scalar(x: &mut [f32], n: usize) {
    if n == 0 {
        return;
    }
    for row in x.chunks_exact_mut(n) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// `dx = y ⊙ (dy − rowdot(dy, y))` for softmax outputs `y`, rows of length `n`.
pub fn softmax_backward_rows(y: &[f32], dy: &[f32], dx: &mut [f32], n: usize) {
    if n == 0 {
        return;
    }
    assert!(y.len() == dy.len() && y.len() == dx.len());
    let rows = y.len() / n;
    let chunk = simd::rows_chunk_len(rows, n);
    par::for_each_chunk_mut(&mut dx[..rows * n], chunk, |i, dxs| {
        let r = i * chunk..i * chunk + dxs.len();
        for ((yr, dyr), dxr) in y[r.clone()].chunks_exact(n).zip(dy[r].chunks_exact(n)).zip(dxs.chunks_exact_mut(n)) {
            let mut acc = f32x8::ZERO;
            let split = n / W * W;
            for (a, b) in yr[..split].chunks_exact(W).zip(dyr[..split].chunks_exact(W)) {
                acc = load(a).mul_add(load(b), acc);
            }
            if n < W {
                acc = load_partial(yr, 0.0).mul_add(load_partial(dyr, 0.0), acc);
            } else if split < n {
                let lanes = simd::tail_lanes(n);
                acc = lanes.blend(load_last(yr), f32x8::ZERO).mul_add(load_last(dyr), acc);
            }
            let d = f32x8::splat(acc.reduce_add());
            simd::map2(yr, dyr, dxr, |a, b| a * (b - d));
        }
    });
}
/// Scalar twin of [`softmax_backward_rows`].
pub fn softmax_backward_rows_scalar(y: &[f32], dy: &[f32], dx: &mut [f32], n: usize) {
    if n == 0 {
        return;
    }
    for ((yr, dyr), dxr) in y.chunks_exact(n).zip(dy.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
        let d: f32 = yr.iter().zip(dyr).map(|(a, b)| a * b).sum();
        for ((o, &a), &b) in dxr.iter_mut().zip(yr).zip(dyr) {
            *o = a * (b - d);
        }
    }
}
