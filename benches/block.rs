//! One ViT-Tiny transformer block (B = 8, T = 197, C = 192, 3 heads, MLP 768), forward and
//! backward on the tape:
//!
//! - `all_trainable`: every weight trainable (full fine-tuning);
//! - `frozen_plus_branch`: every block weight frozen, plus a trainable rank-8 linear pair beside
//!   `fc1` (a parameter-efficient branch). The block input needs a gradient in both cases (as in
//!   a middle block of a deep model), so the ratio measures what skipping the weight-gradient
//!   GEMMs of frozen weights saves;
//! - `frozen_plus_branch_const_input`: the same with a constant input (a first block, or every
//!   block below the first adapted one): the attention half is not even recorded.

use consolidator::autograd::{Tape, Var};
use consolidator::{Param, Result, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::SeedableRng;

const B: usize = 8;
const T: usize = 197;
const C: usize = 192;
const HEADS: usize = 3;
const MLP: usize = 768;
const RANK: usize = 8;

struct Block {
    ln1: [Param; 2],
    qkv: [Param; 2],
    proj: [Param; 2],
    ln2: [Param; 2],
    fc1: [Param; 2],
    fc2: [Param; 2],
    down: Param,
    up: Param,
}

impl Block {
    fn new(frozen: bool, rng: &mut StdRng) -> Self {
        let mk = |t: Tensor| {
            if frozen {
                Param::frozen(t)
            } else {
                Param::new(t)
            }
        };
        let mut lin = |o: usize, i: usize| [mk(Tensor::randn(&[o, i], 0.02, rng)), mk(Tensor::zeros(&[o]))];
        let (qkv, proj, fc1, fc2) = (lin(3 * C, C), lin(C, C), lin(MLP, C), lin(C, MLP));
        let ln = || [mk(Tensor::full(&[C], 1.0)), mk(Tensor::zeros(&[C]))];
        Block {
            ln1: ln(),
            qkv,
            proj,
            ln2: ln(),
            fc1,
            fc2,
            down: Param::new(Tensor::randn(&[RANK, C], 0.02, rng)),
            up: Param::new(Tensor::zeros(&[MLP, RANK])),
        }
    }

    /// `x + attn(ln1(x))`, then `+ fc2(gelu(fc1(h) [+ up(down(h))]))` with `h = ln2(x)`.
    fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>, branch: bool) -> Result<Var<'t>> {
        let lin = |x: &Var<'t>, p: &[Param; 2]| x.linear(&tape.param(&p[0]), Some(&tape.param(&p[1])));
        let ln = |x: &Var<'t>, p: &[Param; 2]| x.layer_norm(&tape.param(&p[0]), &tape.param(&p[1]), 1e-6);
        let a = lin(&lin(&ln(x, &self.ln1)?, &self.qkv)?.attention(HEADS)?, &self.proj)?;
        let x = x.add(&a)?;
        let h = ln(&x, &self.ln2)?;
        let mut f = lin(&h, &self.fc1)?;
        if branch {
            let d = h.linear(&tape.param(&self.down), None)?;
            f = f.add(&d.linear(&tape.param(&self.up), None)?)?;
        }
        let m = lin(&f.gelu_erf()?, &self.fc2)?;
        x.add(&m)
    }
}

fn step(block: &Block, x: &Tensor, branch: bool, input_grad: bool) {
    let tape = Tape::new();
    let xv = if input_grad { tape.var(x.clone()) } else { tape.constant(x.clone()) };
    let loss = block.forward(&tape, &xv, branch).unwrap().mean().unwrap();
    let grads = loss.backward().unwrap();
    std::hint::black_box(grads.get(&xv));
}

fn bench_block(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let x = Tensor::randn(&[B, T, C], 1.0, &mut rng);
    let full = Block::new(false, &mut rng);
    let peft = Block::new(true, &mut rng);
    let mut g = c.benchmark_group("block_vit_tiny");
    g.sample_size(10);
    g.bench_function("all_trainable", |bch| bch.iter(|| step(&full, &x, false, true)));
    g.bench_function("frozen_plus_branch", |bch| bch.iter(|| step(&peft, &x, true, true)));
    g.bench_function("frozen_plus_branch_const_input", |bch| bch.iter(|| step(&peft, &x, true, false)));
    g.finish();
}

criterion_group!(benches, bench_block);
criterion_main!(benches);
