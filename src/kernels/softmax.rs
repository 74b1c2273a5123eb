//! Row softmax, numerically stable (subtract the row max), and its backward
//! `dx = y ⊙ (dy − ⟨dy, y⟩)` per row.

/// In place: each row of `x` (length `n`) becomes its softmax.
pub fn softmax_rows(x: &mut [f32], n: usize) {
    softmax_rows_scalar(x, n)
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
    softmax_backward_rows_scalar(y, dy, dx, n)
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
