//! A transformer block's MLP, `y = gelu_erf(x·W₁ᵀ + b₁)·W₂ᵀ + b₂`, as one tape op whose GELU
//! rides on the GEMMs instead of making passes of its own over the wide hidden activation.
//! Each layer is a [`DenseLinear`]: a plain layer, or a consolidator layer whose branches are
//! folded into its frozen weight for this batch (`W₁`, `b₁` are then the folded ones).
//!
//! Forward: as each part of a row of `h = x·W₁ᵀ + b₁` is final, still in the cache of the
//! worker that wrote it, `a = gelu_erf(h)` is computed from it and `h` is replaced by the slope
//! `gelu_erf'(h)` (one evaluation of `Φ` and `φ` for both: the backward kept `h` and evaluated
//! them again, ~2 % of a training step); then `y = a·W₂ᵀ + b₂`. Backward, given `dy`: as each
//! part of a row of `da = dy·W₂` is final, it becomes `dh = da ⊙ gelu_erf'(h)` in place (a
//! product with the kept slope); then the two layers' usual gradients (`dW₂ = dyᵀ·a`,
//! `db₂ = Σ dy`, `dx = dh·W₁`, `dW₁ = dhᵀ·x`, `db₁ = Σ dh`; for a consolidator layer its
//! branches' `dG`, `dβ` instead of `dW`). Every value is computed by the same kernels in the
//! same order as the unfused `linear → gelu_erf → linear` (or `consolidated_linear`), so both
//! give the same bits (the tests check it); the fusion saves a read of `h` forward and a write
//! and a read of `da` backward. Frozen weights are packed once and kept, as in `Var::linear`.

use crate::autograd::ops::linear::DenseLinear;
use crate::autograd::Var;
use crate::kernels::activation::gelu_and_slope;
use crate::kernels::prefetch_l2;
use crate::par::SendPtr;
use crate::{Error, Result, Tensor};
use std::mem::MaybeUninit;

/// `fc2(gelu_erf(fc1(x)))` for `x: [.., I]`, `fc1: I → H`, `fc2: H → O`: see the module docs.
pub(crate) fn mlp_gelu<'t>(x: &Var<'t>, fc1: DenseLinear<'t>, fc2: DenseLinear<'t>) -> Result<Var<'t>> {
    let ((hid, i), (o, h2)) = (fc1.dims(), fc2.dims());
    if h2 != hid {
        return Err(Error::shape("mlp (fc2 weight)", &[o, hid], &[o, h2]));
    }
    let (rows, xi) = x.value().rows_cols();
    if x.value().rank() == 0 || xi != i {
        return Err(Error::ShapeMismatch { op: "mlp", expected: vec![usize::MAX, i], got: x.shape().to_vec() });
    }
    let ((fc1, in1), (fc2, in2)) = (fc1.into_parts(), fc2.into_parts());
    let xv = x.value().clone();

    // h, and from each finished part of it a = gelu(h), with h replaced by gelu'(h) (the
    // backward's slope: one evaluation of Φ and φ serves both passes).
    let mut a: Vec<f32> = Vec::with_capacity(rows * hid);
    let out = SendPtr(a.as_mut_ptr());
    let gelu = |r: usize, j0: usize, part: &mut [f32]| {
        // SAFETY: `a` has room for rows × hid values; each (r, j0..) part is handed out once,
        // to one worker, so nothing else touches these values.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(out.get().add(r * hid + j0).cast::<MaybeUninit<f32>>(), part.len())
        };
        gelu_and_slope(part, dst);
    };
    let slope = fc1.forward(xv.data(), rows, Some(&gelu));
    // SAFETY: every part of every row of h was finished, so every value of `a` was written.
    unsafe { a.set_len(rows * hid) };
    let y = fc2.forward(&a, rows, None);
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = o;

    let inputs: Vec<&Var<'t>> = std::iter::once(x).chain(&in1).chain(&in2).collect();
    let xn = x.node();
    x.tape().op("mlp", Tensor::from_parts(shape, y), &inputs, move |dy, g| {
        let dyd = dy.data();
        fc2.bias_grad(dyd, g)?;
        (fc2.rest)(&a, dyd, rows, g)?;
        if xn.is_none() && !fc1.trains {
            return Ok(());
        }
        // dh = (dy·W₂) ⊙ gelu'(h), each part as soon as it is final.
        let gelu_grad = |r: usize, j0: usize, part: &mut [f32]| {
            let at = r * hid + j0..r * hid + j0 + part.len();
            for (d, &s) in part.iter_mut().zip(&slope[at]) {
                *d *= s;
            }
            // The same part of the worker's next row tile (12 rows on), into L2 while the GEMM
            // computes that tile: read from memory here, the slope stalled this pass (mlp
            // backward 216 → 184–200 ms per vit_tiny b16 step, when it was `h`).
            if let Some(next) = slope.get((r + 12) * hid + j0..(r + 12) * hid + j0 + part.len()) {
                prefetch_l2(next);
            }
        };
        let dh = fc2.input_grad(dyd, rows, Some(&gelu_grad));
        fc1.bias_grad(&dh, g)?;
        g.add_with(xn, || Ok(Tensor::from_parts(xv.shape().to_vec(), fc1.input_grad(&dh, rows, None))))?;
        (fc1.rest)(xv.data(), &dh, rows, g)
    })
}

#[cfg(test)]
mod tests {
    use super::mlp_gelu;
    use crate::autograd::ops::grouped::{consolidated_dense, Branch};
    use crate::autograd::ops::linear::DenseLinear;
    use crate::autograd::ops::testutil::{check, rand_t};
    use crate::autograd::{Tape, Var};
    use crate::kernels::grouped::GroupSpec;
    use crate::{Error, Result, Tensor};
    use proptest::prelude::*;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.data().iter().map(|v| v.to_bits()).collect()
    }

    /// One layer: weight, bias, consolidator branches and drop-path rate.
    type Layer<'a, 't> = (&'a Var<'t>, Option<&'a Var<'t>>, Vec<Branch<'a, 't>>, f32);

    /// The layer as a dense map on an input of shape `x_shape`.
    fn dense<'t>(x_shape: &[usize], (w, b, br, p): Layer<'_, 't>) -> Result<DenseLinear<'t>> {
        if br.is_empty() {
            return DenseLinear::new(w, b);
        }
        Ok(consolidated_dense(x_shape, w, b, &br, p)?.expect("a dense map"))
    }

    /// The fused MLP.
    fn fused<'t>(x: &Var<'t>, l1: Layer<'_, 't>, l2: Layer<'_, 't>) -> Result<Var<'t>> {
        let fc1 = dense(x.shape(), l1)?;
        let mut hidden = x.shape().to_vec();
        *hidden.last_mut().unwrap() = fc1.dims().0;
        mlp_gelu(x, fc1, dense(&hidden, l2)?)
    }

    /// The same MLP as three ops.
    fn composed<'t>(x: &Var<'t>, l1: Layer<'_, 't>, l2: Layer<'_, 't>) -> Result<Var<'t>> {
        let layer = |x: &Var<'t>, (w, b, br, p): Layer<'_, 't>| {
            if br.is_empty() {
                x.linear(w, b)
            } else {
                x.consolidated_linear(w, b, &br, p)
            }
        };
        layer(&layer(x, l1)?.gelu_erf()?, l2)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn mlp_gradcheck(b in 1usize..3, t in 1usize..4, i in 1usize..6, h in 1usize..7, o in 1usize..5,
                         bias in any::<bool>(), seed in 0u64..1000) {
            let mut ins = vec![rand_t(&[b, t, i], seed), rand_t(&[h, i], seed + 1), rand_t(&[o, h], seed + 2)];
            if bias {
                ins.extend([rand_t(&[h], seed + 3), rand_t(&[o], seed + 4)]);
            }
            check(|_, v| fused(&v[0], (&v[1], v.get(3), vec![], 0.0), (&v[2], v.get(4), vec![], 0.0)), &ins);
        }

        /// Frozen weights with consolidator branches in both layers.
        #[test]
        fn consolidated_mlp_gradcheck(t in 1usize..4, g in 1usize..3, ci in 1usize..3, ch in 1usize..3,
                                      co in 1usize..3, seed in 0u64..1000) {
            let (i, h, o) = (g * ci, g * ch, g * co);
            let (s1, s2) = (GroupSpec::new(i, h, g, false).unwrap(), GroupSpec::new(h, o, g, true).unwrap());
            let (w1, w2) = (rand_t(&[h, i], seed + 1), rand_t(&[o, h], seed + 2));
            let ins = [rand_t(&[2, t, i], seed), rand_t(&[h], seed + 3), rand_t(&s1.weight_shape(), seed + 4),
                       rand_t(&[h], seed + 5), rand_t(&s2.weight_shape(), seed + 6), rand_t(&[o], seed + 7)];
            check(|tape, v| {
                let (w1, w2) = (tape.constant(w1.clone()), tape.constant(w2.clone()));
                let br1 = vec![Branch { spec: s1, weight: &v[2], bias: Some(&v[3]) }];
                let br2 = vec![Branch { spec: s2, weight: &v[4], bias: Some(&v[5]) }];
                fused(&v[0], (&w1, Some(&v[1]), br1, 0.0), (&w2, None, br2, 0.0))
            }, &ins);
        }

        /// The same bits as `linear → gelu_erf → linear`, forward and every gradient, whichever
        /// weights are frozen; shapes across the GEMM's tiles (12 × 32) and blocks of columns
        /// (576 at full depth: with `i` near 384 and `h` past 576, `fc1` finishes rows in two
        /// parts).
        #[test]
        fn fused_equals_composed(rows in prop_oneof![1usize..30, 190usize..200],
                                 i in prop_oneof![1usize..40, 380usize..390],
                                 h in prop_oneof![1usize..70, 578usize..600], o in 1usize..40,
                                 frozen in 0usize..4, seed in 0u64..1000) {
            let (x, w1, b1) = (rand_t(&[rows, i], seed), rand_t(&[h, i], seed + 1), rand_t(&[h], seed + 2));
            let (w2, b2, r) = (rand_t(&[o, h], seed + 3), rand_t(&[o], seed + 4), rand_t(&[rows, o], seed + 5));
            let run = |fuse: bool| {
                let tape = Tape::new();
                let v = |t: &Tensor, freeze: bool| if freeze { tape.constant(t.clone()) } else { tape.var(t.clone()) };
                let (xv, w1v, b1v) = (tape.var(x.clone()), v(&w1, frozen & 1 != 0), tape.var(b1.clone()));
                let (w2v, b2v) = (v(&w2, frozen & 2 != 0), tape.var(b2.clone()));
                let (l1, l2) = ((&w1v, Some(&b1v), vec![], 0.0), (&w2v, Some(&b2v), vec![], 0.0));
                let y = if fuse { fused(&xv, l1, l2) } else { composed(&xv, l1, l2) }.unwrap();
                let l = y.mul(&tape.constant(r.clone())).unwrap().sum().unwrap();
                let g = tape.backward(&l).unwrap();
                let mut out = vec![bits(y.value())];
                for p in [&xv, &w1v, &b1v, &w2v, &b2v] {
                    out.push(g.get(p).map(bits).unwrap_or_default());
                }
                out
            };
            prop_assert_eq!(run(true), run(false));
        }

        /// With the consolidator in both layers (frozen weights, one or two branches each; in
        /// training without drop-path, or in evaluation with it): the same bits as
        /// `consolidated_linear → gelu_erf → consolidated_linear`.
        #[test]
        fn consolidated_fused_equals_composed(samples in 1usize..4, t in prop_oneof![1usize..4, 40usize..50],
                                              g in 1usize..4, ci in 1usize..9, ch in prop_oneof![1usize..9, 40usize..45],
                                              co in 1usize..9, two in any::<bool>(), train in any::<bool>(),
                                              seed in 0u64..1000) {
            let (i, h, o) = (g * ci, g * ch, g * co);
            let specs1 = [GroupSpec::new(i, h, g, false).unwrap(), GroupSpec::new(i, h, 1, true).unwrap()];
            let specs2 = [GroupSpec::new(h, o, g, true).unwrap(), GroupSpec::new(h, o, g, false).unwrap()];
            let x = rand_t(&[samples, t, i], seed);
            let (w1, b1, w2, b2) = (rand_t(&[h, i], seed + 1), rand_t(&[h], seed + 2), rand_t(&[o, h], seed + 3), rand_t(&[o], seed + 4));
            let gs: Vec<Tensor> = specs1.iter().chain(&specs2).enumerate().map(|(k, s)| rand_t(&s.weight_shape(), seed + 10 + k as u64)).collect();
            let betas: Vec<Tensor> = (0..4).map(|k| rand_t(&[if k < 2 { h } else { o }], seed + 20 + k as u64)).collect();
            let r = rand_t(&[samples, t, o], seed + 5);
            let p = if train { 0.0 } else { 0.5 };
            let run = |fuse: bool| {
                let tape = if train { Tape::new() } else { Tape::eval() };
                let xv = tape.var(x.clone());
                let (w1v, b1v, w2v, b2v) = (tape.constant(w1.clone()), tape.var(b1.clone()), tape.constant(w2.clone()), tape.var(b2.clone()));
                let gv: Vec<Var> = gs.iter().map(|t| tape.var(t.clone())).collect();
                let bv: Vec<Var> = betas.iter().map(|t| tape.var(t.clone())).collect();
                let nb = 1 + two as usize;
                let br = |k0: usize, specs: &[GroupSpec; 2]| (0..nb).map(|k| Branch { spec: specs[k], weight: &gv[k0 + k], bias: Some(&bv[k0 + k]) }).collect::<Vec<_>>();
                let (l1, l2) = ((&w1v, Some(&b1v), br(0, &specs1), p), (&w2v, Some(&b2v), br(2, &specs2), p));
                let y = if fuse { fused(&xv, l1, l2) } else { composed(&xv, l1, l2) }.unwrap();
                let l = y.mul(&tape.constant(r.clone())).unwrap().sum().unwrap();
                let g = tape.backward(&l).unwrap();
                let mut out = vec![bits(y.value())];
                for p in [&xv, &b1v, &b2v].into_iter().chain(&gv).chain(&bv) {
                    out.push(g.get(p).map(bits).unwrap_or_default());
                }
                out
            };
            prop_assert_eq!(run(true), run(false));
        }
    }

    #[test]
    fn shape_errors_are_errors() {
        let tape = Tape::new();
        let x = tape.var(Tensor::zeros(&[2, 3]));
        let (w1, w2) = (tape.var(Tensor::zeros(&[4, 3])), tape.var(Tensor::zeros(&[5, 4])));
        let plain = |w| (w, None, vec![], 0.0);
        assert!(fused(&x, plain(&w1), plain(&w2)).is_ok());
        let bad_w2 = tape.var(Tensor::zeros(&[5, 3]));
        assert!(matches!(fused(&x, plain(&w1), plain(&bad_w2)), Err(Error::ShapeMismatch { .. })));
        let bad_x = tape.var(Tensor::zeros(&[2, 2]));
        assert!(matches!(fused(&bad_x, plain(&w1), plain(&w2)), Err(Error::ShapeMismatch { op: "mlp", .. })));
        let bad_b = tape.var(Tensor::zeros(&[3]));
        assert!(fused(&x, (&w1, Some(&bad_b), vec![], 0.0), plain(&w2)).is_err());
    }

    /// With drop-path in training the consolidator is no dense map (its masks are drawn per
    /// sample), and asking draws nothing from the tape's generator.
    #[test]
    fn drop_path_in_training_is_not_dense() {
        let spec = GroupSpec::new(4, 4, 2, false).unwrap();
        let (asked, fresh) = (Tape::new().with_seed(3), Tape::new().with_seed(3));
        let (w, g) = (asked.constant(Tensor::zeros(&[4, 4])), asked.var(Tensor::zeros(&spec.weight_shape())));
        let br = [Branch { spec, weight: &g, bias: None }];
        assert!(consolidated_dense(&[2, 3, 4], &w, None, &br, 0.5).unwrap().is_none());
        let next = |t: &Tape| rand::Rng::gen::<u64>(&mut *t.rng());
        assert_eq!(next(&asked), next(&fresh));
        assert!(consolidated_dense(&[2, 3, 4], &w, None, &br, 0.0).unwrap().is_some());
        assert!(consolidated_dense(&[2, 3, 5], &w, None, &br, 0.0).is_err());
    }
}
