//! Stochastic regularisers: `dropout` (per element) and `drop_path` (per sample, "stochastic
//! depth"). Both are the identity on an evaluation tape or with `p = 0`; otherwise they draw from
//! the tape's seeded RNG.
//!
//! - `dropout(p)`: `y = x ⊙ m`, with `m_i = 1/(1 − p)` with probability `1 − p`, else 0, drawn
//!   independently per element (inverted scaling keeps `E[y] = x`).
//! - `drop_path(p)`: the same, but one draw per index of dimension 0 (one per sample), shared by
//!   all other elements of that sample: a residual branch is kept or dropped as a whole.
//!
//! Backward: `dx = dy ⊙ m`, with the same mask.

use crate::autograd::Var;
use crate::{Error, Result, Tensor};
use rand::Rng;

/// Errors unless `p ∈ [0, 1)`.
fn check_rate(op: &'static str, p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid(op, format!("the drop probability must be in [0, 1), got {p}")));
    }
    Ok(())
}

impl<'t> Var<'t> {
    /// Elementwise dropout with drop probability `p ∈ [0, 1)`. See the module docs.
    pub fn dropout(&self, p: f32) -> Result<Var<'t>> {
        check_rate("dropout", p)?;
        if !self.tape().is_train() || p == 0.0 {
            return Ok(self.clone());
        }
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> = {
            let mut rng = self.tape().rng();
            (0..self.value().numel()).map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep }).collect()
        };
        self.apply_mask("dropout", mask, 1)
    }

    /// Drop-path (stochastic depth) with drop probability `p ∈ [0, 1)`: one draw per sample along
    /// dimension 0. See the module docs.
    pub fn drop_path(&self, p: f32) -> Result<Var<'t>> {
        check_rate("drop_path", p)?;
        if self.value().rank() == 0 {
            return Err(Error::bad_shape("drop_path", self.shape(), "needs a batch dimension"));
        }
        if !self.tape().is_train() || p == 0.0 {
            return Ok(self.clone());
        }
        let keep = 1.0 / (1.0 - p);
        let b = self.shape()[0];
        let mask: Vec<f32> = {
            let mut rng = self.tape().rng();
            (0..b).map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep }).collect()
        };
        let per = self.value().numel().checked_div(b).unwrap_or(0);
        self.apply_mask("drop_path", mask, per)
    }

    /// `y = x ⊙ m`, where `mask[i]` applies to `x[i·per .. (i+1)·per]`; backward `dx = dy ⊙ m`.
    fn apply_mask(&self, op: &'static str, mask: Vec<f32>, per: usize) -> Result<Var<'t>> {
        let masked = move |x: &Tensor| {
            let mut out = x.data().to_vec();
            if per > 0 {
                for (chunk, &m) in out.chunks_exact_mut(per).zip(&mask) {
                    chunk.iter_mut().for_each(|v| *v *= m);
                }
            }
            Tensor::from_parts(x.shape().to_vec(), out)
        };
        let value = masked(self.value());
        let xn = self.node();
        self.tape().op(op, value, &[self], move |dy, g| g.add_with(xn, || Ok(masked(dy))))
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::ops::testutil::{check, rand_t};
    use crate::autograd::Tape;
    use crate::{Error, Tensor};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn eval_mode_is_identity_and_gradchecks(dims in proptest::collection::vec(1usize..5, 1..4), p in 0.0f32..0.9, seed in 0u64..1000) {
            // gradcheck runs on an evaluation tape: both ops are the identity there.
            let x = rand_t(&dims, seed);
            check(|_, v| v[0].dropout(p)?.drop_path(p), &[x]);
        }

        #[test]
        fn train_mode_backward_uses_the_forward_mask(b in 1usize..6, n in 1usize..40, p in 0.05f32..0.9, path in any::<bool>(), seed in 0u64..1000) {
            let tape = Tape::new().with_seed(seed);
            let x = tape.var(Tensor::full(&[b, n], 1.0));
            let y = if path { x.drop_path(p) } else { x.dropout(p) }.unwrap();
            let g = y.sum().unwrap().backward().unwrap();
            let gx = g.get(&x).unwrap();
            // With x = 1, y is the mask itself: the gradient must be the same mask.
            prop_assert_eq!(gx.data(), y.value().data());
            let keep = 1.0 / (1.0 - p);
            prop_assert!(y.value().data().iter().all(|&m| m == 0.0 || m == keep));
            if path {
                for row in y.value().data().chunks(n) {
                    prop_assert!(row.iter().all(|&m| m == row[0]), "drop_path mask not shared per sample");
                }
            }
        }
    }

    #[test]
    fn expectation_is_preserved() {
        for (p, path) in [(0.3f32, false), (0.5, false), (0.2, true), (0.6, true)] {
            let tape = Tape::new().with_seed(7);
            let x = tape.constant(Tensor::full(&[20000, 4], 2.0));
            let y = if path { x.drop_path(p) } else { x.dropout(p) }.unwrap();
            let mean = y.value().data().iter().map(|&v| v as f64).sum::<f64>() / 80000.0;
            // Standard error of the mean ≤ 2·√(p/(1−p))/√20000 < 0.02 here.
            assert!((mean - 2.0).abs() < 0.06, "p {p} path {path}: mean {mean}");
            let dropped = y.value().data().iter().filter(|&&v| v == 0.0).count() as f64 / 80000.0;
            assert!((dropped - p as f64).abs() < 0.02, "p {p}: dropped {dropped}");
        }
    }

    #[test]
    fn identity_on_eval_tape_or_zero_rate_and_rate_checked() {
        let x = rand_t(&[3, 4], 1);
        let tape = Tape::eval();
        let v = tape.var(x.clone());
        assert!(v.dropout(0.5).unwrap().value().shares_storage(&x));
        assert!(v.drop_path(0.5).unwrap().value().shares_storage(&x));
        let tape = Tape::new();
        let v = tape.var(x.clone());
        assert!(v.dropout(0.0).unwrap().value().shares_storage(&x));
        for p in [-0.1, 1.0, f32::NAN] {
            assert!(matches!(v.dropout(p), Err(Error::InvalidArgument { op: "dropout", .. })));
            assert!(matches!(v.drop_path(p), Err(Error::InvalidArgument { op: "drop_path", .. })));
        }
    }

    #[test]
    fn same_seed_same_mask() {
        let run = || {
            let tape = Tape::new().with_seed(3);
            tape.constant(Tensor::full(&[8, 5], 1.0)).dropout(0.5).unwrap().value().clone()
        };
        assert_eq!(run(), run());
    }
}
