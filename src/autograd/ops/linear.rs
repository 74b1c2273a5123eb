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
//!
//! A layer that is one dense map on the batch at hand is a [`DenseLinear`]: a plain layer, or
//! one whose adapter folds into its weight for this batch (the consolidator without drop-path,
//! `ops::grouped::consolidated_dense`). `Var::linear` records one as an op; the fused MLP
//! (`nn::fused`) runs two, with its GELU inside their GEMMs.

use crate::autograd::{Grads, Var};
use crate::kernels::gemm::gemm_new_then;
use crate::kernels::packed::Finish;
use crate::kernels::{elementwise, gemm_new, Isa, MatRef, PackedB, Rhs};
use crate::{Error, Result, Tensor};
use std::sync::Arc;

impl<'t> Var<'t> {
    /// `x·Wᵀ + b`: see the module docs.
    pub fn linear(&self, w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Var<'t>> {
        DenseLinear::new(w, b)?.record(self)
    }
}

/// Adds the gradients of a [`DenseLinear`]'s parameters other than its bias, given the layer's
/// input `x: [rows, I]`, its output gradient `dy: [rows, O]` and `rows`.
pub(crate) type ParamGrads = Box<dyn Fn(&[f32], &[f32], usize, &mut Grads) -> Result<()>>;

/// A layer that is one dense map `y = x·Wᵀ + b` on the batch at hand, with the rule that gives
/// its parameters' gradients: see the module docs.
pub struct DenseLinear<'t> {
    map: DenseMap,
    /// The parameters on the tape (the op's inputs besides `x`).
    inputs: Vec<Var<'t>>,
}

/// What a [`DenseLinear`]'s backward keeps.
pub(crate) struct DenseMap {
    op: &'static str,
    /// `[O, I]`.
    weight: Tensor,
    bias: Option<Tensor>,
    /// `weight` is a frozen parameter's own tensor: its panels are packed once and kept.
    frozen: bool,
    bias_node: Option<usize>,
    /// The other parameters' gradients.
    pub rest: ParamGrads,
    /// Some parameter needs a gradient.
    pub trains: bool,
}

impl<'t> DenseLinear<'t> {
    /// The plain layer `x·Wᵀ + b` (`W: [O, I]`, `b: [O]`).
    pub fn new(w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Self> {
        let [o, i] = w.value().dims::<2>("linear (weight)")?;
        if let Some(b) = b {
            b.value().expect_shape("linear (bias)", &[o])?;
        }
        let wn = w.node();
        let rest: ParamGrads = Box::new(move |x, dy, rows, g| g.add_with(wn, || Ok(weight_grad(dy, x, rows, o, i))));
        let inputs = std::iter::once(w).chain(b).cloned().collect();
        let (weight, bias) = (w.value().clone(), b.map(|b| b.value().clone()));
        Ok(Self::folded("linear", (weight, bias), wn.is_none(), inputs, b.and_then(Var::node), rest))
    }

    /// The dense map `weight`, `bias` (checked by the caller) with parameters `inputs`: the
    /// node `bias_node` gets `Σ dy`, `rest` gives the others' gradients. `frozen`: `weight` is a
    /// frozen parameter's own tensor. `op` names it on the tape.
    pub(crate) fn folded(
        op: &'static str,
        (weight, bias): (Tensor, Option<Tensor>),
        frozen: bool,
        inputs: Vec<Var<'t>>,
        bias_node: Option<usize>,
        rest: ParamGrads,
    ) -> Self {
        let trains = inputs.iter().any(Var::requires_grad);
        DenseLinear { map: DenseMap { op, weight, bias, frozen, bias_node, rest, trains }, inputs }
    }

    /// `(O, I)`.
    pub fn dims(&self) -> (usize, usize) {
        self.map.dims()
    }

    /// Records the layer on `x: [.., I]` as one op.
    pub fn record(self, x: &Var<'t>) -> Result<Var<'t>> {
        let DenseLinear { map, inputs } = self;
        let ((o, i), (rows, xi)) = (map.dims(), x.value().rows_cols());
        if x.value().rank() == 0 || xi != i {
            return Err(Error::ShapeMismatch { op: map.op, expected: vec![usize::MAX, i], got: x.shape().to_vec() });
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap() = o;
        let y = Tensor::from_parts(shape, map.forward(x.value().data(), rows, None));
        let all: Vec<&Var<'t>> = std::iter::once(x).chain(&inputs).collect();
        let (xv, xn) = (x.value().clone(), x.node());
        x.tape().op(map.op, y, &all, move |dy, g| {
            let dyd = dy.data();
            map.bias_grad(dyd, g)?;
            g.add_with(xn, || Ok(Tensor::from_parts(xv.shape().to_vec(), map.input_grad(dyd, rows, None))))?;
            (map.rest)(xv.data(), dyd, rows, g)
        })
    }

    /// The map and the parameters, for an op that records several layers as one.
    pub(crate) fn into_parts(self) -> (DenseMap, Vec<Var<'t>>) {
        (self.map, self.inputs)
    }
}

impl DenseMap {
    /// `(O, I)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.weight.shape()[0], self.weight.shape()[1])
    }
    /// `x·Wᵀ + b` for `x: [rows, I]`: one GEMM whose epilogue adds the bias, then runs `finish`
    /// on each finished part of a row.
    pub fn forward(&self, x: &[f32], rows: usize, finish: Option<&Finish>) -> Vec<f32> {
        let ((o, i), w) = (self.dims(), self.weight.data());
        let packed = self.frozen.then(|| packed_weight(&self.weight, true)).flatten();
        let b = self.bias.as_ref().map(|b| b.data());
        gemm_new_then(1.0, MatRef::new(x, rows, i), rhs(&packed, MatRef::new(w, o, i).t()), b, finish)
    }
    /// `dx = dy·W` for `dy: [rows, O]`, then `finish` on each finished part of a row.
    pub fn input_grad(&self, dy: &[f32], rows: usize, finish: Option<&Finish>) -> Vec<f32> {
        let ((o, i), w) = (self.dims(), self.weight.data());
        let packed = self.frozen.then(|| packed_weight(&self.weight, false)).flatten();
        gemm_new_then(1.0, MatRef::new(dy, rows, o), rhs(&packed, MatRef::new(w, o, i)), None, finish)
    }
    /// `db = Σ dy`, if the bias needs it.
    pub fn bias_grad(&self, dy: &[f32], g: &mut Grads) -> Result<()> {
        g.add_with(self.bias_node, || Ok(bias_grad(dy, self.dims().0)))
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
