//! A transformer block's MLP, `y = gelu_erf(x·W₁ᵀ + b₁)·W₂ᵀ + b₂`, as one tape op whose GELU
//! rides on the GEMMs instead of making passes of its own over the wide hidden activation.
//!
//! Forward: as each part of a row of `h = x·W₁ᵀ + b₁` is final, still in the cache of the
//! worker that wrote it, `a = gelu_erf(h)` is computed from it; then `y = a·W₂ᵀ + b₂`. Backward,
//! given `dy`: as each part of a row of `da = dy·W₂` is final, it becomes
//! `dh = da ⊙ gelu_erf'(h)` in place; then the two layers' usual gradients (`dW₂ = dyᵀ·a`,
//! `db₂ = Σ dy`, `dx = dh·W₁`, `dW₁ = dhᵀ·x`, `db₁ = Σ dh`). Every value is computed by the same
//! kernels in the same order as the unfused `linear → gelu_erf → linear`, so both give the same
//! bits (the tests check it); the fusion saves a read of `h` forward and a write and a read of
//! `da` backward. Frozen weights are packed once and kept, as in `Var::linear`.

use crate::autograd::ops::linear::{bias_grad, packed_weight, rhs, weight_grad};
use crate::autograd::Var;
use crate::kernels::activation::gelu_here;
use crate::kernels::gemm::gemm_new_then;
use crate::kernels::prefetch_l2;
use crate::kernels::{gemm_new, MatRef};
use crate::par::SendPtr;
use crate::{Error, Result, Tensor};
use std::mem::MaybeUninit;

/// `gelu_erf(x·W₁ᵀ + b₁)·W₂ᵀ + b₂` for `x: [.., I]`, `W₁: [H, I]`, `W₂: [O, H]`: see the module docs.
pub(crate) fn mlp_gelu<'t>(
    x: &Var<'t>,
    (w1, b1): (&Var<'t>, Option<&Var<'t>>),
    (w2, b2): (&Var<'t>, Option<&Var<'t>>),
) -> Result<Var<'t>> {
    let [hid, i] = w1.value().dims::<2>("mlp (fc1 weight)")?;
    let [o, _] = w2.value().dims::<2>("mlp (fc2 weight)")?;
    w2.value().expect_shape("mlp (fc2 weight)", &[o, hid])?;
    let (rows, xi) = x.value().rows_cols();
    if x.value().rank() == 0 || xi != i {
        return Err(Error::ShapeMismatch { op: "mlp", expected: vec![usize::MAX, i], got: x.shape().to_vec() });
    }
    for (b, n, what) in [(b1, hid, "mlp (fc1 bias)"), (b2, o, "mlp (fc2 bias)")] {
        if let Some(b) = b {
            b.value().expect_shape(what, &[n])?;
        }
    }
    let (xv, w1v, w2v) = (x.value().clone(), w1.value().clone(), w2.value().clone());
    let packed = |w: &Var, t: &Tensor, transposed| (!w.requires_grad()).then(|| packed_weight(t, transposed)).flatten();

    // h, and a = gelu(h) from each finished part of h.
    let mut a: Vec<f32> = Vec::with_capacity(rows * hid);
    let out = SendPtr(a.as_mut_ptr());
    let gelu = |r: usize, j0: usize, part: &mut [f32]| {
        // SAFETY: `a` has room for rows × hid values; each (r, j0..) part is handed out once,
        // to one worker, so nothing else touches these values. They are written (zeros, then
        // the GELU) before being read.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(out.get().add(r * hid + j0).cast::<MaybeUninit<f32>>(), part.len())
        };
        dst.fill(MaybeUninit::new(0.0));
        gelu_here(part, &[], unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) });
    };
    let p1 = packed(w1, &w1v, true);
    let w1t = MatRef::new(w1v.data(), hid, i).t();
    let h =
        gemm_new_then(1.0, MatRef::new(xv.data(), rows, i), rhs(&p1, w1t), b1.map(|b| b.value().data()), Some(&gelu));
    // SAFETY: every part of every row of h was finished, so every value of `a` was written.
    unsafe { a.set_len(rows * hid) };

    let p2 = packed(w2, &w2v, true);
    let w2t = MatRef::new(w2v.data(), o, hid).t();
    let y = gemm_new(1.0, MatRef::new(&a, rows, hid), rhs(&p2, w2t), b2.map(|b| b.value().data()));
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = o;

    let mut inputs = vec![x, w1];
    inputs.extend(b1);
    inputs.push(w2);
    inputs.extend(b2);
    let nodes = [x.node(), w1.node(), b1.and_then(|b| b.node()), w2.node(), b2.and_then(|b| b.node())];
    let frozen = [!w1.requires_grad(), !w2.requires_grad()];
    x.tape().op("mlp", Tensor::from_parts(shape, y), &inputs, move |dy, g| {
        let [xn, w1n, b1n, w2n, b2n] = nodes;
        let dyd = dy.data();
        g.add_with(b2n, || Ok(bias_grad(dyd, o)))?;
        g.add_with(w2n, || Ok(weight_grad(dyd, &a, rows, o, hid)))?;
        if xn.is_none() && w1n.is_none() && b1n.is_none() {
            return Ok(());
        }
        // dh = (dy·W₂) ⊙ gelu'(h), each part as soon as it is final.
        let gelu_grad = |r: usize, j0: usize, part: &mut [f32]| {
            let mut da = [0.0f32; 256];
            for (c, p) in part.chunks_mut(da.len()).enumerate() {
                let da = &mut da[..p.len()];
                da.copy_from_slice(p);
                let at = r * hid + j0 + c * 256;
                gelu_here(&h[at..at + p.len()], da, p);
            }
            // The same part of the worker's next row tile (12 rows on), into L2 while the GEMM
            // computes that tile: read from memory here, `h` stalled this pass (mlp backward
            // 216 → 184–200 ms per vit_tiny b16 step).
            if let Some(next) = h.get((r + 12) * hid + j0..(r + 12) * hid + j0 + part.len()) {
                prefetch_l2(next);
            }
        };
        let p2 = frozen[1].then(|| packed_weight(&w2v, false)).flatten();
        let w2m = MatRef::new(w2v.data(), o, hid);
        let dh = gemm_new_then(1.0, MatRef::new(dyd, rows, o), rhs(&p2, w2m), None, Some(&gelu_grad));
        g.add_with(b1n, || Ok(bias_grad(&dh, hid)))?;
        g.add_with(xn, || {
            let p1 = frozen[0].then(|| packed_weight(&w1v, false)).flatten();
            let dx = gemm_new(1.0, MatRef::new(&dh, rows, hid), rhs(&p1, MatRef::new(w1v.data(), hid, i)), None);
            Ok(Tensor::from_parts(xv.shape().to_vec(), dx))
        })?;
        g.add_with(w1n, || Ok(weight_grad(&dh, xv.data(), rows, hid, i)))
    })
}

#[cfg(test)]
mod tests {
    use super::mlp_gelu;
    use crate::autograd::ops::testutil::{check, rand_t};
    use crate::autograd::Tape;
    use crate::{Error, Tensor};
    use proptest::prelude::*;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.data().iter().map(|v| v.to_bits()).collect()
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
            check(|_, v| mlp_gelu(&v[0], (&v[1], v.get(3)), (&v[2], v.get(4))), &ins);
        }

        /// The same bits as `linear → gelu_erf → linear`, forward and every gradient, whichever
        /// weights are frozen; shapes across the GEMM's tiles (12 × 32) and blocks (512 columns).
        #[test]
        fn fused_equals_composed(rows in prop_oneof![1usize..30, 190usize..200], i in 1usize..40,
                                 h in prop_oneof![1usize..70, 520usize..530], o in 1usize..40,
                                 frozen in 0usize..4, seed in 0u64..1000) {
            let (x, w1, b1) = (rand_t(&[rows, i], seed), rand_t(&[h, i], seed + 1), rand_t(&[h], seed + 2));
            let (w2, b2, r) = (rand_t(&[o, h], seed + 3), rand_t(&[o], seed + 4), rand_t(&[rows, o], seed + 5));
            let run = |fused: bool| {
                let tape = Tape::new();
                let v = |t: &Tensor, freeze: bool| if freeze { tape.constant(t.clone()) } else { tape.var(t.clone()) };
                let (xv, w1v, b1v) = (tape.var(x.clone()), v(&w1, frozen & 1 != 0), tape.var(b1.clone()));
                let (w2v, b2v) = (v(&w2, frozen & 2 != 0), tape.var(b2.clone()));
                let y = if fused {
                    mlp_gelu(&xv, (&w1v, Some(&b1v)), (&w2v, Some(&b2v))).unwrap()
                } else {
                    xv.linear(&w1v, Some(&b1v)).unwrap().gelu_erf().unwrap().linear(&w2v, Some(&b2v)).unwrap()
                };
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
    }

    #[test]
    fn shape_errors_are_errors() {
        let tape = Tape::new();
        let x = tape.var(Tensor::zeros(&[2, 3]));
        let (w1, w2) = (tape.var(Tensor::zeros(&[4, 3])), tape.var(Tensor::zeros(&[5, 4])));
        assert!(mlp_gelu(&x, (&w1, None), (&w2, None)).is_ok());
        let bad_w2 = tape.var(Tensor::zeros(&[5, 3]));
        assert!(matches!(mlp_gelu(&x, (&w1, None), (&bad_w2, None)), Err(Error::ShapeMismatch { .. })));
        let bad_x = tape.var(Tensor::zeros(&[2, 2]));
        assert!(matches!(mlp_gelu(&bad_x, (&w1, None), (&w2, None)), Err(Error::ShapeMismatch { op: "mlp", .. })));
        let bad_b = tape.var(Tensor::zeros(&[3]));
        assert!(mlp_gelu(&x, (&w1, Some(&bad_b)), (&w2, None)).is_err());
    }
}
