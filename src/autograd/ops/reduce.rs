//! Reductions: `sum` and `mean` (to a scalar), `sum_dim` and `mean_dim` (over one dimension,
//! which is removed from the shape).
//!
//! With the input seen as `[outer, n, inner]` around the reduced dimension (`n` long):
//! - `sum_dim`: `y[o, i] = Σ_k x[o, k, i]`; backward `dx[o, k, i] = dy[o, i]` (a broadcast),
//! - `mean_dim`: `y = sum_dim / n`; backward `dx[o, k, i] = dy[o, i] / n`,
//! - `sum`: `y = Σ x`, `dx = dy` everywhere; `mean`: `y = Σ x / numel`, `dx = dy / numel`.
//!
//! Token mean pooling in a ViT head is `x.mean_dim(1)` on `[B, T, C]`, giving `[B, C]`.

use crate::autograd::Var;
use crate::kernels::elementwise;
use crate::{Error, Result, Tensor};

/// `(outer, n, inner)` of `shape` around dimension `dim`.
pub(crate) fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    let outer = shape[..dim].iter().product();
    let inner = shape[dim + 1..].iter().product();
    (outer, shape[dim], inner)
}

impl<'t> Var<'t> {
    /// Sum of all elements, a scalar. Backward: `dx = dy` broadcast.
    pub fn sum(&self) -> Result<Var<'t>> {
        let s = elementwise::sum(self.value().data());
        let (xn, shape) = (self.node(), self.shape().to_vec());
        self.tape().op("sum", Tensor::scalar(s), &[self], move |dy, g| {
            g.add_with(xn, || Ok(Tensor::full(&shape, dy.data()[0])))
        })
    }

    /// Mean of all elements, a scalar. Backward: `dx = dy / numel` broadcast.
    /// The mean of an empty tensor is NaN, as in PyTorch.
    pub fn mean(&self) -> Result<Var<'t>> {
        let n = self.value().numel();
        let s = elementwise::sum(self.value().data()) / n as f32;
        let (xn, shape) = (self.node(), self.shape().to_vec());
        self.tape().op("mean", Tensor::scalar(s), &[self], move |dy, g| {
            g.add_with(xn, || Ok(Tensor::full(&shape, dy.data()[0] / n as f32)))
        })
    }

    /// Sum over dimension `dim`, which is removed: `[.., n, ..] → [.., ..]`.
    pub fn sum_dim(&self, dim: usize) -> Result<Var<'t>> {
        self.reduce_dim(dim, 1.0, "sum_dim")
    }

    /// Mean over dimension `dim`, which is removed: `[.., n, ..] → [.., ..]`
    /// (e.g. token mean pooling `[B, T, C] → [B, C]` with `dim = 1`).
    pub fn mean_dim(&self, dim: usize) -> Result<Var<'t>> {
        let n = self.shape().get(dim).copied().unwrap_or(1);
        self.reduce_dim(dim, 1.0 / n as f32, "mean_dim")
    }

    /// `alpha · Σ_dim x`, shared by `sum_dim` and `mean_dim`.
    fn reduce_dim(&self, dim: usize, alpha: f32, op: &'static str) -> Result<Var<'t>> {
        if dim >= self.value().rank() {
            return Err(Error::bad_shape(op, self.shape(), format!("dimension {dim} does not exist")));
        }
        let (outer, n, inner) = split_at_dim(self.shape(), dim);
        let x = self.value().data();
        let mut y = vec![0.0f32; outer * inner];
        for (o, yo) in y.chunks_exact_mut(inner.max(1)).enumerate() {
            for k in 0..n {
                let row = &x[(o * n + k) * inner..(o * n + k + 1) * inner];
                for (acc, &v) in yo.iter_mut().zip(row) {
                    *acc += v;
                }
            }
            elementwise::scale(yo, alpha);
        }
        let mut out_shape = self.shape().to_vec();
        out_shape.remove(dim);
        let (xn, in_shape) = (self.node(), self.shape().to_vec());
        let value = Tensor::from_parts(out_shape, y);
        self.tape().op(op, value, &[self], move |dy, g| {
            g.add_with(xn, || {
                let d = dy.data();
                let mut dx = vec![0.0f32; outer * n * inner];
                for (i, chunk) in dx.chunks_exact_mut(inner.max(1)).enumerate() {
                    let o = i / n;
                    for (v, &gv) in chunk.iter_mut().zip(&d[o * inner..(o + 1) * inner]) {
                        *v = alpha * gv;
                    }
                }
                Ok(Tensor::from_parts(in_shape, dx))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::ops::testutil::{check, rand_t};
    use crate::autograd::Tape;
    use crate::{Error, Tensor};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn reduce_gradcheck(dims in proptest::collection::vec(1usize..5, 1..4), d in 0usize..3, mean in any::<bool>(), seed in 0u64..1000) {
            let d = d % dims.len();
            let x = rand_t(&dims, seed);
            check(|_, v| if mean { v[0].mean_dim(d) } else { v[0].sum_dim(d) }, std::slice::from_ref(&x));
            check(|_, v| if mean { v[0].mean() } else { v[0].sum() }, &[x]);
        }
    }

    #[test]
    fn mean_dim_pools_tokens() {
        let tape = Tape::new();
        let x = Tensor::new(&[1, 2, 3], vec![1., 2., 3., 5., 6., 7.]).unwrap();
        let y = tape.var(x).mean_dim(1).unwrap();
        assert_eq!(y.shape(), &[1, 3]);
        assert_eq!(y.value().data(), &[3., 4., 5.]);
        let s = tape.var(Tensor::zeros(&[2, 3])).sum_dim(0).unwrap();
        assert_eq!(s.shape(), &[3]);
    }

    #[test]
    fn bad_dim_is_an_error() {
        let tape = Tape::new();
        let e = tape.var(Tensor::zeros(&[2, 3])).mean_dim(2).unwrap_err();
        assert!(matches!(e, Error::BadShape { op: "mean_dim", .. }), "{e}");
    }
}
