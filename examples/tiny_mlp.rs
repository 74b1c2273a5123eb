//! Train a two-layer MLP with the tape and `consolidator::optim::Optimizer`.
//!
//! The problem: points in the square `[-1, 1]²`, class 1 inside the circle of radius 0.6 and
//! class 0 outside: not linearly separable, easy for one hidden layer. The model:
//! `logits = relu(x·W1ᵀ + b1)·W2ᵀ + b2` (a sample is a row `x`), trained full-batch with AdamW on the cross-entropy.
//!
//! What to look at: a model is anything that implements `nn::Module` (it lists its `Param`s under
//! names); each step builds a fresh `Tape`, runs the forward pass, calls `backward`, and hands the
//! gradients to `Optimizer::step`, which finds each parameter's gradient by its id.
//!
//! Run: `cargo run --release --example tiny_mlp`

use consolidator::autograd::Tape;
use consolidator::nn::Module;
use consolidator::optim::Optimizer;
use consolidator::{Param, Result, Tensor};
use rand::{Rng, SeedableRng};

/// `x ↦ relu(x·W1ᵀ + b1)·W2ᵀ + b2`; weights `[out, in]` as everywhere in the crate.
struct Mlp {
    w1: Param,
    b1: Param,
    w2: Param,
    b2: Param,
}

impl Mlp {
    fn new(inputs: usize, hidden: usize, classes: usize, rng: &mut impl Rng) -> Self {
        let s1 = (2.0 / inputs as f32).sqrt();
        let s2 = (2.0 / hidden as f32).sqrt();
        Mlp {
            w1: Param::new(Tensor::randn(&[hidden, inputs], s1, rng)),
            b1: Param::new(Tensor::zeros(&[hidden])),
            w2: Param::new(Tensor::randn(&[classes, hidden], s2, rng)),
            b2: Param::new(Tensor::zeros(&[classes])),
        }
    }
}

impl Module for Mlp {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
        f(&format!("{prefix}fc1.weight"), &self.w1);
        f(&format!("{prefix}fc1.bias"), &self.b1);
        f(&format!("{prefix}fc2.weight"), &self.w2);
        f(&format!("{prefix}fc2.bias"), &self.b2);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&format!("{prefix}fc1.weight"), &mut self.w1);
        f(&format!("{prefix}fc1.bias"), &mut self.b1);
        f(&format!("{prefix}fc2.weight"), &mut self.w2);
        f(&format!("{prefix}fc2.bias"), &mut self.b2);
    }
}

/// `n` points and their labels (1 inside the circle, 0 outside).
fn circle(n: usize, rng: &mut impl Rng) -> Result<(Tensor, Vec<usize>)> {
    let mut xs = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b): (f32, f32) = (rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0));
        xs.extend([a, b]);
        labels.push(usize::from(a * a + b * b < 0.36));
    }
    Ok((Tensor::new(&[n, 2], xs)?, labels))
}

fn accuracy(logits: &Tensor, labels: &[usize]) -> f32 {
    let k = logits.shape()[1];
    let hits = logits.data().chunks_exact(k).zip(labels).filter(|(row, &l)| {
        let best = (0..k).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap();
        best == l
    });
    hits.count() as f32 / labels.len() as f32
}

fn main() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (x_train, y_train) = circle(512, &mut rng)?;
    let (x_test, y_test) = circle(512, &mut rng)?;
    let mut model = Mlp::new(2, 32, 2, &mut rng);
    let mut opt = Optimizer::adamw(0.0);
    println!("parameters: {}", model.num_params());

    let forward = |m: &Mlp, tape: &Tape, x: &Tensor| -> Result<Tensor> {
        let x = tape.constant(x.clone());
        let h = x.linear(&tape.param(&m.w1), Some(&tape.param(&m.b1)))?.relu()?;
        Ok(h.linear(&tape.param(&m.w2), Some(&tape.param(&m.b2)))?.value().clone())
    };
    let test_acc_before = accuracy(&forward(&model, &Tape::inference(), &x_test)?, &y_test);

    for step in 0..=300 {
        // One step: a fresh tape, forward, loss, backward, update.
        let tape = Tape::new();
        let x = tape.constant(x_train.clone());
        let h = x.linear(&tape.param(&model.w1), Some(&tape.param(&model.b1)))?.relu()?;
        let logits = h.linear(&tape.param(&model.w2), Some(&tape.param(&model.b2)))?;
        let loss = logits.cross_entropy(&y_train, 0.0)?;
        let grads = tape.backward(&loss)?;
        opt.step(&mut model, &grads, 0.02, 1.0)?;
        if step % 50 == 0 {
            let acc = accuracy(logits.value(), &y_train);
            println!("step {step:3}  loss {:.4}  train accuracy {:.3}", loss.value().data()[0], acc);
        }
    }
    let test_acc = accuracy(&forward(&model, &Tape::inference(), &x_test)?, &y_test);
    println!("test accuracy: {test_acc_before:.3} before training, {test_acc:.3} after");
    assert!(test_acc > 0.9, "the MLP should learn the circle (test accuracy {test_acc})");
    Ok(())
}
