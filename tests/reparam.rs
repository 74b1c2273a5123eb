//! Laws of the reparameterization algebra on random shapes and values, and the storage counts
//! of the specification (consolidator-spec.md §2.2, computed there by an independent script).

use consolidator::algebra::*;
use consolidator::kernels::grouped::GroupSpec;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn randv(n: usize, rng: &mut impl Rng) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// A random map of the given kind on an `o × i` layer (`kind` picks the representation).
fn random_map(kind: usize, o: usize, i: usize, groups: &[usize], rng: &mut impl Rng) -> Affine {
    let divisors: Vec<usize> =
        groups.iter().copied().filter(|g| i.is_multiple_of(*g) && o.is_multiple_of(*g)).collect();
    match kind % 5 {
        0 => Affine::Dense(Dense { out_dim: o, in_dim: i, weight: randv(o * i, rng), bias: randv(o, rng) }),
        1 | 2 => {
            let g = divisors[rng.gen_range(0..divisors.len())];
            let spec = GroupSpec::new(i, o, g, rng.gen()).unwrap();
            let bd =
                Affine::BlockDiagonal(BlockDiagonal::new(spec, randv(spec.weight_len(), rng), randv(o, rng)).unwrap());
            if kind % 5 == 2 {
                // A sparse map: the sum of two branches.
                let g2 = divisors[rng.gen_range(0..divisors.len())];
                let s2 = GroupSpec::new(i, o, g2, rng.gen()).unwrap();
                bd.add(&Affine::BlockDiagonal(
                    BlockDiagonal::new(s2, randv(s2.weight_len(), rng), randv(o, rng)).unwrap(),
                ))
                .unwrap()
            } else {
                bd
            }
        }
        3 => {
            let rank = rng.gen_range(1..3);
            Affine::LowRank(LowRank {
                rank,
                in_dim: i,
                out_dim: o,
                a: randv(rank * i, rng),
                b: randv(o * rank, rng),
                scale: rng.gen_range(0.5..2.0),
                bias: randv(o, rng),
            })
        }
        _ => {
            if o == i {
                Affine::ScaleShift(ScaleShift { gamma: randv(o, rng), beta: randv(o, rng) })
            } else {
                Affine::Dense(Dense { out_dim: o, in_dim: i, weight: randv(o * i, rng), bias: randv(o, rng) })
            }
        }
    }
}

fn assert_close(a: &[f64], b: &[f64], tol: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        prop_assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{} vs {}", x, y);
    }
    Ok(())
}

fn dims() -> impl Strategy<Value = (usize, usize)> {
    prop::sample::select(vec![(4usize, 4usize), (8, 8), (6, 12), (12, 6), (16, 8), (24, 24)])
}

const GROUPS: [usize; 6] = [1, 2, 3, 4, 6, 8];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn add_is_pointwise_sum_commutative_associative((o, i) in dims(), ka in 0usize..5, kb in 0usize..5, kc in 0usize..5, seed in 0u64..100_000) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (a, b, c) = (random_map(ka, o, i, &GROUPS, &mut rng), random_map(kb, o, i, &GROUPS, &mut rng), random_map(kc, o, i, &GROUPS, &mut rng));
        let x = randv(3 * i, &mut rng);
        let ab = a.add(&b).unwrap();
        let expect: Vec<f64> = a.apply(&x).unwrap().iter().zip(b.apply(&x).unwrap()).map(|(p, q)| p + q).collect();
        assert_close(&ab.apply(&x).unwrap(), &expect, 1e-12)?;
        assert_close(&b.add(&a).unwrap().apply(&x).unwrap(), &expect, 1e-12)?;
        let left = ab.add(&c).unwrap().apply(&x).unwrap();
        let right = a.add(&b.add(&c).unwrap()).unwrap().apply(&x).unwrap();
        assert_close(&left, &right, 1e-12)?;
        // The sum never stores more than dense.
        prop_assert!(ab.nnz() <= o * i + 1, "{} stores {}", ab.kind(), ab.nnz());
    }

    #[test]
    fn to_dense_and_compose_agree_with_apply((o, i) in dims(), ka in 0usize..5, kb in 0usize..5, seed in 0u64..100_000) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let a = random_map(ka, o, i, &GROUPS, &mut rng);
        let x = randv(2 * i, &mut rng);
        assert_close(&Affine::Dense(a.to_dense()).apply(&x).unwrap(), &a.apply(&x).unwrap(), 1e-12)?;
        // inner: i → i, outer: a (o ← i).
        let inner = random_map(kb, i, i, &GROUPS, &mut rng);
        let composed = a.compose(&inner).unwrap();
        assert_close(&composed.apply(&x).unwrap(), &a.apply(&inner.apply(&x).unwrap()).unwrap(), 1e-12)?;
        // A scale-shift on either side keeps the other's representation.
        if let Affine::ScaleShift(_) = inner { prop_assert_eq!(composed.kind(), a.kind()); }
    }
}

/// Union-support sizes from the specification's table (768×768 layer).
#[test]
fn union_support_counts_match_the_specification() {
    let table: [(&[usize], bool, usize, usize); 7] = [
        (&[384], false, 1536, 1536),
        (&[384, 768], false, 2304, 1536),
        (&[384, 768], true, 2304, 2302),
        (&[192, 384], false, 4608, 3072),
        (&[192, 384], true, 4608, 4600),
        (&[96, 192, 384], false, 10752, 6144),
        (&[96, 192, 384], true, 10752, 10692),
    ];
    for (groups, reorder, tuned, stored) in table {
        let specs: Vec<GroupSpec> = groups.iter().map(|&g| GroupSpec::new(768, 768, g, reorder).unwrap()).collect();
        assert_eq!(specs.iter().map(|s| s.weight_len()).sum::<usize>(), tuned);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let sum = specs
            .iter()
            .map(|&s| {
                Affine::BlockDiagonal(BlockDiagonal::new(s, randv(s.weight_len(), &mut rng), vec![0.0; 768]).unwrap())
            })
            .reduce(|a, b| a.add(&b).unwrap())
            .unwrap();
        assert_eq!(sum.nnz(), stored, "groups {groups:?} reorder {reorder}");
        assert_eq!(Pattern::Grouped(specs).nnz(768), stored);
        // The dense form has exactly that many non-zeros (random values are never 0).
        assert_eq!(sum.to_dense().weight.iter().filter(|v| **v != 0.0).count(), stored);
    }
}

#[test]
fn shape_mismatches_are_errors() {
    let a = Affine::Dense(Dense::zeros(4, 4));
    let b = Affine::Dense(Dense::zeros(4, 6));
    assert!(a.add(&b).is_err());
    assert!(b.compose(&a).is_err());
    assert!(a.apply(&[1.0; 5]).is_err());
    assert!(Sparse::new(2, 2, Pattern::Csr { row_ptr: vec![0, 2, 1], cols: vec![0, 1] }, vec![0.0; 2], vec![0.0; 2])
        .is_err());
}
