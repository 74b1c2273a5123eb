//! Elementwise arithmetic: `add`, `sub`, `mul` with numpy-style broadcasting, and the scalar ops
//! `scale`, `add_scalar`, `neg`.
//!
//! Broadcasting (numpy's rule): shapes are aligned on their last dimension; each pair of aligned
//! dimensions must be equal or one of them 1 (a missing dimension counts as 1); the output takes
//! the larger. The model uses `[B,T,C] + [1,T,C]` (position embedding), `[B,T,C] ⊙ [C]` and
//! `+ [C]` (SSF scale and shift), and equal shapes (residuals), which take a plain loop.
//!
//! Backward of `y = a ∘ b` broadcast to `S`: the gradient with respect to each operand is computed
//! at shape `S` and then summed over the dimensions along which that operand was broadcast
//! (`reduce_to`):
//! - `add`: `da = Σ_bcast dy`, `db = Σ_bcast dy`,
//! - `sub`: `da = Σ_bcast dy`, `db = −Σ_bcast dy`,
//! - `mul`: `da = Σ_bcast dy ⊙ b`, `db = Σ_bcast dy ⊙ a`.
//!
//! Scalar ops: `scale(s)`: `y = s·x`, `dx = s·dy`; `add_scalar(s)`: `y = x + s`, `dx = dy`;
//! `neg`: `y = −x`, `dx = −dy`.
//!
//! ```
//! use consolidator::autograd::Tape;
//! use consolidator::Tensor;
//! let tape = Tape::new();
//! let x = tape.constant(Tensor::full(&[2, 3, 4], 1.0)); // [B, T, C]
//! let shift = tape.var(Tensor::full(&[4], 0.5)); // [C]
//! let y = x.add(&shift).unwrap();
//! assert_eq!(y.shape(), &[2, 3, 4]);
//! let g = y.sum().unwrap().backward().unwrap();
//! assert_eq!(g.get(&shift).unwrap().data(), &[6.0; 4]); // summed over B and T
//! ```

use crate::autograd::Var;
use crate::kernels::elementwise;
use crate::{par, Error, Result, Tensor};

/// The numpy broadcast of two shapes, or `None` when they are incompatible.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// The strides of a tensor of shape `from` read at the indices of the broadcast shape `to`:
/// 0 along broadcast (missing or size-1) dimensions. `from` must broadcast to `to`.
pub(crate) fn broadcast_strides(from: &[usize], to: &[usize]) -> Vec<usize> {
    let off = to.len() - from.len();
    let mut strides = vec![0; to.len()];
    let mut s = 1;
    for i in (0..from.len()).rev() {
        if from[i] != 1 || to[i + off] == 1 {
            strides[i + off] = s;
        }
        s *= from[i];
    }
    strides
}

/// Calls `f(out_offset, a_offset, b_offset)` for the start of every row (last dimension) of the
/// shape `shape`, with `a` and `b` read through the strides `sa`, `sb`. Rows are visited in order.
fn for_each_row(shape: &[usize], sa: &[usize], sb: &[usize], mut f: impl FnMut(usize, usize, usize)) {
    let r = shape.len();
    if r == 0 {
        f(0, 0, 0);
        return;
    }
    let n = shape[r - 1];
    let rows: usize = shape[..r - 1].iter().product();
    if n == 0 || rows == 0 {
        return;
    }
    let mut idx = vec![0usize; r - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    for row in 0..rows {
        f(row * n, oa, ob);
        // Odometer over the leading dimensions.
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < shape[d] {
                break;
            }
            oa -= sa[d] * shape[d];
            ob -= sb[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// `op(a, b, out)` on equal shapes, chunk by chunk into a new buffer (in parallel when large).
fn same_shape(a: &Tensor, b: &Tensor, op: impl Fn(&[f32], &[f32], &mut [f32]) + Sync + Send) -> Vec<f32> {
    const CHUNK: usize = 1 << 14;
    let (a, b) = (a.data(), b.data());
    par::build(a.len(), CHUNK, |i, out| op(&a[i * CHUNK..][..out.len()], &b[i * CHUNK..][..out.len()], out))
}

/// `out = op(a, b)` with both operands broadcast to `shape`.
pub(crate) fn broadcast_binary(a: &Tensor, b: &Tensor, shape: &[usize], op: impl Fn(f32, f32) -> f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut out = par::zeros(n);
    let sa = broadcast_strides(a.shape(), shape);
    let sb = broadcast_strides(b.shape(), shape);
    let inner = shape.last().copied().unwrap_or(1);
    let (ia, ib) = (sa.last().copied().unwrap_or(0), sb.last().copied().unwrap_or(0));
    let (ad, bd) = (a.data(), b.data());
    for_each_row(shape, &sa, &sb, |o, pa, pb| {
        let orow = &mut out[o..o + inner];
        match (ia, ib) {
            (1, 1) => {
                for ((y, &x), &z) in orow.iter_mut().zip(&ad[pa..pa + inner]).zip(&bd[pb..pb + inner]) {
                    *y = op(x, z);
                }
            }
            (1, 0) => {
                let z = bd[pb];
                for (y, &x) in orow.iter_mut().zip(&ad[pa..pa + inner]) {
                    *y = op(x, z);
                }
            }
            _ => {
                for (j, y) in orow.iter_mut().enumerate() {
                    *y = op(ad[pa + j * ia], bd[pb + j * ib]);
                }
            }
        }
    });
    Tensor::from_parts(shape.to_vec(), out)
}

/// Sums `g` (of the broadcast shape) over the dimensions along which `target` was broadcast:
/// the backward of broadcasting `target` to `g.shape()`.
pub(crate) fn reduce_to(g: &Tensor, target: &[usize]) -> Tensor {
    if g.shape() == target {
        return g.clone();
    }
    let shape = g.shape();
    let st = broadcast_strides(target, shape);
    let inner = shape.last().copied().unwrap_or(1);
    let it = st.last().copied().unwrap_or(0);
    let mut out = par::zeros(target.iter().product());
    let gd = g.data();
    for_each_row(shape, &st, &st, |o, pt, _| {
        let grow = &gd[o..o + inner];
        if it == 1 {
            for (acc, &v) in out[pt..pt + inner].iter_mut().zip(grow) {
                *acc += v;
            }
        } else {
            out[pt] += grow.iter().sum::<f32>();
        }
    });
    Tensor::from_parts(target.to_vec(), out)
}

/// A tensor with every value mapped by `f`.
pub(crate) fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    Tensor::from_parts(x.shape().to_vec(), x.data().iter().map(|&v| f(v)).collect())
}

impl<'t> Var<'t> {
    /// The output shape of a broadcast binary op, or a shape error naming `op`.
    fn broadcast_with(&self, other: &Var<'t>, op: &'static str) -> Result<Vec<usize>> {
        broadcast_shape(self.shape(), other.shape()).ok_or_else(|| Error::ShapeMismatch {
            op,
            expected: self.shape().to_vec(),
            got: other.shape().to_vec(),
        })
    }

    /// `a + b` with numpy broadcasting (see the module docs).
    pub fn add(&self, other: &Var<'t>) -> Result<Var<'t>> {
        let shape = self.broadcast_with(other, "add")?;
        let value = if self.shape() == other.shape() {
            Tensor::from_parts(shape, same_shape(self.value(), other.value(), elementwise::add))
        } else {
            broadcast_binary(self.value(), other.value(), &shape, |x, y| x + y)
        };
        let (an, bn) = (self.node(), other.node());
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        self.tape().op("add", value, &[self, other], move |dy, g| {
            g.add_with(an, || Ok(reduce_to(dy, &sa)))?;
            g.add_with(bn, || Ok(reduce_to(dy, &sb)))
        })
    }

    /// `a − b` with numpy broadcasting (see the module docs).
    pub fn sub(&self, other: &Var<'t>) -> Result<Var<'t>> {
        let shape = self.broadcast_with(other, "sub")?;
        let value = broadcast_binary(self.value(), other.value(), &shape, |x, y| x - y);
        let (an, bn) = (self.node(), other.node());
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        self.tape().op("sub", value, &[self, other], move |dy, g| {
            g.add_with(an, || Ok(reduce_to(dy, &sa)))?;
            g.add_with(bn, || Ok(map(&reduce_to(dy, &sb), |v| -v)))
        })
    }

    /// `a ⊙ b` with numpy broadcasting (see the module docs).
    pub fn mul(&self, other: &Var<'t>) -> Result<Var<'t>> {
        let shape = self.broadcast_with(other, "mul")?;
        let value = if self.shape() == other.shape() {
            Tensor::from_parts(shape, same_shape(self.value(), other.value(), elementwise::mul))
        } else {
            broadcast_binary(self.value(), other.value(), &shape, |x, y| x * y)
        };
        let (an, bn) = (self.node(), other.node());
        let (a, b) = (self.value().clone(), other.value().clone());
        self.tape().op("mul", value, &[self, other], move |dy, g| {
            let prod = |t: &Tensor| broadcast_binary(dy, t, dy.shape(), |x, y| x * y);
            g.add_with(an, || Ok(reduce_to(&prod(&b), a.shape())))?;
            g.add_with(bn, || Ok(reduce_to(&prod(&a), b.shape())))
        })
    }

    /// `s·x`. Backward: `dx = s·dy`.
    pub fn scale(&self, s: f32) -> Result<Var<'t>> {
        let mut value = self.value().clone();
        elementwise::scale(value.data_mut(), s);
        let xn = self.node();
        self.tape().op("scale", value, &[self], move |dy, g| {
            g.add_with(xn, || {
                let mut dx = dy.clone();
                elementwise::scale(dx.data_mut(), s);
                Ok(dx)
            })
        })
    }

    /// `x + s`. Backward: `dx = dy`.
    pub fn add_scalar(&self, s: f32) -> Result<Var<'t>> {
        let value = map(self.value(), |v| v + s);
        let xn = self.node();
        self.tape().op("add_scalar", value, &[self], move |dy, g| g.add_with(xn, || Ok(dy.clone())))
    }

    /// `−x`. Backward: `dx = −dy`.
    pub fn neg(&self) -> Result<Var<'t>> {
        let value = map(self.value(), |v| -v);
        let xn = self.node();
        self.tape().op("neg", value, &[self], move |dy, g| g.add_with(xn, || Ok(map(dy, |v| -v))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::ops::testutil::{check, frozen_mix, rand_t};
    use crate::autograd::Tape;
    use proptest::prelude::*;

    /// A pair of shapes that broadcast: `a` random of rank 1..=3, `b` a suffix of it with some
    /// dimensions set to 1; `swap` exchanges the roles (broadcast on the left operand).
    fn shapes(dims: &[usize], keep: usize, ones: u8, swap: bool) -> (Vec<usize>, Vec<usize>) {
        let a = dims.to_vec();
        let b: Vec<usize> = a[a.len() - keep.min(a.len())..]
            .iter()
            .enumerate()
            .map(|(i, &d)| if ones >> i & 1 == 1 { 1 } else { d })
            .collect();
        if swap {
            (b, a)
        } else {
            (a, b)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn binary_broadcast_gradcheck(dims in proptest::collection::vec(1usize..4, 1..4), keep in 0usize..4, ones in 0u8..8, swap in any::<bool>(), op in 0usize..3, seed in 0u64..1000) {
            let (sa, sb) = shapes(&dims, keep, ones, swap);
            let (a, b) = (rand_t(&sa, seed), rand_t(&sb, seed + 1));
            check(|_, v| match op {
                0 => v[0].add(&v[1]),
                1 => v[0].sub(&v[1]),
                _ => v[0].mul(&v[1]),
            }, &[a, b]);
        }

        #[test]
        fn scalar_ops_gradcheck(dims in proptest::collection::vec(1usize..5, 0..3), s in -2.0f32..2.0, seed in 0u64..1000) {
            let x = rand_t(&dims, seed);
            check(|_, v| v[0].scale(s)?.add_scalar(s)?.neg(), &[x]);
        }
    }

    #[test]
    fn model_broadcasts_match_explicit_loops() {
        let tape = Tape::new();
        let x = rand_t(&[2, 3, 4], 1);
        let pos = rand_t(&[1, 3, 4], 2);
        let ch = rand_t(&[4], 3);
        let y = tape.var(x.clone()).add(&tape.var(pos.clone())).unwrap();
        let z = tape.var(x.clone()).mul(&tape.var(ch.clone())).unwrap();
        for b in 0..2 {
            for t in 0..3 {
                for c in 0..4 {
                    let i = (b * 3 + t) * 4 + c;
                    assert_eq!(y.value().data()[i], x.data()[i] + pos.data()[t * 4 + c]);
                    assert_eq!(z.value().data()[i], x.data()[i] * ch.data()[c]);
                }
            }
        }
    }

    #[test]
    fn reduce_to_sums_broadcast_dims() {
        let g = Tensor::new(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        assert_eq!(reduce_to(&g, &[3]).data(), &[5., 7., 9.]);
        assert_eq!(reduce_to(&g, &[2, 1]).data(), &[6., 15.]);
        assert_eq!(reduce_to(&g, &[1, 1]).data(), &[21.]);
        assert_eq!(reduce_to(&g, &[]).data(), &[21.]);
    }

    #[test]
    fn frozen_operand_gets_no_gradient() {
        let (x, c) = (rand_t(&[2, 3, 4], 1), rand_t(&[4], 2));
        frozen_mix(|x, c| x.mul(c), &x, &c);
        frozen_mix(|x, c| c.add(x), &x, &c);
        frozen_mix(|x, c| x.sub(c), &x, &c);
        // The broadcast operand trainable, the full one constant (SSF-style scale and shift).
        frozen_mix(|s, x| x.mul(s)?.sub(s), &c, &x);
    }

    #[test]
    fn incompatible_shapes_are_errors() {
        let tape = Tape::new();
        let a = tape.var(Tensor::zeros(&[2, 3]));
        let b = tape.var(Tensor::zeros(&[2]));
        for e in [a.add(&b), a.sub(&b), a.mul(&b)] {
            let e = e.unwrap_err();
            assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        }
    }
}
