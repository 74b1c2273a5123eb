//! Linear layer: `y = x·Wᵀ + b` for `x: [.., I]`, `W: [O, I]`, `b: [O]`, `y: [.., O]`.
//!
//! Forward: one GEMM with `W` read through its transpose view (no copy), the bias added by the
//! GEMM's epilogue as each output tile is written. A frozen `W` (no gradient: a frozen backbone,
//! or any inference) is packed into the GEMM's panels once and kept with its tensor.
//!
//! Backward, with the rows of `x` flattened to `R = Π(leading dims)`:
//! - `dx = dy·W` (`[R, O]·[O, I]`),
//! - `dW = dyᵀ·x` (`[O, R]·[R, I]`; computed as `(xᵀ·dy)ᵀ` when `I ≥ O`, which is faster) —
//!   skipped entirely when `W` is frozen: this is where a parameter-efficient method saves the
//!   weight-gradient GEMM,
//! - `db = Σ_rows dy`.

use crate::autograd::Var;
use crate::kernels::{elementwise, gemm_new, Isa, MatRef, PackedB, Rhs};
use crate::{Error, Result, Tensor};
use std::sync::Arc;

impl<'t> Var<'t> {
    /// `x·Wᵀ + b`: see the module docs.
    pub fn linear(&self, w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Var<'t>> {
        let [o, i] = w.value().dims::<2>("linear (weight)")?;
        let (rows, xi) = self.value().rows_cols();
        if self.value().rank() == 0 || xi != i {
            return Err(Error::ShapeMismatch {
                op: "linear",
                expected: vec![usize::MAX, i],
                got: self.shape().to_vec(),
            });
        }
        if let Some(b) = b {
            b.value().expect_shape("linear (bias)", &[o])?;
        }
        let frozen = !w.requires_grad();
        let y = linear_forward(self.value(), w.value(), b.map(|b| b.value()), frozen);
        let mut inputs = vec![self, w];
        inputs.extend(b);
        let (x, wv) = (self.value().clone(), w.value().clone());
        let (xn, wn, bn) = (self.node(), w.node(), b.and_then(|b| b.node()));
        self.tape().op("linear", y, &inputs, move |dy, g| {
            let dyd = dy.data();
            g.add_with(bn, || Ok(bias_grad(dyd, o)))?;
            g.add_with(xn, || Ok(Tensor::from_parts(x.shape().to_vec(), input_grad(dyd, &wv, frozen))))?;
            g.add_with(wn, || Ok(weight_grad(dyd, x.data(), rows, o, i)))
        })
    }
}

/// `dW = dyᵀ·x` (`[O, I]`) for `dy: [R, O]`, `x: [R, I]`.
pub(crate) fn weight_grad(dy: &[f32], x: &[f32], rows: usize, o: usize, i: usize) -> Tensor {
    let (dyv, xv) = (MatRef::new(dy, rows, o), MatRef::new(x, rows, i));
    if i < o {
        return Tensor::from_parts(vec![o, i], gemm_new(1.0, dyv.t(), Rhs::View(xv), None));
    }
    // An input at least as wide as the output: `dWᵀ = xᵀ·dy` is the faster product (the
    // narrower operand is the one packed; 6,400 rows 256 → 64 on two threads: 150–165 → 205
    // GFLOP/s) and has the same values, transposed into place.
    let dwt = gemm_new(1.0, xv.t(), Rhs::View(dyv), None);
    Tensor::from_parts(vec![o, i], (0..o * i).map(|k| dwt[k % i * o + k / i]).collect())
}

/// `dx = dy·W` (`[R, I]`) for `dy: [R, O]`, `W: [O, I]`, with `W`'s kept panels if it is frozen.
pub(crate) fn input_grad(dy: &[f32], w: &Tensor, frozen: bool) -> Vec<f32> {
    let (o, i) = (w.shape()[0], w.shape()[1]);
    let packed = frozen.then(|| packed_weight(w, false)).flatten();
    gemm_new(1.0, MatRef::new(dy, dy.len() / o.max(1), o), rhs(&packed, MatRef::new(w.data(), o, i)), None)
}

/// `db = Σ_rows dy` (`[O]`).
pub(crate) fn bias_grad(dy: &[f32], o: usize) -> Tensor {
    let mut db = vec![0.0; o];
    elementwise::sum_rows_into(dy, o, &mut db);
    Tensor::from_parts(vec![o], db)
}

/// A frozen weight `W: [O, I]` as packed GEMM panels of `Wᵀ` (`transposed`, the forward's
/// operand) or of `W` (the input gradient's), packed on first use and kept with the weight's
/// storage until it changes (see `Tensor::derived`). `None` without a SIMD kernel.
pub(crate) fn packed_weight(w: &Tensor, transposed: bool) -> Option<Arc<PackedB>> {
    let isa = Isa::detect()?;
    let (o, i) = (w.shape()[0], w.shape()[1]);
    let key = (o as u64) << 36 ^ (i as u64) << 8 ^ (isa as u64) << 1 ^ transposed as u64;
    let p = w.derived(key, |d| {
        let v = MatRef::new(d, o, i);
        PackedB::new(isa, if transposed { v.t() } else { v })
    });
    let (k, n) = if transposed { (i, o) } else { (o, i) };
    (p.dims() == (k, n) && p.isa() == isa).then_some(p)
}

/// Packed panels if there are some, else the view.
pub(crate) fn rhs<'a>(packed: &'a Option<Arc<PackedB>>, view: MatRef<'a>) -> Rhs<'a> {
    packed.as_deref().map_or(Rhs::View(view), Rhs::Packed)
}

/// The forward computation on plain tensors (also used by inference paths): one GEMM whose
/// epilogue adds the bias; a frozen weight's panels are packed once and kept.
pub fn linear_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, frozen: bool) -> Tensor {
    let (o, i) = (w.shape()[0], w.shape()[1]);
    let (rows, _) = x.rows_cols();
    let packed = frozen.then(|| packed_weight(w, true)).flatten();
    let view = MatRef::new(w.data(), o, i).t();
    let y = gemm_new(1.0, MatRef::new(x.data(), rows, i), rhs(&packed, view), b.map(|b| b.data()));
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = o;
    Tensor::from_parts(shape, y)
}

#[cfg(test)]
mod tests {
    use crate::autograd::ops::testutil::rand_t;
    use crate::autograd::{gradcheck, GradcheckOptions, Tape};
    use crate::{Param, Tensor};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn linear_gradcheck(b in 1usize..3, t in 1usize..5, i in 1usize..9, o in 1usize..9, bias in any::<bool>(), seed in 0u64..1000) {
            let x = rand_t(&[b, t, i], seed);
            let w = rand_t(&[o, i], seed + 1);
            let bb = rand_t(&[o], seed + 2);
            let r = gradcheck(|_, v| v[0].linear(&v[1], if bias { Some(&v[2]) } else { None }), &[x, w, bb.clone()], GradcheckOptions::default()).unwrap();
            // Without a bias the third input gets no gradient; its numeric gradient is 0 too.
            prop_assert!(r.passed(), "{}", r);
        }
    }

    #[test]
    fn frozen_weight_gets_no_gradient_but_input_does() {
        let tape = Tape::new();
        let w = Param::frozen(rand_t(&[4, 3], 1));
        let b = Param::new(rand_t(&[4], 2));
        let x = tape.var(rand_t(&[5, 3], 3));
        let y = x.linear(&tape.param(&w), Some(&tape.param(&b))).unwrap().sum().unwrap();
        let g = tape.backward(&y).unwrap();
        assert!(g.param(&w).is_none());
        assert!(g.param(&b).is_some());
        assert!(g.get(&x).is_some());
    }

    #[test]
    fn shape_errors_are_errors() {
        let tape = Tape::new();
        let x = tape.var(Tensor::zeros(&[2, 3]));
        let w = tape.var(Tensor::zeros(&[4, 5]));
        let e = x.linear(&w, None).unwrap_err().to_string();
        assert!(e.contains("linear"), "{e}");
        let w = tape.var(Tensor::zeros(&[4, 3]));
        let b = tape.var(Tensor::zeros(&[3]));
        assert!(x.linear(&w, Some(&b)).is_err());
    }
}
