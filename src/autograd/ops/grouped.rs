//! The consolidator's fused op: a linear layer with grouped-connection branches beside it,
//!
//! `y = x·Wᵀ + b + Σ_k DP_p(x·(BD(G_k)·Π_k)ᵀ + β_k)`,
//!
//! in the row convention: `x: [B, .., I]` (the leading dimension indexes samples, each sample a row), `W: [O, I]`, `G_k: [g_k, O/g_k, I/g_k]`.
//! `DP_p` is drop-path on each branch: in training, one Bernoulli(1 − p) draw per sample and
//! branch; kept samples are scaled by `1/(1 − p)`; identity in evaluation. Kept samples are
//! contiguous row ranges, so the kernels run on those ranges with `α = 1/(1 − p)` and dropped
//! samples cost nothing.
//!
//! Backward (`s_k` the drop-path scale of a sample for branch `k`, 0 if dropped):
//! - `dx = dy·W + Σ_k (s_k ⊙ dy)·BD(G_k)·Π_k`
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

use crate::autograd::ops::linear::{DenseLinear, ParamGrads};
use crate::autograd::{Grads, Var};
use crate::kernels::grouped::{grouped_backward_input, grouped_backward_weight, grouped_forward, GroupSpec};
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

/// Maximal runs `[a, b)` of `0..n` where `f` holds.
fn runs_of(n: usize, f: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut s = 0;
    while s < n {
        if f(s) {
            let e = (s..n).find(|&e| !f(e)).unwrap_or(n);
            out.push((s, e));
            s = e;
        } else {
            s += 1;
        }
    }
    out
}

/// Sample ranges (in rows) kept by one branch, with the scale applied to them.
#[derive(Clone, Debug)]
struct Kept {
    ranges: Vec<(usize, usize)>,
    scale: f32,
}

impl Kept {
    /// `f(range, its rows of out)` for every kept range, the ranges spread over the workers
    /// (with drop-path a batch has dozens of short runs of kept samples; each is computed by
    /// one worker, as a whole batch would be). The first error, if any.
    fn each_range(
        &self,
        out: &mut [f32],
        width: usize,
        f: impl Fn((usize, usize), &mut [f32]) -> Result<()> + Sync,
    ) -> Result<()> {
        let at = crate::par::SendPtr(out.as_mut_ptr());
        assert!(self.ranges.last().is_none_or(|r| r.1 * width <= out.len()), "kept rows beyond the output");
        let first_err = std::sync::Mutex::new(Ok(()));
        crate::par::for_each_index(self.ranges.len(), |k| {
            let (r0, r1) = self.ranges[k];
            // SAFETY: the ranges are disjoint and inside `out` (checked above): each task
            // writes its own rows.
            let rows = unsafe { std::slice::from_raw_parts_mut(at.get().add(r0 * width), (r1 - r0) * width) };
            if let Err(e) = f((r0, r1), rows) {
                let mut first = first_err.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_ok() {
                    *first = Err(e);
                }
            }
        });
        first_err.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl<'t> Var<'t> {
    /// `x·Wᵀ + b + Σ_k DP_p(x·(BD(G_k)·Π_k)ᵀ + β_k)`: see the module docs.
    pub fn consolidated_linear(
        &self,
        w: &Var<'t>,
        b: Option<&Var<'t>>,
        branches: &[Branch<'_, 't>],
        drop_path: f32,
    ) -> Result<Var<'t>> {
        fused(self, Some((w, b)), branches, drop_path)
    }

    /// `x·(BD(G)·Π)ᵀ + β`: one grouped connection alone.
    pub fn grouped_linear(&self, spec: GroupSpec, g: &Var<'t>, beta: Option<&Var<'t>>) -> Result<Var<'t>> {
        fused(self, None, &[Branch { spec, weight: g, bias: beta }], 0.0)
    }
}

/// The consolidated layer as one dense map `W + Σ_k BD(G_k)·Π_k` (bias `b + Σ_k β_k`) on an
/// input of shape `x_shape`, when every sample keeps every branch — no drop-path in training, or
/// evaluation — and `W` is frozen; `None` otherwise, when [`Var::consolidated_linear`] draws the
/// masks. It draws nothing. The fused MLP (`nn::fused`) runs two of these.
pub fn consolidated_dense<'t>(
    x_shape: &[usize],
    w: &Var<'t>,
    b: Option<&Var<'t>>,
    branches: &[Branch<'_, 't>],
    p: f32,
) -> Result<Option<DenseLinear<'t>>> {
    check(x_shape, Some((w, b)), branches, p)?;
    if (w.tape().is_train() && p > 0.0) || w.requires_grad() || branches.is_empty() {
        return Ok(None);
    }
    let rows: usize = x_shape[..x_shape.len() - 1].iter().product();
    let all = Kept { ranges: (rows > 0).then_some((0, rows)).into_iter().collect(), scale: 1.0 };
    Ok(Some(fold(w, b, branches, &vec![true; branches.len()], vec![all; branches.len()], 1.0)))
}

const OP: &str = "consolidated_linear";

/// Checks the operands for an input of shape `x_shape`; returns `O`.
fn check(x_shape: &[usize], base: Option<(&Var, Option<&Var>)>, branches: &[Branch], p: f32) -> Result<usize> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid(OP, format!("drop-path rate {p} must be in [0, 1)")));
    }
    let (Some(&i_dim), true) = (x_shape.last(), x_shape.len() >= 2) else {
        return Err(Error::bad_shape(OP, x_shape, "the input must be [samples, .., features]"));
    };
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
    o_dim.ok_or_else(|| Error::invalid(OP, "no base layer and no branch"))
}

fn fused<'t>(
    x: &Var<'t>,
    base: Option<(&Var<'t>, Option<&Var<'t>>)>,
    branches: &[Branch<'_, 't>],
    p: f32,
) -> Result<Var<'t>> {
    let o_dim = check(x.shape(), base, branches, p)?;
    let (rows, i_dim) = x.value().rows_cols();

    // Drop-path masks: per branch and sample, kept or not; and the kept row ranges.
    let samples = x.shape()[0];
    let rows_per_sample = rows.checked_div(samples).unwrap_or(0);
    let tape = x.tape();
    let stochastic = tape.is_train() && p > 0.0;
    let scale = if stochastic { 1.0 / (1.0 - p) } else { 1.0 };
    let keep: Vec<Vec<bool>> = branches
        .iter()
        .map(|_| {
            let mut rng = tape.rng();
            (0..samples).map(|_| !stochastic || rng.gen::<f32>() >= p).collect()
        })
        .collect();
    let kept: Vec<Kept> = keep
        .iter()
        .map(|kb| Kept {
            ranges: runs_of(samples, |s| kb[s])
                .into_iter()
                .map(|(a, b)| (a * rows_per_sample, b * rows_per_sample))
                .collect(),
            scale,
        })
        .collect();
    if let Some((w, b)) = base {
        // Every sample keeps the same branches (no drop-path, evaluation, or the draw agreed).
        let one_pattern = (1..samples).all(|s| keep.iter().all(|kb| kb[s] == kb[0]));
        if w.node().is_none() && !branches.is_empty() && one_pattern {
            let kept_branches: Vec<bool> = keep.iter().map(|kb| kb.first() != Some(&false)).collect();
            return fold(w, b, branches, &kept_branches, kept, scale).record(x);
        }
    }

    // Forward.
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().unwrap() = o_dim;
    let xd = x.value().data();
    let (base, base_inputs) = match base {
        Some((w, b)) => {
            let (map, inputs) = DenseLinear::new(w, b)?.into_parts();
            (Some(map), inputs)
        }
        None => (None, vec![]),
    };
    let mut y = base.as_ref().map_or_else(|| vec![0.0; rows * o_dim], |m| m.forward(xd, rows, None));
    for (br, k) in branches.iter().zip(&kept) {
        let (spec, w, bias) = (br.spec, br.weight.value().data(), br.bias.map(|b| b.value().data()));
        k.each_range(&mut y, o_dim, |(r0, r1), ys| {
            grouped_forward(&spec, k.scale, &xd[r0 * i_dim..r1 * i_dim], w, bias, ys)
        })?;
    }
    let value = Tensor::from_parts(out_shape, y);

    // Record.
    let mut inputs: Vec<&Var<'t>> = std::iter::once(x).chain(&base_inputs).collect();
    for br in branches {
        inputs.push(br.weight);
        inputs.extend(br.bias);
    }
    let xv = x.value().clone();
    let xn = x.node();
    let br_saved: Vec<(GroupSpec, Tensor, Option<usize>, Option<usize>)> = branches
        .iter()
        .map(|br| (br.spec, br.weight.value().clone(), br.weight.node(), br.bias.and_then(|b| b.node())))
        .collect();
    tape.op(OP, value, &inputs, move |dy, g| {
        let dyd = dy.data();
        g.add_with(xn, || {
            let mut dx = base.as_ref().map_or_else(|| vec![0.0; rows * i_dim], |m| m.input_grad(dyd, rows, None));
            for ((spec, wk, _, _), k) in br_saved.iter().zip(&kept) {
                k.each_range(&mut dx, i_dim, |(r0, r1), dxs| {
                    grouped_backward_input(spec, k.scale, &dyd[r0 * o_dim..r1 * o_dim], wk.data(), dxs)
                })?;
            }
            Ok(Tensor::from_parts(xv.shape().to_vec(), dx))
        })?;
        if let Some(m) = &base {
            m.bias_grad(dyd, g)?;
            (m.rest)(xv.data(), dyd, rows, g)?;
        }
        let saved: Vec<(GroupSpec, Option<usize>, Option<usize>)> =
            br_saved.iter().map(|(s, _, g, b)| (*s, *g, *b)).collect();
        branch_weight_grads(&saved, &kept, xv.data(), dyd, i_dim, o_dim, g)
    })
}

/// The frozen-weight path when every sample keeps the same branches (no drop-path, evaluation,
/// or a draw that agreed). Every branch is linear, so the layer is then one dense map
/// `W_m = W + Σ_{k kept} s·BD(G_k)·Π_k` (bias likewise): the branches ride inside the frozen
/// layer's GEMM, forward and for `dx`. What remains of them is their weight gradient `dG_k` (a
/// block-diagonal product) and `dβ_k`. No weight-gradient GEMM for `W`: it is frozen.
///
/// With several drop-path patterns in a batch the unfolded path is used instead: one GEMM with
/// the frozen weight and the branches' grouped kernels on their kept rows. Folding each pattern
/// into its own `W_m` (one GEMM per pattern on its samples, gathered and scattered back) made the
/// released recipe's step (drop-path 0.5) 1.2–1.5× slower on the ViT shapes.
fn fold<'t>(
    w: &Var<'t>,
    b: Option<&Var<'t>>,
    branches: &[Branch<'_, 't>],
    kept_branches: &[bool],
    kept: Vec<Kept>,
    scale: f32,
) -> DenseLinear<'t> {
    let (o_dim, i_dim) = (w.shape()[0], w.shape()[1]);
    let mut bm: Vec<f32> = b.map(|b| b.value().data().to_vec()).unwrap_or_else(|| vec![0.0; o_dim]);
    // Every branch dropped: the frozen weight itself, whose panels are packed once and kept.
    let all_dropped = !kept_branches.iter().any(|&k| k);
    let mut wm = w.value().clone();
    if !all_dropped {
        let mut v = w.value().data().to_vec();
        for (br, _) in branches.iter().zip(kept_branches).filter(|(_, &k)| k) {
            scatter_branch(&br.spec, scale, br.weight.value().data(), &mut v);
            if let Some(beta) = br.bias {
                bm.iter_mut().zip(beta.value().data()).for_each(|(a, v)| *a += scale * v);
            }
        }
        wm = Tensor::from_parts(vec![o_dim, i_dim], v);
    }
    let mut inputs: Vec<Var<'t>> = std::iter::once(w).chain(b).cloned().collect();
    for br in branches {
        inputs.extend(std::iter::once(br.weight).chain(br.bias).cloned());
    }
    let saved: Vec<(GroupSpec, Option<usize>, Option<usize>)> =
        branches.iter().map(|br| (br.spec, br.weight.node(), br.bias.and_then(|b| b.node()))).collect();
    let rest: ParamGrads = Box::new(move |x, dy, _, g| branch_weight_grads(&saved, &kept, x, dy, i_dim, o_dim, g));
    let bias = Some(Tensor::from_parts(vec![o_dim], bm));
    DenseLinear::folded(OP, (wm, bias), all_dropped, inputs, b.and_then(|b| b.node()), rest)
}

/// `W[:, src] += s·BD(G)` for one branch, in place on a dense `[O, I]` matrix.
fn scatter_branch(spec: &GroupSpec, s: f32, blocks: &[f32], w: &mut [f32]) {
    let (i_dim, ci, co) = (spec.in_dim, spec.ci(), spec.co());
    for o in 0..spec.out_dim {
        let i = o / co;
        for t in 0..ci {
            w[o * i_dim + spec.src(i * ci + t)] += s * blocks[o * ci + t];
        }
    }
}

/// The branches' weight and bias gradients over their kept rows.
fn branch_weight_grads(
    saved: &[(GroupSpec, Option<usize>, Option<usize>)],
    kept: &[Kept],
    x: &[f32],
    dy: &[f32],
    i_dim: usize,
    o_dim: usize,
    g: &mut Grads,
) -> Result<()> {
    for ((spec, gn, bn), k) in saved.iter().zip(kept) {
        if gn.is_none() && bn.is_none() {
            continue;
        }
        let mut dw = vec![0.0; spec.weight_len()];
        let mut db = vec![0.0; o_dim];
        for &(r0, r1) in &k.ranges {
            grouped_backward_weight(
                spec,
                k.scale,
                &x[r0 * i_dim..r1 * i_dim],
                &dy[r0 * o_dim..r1 * o_dim],
                &mut dw,
                bn.is_some().then_some(db.as_mut_slice()),
            )?;
        }
        g.add_with(*gn, || Ok(Tensor::from_parts(spec.weight_shape().to_vec(), dw)))?;
        g.add_with(*bn, || Ok(Tensor::from_parts(vec![o_dim], db)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::ops::testutil::rand_t;
    use crate::autograd::{gradcheck, GradcheckOptions, Tape};
    use proptest::prelude::*;

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The frozen-weight paths (branches folded into the GEMM when every sample keeps the
        /// same branches — one sample, or no drop-path — else beside it) against finite
        /// differences …
        #[test]
        fn folded_path_gradcheck(ci in 1usize..4, co in 1usize..4, g1 in 1usize..4, reorder in any::<bool>(),
                                 samples in prop::sample::select(vec![1usize, 3]), p in prop::sample::select(vec![0.0f32, 0.5]),
                                 seed in 0u64..1000) {
            let (i, o) = (ci * g1 * 2, co * g1 * 2);
            let s1 = GroupSpec::new(i, o, g1, reorder).unwrap();
            let s2 = GroupSpec::new(i, o, g1 * 2, !reorder).unwrap();
            let (w, b) = (rand_t(&[o, i], seed + 1), rand_t(&[o], seed + 2));
            let inputs = vec![rand_t(&[samples, 2, i], seed), rand_t(&s1.weight_shape(), seed + 3), rand_t(&[o], seed + 4), rand_t(&s2.weight_shape(), seed + 5)];
            let r = gradcheck(|t, v| {
                let (wv, bv) = (t.constant(w.clone()), t.constant(b.clone()));
                let brs = [Branch { spec: s1, weight: &v[1], bias: Some(&v[2]) }, Branch { spec: s2, weight: &v[3], bias: None }];
                v[0].consolidated_linear(&wv, Some(&bv), &brs, p)
            }, &inputs, GradcheckOptions::default()).unwrap();
            prop_assert!(r.passed(), "{}", r);
        }

        /// … and against the direct path (branch kernels beside the GEMM) in training mode, where
        /// both draw the same drop-path masks from the same seed: outputs and gradients agree.
        #[test]
        fn folded_equals_direct_in_training(g in prop::sample::select(vec![1usize, 2, 4]), reorder in any::<bool>(),
                                            samples in prop::sample::select(vec![1usize, 6]), p in prop::sample::select(vec![0.0f32, 0.5]),
                                            seed in 0u64..1000) {
            let (i, o) = (8, 12);
            let spec = GroupSpec::new(i, o, g, reorder).unwrap();
            let spec2 = GroupSpec::new(i, o, 4, false).unwrap();
            let (x, w, b) = (rand_t(&[samples, 3, i], seed), rand_t(&[o, i], seed + 1), rand_t(&[o], seed + 2));
            let (gw, gb, gw2) = (rand_t(&spec.weight_shape(), seed + 3), rand_t(&[o], seed + 4), rand_t(&spec2.weight_shape(), seed + 5));
            let run = |frozen: bool| {
                let tape = Tape::new().with_seed(seed);
                let xv = tape.var(x.clone());
                let wv = if frozen { tape.constant(w.clone()) } else { tape.var(w.clone()) };
                let bv = tape.var(b.clone());
                let (g1, b1, g2) = (tape.var(gw.clone()), tape.var(gb.clone()), tape.var(gw2.clone()));
                let brs = [Branch { spec, weight: &g1, bias: Some(&b1) }, Branch { spec: spec2, weight: &g2, bias: None }];
                let y = xv.consolidated_linear(&wv, Some(&bv), &brs, p).unwrap();
                let loss = y.mul(&y).unwrap().sum().unwrap();
                let grads = tape.backward(&loss).unwrap();
                let get = |v: &Var| grads.get(v).unwrap().clone();
                (y.value().clone(), get(&xv), get(&bv), get(&g1), get(&b1), get(&g2))
            };
            let (a, d) = (run(true), run(false));
            for (u, v) in [(&a.0, &d.0), (&a.1, &d.1), (&a.2, &d.2), (&a.3, &d.3), (&a.4, &d.4), (&a.5, &d.5)] {
                prop_assert!(u.max_abs_diff(v) <= 1e-4 * v.max_abs().max(1.0), "{} vs {}", u.max_abs_diff(v), v.max_abs());
            }
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
