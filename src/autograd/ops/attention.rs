//! Fused multi-head scaled-dot-product self-attention from a packed `qkv` tensor.
//!
//! Input `qkv: [B, T, 3C]` in timm's layout: channels `[q (0..C) ; k (C..2C) ; v (2C..3C)]`, each
//! head-major (head `h`, width `d` is channel `h·D + d`, `D = C/H`). Output `[B, T, C]` with head
//! `h` at channels `h·D..(h+1)·D` (timm's `(attn @ v).transpose(1, 2).reshape(B, N, C)`).
//!
//! Forward, for each batch entry and head (in parallel over the `B·H` pairs), with `Q`, `K`, `V`
//! the `[T, D]` strided views into `qkv` (row stride `3C`; no copies):
//! `S = s·Q·Kᵀ` (`s = D^-½`), `P = softmax_rows(S)` (over keys), `O = P·V`, written straight into
//! its columns of the output when there is a batch entry per worker. `P` is saved only when a
//! backward pass will run.
//!
//! Backward, given `dO` (a strided view into `dy`):
//! `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowdot(dP, P))`, `dQ = s·dS·K`, `dK = s·dSᵀ·Q`,
//! written in place into the matching channels of a `[B, T, 3C]` gradient (one work item per
//! batch entry).
//!
//! ```
//! use consolidator::autograd::Tape;
//! use consolidator::Tensor;
//! let tape = Tape::new();
//! let (b, t, c, heads) = (2, 5, 8, 2);
//! let qkv = tape.var(Tensor::full(&[b, t, 3 * c], 0.1));
//! let y = qkv.attention(heads).unwrap();
//! assert_eq!(y.shape(), &[b, t, c]);
//! let g = y.sum().unwrap().backward().unwrap();
//! assert_eq!(g.get(&qkv).unwrap().shape(), &[b, t, 3 * c]);
//! ```

use crate::autograd::Var;
use crate::kernels::softmax::{softmax_backward_rows, softmax_rows};
use crate::kernels::{gemm::gemm_push, gemm_batched, MatRef};
use crate::{par, Error, Result, Tensor};

/// `C = α·A·B + β·C` on the calling thread: a batch of one never fans out, so the per-head
/// products inside the `B·H` parallel loop do not nest parallelism.
fn gemm_here(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], ldc: usize) {
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    gemm_batched(1, alpha, a, 0, b, 0, beta, c, ldc, (m - 1) * ldc + n);
}

/// The sizes of one attention call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    c: usize,
    heads: usize,
    d: usize,
}

impl Dims {
    /// Row stride of `qkv`.
    fn c3(&self) -> usize {
        3 * self.c
    }
    /// Offset of `Q` (`which = 0`), `K` (1) or `V` (2) of batch entry `bi`, head `hi` in `qkv`.
    fn offset(&self, bi: usize, hi: usize, which: usize) -> usize {
        bi * self.t * self.c3() + which * self.c + hi * self.d
    }
    /// The `[T, D]` view of `Q`, `K` or `V`.
    fn view<'a>(&self, x: &'a [f32], bi: usize, hi: usize, which: usize) -> MatRef<'a> {
        MatRef::strided(&x[self.offset(bi, hi, which)..], self.t, self.d, self.c3(), 1)
    }
}

impl<'t> Var<'t> {
    /// Multi-head self-attention with `heads` heads from packed `qkv: [B, T, 3C]`, giving
    /// `[B, T, C]`. See the module docs.
    pub fn attention(&self, heads: usize) -> Result<Var<'t>> {
        let [b, t, c3] = self.value().dims::<3>("attention")?;
        if heads == 0 || c3 == 0 || c3 % (3 * heads) != 0 {
            return Err(Error::bad_shape(
                "attention",
                self.shape(),
                format!("the last dimension must be 3·C with C a positive multiple of heads = {heads}"),
            ));
        }
        let c = c3 / 3;
        let dims = Dims { b, t, c, heads, d: c / heads };
        let scale = (dims.d as f32).powf(-0.5);
        let qkv = self.value().clone();
        let x = qkv.data();
        let tt = t * t;
        // The probabilities P are kept for the backward pass (per batch entry) only when one
        // will run.
        let keep = self.requires_grad();
        let (out, probs) = if b >= par::threads() || t == 0 {
            // One work item per batch entry: its heads in turn, O written in place; P into the
            // entry's kept buffer, or (inference) one head's scratch reused.
            let mut probs: Vec<Vec<f32>> = vec![Vec::new(); if t == 0 { 0 } else { b }];
            let out = par::build_with(b * t * c, t * c, &mut probs, |bi, o, kept| {
                // Each head's scores are appended to the entry's kept P (or to a scratch
                // buffer), written once by the GEMM.
                let mut scratch = Vec::new();
                kept.reserve(if keep { heads * tt } else { 0 });
                for hi in 0..heads {
                    scratch.clear();
                    let k = dims.view(x, bi, hi, 1).t();
                    let p = gemm_push(scale, dims.view(x, bi, hi, 0), k, if keep { &mut *kept } else { &mut scratch });
                    softmax_rows(p, t);
                    gemm_here(1.0, MatRef::new(p, t, t), dims.view(x, bi, hi, 2), 0.0, &mut o[hi * dims.d..], c);
                }
            });
            (out, if keep { probs } else { Vec::new() })
        } else {
            // Few batch entries: one work item per (entry, head, block of queries), enough items
            // to keep every worker busy (one image has only a few heads); O and P gathered
            // afterwards.
            let items = b * heads;
            let blocks = (2 * par::threads()).div_ceil(items.max(1)).clamp(1, t.max(1));
            let nq = t.div_ceil(blocks);
            let item = nq * (t + dims.d);
            let work = par::build(items * blocks * item, item, |i, chunk| {
                let (bh, qb) = (i / blocks, i % blocks);
                let r0 = (qb * nq).min(t);
                let rows = nq.min(t - r0);
                let (p, o) = chunk.split_at_mut(nq * t);
                forward_head(x, dims, scale, (bh / heads, bh % heads), (r0, rows), p, o, dims.d);
            });
            let mut out = vec![0.0; b * t * c];
            let mut probs = vec![vec![0.0; if keep { heads * tt } else { 0 }]; b];
            for (i, chunk) in work.chunks_exact(item).enumerate() {
                let (bh, qb) = (i / blocks, i % blocks);
                let (bi, hi) = (bh / heads, bh % heads);
                let r0 = (qb * nq).min(t);
                let rows = nq.min(t - r0);
                if keep {
                    probs[bi][hi * tt + r0 * t..hi * tt + (r0 + rows) * t].copy_from_slice(&chunk[..rows * t]);
                }
                for (k, row) in chunk[nq * t..].chunks_exact(dims.d.max(1)).take(rows).enumerate() {
                    let o = (bi * t + r0 + k) * c + hi * dims.d;
                    out[o..o + dims.d].copy_from_slice(row);
                }
            }
            (out, probs)
        };
        let xn = self.node();
        let value = Tensor::from_parts(vec![b, t, c], out);
        self.tape().op("attention", value, &[self], move |dy, g| {
            g.add_with(xn, || Ok(attention_backward(&qkv, &probs, dy, dims, scale)))
        })
    }
}

/// One (entry, head) and a block of `rows` queries from `r0`: `P = softmax(s·Q·Kᵀ)` into `p`
/// (`[rows, T]`), `O = P·V` into `o` (rows `ldo` apart).
#[allow(clippy::too_many_arguments)]
fn forward_head(
    x: &[f32],
    dims: Dims,
    scale: f32,
    (bi, hi): (usize, usize),
    (r0, rows): (usize, usize),
    p: &mut [f32],
    o: &mut [f32],
    ldo: usize,
) {
    let t = dims.t;
    if rows == 0 {
        return;
    }
    let q = MatRef::strided(&x[dims.offset(bi, hi, 0) + r0 * dims.c3()..], rows, dims.d, dims.c3(), 1);
    let (k, v) = (dims.view(x, bi, hi, 1), dims.view(x, bi, hi, 2));
    let p = &mut p[..rows * t];
    gemm_here(scale, q, k.t(), 0.0, p, t);
    softmax_rows(p, t);
    gemm_here(1.0, MatRef::new(p, rows, t), v, 0.0, o, ldo);
}

/// `dqkv` from the saved `qkv`, the saved per-entry probabilities and `dy: [B, T, C]`. One work
/// item per batch entry: its heads in turn, `dQ`, `dK`, `dV` written in place into its rows.
fn attention_backward(qkv: &Tensor, probs: &[Vec<f32>], dy: &Tensor, dims: Dims, scale: f32) -> Tensor {
    let Dims { b, t, c, heads, d } = dims;
    let (tt, c3) = (t * t, 3 * c);
    let (x, dyd) = (qkv.data(), dy.data());
    let dqkv = par::build(b * t * c3, t * c3, |bi, dx| {
        let mut scratch = vec![0.0f32; 2 * tt];
        let (dp, ds) = scratch.split_at_mut(tt);
        for hi in 0..heads {
            let p = MatRef::new(&probs[bi][hi * tt..(hi + 1) * tt], t, t);
            let (q, k, v) = (dims.view(x, bi, hi, 0), dims.view(x, bi, hi, 1), dims.view(x, bi, hi, 2));
            let d_o = MatRef::strided(&dyd[bi * t * c + hi * d..], t, d, c, 1);
            gemm_here(1.0, p.t(), d_o, 0.0, &mut dx[2 * c + hi * d..], c3);
            gemm_here(1.0, d_o, v.t(), 0.0, dp, t);
            softmax_backward_rows(p.data, dp, ds, t);
            let ds = MatRef::new(ds, t, t);
            gemm_here(scale, ds, k, 0.0, &mut dx[hi * d..], c3);
            gemm_here(scale, ds.t(), q, 0.0, &mut dx[c + hi * d..], c3);
        }
    });
    Tensor::from_parts(vec![b, t, c3], dqkv)
}

#[cfg(test)]
mod tests {
    use crate::autograd::ops::testutil::{check, rand_t};
    use crate::autograd::{Tape, Var};
    use crate::{Error, Result, Tensor};
    use proptest::prelude::*;

    /// The unfused composition: split heads with reshape/permute/narrow, `softmax(s·Q·Kᵀ)·V`
    /// with `matmul`, merge heads back.
    fn attention_reference<'t>(qkv: &Var<'t>, heads: usize) -> Result<Var<'t>> {
        let [b, t, c3] = qkv.value().dims::<3>("reference")?;
        let (c, d) = (c3 / 3, c3 / 3 / heads);
        let x = qkv.reshape(&[b, t, 3, heads, d])?.permute(&[2, 0, 3, 1, 4])?;
        let part = |i| x.narrow(0, i, 1)?.reshape(&[b, heads, t, d]);
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let p = q.matmul(&k.transpose(2, 3)?)?.scale((d as f32).powf(-0.5))?.softmax()?;
        p.matmul(&v)?.permute(&[0, 2, 1, 3])?.reshape(&[b, t, c])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn attention_gradcheck(b in 1usize..3, t in 1usize..5, heads in 1usize..4, d in 1usize..4, seed in 0u64..1000) {
            let qkv = rand_t(&[b, t, 3 * heads * d], seed);
            check(|_, v| v[0].attention(heads), &[qkv]);
        }

        #[test]
        fn fused_equals_composed(b in 1usize..3, t in 1usize..9, heads in 1usize..4, d in 1usize..6, seed in 0u64..1000) {
            let qkv = rand_t(&[b, t, 3 * heads * d], seed);
            let r = rand_t(&[b, t, heads * d], seed + 1);
            let run = |fused: bool| {
                let tape = Tape::new();
                let x = tape.var(qkv.clone());
                let y = if fused { x.attention(heads) } else { attention_reference(&x, heads) }.unwrap();
                let l = y.mul(&tape.constant(r.clone())).unwrap().sum().unwrap();
                let g = tape.backward(&l).unwrap();
                (y.value().clone(), g.get(&x).unwrap().clone())
            };
            let ((yf, gf), (yr, gr)) = (run(true), run(false));
            prop_assert!(yf.max_abs_diff(&yr) < 1e-5, "forward {}", yf.max_abs_diff(&yr));
            prop_assert!(gf.max_abs_diff(&gr) < 1e-5, "backward {}", gf.max_abs_diff(&gr));
        }
    }

    #[test]
    fn inference_equals_recording_on_both_work_splits() {
        // b < threads splits by (entry, head); b ≥ threads by entry. Probabilities are kept
        // only on a recording tape; the outputs must not depend on either choice.
        for b in [1, 2, 5] {
            let qkv = rand_t(&[b, 7, 3 * 12], b as u64);
            let recorded = Tape::new().var(qkv.clone()).attention(3).unwrap().value().clone();
            let tape = Tape::inference();
            let inferred = tape.constant(qkv.clone()).attention(3).unwrap().value().clone();
            assert_eq!(recorded.data(), inferred.data(), "b = {b}");
        }
    }

    #[test]
    fn single_token_attends_to_itself() {
        // With one token the probabilities are 1: the output is v.
        let tape = Tape::new();
        let qkv = rand_t(&[2, 1, 12], 3);
        let y = tape.constant(qkv.clone()).attention(2).unwrap();
        for bi in 0..2 {
            assert_eq!(&y.value().data()[bi * 4..bi * 4 + 4], &qkv.data()[bi * 12 + 8..bi * 12 + 12]);
        }
    }

    #[test]
    fn shape_errors_are_errors() {
        let tape = Tape::new();
        let x = tape.var(Tensor::zeros(&[2, 3, 12]));
        for heads in [0, 3, 5] {
            assert!(matches!(x.attention(heads), Err(Error::BadShape { op: "attention", .. })));
        }
        assert!(tape.var(Tensor::zeros(&[3, 12])).attention(1).is_err());
    }
}
