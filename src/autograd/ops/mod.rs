//! The ops, one file per family. Each file holds the forward, the backward closure beside it,
//! the math of both in its doc comment, and the family's gradient checks.
//!
//! How to add an op: compute the output with the kernels, then call [`crate::autograd::Tape::op`]
//! with the inputs and a closure that, given `dy`, adds each input's gradient with
//! `Grads::add_with(node, || ...)` (which skips inputs that need none). Add a `gradcheck` test.
//!
//! | file | ops on [`Var`](crate::autograd::Var) |
//! |---|---|
//! | `elementwise` | `add`, `sub`, `mul` (numpy broadcasting), `scale`, `add_scalar`, `neg` |
//! | `reduce` | `sum`, `mean`, `sum_dim`, `mean_dim` |
//! | `movement` | `reshape`, `transpose`, `permute`, `Var::concat`, `narrow`, `broadcast_to`, `index_select_last`, `patchify` |
//! | `activation` | `gelu_erf`, `relu`, `softmax` (last dim) |
//! | `norm` | `layer_norm` (last dim) |
//! | `attention` | `attention` (fused multi-head self-attention from packed qkv) |
//! | `matmul` | `matmul` (batched) |
//! | `linear` | `linear`; `DenseLinear` (a layer that is one dense map on the batch) |
//! | `grouped` | grouped connections (consolidator branches); `consolidated_dense` |
//! | `loss` | `cross_entropy` |
//! | `dropout` | `dropout`, `drop_path` |

pub mod activation;
pub mod attention;
pub mod dropout;
pub mod elementwise;
pub mod grouped;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod movement;
pub mod norm;
pub mod reduce;

/// Helpers shared by the ops' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::autograd::{gradcheck, GradcheckOptions, Tape, Var};
    use crate::{Result, Tensor};
    use rand::SeedableRng;

    /// A standard-normal tensor from a seed.
    pub fn rand_t(shape: &[usize], seed: u64) -> Tensor {
        Tensor::randn(shape, 1.0, &mut rand::rngs::StdRng::seed_from_u64(seed))
    }

    /// Runs `gradcheck` with the default tolerances and fails with its report.
    pub fn check<F>(f: F, inputs: &[Tensor])
    where
        F: for<'t> Fn(&'t Tape, &[Var<'t>]) -> Result<Var<'t>>,
    {
        check_with(f, inputs, GradcheckOptions::default())
    }

    /// Runs `gradcheck` with the given options and fails with its report.
    pub fn check_with<F>(f: F, inputs: &[Tensor], opts: GradcheckOptions)
    where
        F: for<'t> Fn(&'t Tape, &[Var<'t>]) -> Result<Var<'t>>,
    {
        let r = gradcheck(f, inputs, opts).unwrap();
        assert!(r.passed(), "{r}");
    }

    /// Checks that, with `x` trainable and `c` constant, `f(x, c)` gives `x` the same gradient as
    /// when both are trainable and records nothing for `c`; and with both constant, records
    /// nothing at all.
    pub fn frozen_mix<F>(f: F, x: &Tensor, c: &Tensor)
    where
        F: for<'t> Fn(&Var<'t>, &Var<'t>) -> Result<Var<'t>>,
    {
        let tape = Tape::new();
        let (xv, cv) = (tape.var(x.clone()), tape.var(c.clone()));
        let g_both = f(&xv, &cv).unwrap().sum().unwrap().backward().unwrap();
        let want = g_both.get(&xv).unwrap();
        let tape = Tape::new();
        let xv = tape.var(x.clone());
        let cv = tape.constant(c.clone());
        let y = f(&xv, &cv).unwrap().sum().unwrap();
        let g = tape.backward(&y).unwrap();
        assert_eq!(g.get(&xv).unwrap(), want);
        assert!(g.get(&cv).is_none());
        let tape = Tape::new();
        let y = f(&tape.constant(x.clone()), &tape.constant(c.clone())).unwrap();
        assert!(!y.requires_grad());
        assert_eq!(tape.len(), 0);
    }
}
