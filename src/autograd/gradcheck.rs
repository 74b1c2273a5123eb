//! `gradcheck`: compares the tape's gradients with central finite differences.
//!
//! For a function `f` of some input tensors, the check reduces the output to a scalar with a fixed
//! random projection, `L = Σ rᵢ·yᵢ` (so every output element matters), computes `∂L/∂x` with the
//! tape, and compares it with `(L(x + h·eⱼ) − L(x − h·eⱼ)) / 2h`, where the forward runs in `f32`
//! and `L` is accumulated in `f64`. An element passes when
//! `|analytic − numeric| ≤ atol + rtol · max(|analytic|, |numeric|)`.
//!
//! The tolerances are stated in [`GradcheckOptions::default`]: step `h = 1e-2`, `atol = 1e-3`,
//! `rtol = 1e-2`. The `f32` rounding of `L` is about `1e-7·Σ|rᵢyᵢ|`, divided by `2h`; the projection
//! is scaled by `1/√n` to keep that below `atol` for unit-scale values.
//!
//! ```
//! use consolidator::autograd::{gradcheck, GradcheckOptions};
//! use consolidator::Tensor;
//! let x = Tensor::new(&[2, 3], vec![0.1, -0.4, 0.9, 1.3, -2.0, 0.5]).unwrap();
//! let report = gradcheck(|_tape, v| v[0].mul(&v[0])?.sum(), &[x], GradcheckOptions::default()).unwrap();
//! assert!(report.passed(), "{report}");
//! ```

use super::{Tape, Var};
use crate::{Error, Result, Tensor};
use rand::{Rng, SeedableRng};

/// Step and tolerances of a gradient check.
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step `h`.
    pub step: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Check at most this many elements per input (chosen at random; all if fewer).
    pub max_per_input: usize,
    /// Seed of the projection and of the element choice.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions { step: 1e-2, atol: 1e-3, rtol: 1e-2, max_per_input: 64, seed: 0 }
    }
}

/// The outcome of a gradient check.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// The ops the checked function recorded, in order: what a failure points at.
    pub ops: Vec<&'static str>,
    /// Elements compared.
    pub checked: usize,
    /// Elements outside tolerance.
    pub failures: usize,
    /// The worst element: (input, flat index, analytic, numeric).
    pub worst: Option<(usize, usize, f64, f64)>,
    /// Largest `|analytic − numeric| / (atol + rtol·max(|a|,|n|))` seen (≤ 1 means pass).
    pub worst_ratio: f64,
}

impl GradcheckReport {
    /// True when every compared element is within tolerance.
    pub fn passed(&self) -> bool {
        self.failures == 0 && self.checked > 0
    }
}

impl std::fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        let ops = if self.ops.is_empty() { "no op".to_string() } else { self.ops.join(" → ") };
        write!(
            f,
            "gradcheck of {ops} {verdict}: {} checked, {} failed, worst ratio {:.3}",
            self.checked, self.failures, self.worst_ratio
        )?;
        if let Some((i, j, a, n)) = self.worst {
            write!(f, " (input {i}, element {j}: analytic {a:.6e}, numeric {n:.6e})")?;
        }
        Ok(())
    }
}

/// Checks the gradients of `f` with respect to every input. `f` is run on an evaluation-mode tape
/// (dropout off), so it must be deterministic.
pub fn gradcheck<F>(f: F, inputs: &[Tensor], opts: GradcheckOptions) -> Result<GradcheckReport>
where
    F: for<'t> Fn(&'t Tape, &[Var<'t>]) -> Result<Var<'t>>,
{
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    // Analytic gradients of L = Σ r·y.
    let tape = Tape::eval();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.var(t.clone())).collect();
    let y = f(&tape, &vars)?;
    let n_out = y.value().numel().max(1);
    let scale = 1.0 / (n_out as f32).sqrt();
    let r = Tensor::new(y.shape(), (0..y.value().numel()).map(|_| rng.gen_range(-scale..scale)).collect())?;
    let ops = tape.ops();
    let l = project(&y, &r)?;
    if !l.requires_grad() {
        return Err(Error::invalid("gradcheck", "the output does not depend on the inputs"));
    }
    let grads = tape.backward(&l)?;
    let loss_at = |xs: &[Tensor]| -> Result<f64> {
        let t = Tape::eval();
        let vs: Vec<Var> = xs.iter().map(|x| t.constant(x.clone())).collect();
        let y = f(&t, &vs)?;
        if y.shape() != r.shape() {
            return Err(Error::shape("gradcheck", r.shape(), y.shape()));
        }
        Ok(y.value().data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum())
    };
    let mut report = GradcheckReport { ops, checked: 0, failures: 0, worst: None, worst_ratio: 0.0 };
    let mut xs: Vec<Tensor> = inputs.to_vec();
    for (i, v) in vars.iter().enumerate() {
        let zeros = Tensor::zeros(v.shape());
        let analytic = grads.get(v).unwrap_or(&zeros).clone();
        let n = inputs[i].numel();
        let idx: Vec<usize> = if n <= opts.max_per_input {
            (0..n).collect()
        } else {
            (0..opts.max_per_input).map(|_| rng.gen_range(0..n)).collect()
        };
        for j in idx {
            let x0 = inputs[i].data()[j];
            xs[i].data_mut()[j] = x0 + opts.step as f32;
            let lp = loss_at(&xs)?;
            xs[i].data_mut()[j] = x0 - opts.step as f32;
            let lm = loss_at(&xs)?;
            xs[i].data_mut()[j] = x0;
            // Use the actually represented step (x0 ± h rounded to f32).
            let h2 = ((x0 + opts.step as f32) as f64) - ((x0 - opts.step as f32) as f64);
            let numeric = (lp - lm) / h2;
            let a = analytic.data()[j] as f64;
            let ratio = (a - numeric).abs() / (opts.atol + opts.rtol * a.abs().max(numeric.abs()));
            report.checked += 1;
            if ratio > 1.0 {
                report.failures += 1;
            }
            if ratio >= report.worst_ratio {
                report.worst_ratio = ratio;
                report.worst = Some((i, j, a, numeric));
            }
        }
    }
    Ok(report)
}

/// `Σ r·y` as a recorded op (the projection used by [`gradcheck`]).
fn project<'t>(y: &Var<'t>, r: &Tensor) -> Result<Var<'t>> {
    let s: f64 = y.value().data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum();
    let yn = y.node();
    let r = r.clone();
    y.tape().op("gradcheck.project", Tensor::scalar(s as f32), &[y], move |dl, g| {
        let d = dl.data()[0];
        g.add_with(yn, || Ok(Tensor::from_parts(r.shape().to_vec(), r.data().iter().map(|v| v * d).collect())))
    })
}
