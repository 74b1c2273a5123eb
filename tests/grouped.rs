//! The grouped-connection kernels against their scalar twins and against an independent dense
//! reference (the block-diagonal matrix built entry by entry, its columns permuted by the
//! ShuffleNet interleave), on random shapes covering every path of the fast kernels:
//! - lane kernels (blocks of ≤ 1024 weights; weight gradient ≤ 256): rows not multiples of the
//!   8-row tile, the 16-row pair, the 64-row task or the 128-row gradient slice; widths not
//!   multiples of 8 (the transposition's scalar tail);
//! - GEMM kernels (larger blocks, and `g = 1`), with one run per group or several (reorder);
//! - depthwise (`g = I`, `ci = 1`), reorder on and off, and thread-count independence.

use consolidator::kernels::grouped::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn randv(n: usize, rng: &mut impl Rng) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Dense `BD(G)·P` built from the definition: `BD[i·co + r, i·ci + s] = G[i, r, s]`, then column
/// `c` of the result is column `π(c) = (c mod ci)·g + c / ci` of `BD` (reorder on).
fn dense_reference(spec: &GroupSpec, w: &[f32]) -> Vec<f64> {
    let (i_dim, o_dim, g) = (spec.in_dim, spec.out_dim, spec.groups);
    let (ci, co) = (i_dim / g, o_dim / g);
    let mut bd = vec![0.0f64; o_dim * i_dim];
    for i in 0..g {
        for r in 0..co {
            for s in 0..ci {
                bd[(i * co + r) * i_dim + i * ci + s] = w[(i * co + r) * ci + s] as f64;
            }
        }
    }
    let mut m = vec![0.0f64; o_dim * i_dim];
    for o in 0..o_dim {
        for c in 0..i_dim {
            let pc = if spec.reorder { (c % ci) * g + c / ci } else { c };
            m[o * i_dim + c] = bd[o * i_dim + pc];
        }
    }
    m
}

fn close(a: &[f32], b: &[f64], tol: f64) -> Result<(), String> {
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        if (*x as f64 - y).abs() > tol * scale {
            return Err(format!("element {k}: {x} vs {y} (scale {scale})"));
        }
    }
    Ok(())
}

fn spec_strategy() -> impl Strategy<Value = (GroupSpec, usize)> {
    // (ci, co, g) products cover both regimes: ci·co < 256 loops, ≥ 256 GEMMs.
    (1usize..40, 1usize..40, prop::sample::select(vec![1usize, 2, 3, 4, 6, 8, 16]), any::<bool>(), 0usize..70)
        .prop_map(|(ci, co, g, reorder, rows)| (GroupSpec::new(ci * g, co * g, g, reorder).unwrap(), rows))
}

/// Every fast kernel against its scalar twin (and the forward/backward tests below against the
/// dense reference): forward with bias, input gradient, weight and bias gradients.
fn fast_matches_twin(spec: &GroupSpec, rows: usize, alpha: f32, seed: u64) -> Result<(), String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (i_dim, o_dim) = (spec.in_dim, spec.out_dim);
    let x = randv(rows * i_dim, &mut rng);
    let w = randv(spec.weight_len(), &mut rng);
    let b = randv(o_dim, &mut rng);
    let y0 = randv(rows * o_dim, &mut rng);
    let dy = randv(rows * o_dim, &mut rng);
    let dx0 = randv(rows * i_dim, &mut rng);
    let dw0 = randv(spec.weight_len(), &mut rng);
    let as64 = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let (mut y, mut yt) = (y0.clone(), y0.clone());
    grouped_forward(spec, alpha, &x, &w, Some(&b), &mut y).unwrap();
    grouped_forward_scalar(spec, alpha, &x, &w, Some(&b), &mut yt).unwrap();
    close(&y, &as64(&yt), 1e-5).map_err(|e| format!("forward {spec:?} rows {rows}: {e}"))?;
    let (mut dx, mut dxt) = (dx0.clone(), dx0.clone());
    grouped_backward_input(spec, alpha, &dy, &w, &mut dx).unwrap();
    grouped_backward_input_scalar(spec, alpha, &dy, &w, &mut dxt).unwrap();
    close(&dx, &as64(&dxt), 1e-5).map_err(|e| format!("dx {spec:?} rows {rows}: {e}"))?;
    let (mut dw, mut dwt) = (dw0.clone(), dw0.clone());
    let (mut db, mut dbt) = (b.clone(), b.clone());
    grouped_backward_weight(spec, alpha, &x, &dy, &mut dw, Some(&mut db)).unwrap();
    grouped_backward_weight_scalar(spec, alpha, &x, &dy, &mut dwt, Some(&mut dbt)).unwrap();
    close(&dw, &as64(&dwt), 1e-5).map_err(|e| format!("dw {spec:?} rows {rows}: {e}"))?;
    close(&db, &as64(&dbt), 1e-5).map_err(|e| format!("db {spec:?} rows {rows}: {e}"))
}

/// Lane-kernel shapes: small blocks, many groups, rows across every tile edge.
fn small_block_strategy() -> impl Strategy<Value = (GroupSpec, usize)> {
    (1usize..20, 1usize..20, 1usize..40, any::<bool>(), 0usize..300)
        .prop_map(|(ci, co, g, reorder, rows)| (GroupSpec::new(ci * g, co * g, g, reorder).unwrap(), rows))
}

/// GEMM-kernel shapes: blocks above the lane limits (and `g = 1`).
fn large_block_strategy() -> impl Strategy<Value = (GroupSpec, usize)> {
    // Rows up to and across the weight gradient's 384-row depth blocks.
    let rows = prop_oneof![0usize..200, 380usize..800];
    (17usize..70, 17usize..70, prop::sample::select(vec![1usize, 2, 3, 5]), any::<bool>(), rows)
        .prop_map(|(ci, co, g, reorder, rows)| (GroupSpec::new(ci * g, co * g, g, reorder).unwrap(), rows))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn small_blocks_match_twin((spec, rows) in small_block_strategy(), alpha in 0.5f32..2.0, seed in 0u64..10_000) {
        let r = fast_matches_twin(&spec, rows, alpha, seed);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn large_blocks_match_twin((spec, rows) in large_block_strategy(), alpha in 0.5f32..2.0, seed in 0u64..10_000) {
        let r = fast_matches_twin(&spec, rows, alpha, seed);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn depthwise_matches_twin(i_dim in 1usize..80, mult in 1usize..4, reorder in any::<bool>(), rows in 0usize..150, seed in 0u64..10_000) {
        // g = I: one input per group (ci = 1), `mult` outputs each.
        let spec = GroupSpec::new(i_dim, i_dim * mult, i_dim, reorder).unwrap();
        let r = fast_matches_twin(&spec, rows, 1.0, seed);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn forward_matches_dense_reference_and_twin((spec, rows) in spec_strategy(), alpha in 0.5f32..2.0, seed in 0u64..10_000) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (i_dim, o_dim) = (spec.in_dim, spec.out_dim);
        let x = randv(rows * i_dim, &mut rng);
        let w = randv(spec.weight_len(), &mut rng);
        let b = randv(o_dim, &mut rng);
        let y0 = randv(rows * o_dim, &mut rng);
        let mut y = y0.clone();
        grouped_forward(&spec, alpha, &x, &w, Some(&b), &mut y).unwrap();
        let mut y_twin = y0.clone();
        grouped_forward_scalar(&spec, alpha, &x, &w, Some(&b), &mut y_twin).unwrap();
        let m = dense_reference(&spec, &w);
        let reference: Vec<f64> = (0..rows * o_dim).map(|k| {
            let (r, o) = (k / o_dim, k % o_dim);
            let dot: f64 = (0..i_dim).map(|c| m[o * i_dim + c] * x[r * i_dim + c] as f64).sum();
            y0[k] as f64 + alpha as f64 * (dot + b[o] as f64)
        }).collect();
        prop_assert!(close(&y, &reference, 1e-5).is_ok(), "{:?} {}", spec, close(&y, &reference, 1e-5).unwrap_err());
        prop_assert!(close(&y_twin, &reference, 1e-5).is_ok());
    }

    #[test]
    fn backward_matches_dense_reference((spec, rows) in spec_strategy(), alpha in 0.5f32..2.0, seed in 0u64..10_000) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (i_dim, o_dim) = (spec.in_dim, spec.out_dim);
        let x = randv(rows * i_dim, &mut rng);
        let w = randv(spec.weight_len(), &mut rng);
        let dy = randv(rows * o_dim, &mut rng);
        let m = dense_reference(&spec, &w);
        // dx = α·Mᵀ dy
        let mut dx = vec![0.0; rows * i_dim];
        grouped_backward_input(&spec, alpha, &dy, &w, &mut dx).unwrap();
        let mut dx_twin = vec![0.0; rows * i_dim];
        grouped_backward_input_scalar(&spec, alpha, &dy, &w, &mut dx_twin).unwrap();
        let dx_ref: Vec<f64> = (0..rows * i_dim).map(|k| {
            let (r, c) = (k / i_dim, k % i_dim);
            alpha as f64 * (0..o_dim).map(|o| m[o * i_dim + c] * dy[r * o_dim + o] as f64).sum::<f64>()
        }).collect();
        prop_assert!(close(&dx, &dx_ref, 1e-5).is_ok(), "dx {:?}: {}", spec, close(&dx, &dx_ref, 1e-5).unwrap_err());
        prop_assert!(close(&dx_twin, &dx_ref, 1e-5).is_ok());
        // dM = α·dyᵀ x restricted to the support, read back through the block layout.
        let mut dw = vec![0.0; spec.weight_len()];
        let mut db = vec![0.0; o_dim];
        grouped_backward_weight(&spec, alpha, &x, &dy, &mut dw, Some(&mut db)).unwrap();
        let mut dw_twin = vec![0.0; spec.weight_len()];
        grouped_backward_weight_scalar(&spec, alpha, &x, &dy, &mut dw_twin, None).unwrap();
        let (ci, co) = (spec.ci(), spec.co());
        let dw_ref: Vec<f64> = (0..spec.weight_len()).map(|idx| {
            let (i, r, s) = (idx / (co * ci), (idx / ci) % co, idx % ci);
            let o = i * co + r;
            let c = spec.src(i * ci + s);
            alpha as f64 * (0..rows).map(|t| dy[t * o_dim + o] as f64 * x[t * i_dim + c] as f64).sum::<f64>()
        }).collect();
        prop_assert!(close(&dw, &dw_ref, 1e-5).is_ok(), "dw {:?}: {}", spec, close(&dw, &dw_ref, 1e-5).unwrap_err());
        prop_assert!(close(&dw_twin, &dw_ref, 1e-5).is_ok());
        let db_ref: Vec<f64> = (0..o_dim).map(|o| alpha as f64 * (0..rows).map(|t| dy[t * o_dim + o] as f64).sum::<f64>()).collect();
        prop_assert!(close(&db, &db_ref, 1e-5).is_ok());
    }
}

#[test]
fn extreme_group_counts_dense_and_depthwise() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for (i_dim, o_dim, g) in [(48, 24, 1), (48, 48, 48), (48, 96, 48), (768, 768, 384)] {
        for reorder in [false, true] {
            let spec = GroupSpec::new(i_dim, o_dim, g, reorder).unwrap();
            let rows = 5;
            let x = randv(rows * i_dim, &mut rng);
            let w = randv(spec.weight_len(), &mut rng);
            let mut y = vec![0.0; rows * o_dim];
            grouped_forward(&spec, 1.0, &x, &w, None, &mut y).unwrap();
            let mut yt = vec![0.0; rows * o_dim];
            grouped_forward_scalar(&spec, 1.0, &x, &w, None, &mut yt).unwrap();
            let yt64: Vec<f64> = yt.iter().map(|&v| v as f64).collect();
            close(&y, &yt64, 1e-5).unwrap();
        }
    }
}

/// Frozen edge cases: each fast path at its tile edges.
#[test]
fn tile_edges_match_twin() {
    let cases = [
        // (ci, co, g, rows): lanes (pairs of 8-row tiles, 64-row tasks, 128-row slices, 8-wide tails)
        (2, 2, 384, 1576),
        (3, 5, 7, 17),
        (8, 8, 4, 129),
        (12, 12, 8, 65),
        (16, 16, 3, 256),
        (17, 15, 2, 127),
        (32, 32, 3, 33),
        // GEMM paths: just above the lane limits, several runs with reorder
        (33, 32, 3, 71),
        (48, 48, 4, 200),
        (40, 40, 1, 9),
        // the weight gradient's depth blocks: one row past a block, several blocks
        (48, 48, 4, 385),
        (24, 72, 8, 1153),
    ];
    for (ci, co, g, rows) in cases {
        for reorder in [false, true] {
            let spec = GroupSpec::new(ci * g, co * g, g, reorder).unwrap();
            fast_matches_twin(&spec, rows, 1.5, (ci * co * g + rows) as u64).unwrap();
        }
    }
}

/// The fast kernels give bit-identical results on one thread and on all of them.
#[test]
fn results_do_not_depend_on_thread_count() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (ci, co, g) in [(2, 2, 96), (12, 12, 16), (24, 24, 8), (24, 72, 7), (64, 64, 3), (96, 96, 1)] {
        let spec = GroupSpec::new(ci * g, co * g, g, true).unwrap();
        let rows = 301 + 500 * (g % 2); // the weight gradient's 384-row depth blocks, too
        let x = randv(rows * spec.in_dim, &mut rng);
        let w = randv(spec.weight_len(), &mut rng);
        let dy = randv(rows * spec.out_dim, &mut rng);
        let run = || {
            let mut y = vec![0.0; rows * spec.out_dim];
            let mut dx = vec![0.0; rows * spec.in_dim];
            let mut dw = vec![0.0; spec.weight_len()];
            let mut db = vec![0.0; spec.out_dim];
            grouped_forward(&spec, 1.0, &x, &w, None, &mut y).unwrap();
            grouped_backward_input(&spec, 1.0, &dy, &w, &mut dx).unwrap();
            grouped_backward_weight(&spec, 1.0, &x, &dy, &mut dw, Some(&mut db)).unwrap();
            (y, dx, dw, db)
        };
        let all = run();
        let before = consolidator::par::threads();
        consolidator::par::set_threads(1);
        let one = run();
        consolidator::par::set_threads(before);
        assert!(all == one, "{spec:?}");
    }
}

#[test]
fn runs_cover_each_group_exactly_once() {
    for (i_dim, g) in [(12, 4), (12, 3), (768, 8), (768, 384), (12, 12), (10, 5), (30, 6)] {
        for reorder in [false, true] {
            let spec = GroupSpec::new(i_dim, i_dim, g, reorder).unwrap();
            let mut seen = vec![0; i_dim];
            for i in 0..g {
                let mut covered = 0;
                for r in spec.runs(i) {
                    assert_eq!(r.offset, covered);
                    for t in 0..r.len {
                        let c = r.start + t * r.stride;
                        assert_eq!(c, spec.src(i * spec.ci() + r.offset + t));
                        seen[c] += 1;
                    }
                    covered += r.len;
                }
                assert_eq!(covered, spec.ci());
            }
            assert!(seen.iter().all(|&k| k == 1), "{spec:?}");
            for c in 0..i_dim {
                assert_eq!(spec.src(spec.pos(c)), c);
            }
        }
    }
}

#[test]
fn wrong_lengths_are_errors() {
    let spec = GroupSpec::new(8, 8, 2, false).unwrap();
    let mut y = vec![0.0; 16];
    assert!(grouped_forward(&spec, 1.0, &[0.0; 15], &[0.0; 32], None, &mut y).is_err());
    assert!(grouped_forward(&spec, 1.0, &[0.0; 16], &[0.0; 31], None, &mut y).is_err());
}
