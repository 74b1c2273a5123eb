//! Movement: ops that only rearrange (or repeat) values.
//!
//! - `reshape(shape)`: same values, new shape, no copy. Backward: reshape `dy` back.
//! - `permute(perm)`: `y[i_0, .., i_r] = x[j]` with `j[perm[d]] = i_d` (output dimension `d` is
//!   input dimension `perm[d]`), copied into row-major order. Backward: permute `dy` by the
//!   inverse permutation. `transpose(d0, d1)` is the permutation swapping two dimensions.
//! - `Var::concat(xs, dim)`: inputs stacked along `dim`; backward: each input gets its slice of `dy`.
//! - `narrow(dim, start, len)`: the slice `start..start + len` of `dim`; backward: `dy` written into
//!   that slice of a zero gradient.
//! - `broadcast_to(shape)`: numpy broadcast (e.g. a cls token `[1, 1, C] → [B, 1, C]`); backward:
//!   `dy` summed over the broadcast dimensions.
//! - `index_select_last(idx)`: `y[.., j] = x[.., idx[j]]` (e.g. a channel permutation); backward:
//!   `dx[.., idx[j]] += dy[.., j]` (a scatter-add, so repeated indices accumulate).
//! - `patchify(ph, pw)`: `[B, C, H, W] → [B, (H/ph)·(W/pw), C·ph·pw]`,
//!   `y[b, py·(W/pw) + px, (c·ph + i)·pw + j] = x[b, c, py·ph + i, px·pw + j]`: patches in
//!   row-major order, features in `(c, i, j)` order — the flattening of a Conv2d patch-embedding
//!   weight `[E, C, ph, pw]`, so `patchify(p, p)?.linear(&w.reshape([E, C·p·p]), b)` is timm's
//!   `patch_embed`. A bijection: backward writes each `dy` value back to its pixel.
//!
//! ```
//! use consolidator::autograd::{Tape, Var};
//! use consolidator::Tensor;
//! let tape = Tape::new();
//! let img = tape.constant(Tensor::zeros(&[2, 3, 32, 32])); // [B, C, H, W]
//! let patches = img.patchify(16, 16).unwrap(); // [B, 4, 3·16·16]
//! assert_eq!(patches.shape(), &[2, 4, 768]);
//! let cls = tape.var(Tensor::zeros(&[1, 1, 768])).broadcast_to(&[2, 1, 768]).unwrap();
//! let tokens = Var::concat(&[&cls, &patches], 1).unwrap();
//! assert_eq!(tokens.shape(), &[2, 5, 768]);
//! ```

use super::elementwise::{broadcast_binary, broadcast_shape, reduce_to};
use super::reduce::split_at_dim;
use crate::autograd::Var;
use crate::{Error, Result, Tensor};

/// Row-major strides of a shape.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// `x` permuted (a copy); `perm` must be a valid permutation of `0..rank`.
fn permute_tensor(x: &Tensor, perm: &[usize]) -> Tensor {
    let r = perm.len();
    let in_strides = strides(x.shape());
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let src: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let n = x.numel();
    let mut out = Vec::with_capacity(n);
    if r == 0 || n == 0 {
        out.extend_from_slice(x.data());
        return Tensor::from_parts(shape, out);
    }
    let xd = x.data();
    let (inner, is) = (shape[r - 1], src[r - 1]);
    let mut idx = vec![0usize; r - 1];
    let mut off = 0usize;
    for _ in 0..n / inner {
        out.extend((0..inner).map(|j| xd[off + j * is]));
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            off += src[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= src[d] * shape[d];
            idx[d] = 0;
        }
    }
    Tensor::from_parts(shape, out)
}

impl<'t> Var<'t> {
    /// The same values under `shape` (same number of elements; no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Var<'t>> {
        let value = self.value().reshape(shape)?;
        let (xn, in_shape) = (self.node(), self.shape().to_vec());
        self.tape().op("reshape", value, &[self], move |dy, g| g.add_with(xn, || dy.reshape(&in_shape)))
    }

    /// Output dimension `d` is input dimension `perm[d]` (a copy). See the module docs.
    pub fn permute(&self, perm: &[usize]) -> Result<Var<'t>> {
        let r = self.value().rank();
        let mut seen = vec![false; r];
        let valid = perm.len() == r && perm.iter().all(|&p| p < r && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(Error::bad_shape(
                "permute",
                self.shape(),
                format!("{perm:?} is not a permutation of the {r} dimensions"),
            ));
        }
        let value = permute_tensor(self.value(), perm);
        let mut inverse = vec![0; r];
        for (d, &p) in perm.iter().enumerate() {
            inverse[p] = d;
        }
        let xn = self.node();
        self.tape().op("permute", value, &[self], move |dy, g| g.add_with(xn, || Ok(permute_tensor(dy, &inverse))))
    }

    /// Swaps dimensions `d0` and `d1` (a copy).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Var<'t>> {
        let r = self.value().rank();
        if d0 >= r || d1 >= r {
            return Err(Error::bad_shape(
                "transpose",
                self.shape(),
                format!("dimensions ({d0}, {d1}) do not both exist"),
            ));
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(d0, d1);
        self.permute(&perm)
    }

    /// The inputs stacked along `dim`; all other dimensions must agree (e.g. a cls token
    /// `[B, 1, C]` and patch tokens `[B, N, C]` along `dim = 1`). See the module docs.
    pub fn concat(xs: &[&Var<'t>], dim: usize) -> Result<Var<'t>> {
        let Some(first) = xs.first() else {
            return Err(Error::invalid("concat", "needs at least one input"));
        };
        let shape0 = first.shape();
        if dim >= shape0.len() {
            return Err(Error::bad_shape("concat", shape0, format!("dimension {dim} does not exist")));
        }
        for x in xs {
            let s = x.shape();
            let agree =
                s.len() == shape0.len() && s.iter().zip(shape0).enumerate().all(|(d, (a, b))| d == dim || a == b);
            if !agree {
                return Err(Error::shape("concat", shape0, s));
            }
        }
        let (outer, _, inner) = split_at_dim(shape0, dim);
        let lens: Vec<usize> = xs.iter().map(|x| x.shape()[dim]).collect();
        let total: usize = lens.iter().sum();
        let mut out = Vec::with_capacity(outer * total * inner);
        for o in 0..outer {
            for (x, &n) in xs.iter().zip(&lens) {
                out.extend_from_slice(&x.value().data()[o * n * inner..(o + 1) * n * inner]);
            }
        }
        let mut shape = shape0.to_vec();
        shape[dim] = total;
        let nodes: Vec<Option<usize>> = xs.iter().map(|x| x.node()).collect();
        let shapes: Vec<Vec<usize>> = xs.iter().map(|x| x.shape().to_vec()).collect();
        let value = Tensor::from_parts(shape, out);
        first.tape().op("concat", value, xs, move |dy, g| {
            let d = dy.data();
            let mut start = 0;
            for ((node, s), &n) in nodes.iter().zip(&shapes).zip(&lens) {
                g.add_with(*node, || {
                    let mut dx = Vec::with_capacity(outer * n * inner);
                    for o in 0..outer {
                        let base = (o * total + start) * inner;
                        dx.extend_from_slice(&d[base..base + n * inner]);
                    }
                    Ok(Tensor::from_parts(s.clone(), dx))
                })?;
                start += n;
            }
            Ok(())
        })
    }

    /// The slice `start..start + len` of dimension `dim` (a copy).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Var<'t>> {
        let shape = self.shape();
        if dim >= shape.len() || start.checked_add(len).is_none_or(|e| e > shape[dim]) {
            return Err(Error::bad_shape(
                "narrow",
                shape,
                format!("cannot take {start}..{start}+{len} of dimension {dim}"),
            ));
        }
        let (outer, n, inner) = split_at_dim(shape, dim);
        let x = self.value().data();
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            let base = (o * n + start) * inner;
            out.extend_from_slice(&x[base..base + len * inner]);
        }
        let mut out_shape = shape.to_vec();
        out_shape[dim] = len;
        let (xn, in_shape) = (self.node(), shape.to_vec());
        let value = Tensor::from_parts(out_shape, out);
        self.tape().op("narrow", value, &[self], move |dy, g| {
            g.add_with(xn, || {
                let mut dx = vec![0.0; outer * n * inner];
                for (o, src) in dy.data().chunks_exact((len * inner).max(1)).enumerate() {
                    let base = (o * n + start) * inner;
                    dx[base..base + len * inner].copy_from_slice(src);
                }
                Ok(Tensor::from_parts(in_shape, dx))
            })
        })
    }

    /// The value repeated to `shape` under numpy's broadcasting rule (a copy). See the module docs.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Var<'t>> {
        if broadcast_shape(self.shape(), shape).as_deref() != Some(shape) {
            return Err(Error::shape("broadcast_to", shape, self.shape()));
        }
        let value = broadcast_binary(self.value(), &Tensor::scalar(0.0), shape, |x, _| x);
        let (xn, in_shape) = (self.node(), self.shape().to_vec());
        self.tape().op("broadcast_to", value, &[self], move |dy, g| g.add_with(xn, || Ok(reduce_to(dy, &in_shape))))
    }

    /// `y[.., j] = x[.., idx[j]]`: a gather along the last dimension by a fixed index list.
    pub fn index_select_last(&self, idx: &[usize]) -> Result<Var<'t>> {
        let (rows, n) = self.value().rows_cols();
        if self.value().rank() == 0 || idx.iter().any(|&i| i >= n) {
            return Err(Error::bad_shape(
                "index_select_last",
                self.shape(),
                format!("indices must be below the last dimension {n}"),
            ));
        }
        let m = idx.len();
        let x = self.value().data();
        let mut out = Vec::with_capacity(rows * m);
        for r in 0..rows {
            let row = &x[r * n..(r + 1) * n];
            out.extend(idx.iter().map(|&i| row[i]));
        }
        let mut shape = self.shape().to_vec();
        *shape.last_mut().unwrap() = m;
        let (xn, in_shape, idx) = (self.node(), self.shape().to_vec(), idx.to_vec());
        let value = Tensor::from_parts(shape, out);
        self.tape().op("index_select_last", value, &[self], move |dy, g| {
            g.add_with(xn, || {
                let mut dx = vec![0.0; rows * n];
                if m > 0 {
                    for (dxr, dyr) in dx.chunks_exact_mut(n).zip(dy.data().chunks_exact(m)) {
                        for (&i, &v) in idx.iter().zip(dyr) {
                            dxr[i] += v;
                        }
                    }
                }
                Ok(Tensor::from_parts(in_shape, dx))
            })
        })
    }

    /// `[B, C, H, W] → [B, (H/ph)·(W/pw), C·ph·pw]`: non-overlapping patches, row-major, features
    /// in `(c, i, j)` order. See the module docs.
    pub fn patchify(&self, ph: usize, pw: usize) -> Result<Var<'t>> {
        let [b, c, h, w] = self.value().dims::<4>("patchify")?;
        if ph == 0 || pw == 0 || h % ph != 0 || w % pw != 0 {
            return Err(Error::bad_shape(
                "patchify",
                self.shape(),
                format!("the image height and width must be multiples of the patch size {ph}×{pw}"),
            ));
        }
        let geom = Patches { b, c, h, w, ph, pw };
        let mut out = vec![0.0; self.value().numel()];
        geom.for_each_row(|src, dst| out[dst..dst + pw].copy_from_slice(&self.value().data()[src..src + pw]));
        let value = Tensor::from_parts(vec![b, (h / ph) * (w / pw), c * ph * pw], out);
        let (xn, in_shape) = (self.node(), self.shape().to_vec());
        self.tape().op("patchify", value, &[self], move |dy, g| {
            g.add_with(xn, || {
                let mut dx = vec![0.0; dy.numel()];
                let d = dy.data();
                geom.for_each_row(|src, dst| dx[src..src + pw].copy_from_slice(&d[dst..dst + pw]));
                Ok(Tensor::from_parts(in_shape, dx))
            })
        })
    }
}

/// The geometry of `patchify`.
#[derive(Clone, Copy)]
struct Patches {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
}

impl Patches {
    /// Calls `f(image_offset, patch_offset)` for every run of `pw` contiguous pixels: one patch row
    /// of one channel, contiguous in both layouts.
    fn for_each_row(&self, mut f: impl FnMut(usize, usize)) {
        let Patches { b, c, h, w, ph, pw } = *self;
        let (nh, nw) = (h / ph, w / pw);
        let feat = c * ph * pw;
        for bi in 0..b {
            for py in 0..nh {
                for px in 0..nw {
                    let dst0 = (bi * nh * nw + py * nw + px) * feat;
                    for ci in 0..c {
                        for i in 0..ph {
                            let src = ((bi * c + ci) * h + py * ph + i) * w + px * pw;
                            f(src, dst0 + (ci * ph + i) * pw);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::ops::testutil::{check, frozen_mix, rand_t};
    use crate::autograd::{Tape, Var};
    use crate::{Error, Tensor};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn reshape_permute_transpose_gradcheck(dims in proptest::collection::vec(1usize..4, 1..5), rot in 0usize..4, seed in 0u64..1000) {
            let r = dims.len();
            let x = rand_t(&dims, seed);
            let perm: Vec<usize> = (0..r).map(|d| (d + rot) % r).collect();
            check(|_, v| v[0].permute(&perm), std::slice::from_ref(&x));
            check(|_, v| v[0].transpose(0, r - 1)?.reshape(&[x.numel()]), std::slice::from_ref(&x));
        }

        #[test]
        fn concat_narrow_gradcheck(a in 1usize..4, n1 in 1usize..4, n2 in 1usize..4, c in 1usize..4, dim in 0usize..3, start in 0usize..3, seed in 0u64..1000) {
            let mut s1 = vec![a, a + 1, c];
            let mut s2 = s1.clone();
            s1[dim] = n1;
            s2[dim] = n2;
            let (x1, x2) = (rand_t(&s1, seed), rand_t(&s2, seed + 1));
            check(|_, v| Var::concat(&[&v[0], &v[1], &v[0]], dim), &[x1.clone(), x2]);
            let start = start % n1;
            check(|_, v| v[0].narrow(dim, start, n1 - start), &[x1]);
        }

        #[test]
        fn broadcast_to_gradcheck(b in 1usize..4, t in 1usize..4, c in 1usize..4, which in 0usize..3, seed in 0u64..1000) {
            let small = match which { 0 => vec![1, 1, c], 1 => vec![c], _ => vec![b, 1, 1] };
            let x = rand_t(&small, seed);
            check(|_, v| v[0].broadcast_to(&[b, t, c]), &[x]);
        }

        #[test]
        fn index_select_last_gradcheck(rows in 1usize..4, n in 1usize..6, idx in proptest::collection::vec(0usize..6, 0..8), seed in 0u64..1000) {
            let idx: Vec<usize> = idx.into_iter().map(|i| i % n).collect();
            let x = rand_t(&[rows, n], seed);
            // An empty index list gives an empty output: nothing to check.
            prop_assume!(!idx.is_empty());
            check(|_, v| v[0].index_select_last(&idx), &[x]);
        }

        #[test]
        fn patchify_gradcheck(b in 1usize..3, c in 1usize..3, nh in 1usize..3, nw in 1usize..3, ph in 1usize..4, pw in 1usize..4, seed in 0u64..1000) {
            let x = rand_t(&[b, c, nh * ph, nw * pw], seed);
            check(|_, v| v[0].patchify(ph, pw), &[x]);
        }
    }

    #[test]
    fn permute_matches_index_formula() {
        let tape = Tape::new();
        let x = rand_t(&[2, 3, 4], 5);
        let y = tape.constant(x.clone()).permute(&[2, 0, 1]).unwrap();
        assert_eq!(y.shape(), &[4, 2, 3]);
        for i in 0..4 {
            for j in 0..2 {
                for k in 0..3 {
                    assert_eq!(y.value().data()[(i * 2 + j) * 3 + k], x.data()[(j * 3 + k) * 4 + i]);
                }
            }
        }
    }

    #[test]
    fn reshape_does_not_copy() {
        let tape = Tape::new();
        let x = tape.var(rand_t(&[2, 6], 1));
        let y = x.reshape(&[3, 4]).unwrap();
        assert!(y.value().shares_storage(x.value()));
    }

    #[test]
    fn patchify_matches_conv_weight_flattening() {
        // A stride-p convolution with weight w[e, c, i, j] equals patchify + linear with w flattened.
        let (b, c, h, w, p, e) = (2, 3, 4, 6, 2, 5);
        let x = rand_t(&[b, c, h, w], 1);
        let wt = rand_t(&[e, c, p, p], 2);
        let tape = Tape::new();
        let y = tape
            .constant(x.clone())
            .patchify(p, p)
            .unwrap()
            .linear(&tape.constant(wt.reshape(&[e, c * p * p]).unwrap()), None)
            .unwrap();
        let (nh, nw) = (h / p, w / p);
        assert_eq!(y.shape(), &[b, nh * nw, e]);
        for bi in 0..b {
            for py in 0..nh {
                for px in 0..nw {
                    for ei in 0..e {
                        let mut acc = 0.0f64;
                        for ci in 0..c {
                            for i in 0..p {
                                for j in 0..p {
                                    let xv = x.data()[((bi * c + ci) * h + py * p + i) * w + px * p + j];
                                    let wv = wt.data()[((ei * c + ci) * p + i) * p + j];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        let got = y.value().data()[(bi * nh * nw + py * nw + px) * e + ei];
                        assert!((got as f64 - acc).abs() < 1e-4, "{got} vs {acc}");
                    }
                }
            }
        }
    }

    #[test]
    fn cls_token_broadcast_and_concat() {
        let tape = Tape::new();
        let cls = tape.var(rand_t(&[1, 1, 4], 1));
        let tokens = tape.constant(rand_t(&[3, 5, 4], 2));
        let x = Var::concat(&[&cls.broadcast_to(&[3, 1, 4]).unwrap(), &tokens], 1).unwrap();
        assert_eq!(x.shape(), &[3, 6, 4]);
        let g = x.sum().unwrap().backward().unwrap();
        assert_eq!(g.get(&cls).unwrap().data(), &[3.0; 4]);
        frozen_mix(|x, c| Var::concat(&[x, c], 0), &rand_t(&[2, 3], 1), &rand_t(&[1, 3], 2));
    }

    #[test]
    fn shape_errors_are_errors() {
        let tape = Tape::new();
        let x = tape.var(Tensor::zeros(&[2, 3, 4, 6]));
        assert!(matches!(x.patchify(3, 3), Err(Error::BadShape { op: "patchify", .. })));
        assert!(matches!(x.narrow(1, 2, 2), Err(Error::BadShape { op: "narrow", .. })));
        assert!(matches!(x.permute(&[0, 1, 1, 2]), Err(Error::BadShape { op: "permute", .. })));
        assert!(matches!(x.transpose(0, 4), Err(Error::BadShape { .. })));
        assert!(matches!(x.index_select_last(&[6]), Err(Error::BadShape { .. })));
        assert!(matches!(x.broadcast_to(&[2, 3, 4]), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(x.reshape(&[5]), Err(Error::ShapeMismatch { .. })));
        let y = tape.var(Tensor::zeros(&[2, 2, 4, 6]));
        assert!(matches!(Var::concat(&[&x, &y], 0), Err(Error::ShapeMismatch { op: "concat", .. })));
        assert!(Var::concat(&[], 0).is_err());
    }

    #[test]
    fn empty_slices_and_inputs_do_not_panic() {
        let tape = Tape::new();
        let x = tape.var(rand_t(&[2, 3], 1));
        let e = x.narrow(1, 3, 0).unwrap();
        assert_eq!(e.shape(), &[2, 0]);
        let y = Var::concat(&[&x, &e], 1).unwrap().sum().unwrap();
        assert_eq!(y.backward().unwrap().get(&x).unwrap().data(), &[1.0; 6]);
        let t = Tape::new();
        let x = t.var(Tensor::zeros(&[0, 3, 6]));
        let y = x.attention(1).unwrap().matmul(&t.var(Tensor::zeros(&[2, 4]))).unwrap();
        assert_eq!(y.shape(), &[0, 3, 4]);
        assert_eq!(y.sum().unwrap().backward().unwrap().get(&x).unwrap().shape(), &[0, 3, 6]);
    }
}
