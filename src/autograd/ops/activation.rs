//! Activations: `gelu_erf`, `relu`, and `softmax` over the last dimension.
//!
//! - `gelu_erf(x) = x·Φ(x)` (exact erf form, timm's default); `dx = dy·(Φ(x) + x·φ(x))`.
//! - `relu(x) = max(x, 0)`; `dx = dy·[x > 0]`.
//! - `softmax(x)_j = exp(x_j − max) / Σ_k exp(x_k − max)` per row of the last dimension;
//!   `dx = y ⊙ (dy − ⟨dy, y⟩)` per row (the output `y` is saved for the backward pass).

use crate::autograd::Var;
use crate::kernels::{activation, softmax};
use crate::{par, Error, Result, Tensor};

/// Elements per parallel chunk of the GELU kernels. Each value is computed on its own, so the
/// result does not depend on the chunking or the thread count.
const GELU_CHUNK: usize = 1 << 14;

/// A new buffer `out` with `f(x_chunk, out_chunk)` over matching chunks, in parallel
/// (`par::threads`).
fn chunked(x: &[f32], f: impl Fn(&[f32], &mut [f32]) + Sync + Send) -> Vec<f32> {
    par::build(x.len(), GELU_CHUNK, |i, oc| f(&x[i * GELU_CHUNK..i * GELU_CHUNK + oc.len()], oc))
}

impl<'t> Var<'t> {
    /// Exact GELU, `x·Φ(x)`. See the module docs.
    pub fn gelu_erf(&self) -> Result<Var<'t>> {
        let x = self.value().clone();
        let y = chunked(x.data(), activation::gelu_erf);
        let xn = self.node();
        let value = Tensor::from_parts(x.shape().to_vec(), y);
        self.tape().op("gelu_erf", value, &[self], move |dy, g| {
            g.add_with(xn, || {
                let (xd, dyd) = (x.data(), dy.data());
                let dx = par::build(x.numel(), GELU_CHUNK, |i, dc| {
                    let r = i * GELU_CHUNK..i * GELU_CHUNK + dc.len();
                    activation::gelu_erf_backward(&xd[r.clone()], &dyd[r], dc)
                });
                Ok(Tensor::from_parts(x.shape().to_vec(), dx))
            })
        })
    }

    /// `max(x, 0)`. See the module docs.
    pub fn relu(&self) -> Result<Var<'t>> {
        let x = self.value().clone();
        let value = Tensor::from_parts(x.shape().to_vec(), x.data().iter().map(|&v| v.max(0.0)).collect());
        let xn = self.node();
        self.tape().op("relu", value, &[self], move |dy, g| {
            g.add_with(xn, || {
                let dx = x.data().iter().zip(dy.data()).map(|(&v, &d)| if v > 0.0 { d } else { 0.0 }).collect();
                Ok(Tensor::from_parts(x.shape().to_vec(), dx))
            })
        })
    }

    /// Softmax over the last dimension. See the module docs.
    pub fn softmax(&self) -> Result<Var<'t>> {
        if self.value().rank() == 0 {
            return Err(Error::bad_shape("softmax", self.shape(), "needs at least one dimension"));
        }
        let (_, n) = self.value().rows_cols();
        let mut y = self.value().clone();
        softmax::softmax_rows(y.data_mut(), n);
        let (xn, saved) = (self.node(), y.clone());
        self.tape().op("softmax", y, &[self], move |dy, g| {
            g.add_with(xn, || {
                let mut dx = par::zeros(saved.numel());
                softmax::softmax_backward_rows(saved.data(), dy.data(), &mut dx, n);
                Ok(Tensor::from_parts(saved.shape().to_vec(), dx))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::ops::testutil::{check, rand_t};
    use crate::autograd::Tape;
    use crate::kernels::activation;
    use crate::Tensor;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn activation_gradcheck(dims in proptest::collection::vec(1usize..6, 1..4), seed in 0u64..1000) {
            let x = rand_t(&dims, seed);
            check(|_, v| v[0].gelu_erf(), std::slice::from_ref(&x));
            check(|_, v| v[0].softmax(), std::slice::from_ref(&x));
            // relu's kink: keep values at least 2·step away from 0 so the differences see one side.
            let x = Tensor::new(x.shape(), x.data().iter().map(|&v| if v.abs() < 0.05 { 0.5 } else { v }).collect()).unwrap();
            check(|_, v| v[0].relu(), &[x]);
        }
    }

    #[test]
    fn chunked_gelu_matches_the_scalar_kernel() {
        // Several parallel chunks and a ragged tail give exactly what one call on the whole
        // slice gives (the chunk length is a multiple of any SIMD width).
        let n = 3 * super::GELU_CHUNK + 5;
        let x = rand_t(&[n], 9);
        let tape = Tape::new();
        let xv = tape.var(x.clone());
        let y = xv.gelu_erf().unwrap();
        let mut want = vec![0.0; n];
        activation::gelu_erf(x.data(), &mut want);
        assert_eq!(y.value().data(), &want[..]);
        let g = y.sum().unwrap().backward().unwrap();
        let mut dwant = vec![0.0; n];
        activation::gelu_erf_backward(x.data(), &vec![1.0; n], &mut dwant);
        assert_eq!(g.get(&xv).unwrap().data(), &dwant[..]);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_survive_large_logits() {
        let tape = Tape::new();
        let x = Tensor::new(&[2, 3], vec![1000., 1001., 1002., -5., 0., 5.]).unwrap();
        let y = tape.var(x).softmax().unwrap();
        assert!(y.value().all_finite());
        for row in y.value().data().chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(tape.var(Tensor::scalar(1.0)).softmax().is_err());
    }
}
