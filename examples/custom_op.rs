//! Adding an op: `softplus`, written from outside the crate with the same three steps every op
//! of `src/autograd/ops/` follows (docs/ARCHITECTURE.md, "How to add an op", quotes this code).
//!
//! Run: `cargo run --release --example custom_op`

use consolidator::autograd::{gradcheck, GradcheckOptions, Tape, Var};
use consolidator::{Result, Tensor};

/// `softplus(x) = ln(1 + eˣ)`, elementwise; backward `dx = dy·σ(x)`, `σ(x) = 1/(1 + e⁻ˣ)`.
trait Softplus<'t> {
    fn softplus(&self) -> Result<Var<'t>>;
}

impl<'t> Softplus<'t> for Var<'t> {
    fn softplus(&self) -> Result<Var<'t>> {
        // 1. Forward, eagerly (the stable form max(x, 0) + ln(1 + e^-|x|)).
        let x = self.value().clone(); // shares storage: no copy
        let y: Vec<f32> = x.data().iter().map(|&v| v.max(0.0) + (-v.abs()).exp().ln_1p()).collect();
        let value = Tensor::new(x.shape(), y)?;
        // 2. Save what the backward needs (here x) and the input's node.
        let xn = self.node();
        // 3. Record: the closure adds dx = dy·σ(x), and only runs if x needs a gradient.
        self.tape().op("softplus", value, &[self], move |dy, g| {
            g.add_with(xn, || {
                let dx = x.data().iter().zip(dy.data()).map(|(&v, &d)| d / (1.0 + (-v).exp())).collect();
                Tensor::new(x.shape(), dx)
            })
        })
    }
}

/// The same op with a classic mistake in its backward: `σ(−x)` where `σ(x)` belongs (a sign
/// lost while deriving). The forward is right, so only the gradient check can catch it.
trait WrongSoftplus<'t> {
    fn softplus_wrong(&self) -> Result<Var<'t>>;
}

impl<'t> WrongSoftplus<'t> for Var<'t> {
    fn softplus_wrong(&self) -> Result<Var<'t>> {
        let x = self.value().clone();
        let y: Vec<f32> = x.data().iter().map(|&v| v.max(0.0) + (-v.abs()).exp().ln_1p()).collect();
        let value = Tensor::new(x.shape(), y)?;
        let xn = self.node();
        self.tape().op("softplus_wrong", value, &[self], move |dy, g| {
            g.add_with(xn, || {
                let dx = x.data().iter().zip(dy.data()).map(|(&v, &d)| d / (1.0 + v.exp())).collect();
                Tensor::new(x.shape(), dx)
            })
        })
    }
}

fn main() -> Result<()> {
    // The gradient check every op gets.
    let x = Tensor::new(&[2, 3], vec![-3.0, -0.5, 0.0, 0.25, 1.5, 4.0])?;
    let report = gradcheck(|_tape, v| v[0].softplus(), std::slice::from_ref(&x), GradcheckOptions::default())?;
    println!("{report}");
    assert!(report.passed());

    // A wrong backward fails it, and the report names the op and the worst element.
    let wrong = gradcheck(|_tape, v| v[0].softplus_wrong(), std::slice::from_ref(&x), GradcheckOptions::default())?;
    println!("{wrong}");
    assert!(!wrong.passed(), "a backward with a sign error must fail its check");

    // On a constant nothing is recorded: no node, no closure, no gradient work.
    let tape = Tape::new();
    let y = tape.constant(x.clone()).softplus()?;
    assert!(!y.requires_grad() && tape.is_empty());
    println!("softplus({:?}) = {:?}", x.data(), y.value().data());

    // Composed with built-in ops, on a tape.
    let tape = Tape::new();
    let v = tape.var(x);
    let loss = v.softplus()?.mul(&v)?.sum()?; // Σ x·softplus(x)
    let grads = tape.backward(&loss)?;
    println!("d/dx Σ x·softplus(x) = {:?}", grads.get(&v).unwrap().data());
    Ok(())
}
