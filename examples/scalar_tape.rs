//! A tape on a scalar function, its gradient checked against finite differences.
//!
//! `f(a, b) = gelu_erf(a·b + a) · b`. The forward pass records one node per op on the tape;
//! `backward` runs their closures from the last to the first. A traced tape shows the gradient
//! arriving at each node as the walk goes, next to the value the chain rule predicts by hand.
//! Then we compare `∂f/∂a`, `∂f/∂b` with the central differences `(f(a + h) − f(a − h)) / 2h`,
//! and with the library's `gradcheck`.
//!
//! Read beside `src/autograd/tape.rs` (`Tape::op`, `Tape::backward`) and docs/AUTOGRAD.md.
//!
//! Run: `cargo run --release --example scalar_tape`

use consolidator::autograd::{gradcheck, GradcheckOptions, Tape, Var};
use consolidator::{Result, Tensor};

/// `f(a, b) = gelu_erf(a·b + a) · b`, on one-element tensors.
fn f<'t>(a: &Var<'t>, b: &Var<'t>) -> Result<Var<'t>> {
    let ab = a.mul(b)?; // node: mul
    let u = ab.add(a)?; // node: add (a is used twice: its gradient gets two contributions)
    u.gelu_erf()?.mul(b) // nodes: gelu_erf, mul
}

/// The standard normal CDF `Φ(x) = (1 + erf(x/√2))/2`, in `f64` (erf by its Taylor series,
/// which converges fast for the small |x| used here).
fn phi_cdf(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let (mut term, mut sum, mut n) = (z, z, 0.0);
    while term.abs() > 1e-17 {
        n += 1.0;
        term *= -z * z / n;
        sum += term / (2.0 * n + 1.0);
    }
    0.5 * (1.0 + 2.0 / std::f64::consts::PI.sqrt() * sum)
}

/// `f` evaluated without recording anything (what finite differences need), in `f64` at the end.
fn value(a: f32, b: f32) -> Result<f64> {
    let tape = Tape::inference();
    let y = f(&tape.constant(Tensor::new(&[1], vec![a])?), &tape.constant(Tensor::new(&[1], vec![b])?))?;
    Ok(y.value().data()[0] as f64)
}

fn main() -> Result<()> {
    let (a0, b0) = (0.7f32, -1.3f32);

    // 1. Forward on a recording tape (traced: it keeps the gradient arriving at each node).
    //    a and b are leaves that need a gradient.
    let tape = Tape::new().traced();
    let a = tape.var(Tensor::new(&[1], vec![a0])?);
    let b = tape.var(Tensor::new(&[1], vec![b0])?);
    let y = f(&a, &b)?;
    println!("f({a0}, {b0}) = {:.6}", y.value().data()[0]);
    println!("tape: {} nodes (2 leaves + 4 ops)", tape.len());

    // 2. Reverse pass: seed df = 1, run the closures backwards.
    let grads = tape.backward(&y)?;
    let da = grads.get(&a).expect("a needs a gradient").data()[0] as f64;
    let db = grads.get(&b).expect("b needs a gradient").data()[0] as f64;

    // The walk, node by node, against the chain rule done by hand in f64 (docs/AUTOGRAD.md's
    // table): df = 1; dv = df·b; du = dv·gelu'(u); dp = du; da = du + dp·b; db = df·v + dp·a.
    let (a64, b64) = (a0 as f64, b0 as f64);
    let u = a64 * b64 + a64;
    let (v, gelu_prime) = (u * phi_cdf(u), phi_cdf(u) + u * (-u * u / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt());
    let (df, dv) = (1.0, b64);
    let du = dv * gelu_prime;
    let dp = du;
    let by_hand = [
        ("f = v·b", df),
        ("v = gelu_erf(u)", dv),
        ("u = p + a", du),
        ("p = a·b", dp),
        ("b", df * v + dp * a64),
        ("a", du + dp * b64),
    ];
    println!("reverse pass (node, op, gradient arriving, by hand):");
    let trace = tape.trace();
    assert_eq!(trace.len(), by_hand.len(), "one step per node");
    for (step, (what, want)) in trace.iter().zip(by_hand) {
        let got = step.grad.data()[0] as f64;
        println!("  node {}  {:<9} {:<16} d = {got:+.6}   by hand {want:+.6}", step.node, step.op, what);
        assert!((got - want).abs() < 1e-5, "node {} disagrees with the chain rule", step.node);
    }

    // 3. Central finite differences (f32 forward: h must not be too small).
    let h = 1e-2f32;
    let na = (value(a0 + h, b0)? - value(a0 - h, b0)?) / (2.0 * h as f64);
    let nb = (value(a0, b0 + h)? - value(a0, b0 - h)?) / (2.0 * h as f64);
    println!("df/da: tape {da:+.6}  finite differences {na:+.6}  |diff| {:.2e}", (da - na).abs());
    println!("df/db: tape {db:+.6}  finite differences {nb:+.6}  |diff| {:.2e}", (db - nb).abs());
    assert!((da - na).abs() < 1e-3 && (db - nb).abs() < 1e-3, "the tape disagrees with finite differences");

    // 4. The same check, done by the library on many points of a vector input.
    let xs = Tensor::new(&[2, 4], vec![0.7, -1.3, 0.2, 2.0, -0.5, 1.1, -2.2, 0.05])?;
    let report = gradcheck(
        |_tape, v| {
            let (a, b) = (v[0].narrow(0, 0, 1)?, v[0].narrow(0, 1, 1)?);
            f(&a, &b)
        },
        &[xs],
        GradcheckOptions::default(),
    )?;
    println!("gradcheck on 4 (a, b) pairs at once: {report}");
    assert!(report.passed());
    Ok(())
}
