//! The consolidator's fused op: a linear layer with grouped-connection branches beside it,
//!
//! `y = x·Wᵀ + b + Σ_k DP_p(BD(G_k)·P_k·x + β_k)`,
//!
//! for `x: [B, .., I]` (the leading dimension indexes samples), `W: [O, I]`, `G_k: [g_k, O/g_k, I/g_k]`.
//! `DP_p` is drop-path on each branch: in training, one Bernoulli(1 − p) draw per sample and
//! branch; kept samples are scaled by `1/(1 − p)`; identity in evaluation. Kept samples are
//! contiguous row ranges, so the kernels run on those ranges with `α = 1/(1 − p)` and dropped
//! samples cost nothing.
//!
//! Backward (`s_k` the drop-path scale of a sample for branch `k`, 0 if dropped):
//! - `dx = dy·W + Σ_k s_k·(BD(G_k)P_k)ᵀ·dy`
//! - `dW = dyᵀ·x` (only if `W` is trainable), `db = Σ dy`
//! - `dG_k = Σ_rows s_k·dy_i ⊗ x̃_i` per group `i`, `dβ_k = Σ_rows s_k·dy`
//!
//! All of it is one tape node: the branch outputs are accumulated straight into the layer's
//! output, with no intermediate tensors.
//!
//! ```
//! use consolidator::autograd::{ops::grouped::Branch, Tape};
//! use consolidator::kernels::grouped::GroupSpec;
//! use consolidator::Tensor;
//! let tape = Tape::new();
//! let x = tape.constant(Tensor::full(&[2, 5, 6], 1.0)); // [B, T, I]
//! let w = tape.constant(Tensor::full(&[6, 6], 0.1)); // the frozen layer: no dW is ever computed
//! let (s1, s2) = (GroupSpec::new(6, 6, 2, false)?, GroupSpec::new(6, 6, 3, true)?);
//! let (g1, g2) = (tape.var(Tensor::zeros(&s1.weight_shape())), tape.var(Tensor::zeros(&s2.weight_shape())));
//! let branches = [
//!     Branch { spec: s1, weight: &g1, bias: None },
//!     Branch { spec: s2, weight: &g2, bias: None },
//! ];
//! let y = x.consolidated_linear(&w, None, &branches, 0.5)?; // drop-path 0.5 on each branch
//! assert_eq!(tape.len(), 3); // two leaves and ONE op node for the layer and both branches
//! let grads = y.sum()?.backward()?;
//! assert_eq!(grads.get(&g1).unwrap().shape(), &[2, 3, 3]);
//! assert_eq!(grads.get(&g2).unwrap().shape(), &[3, 2, 2]);
//! # Ok::<(), consolidator::Error>(())
//! ```

use crate::autograd::ops::linear::linear_forward;
use crate::autograd::Var;
use crate::kernels::grouped::{grouped_backward_input, grouped_backward_weight, grouped_forward, GroupSpec};
use crate::kernels::{elementwise, gemm, MatRef};
use crate::{Error, Result, Tensor};
use rand::Rng;

/// One branch of a [`Var::consolidated_linear`] call.
#[derive(Clone, Copy)]
pub struct Branch<'a, 't> {
    /// Widths, group count and reorder flag.
    pub spec: GroupSpec,
    /// `[g, O/g, I/g]`.
    pub weight: &'a Var<'t>,
    /// `[O]`.
    pub bias: Option<&'a Var<'t>>,
}

/// Sample ranges (in rows) kept by one branch, with the scale applied to them.
#[derive(Clone, Debug)]
struct Kept {
    ranges: Vec<(usize, usize)>,
    scale: f32,
}

impl<'t> Var<'t> {
    /// `x·Wᵀ + b + Σ_k DP_p(BD(G_k)P_k x + β_k)`: see the module docs.
    pub fn consolidated_linear(
        &self,
        w: &Var<'t>,
        b: Option<&Var<'t>>,
        branches: &[Branch<'_, 't>],
        drop_path: f32,
    ) -> Result<Var<'t>> {
        fused(self, Some((w, b)), branches, drop_path)
    }

    /// `BD(G)·P·x + β`: one grouped connection alone.
    pub fn grouped_linear(&self, spec: GroupSpec, g: &Var<'t>, beta: Option<&Var<'t>>) -> Result<Var<'t>> {
        fused(self, None, &[Branch { spec, weight: g, bias: beta }], 0.0)
    }
}

fn fused<'t>(
    x: &Var<'t>,
    base: Option<(&Var<'t>, Option<&Var<'t>>)>,
    branches: &[Branch<'_, 't>],
    p: f32,
) -> Result<Var<'t>> {
    const OP: &str = "consolidated_linear";
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid(OP, format!("drop-path rate {p} must be in [0, 1)")));
    }
    let (rows, i_dim) = x.value().rows_cols();
    if x.value().rank() < 2 {
        return Err(Error::bad_shape(OP, x.shape(), "the input must be [samples, .., features]"));
    }
    let mut o_dim = None;
    if let Some((w, b)) = base {
        let [o, i] = w.value().dims::<2>(OP)?;
        if i != i_dim {
            return Err(Error::shape(OP, &[o, i_dim], w.shape()));
        }
        if let Some(b) = b {
            b.value().expect_shape(OP, &[o])?;
        }
        o_dim = Some(o);
    }
    for br in branches {
        let o = *o_dim.get_or_insert(br.spec.out_dim);
        if br.spec.in_dim != i_dim || br.spec.out_dim != o {
            return Err(Error::invalid(
                OP,
                format!("branch {}→{} does not fit a layer {i_dim}→{o}", br.spec.in_dim, br.spec.out_dim),
            ));
        }
        br.weight.value().expect_shape(OP, &br.spec.weight_shape())?;
        if let Some(b) = br.bias {
            b.value().expect_shape(OP, &[o])?;
        }
    }
    let o_dim = o_dim.ok_or_else(|| Error::invalid(OP, "no base layer and no branch"))?;

    // Drop-path masks: per branch, the kept sample row ranges.
    let samples = x.shape()[0];
    let rows_per_sample = rows.checked_div(samples).unwrap_or(0);
    let tape = x.tape();
    let kept: Vec<Kept> = branches
        .iter()
        .map(|_| {
            if !(tape.is_train() && p > 0.0) {
                return Kept { ranges: vec![(0, rows)], scale: 1.0 };
            }
            let mut rng = tape.rng();
            let keep: Vec<bool> = (0..samples).map(|_| rng.gen::<f32>() >= p).collect();
            let mut ranges = Vec::new();
            let mut s = 0;
            while s < samples {
                if keep[s] {
                    let e = (s..samples).find(|&e| !keep[e]).unwrap_or(samples);
                    ranges.push((s * rows_per_sample, e * rows_per_sample));
                    s = e;
                } else {
                    s += 1;
                }
            }
            Kept { ranges, scale: 1.0 / (1.0 - p) }
        })
        .collect();

    // Forward.
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().unwrap() = o_dim;
    let mut y = match base {
        Some((w, b)) => linear_forward(x.value(), w.value(), b.map(|b| b.value())).into_vec(),
        None => vec![0.0; rows * o_dim],
    };
    let xd = x.value().data();
    for (br, k) in branches.iter().zip(&kept) {
        for &(r0, r1) in &k.ranges {
            grouped_forward(
                &br.spec,
                k.scale,
                &xd[r0 * i_dim..r1 * i_dim],
                br.weight.value().data(),
                br.bias.map(|b| b.value().data()),
                &mut y[r0 * o_dim..r1 * o_dim],
            )?;
        }
    }
    let value = Tensor::from_parts(out_shape, y);

    // Record.
    let mut inputs: Vec<&Var<'t>> = vec![x];
    if let Some((w, b)) = base {
        inputs.push(w);
        inputs.extend(b);
    }
    for br in branches {
        inputs.push(br.weight);
        inputs.extend(br.bias);
    }
    let xv = x.value().clone();
    let xn = x.node();
    let base_saved = base.map(|(w, b)| (w.value().clone(), w.node(), b.and_then(|b| b.node())));
    let br_saved: Vec<(GroupSpec, Tensor, Option<usize>, Option<usize>)> = branches
        .iter()
        .map(|br| (br.spec, br.weight.value().clone(), br.weight.node(), br.bias.and_then(|b| b.node())))
        .collect();
    tape.op(OP, value, &inputs, move |dy, g| {
        let dyd = dy.data();
        g.add_with(xn, || {
            let mut dx = vec![0.0; rows * i_dim];
            if let Some((w, _, _)) = &base_saved {
                gemm(1.0, MatRef::new(dyd, rows, o_dim), MatRef::new(w.data(), o_dim, i_dim), 0.0, &mut dx, i_dim);
            }
            for ((spec, wk, _, _), k) in br_saved.iter().zip(&kept) {
                for &(r0, r1) in &k.ranges {
                    grouped_backward_input(
                        spec,
                        k.scale,
                        &dyd[r0 * o_dim..r1 * o_dim],
                        wk.data(),
                        &mut dx[r0 * i_dim..r1 * i_dim],
                    )?;
                }
            }
            Ok(Tensor::from_parts(xv.shape().to_vec(), dx))
        })?;
        if let Some((_, wn, bn)) = &base_saved {
            g.add_with(*wn, || {
                let mut dw = vec![0.0; o_dim * i_dim];
                gemm(1.0, MatRef::new(dyd, rows, o_dim).t(), MatRef::new(xv.data(), rows, i_dim), 0.0, &mut dw, i_dim);
                Ok(Tensor::from_parts(vec![o_dim, i_dim], dw))
            })?;
            g.add_with(*bn, || {
                let mut db = vec![0.0; o_dim];
                elementwise::sum_rows_into(dyd, o_dim, &mut db);
                Ok(Tensor::from_parts(vec![o_dim], db))
            })?;
        }
        for ((spec, _, gn, bn), k) in br_saved.iter().zip(&kept) {
            if gn.is_none() && bn.is_none() {
                continue;
            }
            let mut dw = vec![0.0; spec.weight_len()];
            let mut db = vec![0.0; o_dim];
            for &(r0, r1) in &k.ranges {
                grouped_backward_weight(
                    spec,
                    k.scale,
                    &xv.data()[r0 * i_dim..r1 * i_dim],
                    &dyd[r0 * o_dim..r1 * o_dim],
                    &mut dw,
                    bn.is_some().then_some(db.as_mut_slice()),
                )?;
            }
            g.add_with(*gn, || Ok(Tensor::from_parts(spec.weight_shape().to_vec(), dw)))?;
            g.add_with(*bn, || Ok(Tensor::from_parts(vec![o_dim], db)))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{gradcheck, GradcheckOptions, Tape};
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn rand_t(shape: &[usize], seed: u64) -> Tensor {
        Tensor::randn(shape, 1.0, &mut rand::rngs::StdRng::seed_from_u64(seed))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn consolidated_linear_gradcheck(
            ci in 1usize..4, co in 1usize..4, g1 in 1usize..4, mult in 1usize..3,
            r1 in any::<bool>(), r2 in any::<bool>(), base in any::<bool>(), seed in 0u64..1000,
        ) {
            // Layer I = ci·g1·mult, O = co·g1·mult; branch 1 has g1 groups, branch 2 has g1·mult.
            let (i, o) = (ci * g1 * mult, co * g1 * mult);
            let s1 = GroupSpec::new(i, o, g1, r1).unwrap();
            let s2 = GroupSpec::new(i, o, g1 * mult, r2).unwrap();
            let inputs = vec![
                rand_t(&[2, 3, i], seed), rand_t(&[o, i], seed + 1), rand_t(&[o], seed + 2),
                rand_t(&s1.weight_shape(), seed + 3), rand_t(&[o], seed + 4),
                rand_t(&s2.weight_shape(), seed + 5), rand_t(&[o], seed + 6),
            ];
            let r = gradcheck(|_, v| {
                let brs = [
                    Branch { spec: s1, weight: &v[3], bias: Some(&v[4]) },
                    Branch { spec: s2, weight: &v[5], bias: Some(&v[6]) },
                ];
                if base { v[0].consolidated_linear(&v[1], Some(&v[2]), &brs, 0.3) } else {
                    // Without a base the weight and bias inputs get (and need) no gradient.
                    Ok(v[0].grouped_linear(s1, &v[3], Some(&v[4]))?.add(&v[0].grouped_linear(s2, &v[5], Some(&v[6]))?)?)
                }
            }, &inputs, GradcheckOptions::default()).unwrap();
            prop_assert!(r.passed(), "{}", r);
        }
    }

    #[test]
    fn drop_path_masks_whole_samples_and_scales_kept_ones() {
        let spec = GroupSpec::new(4, 4, 2, false).unwrap();
        let x = rand_t(&[64, 3, 4], 1);
        let w = rand_t(&spec.weight_shape(), 2);
        let tape = Tape::new().with_seed(7);
        let xv = tape.constant(x.clone());
        let wv = tape.var(w.clone());
        let p = 0.5;
        let y = xv
            .consolidated_linear(
                &tape.constant(Tensor::zeros(&[4, 4])),
                None,
                &[Branch { spec, weight: &wv, bias: None }],
                p,
            )
            .unwrap();
        let eval = Tape::eval();
        let full = eval.constant(x).grouped_linear(spec, &eval.constant(w), None).unwrap();
        let (mut kept, mut dropped) = (0, 0);
        for s in 0..64 {
            let a = &y.value().data()[s * 12..(s + 1) * 12];
            let f = &full.value().data()[s * 12..(s + 1) * 12];
            if a.iter().all(|&v| v == 0.0) {
                dropped += 1;
            } else {
                kept += 1;
                for (u, v) in a.iter().zip(f) {
                    assert!((u - v / (1.0 - p)).abs() < 1e-5);
                }
            }
        }
        assert!(kept > 16 && dropped > 16, "kept {kept}, dropped {dropped}");
    }

    #[test]
    fn bad_branch_is_an_error() {
        let tape = Tape::new();
        let x = tape.var(Tensor::zeros(&[2, 6]));
        let spec = GroupSpec::new(6, 6, 3, false).unwrap();
        let wrong = tape.var(Tensor::zeros(&[3, 2, 3]));
        assert!(x.grouped_linear(spec, &wrong, None).is_err());
        assert!(GroupSpec::new(6, 4, 4, false).is_err());
        let w = tape.var(Tensor::zeros(&[6, 6]));
        let g = tape.var(Tensor::zeros(&spec.weight_shape()));
        let e = x.consolidated_linear(&w, None, &[Branch { spec, weight: &g, bias: None }], 1.0).unwrap_err();
        assert!(e.to_string().contains("drop-path"), "{e}");
    }
}
