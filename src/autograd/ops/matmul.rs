//! Batched matrix product: `[.., M, K] · [.., K, N] → [.., M, N]`.
//!
//! Both operands have the same leading (batch) dimensions, or the right operand is a plain
//! `[K, N]` matrix shared by every batch (then the left one is seen as `[R, K]` with
//! `R = Π(leading)·M`). Forward: `Y_i = A_i·B_i` with `gemm_batched` (one GEMM per batch entry,
//! batches in parallel).
//!
//! Backward: `dA_i = dY_i·B_iᵀ`, `dB_i = A_iᵀ·dY_i` (for a shared `B`: `dB = Σ_i A_iᵀ·dY_i`,
//! one GEMM over the stacked rows). Transposes are strided views, never copies.

use crate::autograd::Var;
use crate::kernels::{gemm, gemm_batched, MatRef};
use crate::{Error, Result, Tensor};

/// How the operands of a matmul line up.
#[derive(Clone, Copy)]
struct Geometry {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    /// `B` is one `[K, N]` matrix shared by all batches.
    shared_b: bool,
}

impl Geometry {
    fn of(a: &[usize], b: &[usize]) -> Result<(Geometry, Vec<usize>)> {
        let err = || Error::shape("matmul", a, b);
        let (ra, rb) = (a.len(), b.len());
        if ra < 2 || rb < 2 {
            return Err(Error::bad_shape(
                "matmul",
                if ra < 2 { a } else { b },
                "both operands need at least two dimensions",
            ));
        }
        let (m, k) = (a[ra - 2], a[ra - 1]);
        let (kb, n) = (b[rb - 2], b[rb - 1]);
        if k != kb {
            return Err(err());
        }
        let lead = &a[..ra - 2];
        let batch: usize = lead.iter().product();
        let shared_b = rb == 2 && ra > 2;
        if !shared_b && lead != &b[..rb - 2] {
            return Err(err());
        }
        let mut out = lead.to_vec();
        out.extend([m, n]);
        Ok((Geometry { batch, m, k, n, shared_b }, out))
    }
}

impl<'t> Var<'t> {
    /// `[.., M, K] · [.., K, N]`, equal leading dimensions (or a shared `[K, N]` right operand).
    /// See the module docs.
    pub fn matmul(&self, other: &Var<'t>) -> Result<Var<'t>> {
        let (geo, shape) = Geometry::of(self.shape(), other.shape())?;
        let Geometry { batch, m, k, n, shared_b } = geo;
        let (a, b) = (self.value().clone(), other.value().clone());
        let mut y = vec![0.0; batch * m * n];
        if shared_b {
            gemm(1.0, MatRef::new(a.data(), batch * m, k), MatRef::new(b.data(), k, n), 0.0, &mut y, n);
        } else {
            gemm_batched(
                batch,
                1.0,
                MatRef::new(a.data(), m, k),
                m * k,
                MatRef::new(b.data(), k, n),
                k * n,
                0.0,
                &mut y,
                n,
                m * n,
            );
        }
        let (an, bn) = (self.node(), other.node());
        let value = Tensor::from_parts(shape, y);
        self.tape().op("matmul", value, &[self, other], move |dy, g| {
            let d = dy.data();
            g.add_with(an, || {
                let mut da = vec![0.0; batch * m * k];
                if shared_b {
                    gemm(1.0, MatRef::new(d, batch * m, n), MatRef::new(b.data(), k, n).t(), 0.0, &mut da, k);
                } else {
                    gemm_batched(
                        batch,
                        1.0,
                        MatRef::new(d, m, n),
                        m * n,
                        MatRef::new(b.data(), k, n).t(),
                        k * n,
                        0.0,
                        &mut da,
                        k,
                        m * k,
                    );
                }
                Ok(Tensor::from_parts(a.shape().to_vec(), da))
            })?;
            g.add_with(bn, || {
                let mut db = vec![0.0; b.numel()];
                if shared_b {
                    gemm(1.0, MatRef::new(a.data(), batch * m, k).t(), MatRef::new(d, batch * m, n), 0.0, &mut db, n);
                } else {
                    gemm_batched(
                        batch,
                        1.0,
                        MatRef::new(a.data(), m, k).t(),
                        m * k,
                        MatRef::new(d, m, n),
                        m * n,
                        0.0,
                        &mut db,
                        n,
                        k * n,
                    );
                }
                Ok(Tensor::from_parts(b.shape().to_vec(), db))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::ops::testutil::{check, frozen_mix, rand_t};
    use crate::autograd::Tape;
    use crate::kernels::{gemm_naive, MatRef};
    use crate::{Error, Tensor};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matmul_gradcheck(lead in proptest::collection::vec(1usize..3, 0..3), m in 1usize..6, k in 1usize..6, n in 1usize..6, shared in any::<bool>(), seed in 0u64..1000) {
            let mut sa = lead.clone();
            sa.extend([m, k]);
            let mut sb = if shared { vec![] } else { lead.clone() };
            sb.extend([k, n]);
            let (a, b) = (rand_t(&sa, seed), rand_t(&sb, seed + 1));
            check(|_, v| v[0].matmul(&v[1]), &[a, b]);
        }
    }

    #[test]
    fn matches_naive_product_per_batch() {
        let (bt, m, k, n) = (3, 4, 5, 6);
        let (a, b) = (rand_t(&[bt, m, k], 1), rand_t(&[bt, k, n], 2));
        let tape = Tape::new();
        let y = tape.constant(a.clone()).matmul(&tape.constant(b.clone())).unwrap();
        for i in 0..bt {
            let mut want = vec![0.0; m * n];
            gemm_naive(
                1.0,
                MatRef::new(&a.data()[i * m * k..], m, k),
                MatRef::new(&b.data()[i * k * n..], k, n),
                0.0,
                &mut want,
                n,
            );
            let got = &y.value().data()[i * m * n..(i + 1) * m * n];
            let err = got.iter().zip(&want).fold(0.0f32, |e, (x, y)| e.max((x - y).abs()));
            assert!(err < 1e-4, "{err}");
        }
        frozen_mix(|x, w| x.matmul(w), &a, &b);
        frozen_mix(|x, w| w.matmul(x), &b, &a);
    }

    #[test]
    fn shape_errors_are_errors() {
        let tape = Tape::new();
        let a = tape.var(Tensor::zeros(&[2, 3, 4]));
        for b in [vec![3, 4, 5], vec![2, 5, 6], vec![5, 6], vec![4]] {
            let e = a.matmul(&tape.var(Tensor::zeros(&b))).unwrap_err();
            assert!(
                matches!(e, Error::ShapeMismatch { op: "matmul", .. } | Error::BadShape { op: "matmul", .. }),
                "{e}"
            );
        }
    }
}
