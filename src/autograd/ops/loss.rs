//! Cross-entropy of logits against class labels, with optional label smoothing.
//!
//! For logits `x: [N, K]`, labels `y_n < K` and smoothing `ε ∈ [0, 1)`, the target distribution is
//! `t_n = (1 − ε)·onehot(y_n) + ε/K` and the loss is the mean
//! `L = (1/N) Σ_n −Σ_k t_nk · log p_nk`, with `log p_nk = x_nk − logsumexp_k(x_n)` computed stably
//! (the row max subtracted first).
//!
//! Backward: `dx_nk = g·(p_nk − t_nk)/N`, `g` the gradient arriving at the loss (1 when it is the
//! final loss; the softmax `p` is saved).

use crate::autograd::Var;
use crate::{Error, Result, Tensor};

impl<'t> Var<'t> {
    /// Mean cross-entropy of logits `[N, K]` against `labels` (`N` of them, each `< K`), with
    /// label smoothing `label_smoothing ∈ [0, 1)`; a scalar. See the module docs.
    pub fn cross_entropy(&self, labels: &[usize], label_smoothing: f32) -> Result<Var<'t>> {
        let [n, k] = self.value().dims::<2>("cross_entropy")?;
        if n == 0 || k == 0 {
            return Err(Error::bad_shape("cross_entropy", self.shape(), "needs at least one row and one class"));
        }
        if labels.len() != n {
            return Err(Error::shape("cross_entropy (labels)", &[n], &[labels.len()]));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
            return Err(Error::invalid("cross_entropy", format!("label {bad} is out of range for {k} classes")));
        }
        let eps = label_smoothing;
        if !(0.0..1.0).contains(&eps) {
            return Err(Error::invalid("cross_entropy", format!("label smoothing must be in [0, 1), got {eps}")));
        }
        let (on, off) = (1.0 - eps as f64 + eps as f64 / k as f64, eps as f64 / k as f64);
        let mut probs = vec![0.0f32; n * k];
        let mut total = 0.0f64;
        for ((row, prow), &label) in self.value().data().chunks_exact(k).zip(probs.chunks_exact_mut(k)).zip(labels) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            let lse = max + sum.ln();
            for (j, (p, &v)) in prow.iter_mut().zip(row).enumerate() {
                let logp = v as f64 - lse;
                *p = logp.exp() as f32;
                total -= if j == label { on } else { off } * logp;
            }
        }
        let loss = Tensor::scalar((total / n as f64) as f32);
        let (xn, labels) = (self.node(), labels.to_vec());
        self.tape().op("cross_entropy", loss, &[self], move |dy, g| {
            g.add_with(xn, || {
                let s = dy.data()[0] / n as f32;
                let (on, off) = (on as f32, off as f32);
                let mut dx = probs;
                for (row, &label) in dx.chunks_exact_mut(k).zip(&labels) {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = s * (*v - if j == label { on } else { off });
                    }
                }
                Ok(Tensor::from_parts(vec![n, k], dx))
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
        fn cross_entropy_gradcheck(n in 1usize..6, k in 1usize..7, labels in proptest::collection::vec(0usize..7, 6), eps in prop_oneof![Just(0.0f32), 0.0f32..0.5], seed in 0u64..1000) {
            let labels: Vec<usize> = labels[..n].iter().map(|l| l % k).collect();
            let x = rand_t(&[n, k], seed);
            check(|_, v| v[0].cross_entropy(&labels, eps), &[x]);
        }
    }

    #[test]
    fn matches_hand_computed_values_and_is_stable() {
        let tape = Tape::new();
        // Uniform logits: loss = ln K whatever the smoothing.
        let l = tape.var(Tensor::zeros(&[2, 4])).cross_entropy(&[1, 3], 0.1).unwrap();
        assert!((l.value().data()[0] - 4f32.ln()).abs() < 1e-6);
        // Huge logits stay finite; a confident correct prediction has ~0 loss.
        let x = Tensor::new(&[1, 3], vec![1e4, 0.0, -1e4]).unwrap();
        let l = tape.var(x).cross_entropy(&[0], 0.0).unwrap();
        assert!(l.value().data()[0].abs() < 1e-6);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let tape = Tape::new();
        let x = tape.var(rand_t(&[2, 3], 1));
        assert!(matches!(x.cross_entropy(&[0, 3], 0.0), Err(Error::InvalidArgument { .. })));
        assert!(matches!(x.cross_entropy(&[0], 0.0), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(x.cross_entropy(&[0, 1], 1.0), Err(Error::InvalidArgument { .. })));
        assert!(tape.var(rand_t(&[2, 3, 1], 1)).cross_entropy(&[0, 1], 0.0).is_err());
    }
}
