//! Checking a reparameterization of your own with the algebra of `consolidator::reparam`.
//!
//! The claim to check: a frozen layer `x·Wᵀ + b` (a sample is a row `x`) with two grouped-connection branches beside it
//! (g = 4 and g = 8 with reorder) and an SSF scale-shift after it,
//!
//! `y = γ ⊙ (x·Wᵀ + b + x·BD(G₁)ᵀ + β₁ + x·(BD(G₂)·Π₂)ᵀ + β₂) + β`,
//!
//! collapses into ONE dense layer `x·W'ᵀ + b'`. The algebra builds the collapsed map with `add`
//! and `compose`; the helpers below check it the way the property tests do: on random inputs,
//! against the *unfused* computation (each piece applied on its own and combined by hand), and
//! against `to_dense`. They also catch a wrong claim: an adapter with a ReLU inside does not
//! collapse, and the check says so.
//!
//! Run: `cargo run --release --example verify_reparam`

use consolidator::algebra::{Affine, BlockDiagonal, Dense, ScaleShift};
use consolidator::kernels::grouped::GroupSpec;
use consolidator::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Largest `|f(x) − g(x)|` over `trials` random batches of 4 rows: the property-test helper.
fn max_gap(
    in_dim: usize,
    trials: usize,
    rng: &mut StdRng,
    f: impl Fn(&[f64]) -> Result<Vec<f64>>,
    g: impl Fn(&[f64]) -> Result<Vec<f64>>,
) -> Result<f64> {
    let mut worst = 0.0f64;
    for _ in 0..trials {
        let x = random(4 * in_dim, rng);
        for (a, b) in f(&x)?.iter().zip(g(&x)?) {
            worst = worst.max((a - b).abs());
        }
    }
    Ok(worst)
}

fn check(name: &str, gap: f64) -> bool {
    let ok = gap < 1e-9;
    println!("{:>5}  {name}  (max gap {gap:.1e})", if ok { "ok" } else { "FAIL" });
    ok
}

fn main() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(42);
    let d = 16;
    let w = Affine::Dense(Dense { out_dim: d, in_dim: d, weight: random(d * d, &mut rng), bias: random(d, &mut rng) });
    let branch = |g: usize, reorder: bool, rng: &mut StdRng| -> Result<Affine> {
        let spec = GroupSpec::new(d, d, g, reorder)?;
        Ok(Affine::BlockDiagonal(BlockDiagonal::new(spec, random(spec.weight_len(), rng), random(d, rng))?))
    };
    let (b1, b2) = (branch(4, false, &mut rng)?, branch(8, true, &mut rng)?);
    let ssf = Affine::ScaleShift(ScaleShift { gamma: random(d, &mut rng), beta: random(d, &mut rng) });

    // The claim, built with the algebra: stage 1 (the branches summed on their union support),
    // then the layer plus that delta, then the scale-shift composed after it.
    let delta = b1.add(&b2)?;
    let layer = w.add(&delta)?;
    let collapsed = ssf.compose(&layer)?;
    println!(
        "branches: {} + {} weights; stage-1 delta: {} ({} stored values); collapsed: {} {}x{}",
        b1.nnz(),
        b2.nnz(),
        delta.kind(),
        delta.nnz(),
        collapsed.kind(),
        collapsed.out_dim(),
        collapsed.in_dim()
    );

    // The reference: every piece applied on its own, combined by hand.
    let unfused = |x: &[f64]| -> Result<Vec<f64>> {
        let (y0, y1, y2) = (w.apply(x)?, b1.apply(x)?, b2.apply(x)?);
        let sum: Vec<f64> = y0.iter().zip(&y1).zip(&y2).map(|((a, b), c)| a + b + c).collect();
        ssf.apply(&sum)
    };
    let dense = Affine::Dense(collapsed.to_dense());
    let mut all = true;
    all &= check("collapsed map == unfused computation", max_gap(d, 20, &mut rng, |x| collapsed.apply(x), unfused)?);
    all &= check(
        "to_dense(collapsed) == collapsed",
        max_gap(d, 20, &mut rng, |x| dense.apply(x), |x| collapsed.apply(x))?,
    );
    all &= check("add is commutative", max_gap(d, 5, &mut rng, |x| b1.add(&b2)?.apply(x), |x| b2.add(&b1)?.apply(x))?);
    all &= check(
        "compose: ssf ∘ (W + Δ) == (ssf ∘ W) + (γ-scaled Δ without the shift)",
        max_gap(
            d,
            5,
            &mut rng,
            |x| collapsed.apply(x),
            |x| {
                let scaled_delta = Affine::ScaleShift(ScaleShift {
                    gamma: match &ssf {
                        Affine::ScaleShift(s) => s.gamma.clone(),
                        _ => unreachable!(),
                    },
                    beta: vec![0.0; d],
                })
                .compose(&delta)?;
                ssf.compose(&w)?.add(&scaled_delta)?.apply(x)
            },
        )?,
    );
    // Merging into the frozen weight and taking it back out restores it.
    let delta_dense = delta.to_dense();
    let (mut wm, mut bm) = match &w {
        Affine::Dense(d) => (d.weight.clone(), d.bias.clone()),
        _ => unreachable!(),
    };
    delta.add_into(&mut wm, &mut bm)?;
    let restored: Vec<f64> = wm.iter().zip(&delta_dense.weight).map(|(a, b)| a - b).collect();
    let original = match &w {
        Affine::Dense(d) => &d.weight,
        _ => unreachable!(),
    };
    let gap = restored.iter().zip(original).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    all &= check("unmerge(merge(W, Δ), Δ) == W", gap);

    // A wrong claim: an adapter `up(relu(down(x)))` "collapsed" by dropping the ReLU.
    let down = Affine::Dense(Dense { out_dim: 4, in_dim: d, weight: random(4 * d, &mut rng), bias: vec![0.0; 4] });
    let up = Affine::Dense(Dense { out_dim: d, in_dim: 4, weight: random(4 * d, &mut rng), bias: vec![0.0; d] });
    let claimed = up.compose(&down)?;
    let truth = |x: &[f64]| -> Result<Vec<f64>> {
        let h: Vec<f64> = down.apply(x)?.into_iter().map(|v| v.max(0.0)).collect();
        up.apply(&h)
    };
    let gap = max_gap(d, 20, &mut rng, |x| claimed.apply(x), truth)?;
    let caught = !check("adapter up∘relu∘down collapses to up∘down (expected to FAIL)", gap);
    println!("the wrong claim was {}", if caught { "caught" } else { "NOT caught" });
    assert!(all && caught);
    Ok(())
}
