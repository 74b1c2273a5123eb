//! Every fast kernel against its slow twin, on random lengths (many not multiples of 8), plus
//! GEMM against an `f64` reference around the tile edges.
//!
//! Tolerances (the contract the fast kernels keep):
//! * `add`, `mul`, `scale`, `axpy`, `sum_rows_into`: bit-for-bit equal to the scalar twin.
//! * `sum`, `dot`: `|fast − f64 oracle| ≤ 2e-6·Σ|xᵢyᵢ|` (plus one `f32` rounding).
//! * `erf_slice`: `≤ 2e-7` abs against `erf_f64`.
//! * `gelu_erf`, `gelu_erf_backward`: `≤ 1e-6·max(1, |x|)` abs (times `max(1, |dy|)` for the
//!   backward).
//! * `softmax_rows`, `softmax_backward_rows`: `≤ 1e-6` abs.
//! * LayerNorm: `≤ 1e-5` abs on outputs, `≤ 1e-5·max(rstd)` on `dx`, relative `1e-5` for
//!   `mean`, `rstd`, `dγ`, `dβ`.
//! * GEMM (operands row-major, transposed via `.t()`, padded rows, every-other-column views):
//!   `|C − C₆₄| ≤ 1e-5·(|α|·Σₚ|aᵢₚ·bₚⱼ| + |β·cᵢⱼ|)` for `K ≤ 4096`; each SIMD micro-kernel
//!   (AVX-512, AVX2) bit-identical to its scalar twin at tile edges, block edges and strides.
//! * Thread count: every kernel gives bit-identical results with 1, 2 and 3 threads.

use consolidator::kernels::activation::*;
use consolidator::kernels::elementwise::*;
use consolidator::kernels::gemm::{gemm, gemm_batched, gemm_ext, gemm_isa, gemm_new, gemm_push, MatRef};
use consolidator::kernels::layernorm::*;
use consolidator::kernels::softmax::*;
use consolidator::kernels::{Isa, PackedB, Rhs};
use consolidator::par;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Lengths: mostly 0..100, sometimes above the 64K-element parallel threshold.
fn len() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..100, 1 => 65_530usize..65_600, 1 => 100_000usize..100_100]
}

fn vals(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(lo..hi)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------- elementwise

proptest! {
    #![proptest_config(cfg(64))]

    #[test]
    fn add_mul_scale_axpy_are_exact(n in len(), seed in any::<u64>(), s in -3.0f32..3.0) {
        let a = vals(n, -10.0, 10.0, seed);
        let b = vals(n, -10.0, 10.0, seed ^ 1);
        let (mut f, mut o) = (vec![0.0; n], vec![0.0; n]);
        add(&a, &b, &mut f);
        add_scalar(&a, &b, &mut o);
        prop_assert_eq!(bits(&f), bits(&o));
        mul(&a, &b, &mut f);
        mul_scalar(&a, &b, &mut o);
        prop_assert_eq!(bits(&f), bits(&o));
        let (mut f, mut o) = (a.clone(), a.clone());
        scale(&mut f, s);
        scale_scalar(&mut o, s);
        prop_assert_eq!(bits(&f), bits(&o));
        let (mut f, mut o) = (b.clone(), b.clone());
        axpy(s, &a, &mut f);
        axpy_scalar(s, &a, &mut o);
        prop_assert_eq!(bits(&f), bits(&o));
    }

    #[test]
    fn sum_and_dot_within_2e_6_of_abs_sum(n in len(), seed in any::<u64>(), off in -5.0f32..5.0) {
        let a = vals(n, off - 1.0, off + 1.0, seed);
        let b = vals(n, -2.0, 2.0, seed ^ 7);
        let abs_a: f64 = a.iter().map(|v| v.abs() as f64).sum();
        let abs_ab: f64 = a.iter().zip(&b).map(|(x, y)| (x * y).abs() as f64).sum();
        let (fs, os) = (sum(&a), sum_scalar(&a));
        prop_assert!(((fs - os) as f64).abs() <= 2e-6 * abs_a + os.abs() as f64 * 6e-8,
            "sum {} vs {}", fs, os);
        let (fd, od) = (dot(&a, &b), dot_scalar(&a, &b));
        prop_assert!(((fd - od) as f64).abs() <= 2e-6 * abs_ab + od.abs() as f64 * 6e-8,
            "dot {} vs {}", fd, od);
    }

    #[test]
    fn sum_rows_into_is_exact(rows in prop_oneof![Just(0usize), 1usize..40],
                              cols in prop_oneof![1usize..160, 2000usize..2100],
                              seed in any::<u64>()) {
        let x = vals(rows * cols, -3.0, 3.0, seed);
        let init = vals(cols, -1.0, 1.0, seed ^ 3);
        let (mut f, mut o) = (init.clone(), init);
        sum_rows_into(&x, cols, &mut f);
        sum_rows_into_scalar(&x, cols, &mut o);
        prop_assert_eq!(bits(&f), bits(&o));
    }
}

// ---------------------------------------------------------------- activation

proptest! {
    #![proptest_config(cfg(64))]

    #[test]
    fn gelu_within_1e_6(n in len(), seed in any::<u64>(),
                        r in prop_oneof![Just(4.0f32), Just(12.0f32), Just(60.0f32)]) {
        let x = vals(n, -r, r, seed);
        let dy = vals(n, -2.0, 2.0, seed ^ 5);
        let (mut f, mut o) = (vec![0.0; n], vec![0.0; n]);
        gelu_erf(&x, &mut f);
        gelu_erf_scalar(&x, &mut o);
        for i in 0..n {
            let tol = 1e-6 * x[i].abs().max(1.0);
            prop_assert!((f[i] - o[i]).abs() <= tol, "gelu({}) = {} vs {}", x[i], f[i], o[i]);
        }
        // The 16-lane (AVX-512) kernel, where the CPU has it, matches the 8-lane one bit for bit.
        let mut w = vec![0.0; n];
        gelu_erf_x8(&x, &mut w);
        prop_assert_eq!(bits(&f), bits(&w));
        gelu_erf_backward(&x, &dy, &mut f);
        gelu_erf_backward_scalar(&x, &dy, &mut o);
        for i in 0..n {
            let tol = 1e-6 * x[i].abs().max(1.0) * dy[i].abs().max(1.0);
            prop_assert!((f[i] - o[i]).abs() <= tol, "gelu'({}) = {} vs {}", x[i], f[i], o[i]);
        }
        gelu_erf_backward_x8(&x, &dy, &mut w);
        prop_assert_eq!(bits(&f), bits(&w));
        // One pass for both: `gelu_erf`'s values, and the slope that `gelu_erf_backward`
        // multiplies `dy` by (so `dy·slope` is its result bit for bit), at every length.
        let (mut slope, mut a) = (x.clone(), vec![std::mem::MaybeUninit::new(f32::NAN); n]);
        gelu_and_slope(&mut slope, &mut a);
        gelu_erf(&x, &mut o);
        prop_assert_eq!(bits(&o), a.iter().map(|v| unsafe { v.assume_init() }.to_bits()).collect::<Vec<_>>());
        let times: Vec<f32> = dy.iter().zip(&slope).map(|(d, s)| d * s).collect();
        prop_assert_eq!(bits(&f), bits(&times));
    }
}

/// A dense grid, including 0, the region boundaries (|x| = 1, 3.92) and far tails.
#[test]
fn erf_slice_dense_grid_within_2e_7() {
    let x: Vec<f32> = (-80_000..=80_000).map(|i| i as f32 * 1e-4).collect();
    let mut y = vec![0.0; x.len()];
    erf_slice(&x, &mut y);
    for (&v, &e) in x.iter().zip(&y) {
        let err = (e as f64 - erf_f64(v as f64)).abs();
        assert!(err <= 2e-7, "erf({v}) = {e}, error {err:e}");
    }
    let edge = [0.0f32, -0.0, 1e-30, 1.0, -1.0, 3.92, -3.92, 50.0, -50.0, f32::INFINITY];
    let mut y = vec![0.0; edge.len()];
    erf_slice(&edge, &mut y);
    for (&v, &e) in edge.iter().zip(&y) {
        assert!((e - erf(v)).abs() <= 2e-7, "erf({v}) = {e}");
    }
}

#[test]
fn gelu_extremes() {
    let x = [0.0f32, -0.0, 1e-20, -1e-20, 30.0, -30.0, 1e4, -1e4];
    let (mut f, mut o) = (vec![0.0; 8], vec![0.0; 8]);
    gelu_erf(&x, &mut f);
    gelu_erf_scalar(&x, &mut o);
    for i in 0..8 {
        let tol = 1e-6 * x[i].abs().max(1.0);
        assert!((f[i] - o[i]).abs() <= tol, "{} {} {}", x[i], f[i], o[i]);
    }
}

// ---------------------------------------------------------------- softmax

proptest! {
    #![proptest_config(cfg(64))]

    #[test]
    fn softmax_within_1e_6(rows in 0usize..6, n in prop_oneof![4 => 1usize..100, 1 => 197usize..260],
                           seed in any::<u64>(),
                           r in prop_oneof![Just(1.0f32), Just(20.0f32), Just(80.0f32)]) {
        softmax_case(rows, n, seed, r)?;
    }

    #[test]
    fn softmax_large_is_parallel_and_within_1e_6(n in 190usize..200, seed in any::<u64>()) {
        softmax_case(400, n, seed, 10.0)?;
    }
}

fn softmax_case(rows: usize, n: usize, seed: u64, r: f32) -> Result<(), TestCaseError> {
    let x = vals(rows * n, -r, r, seed);
    let dy = vals(rows * n, -1.0, 1.0, seed ^ 9);
    let (mut f, mut o) = (x.clone(), x);
    softmax_rows(&mut f, n);
    softmax_rows_scalar(&mut o, n);
    for (a, b) in f.iter().zip(&o) {
        prop_assert!((a - b).abs() <= 1e-6, "softmax {} vs {}", a, b);
    }
    let (mut df, mut dsc) = (vec![0.0; rows * n], vec![0.0; rows * n]);
    softmax_backward_rows(&o, &dy, &mut df, n);
    softmax_backward_rows_scalar(&o, &dy, &mut dsc, n);
    for (a, b) in df.iter().zip(&dsc) {
        prop_assert!((a - b).abs() <= 1e-6, "softmax backward {} vs {}", a, b);
    }
    Ok(())
}

#[test]
fn softmax_with_minus_infinity_entries() {
    let ninf = f32::NEG_INFINITY;
    let mut f = vec![0.5, ninf, 2.0, ninf, 1.0, -3.0, 0.0, 7.0, 1.0];
    let mut o = f.clone();
    softmax_rows(&mut f, 9);
    softmax_rows_scalar(&mut o, 9);
    for (a, b) in f.iter().zip(&o) {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }
    assert_eq!(f[1], 0.0);
}

// ---------------------------------------------------------------- layernorm

proptest! {
    #![proptest_config(cfg(48))]

    #[test]
    fn layernorm_within_1e_5(rows in 0usize..6,
                             c in prop_oneof![4 => 1usize..100, 1 => Just(768usize)],
                             seed in any::<u64>(),
                             off in prop_oneof![Just(0.0f32), Just(30.0f32)]) {
        layernorm_case(rows, c, seed, off)?;
    }

    #[test]
    fn layernorm_large_is_parallel_and_within_1e_5(c in 190usize..200, seed in any::<u64>()) {
        layernorm_case(400, c, seed, 1.0)?;
    }
}

fn layernorm_case(rows: usize, c: usize, seed: u64, off: f32) -> Result<(), TestCaseError> {
    let x = vals(rows * c, off - 2.0, off + 2.0, seed);
    let gamma = vals(c, -2.0, 2.0, seed ^ 1);
    let beta = vals(c, -1.0, 1.0, seed ^ 2);
    let dy = vals(rows * c, -1.0, 1.0, seed ^ 3);
    let eps = 1e-6;
    let (mut of, mut mf, mut rf) = (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
    let (mut oo, mut mo, mut ro) = (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
    layernorm_forward(&x, &gamma, &beta, eps, &mut of, &mut mf, &mut rf);
    layernorm_forward_scalar(&x, &gamma, &beta, eps, &mut oo, &mut mo, &mut ro);
    // f32 statistics carry the rounding of x and its mean (about ε·|x|), amplified by 1/σ: a
    // row far from zero with a small spread (off = 30, few columns) is ill-conditioned.
    for (k, (a, b)) in of.iter().zip(&oo).enumerate() {
        let (r, j) = (k / c, k % c);
        let xmax = x[r * c..(r + 1) * c].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let tol = 1e-5 + 4.0 * f32::EPSILON * xmax * ro[r] * gamma[j].abs();
        prop_assert!((a - b).abs() <= tol, "out {} vs {} (tol {})", a, b, tol);
    }
    for r in 0..rows {
        prop_assert!((mf[r] - mo[r]).abs() <= 1e-5 * mo[r].abs().max(1.0), "mean");
        prop_assert!((rf[r] - ro[r]).abs() <= 1e-5 * ro[r].abs(), "rstd {} vs {}", rf[r], ro[r]);
    }
    let init = vals(c, -1.0, 1.0, seed ^ 4);
    let (mut dxf, mut dgf, mut dbf) = (vec![0.0; rows * c], init.clone(), init.clone());
    let (mut dxo, mut dgo, mut dbo) = (vec![0.0; rows * c], init.clone(), init.clone());
    let (xs, gs, ms, rs, dys) = (&x[..], &gamma[..], &mo[..], &ro[..], &dy[..]);
    layernorm_backward(xs, gs, ms, rs, dys, Some(&mut dxf), Some(&mut dgf), Some(&mut dbf));
    layernorm_backward_scalar(xs, gs, ms, rs, dys, Some(&mut dxo), Some(&mut dgo), Some(&mut dbo));
    let max_rstd = ro.iter().fold(1.0f32, |m, v| m.max(*v));
    for (a, b) in dxf.iter().zip(&dxo) {
        prop_assert!((a - b).abs() <= 1e-5 * max_rstd, "dx {} vs {}", a, b);
    }
    for j in 0..c {
        let scale: f32 = (0..rows).map(|r| (dy[r * c + j] * (x[r * c + j] - mo[r]) * ro[r]).abs()).sum();
        let tol_g = 1e-5 * (scale + init[j].abs()).max(1.0);
        prop_assert!((dgf[j] - dgo[j]).abs() <= tol_g, "dgamma {} vs {}", dgf[j], dgo[j]);
        let tol_b = 1e-5 * (rows as f32).max(1.0);
        prop_assert!((dbf[j] - dbo[j]).abs() <= tol_b, "dbeta {} vs {}", dbf[j], dbo[j]);
    }
    // Each parameter gradient on its own gives the same values.
    let (mut dg2, mut db2) = (init.clone(), init.clone());
    layernorm_backward(xs, gs, ms, rs, dys, None, Some(&mut dg2), None);
    layernorm_backward(xs, gs, ms, rs, dys, None, None, Some(&mut db2));
    prop_assert_eq!(bits(&dg2), bits(&dgf));
    prop_assert_eq!(bits(&db2), bits(&dbf));
    // The kernels that build new outputs give the same bits.
    let (mut m3, mut r3) = (vec![0.0; rows], vec![0.0; rows]);
    prop_assert_eq!(bits(&layernorm_forward_new(&x, &gamma, &beta, eps, &mut m3, &mut r3)), bits(&of));
    prop_assert_eq!((bits(&m3), bits(&r3)), (bits(&mf), bits(&rf)));
    let (mut dg3, mut db3) = (init.clone(), init.clone());
    let dx3 = layernorm_backward_new(xs, gs, ms, rs, dys, Some(&mut dg3), Some(&mut db3));
    prop_assert_eq!(bits(&dx3), bits(&dxf));
    prop_assert_eq!((bits(&dg3), bits(&db3)), (bits(&dgf), bits(&dbf)));
    Ok(())
}

// ---------------------------------------------------------------- gemm

/// `C = α·A·B + β·C` in `f64`, and per element the error scale `|α|·Σ|a·b| + |β·c|`.
fn gemm_f64(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &[f32], ldc: usize) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (mut out, mut scale) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut sa) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = a.at(i, p) as f64 * b.at(p, j) as f64;
                s += t;
                sa += t.abs();
            }
            let old = if beta == 0.0 { 0.0 } else { beta as f64 * c[i * ldc + j] as f64 };
            out[i * n + j] = alpha as f64 * s + old;
            scale[i * n + j] = alpha.abs() as f64 * sa + old.abs();
        }
    }
    (out, scale)
}

/// Storage for an `r × c` operand: row-major, or its transpose stored row-major (then viewed
/// with `.t()`), with `pad` unused values after each stored row and `step` between the stored
/// columns (`step > 1`: a view that skips values, e.g. every other column).
struct Operand {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    ld: usize,
    step: usize,
    transposed: bool,
}

impl Operand {
    fn new(r: usize, c: usize, transposed: bool, pad: usize, step: usize, seed: u64) -> Self {
        let (rows, cols) = if transposed { (c, r) } else { (r, c) };
        let ld = cols * step + pad;
        let data = vals(rows * ld, -1.0, 1.0, seed);
        Operand { data, rows, cols, ld, step, transposed }
    }
    fn view(&self) -> MatRef<'_> {
        let v = MatRef::strided(&self.data, self.rows, self.cols, self.ld, self.step);
        if self.transposed {
            v.t()
        } else {
            v
        }
    }
}

/// One product: `A` (`m×k`) and `B` (`k×n`) row-major or transposed, rows padded by `pad`,
/// stored columns `step` apart.
struct Case {
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    pad: usize,
    step: usize,
    alpha: f32,
    beta: f32,
    seed: u64,
}

fn gemm_case(t: Case) -> Result<(), TestCaseError> {
    let Case { m, k, n, .. } = t;
    let a_op = Operand::new(m, k, t.ta, t.pad, t.step, t.seed);
    let b_op = Operand::new(k, n, t.tb, t.pad, t.step, t.seed ^ 11);
    let (a, b) = (a_op.view(), b_op.view());
    let ldc = n + t.pad;
    let mut c = vals(m * ldc, -1.0, 1.0, t.seed ^ 13);
    if t.beta == 0.0 {
        c[..m * n].iter_mut().for_each(|v| *v = f32::NAN); // β = 0 ignores old contents
    }
    let (want, scale) = gemm_f64(t.alpha, a, b, t.beta, &c, ldc);
    let before = c.clone();
    gemm(t.alpha, a, b, t.beta, &mut c, ldc);
    for i in 0..m {
        for j in 0..n {
            let got = c[i * ldc + j] as f64;
            let tol = 1e-5 * scale[i * n + j] + 1e-30;
            prop_assert!(
                (got - want[i * n + j]).abs() <= tol,
                "C[{},{}] = {} vs {} ({}x{}x{} ta={} tb={})",
                i,
                j,
                got,
                want[i * n + j],
                m,
                k,
                n,
                t.ta,
                t.tb
            );
        }
        for j in n..ldc {
            let (g, o) = (c[i * ldc + j].to_bits(), before[i * ldc + j].to_bits());
            prop_assert_eq!(g, o, "padding of C written");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg(96))]

    /// m, n over 1..3 tiles (8×8 AVX2 and 16×16 AVX-512 kernels), k around kc = 256.
    #[test]
    fn gemm_tile_edges(m in 1usize..49, n in 1usize..49,
                       k in prop_oneof![1usize..40, 250usize..520],
                       ta in any::<bool>(), tb in any::<bool>(), pad in 0usize..3,
                       step in prop_oneof![3 => Just(1usize), 1 => Just(2usize)],
                       ab in prop_oneof![Just((1.0f32, 0.0f32)), Just((0.5, 1.0)), Just((-1.5, 0.25))],
                       seed in any::<u64>()) {
        let (alpha, beta) = ab;
        gemm_case(Case { m, k, n, ta, tb, pad, step, alpha, beta, seed })?;
    }

    /// Large enough to take the parallel paths (row split, and column split when short-wide).
    #[test]
    fn gemm_parallel_shapes(m in prop_oneof![Just(3usize), 60usize..70, 190usize..200],
                            n in 60usize..70, k in 60usize..300, tb in any::<bool>(),
                            beta in prop_oneof![Just(0.0f32), Just(0.5f32)], seed in any::<u64>()) {
        let (m, n) = if m == 3 { (3, 3000 + n) } else { (m, n) };
        gemm_case(Case { m, k, n, ta: false, tb, pad: 1, step: 1, alpha: 1.0, beta, seed })?;
    }
}

proptest! {
    #![proptest_config(cfg(6))]

    /// Long inner dimension: error within 1e-5 of Σ|a·b| up to K = 4096.
    #[test]
    fn gemm_long_k(m in 1usize..20, n in 1usize..20, k in 3000usize..4097, tb in any::<bool>(),
                   seed in any::<u64>()) {
        gemm_case(Case { m, k, n, ta: false, tb, pad: 0, step: 1, alpha: 1.0, beta: 0.0, seed })?;
    }
}

// ---------------------------------------------------------------- our GEMM's kernels

/// One product on `isa`'s kernel and on its scalar twin: bit-identical, and within the GEMM
/// tolerance of the `f64` reference.
fn twin_case(isa: Isa, twin: Isa, t: &Case) -> Result<(), TestCaseError> {
    let Case { m, k, n, .. } = *t;
    let a_op = Operand::new(m, k, t.ta, t.pad, t.step, t.seed);
    let b_op = Operand::new(k, n, t.tb, t.pad, t.step, t.seed ^ 11);
    let (a, b) = (a_op.view(), b_op.view());
    let ldc = n + t.pad;
    let c0 = vals(m * ldc, -1.0, 1.0, t.seed ^ 13);
    let (want, scale) = gemm_f64(t.alpha, a, b, t.beta, &c0, ldc);
    let (mut c1, mut c2) = (c0.clone(), c0.clone());
    gemm_isa(isa, t.alpha, a, b, t.beta, &mut c1, ldc);
    gemm_isa(twin, t.alpha, a, b, t.beta, &mut c2, ldc);
    prop_assert_eq!(bits(&c1), bits(&c2), "{:?} vs {:?}, {}x{}x{} ta={} tb={}", isa, twin, m, k, n, t.ta, t.tb);
    for i in 0..m {
        for j in 0..n {
            let got = c1[i * ldc + j] as f64;
            prop_assert!((got - want[i * n + j]).abs() <= 1e-5 * scale[i * n + j] + 1e-30, "C[{},{}] {:?}", i, j, isa);
        }
        prop_assert_eq!(bits(&c1[i * ldc + n..(i + 1) * ldc]), bits(&c0[i * ldc + n..(i + 1) * ldc]));
    }
    Ok(())
}

/// The SIMD kernels this CPU runs, each with its scalar twin (the twins alone elsewhere).
fn kernel_pairs() -> Vec<(Isa, Isa)> {
    let have = Isa::available();
    let mut v = vec![(Isa::Scalar512, Isa::Scalar512), (Isa::Scalar256, Isa::Scalar256)];
    for (simd, twin) in [(Isa::Avx512, Isa::Scalar512), (Isa::Avx2, Isa::Scalar256)] {
        if have.contains(&simd) {
            v.push((simd, twin));
        }
    }
    v
}

proptest! {
    #![proptest_config(cfg(64))]

    /// Tile edges of both kernels (12 × 32 and 6 × 16: m, n over 1..3 tiles and one more),
    /// depths around the block of 384 and its double, two blocks of columns (a block holds 576
    /// at full depth), transposed and strided operands (the in-place and packed paths for A —
    /// rows 1 KiB apart are packed when n spans several column tiles — the copying and
    /// transposing packers for B, and B's rows read in place with masked loads when n spans
    /// one or two column tiles of the 12 × 32 kernel).
    #[test]
    fn simd_kernels_equal_their_scalar_twins(m in prop_oneof![1usize..38, 60usize..75],
                                            n in prop_oneof![1usize..100, 578usize..610],
                                            k in prop_oneof![1usize..40, 380usize..390, 766usize..770, Just(256usize), Just(512usize)],
                                            ta in any::<bool>(), tb in any::<bool>(), pad in 0usize..3,
                                            step in prop_oneof![3 => Just(1usize), 1 => Just(2usize)],
                                            ab in prop_oneof![Just((1.0f32, 0.0f32)), Just((0.5, 1.0)), Just((-1.5, 0.25))],
                                            seed in any::<u64>()) {
        let (alpha, beta) = ab;
        let t = Case { m, k, n, ta, tb, pad, step, alpha, beta, seed };
        for (isa, twin) in kernel_pairs() {
            twin_case(isa, twin, &t)?;
        }
    }

    /// Panels packed once (a frozen weight's) and a bias epilogue give what packing on the fly
    /// and adding the bias after give; a new output (`gemm_new`) equals a zeroed one.
    #[test]
    fn prepacked_panels_bias_and_new_outputs(m in 1usize..40, n in 1usize..80, k in prop_oneof![1usize..50, 380usize..400],
                                             beta in prop_oneof![Just(0.0f32), Just(0.5)], seed in any::<u64>()) {
        let a = vals(m * k, -1.0, 1.0, seed);
        let w = vals(n * k, -1.0, 1.0, seed ^ 1); // [n, k]: the product is a·wᵀ
        let bias = vals(n, -1.0, 1.0, seed ^ 2);
        let c0 = vals(m * n, -1.0, 1.0, seed ^ 3);
        let (av, bv) = (MatRef::new(&a, m, k), MatRef::new(&w, n, k).t());
        for (isa, _) in kernel_pairs() {
            let mut want = c0.clone();
            gemm_isa(isa, 0.75, av, bv, beta, &mut want, n);
            let mut got = c0.clone();
            gemm_ext(0.75, av, Rhs::Packed(&PackedB::new(isa, bv)), beta, None, &mut got, n);
            prop_assert_eq!(bits(&got), bits(&want), "{:?} prepacked", isa);
            let mut with_bias = c0.clone();
            gemm_ext(0.75, av, Rhs::Packed(&PackedB::new(isa, bv)), beta, Some(&bias), &mut with_bias, n);
            for (i, (g, w)) in with_bias.iter().zip(&want).enumerate() {
                prop_assert!((g - (w + bias[i % n])).abs() <= 1e-6 * (1.0 + w.abs()), "{:?} bias", isa);
            }
        }
        let fresh = gemm_new(1.0, av, Rhs::View(bv), Some(&bias));
        let mut zeroed = vec![0.0; m * n];
        gemm_ext(1.0, av, Rhs::View(bv), 0.0, Some(&bias), &mut zeroed, n);
        prop_assert_eq!(bits(&fresh), bits(&zeroed));
        // Appended to a buffer (on this thread): the same values after what was there.
        let mut v = vec![7.0f32];
        let pushed = gemm_push(0.5, av, bv, &mut v).to_vec();
        let mut want = vec![0.0; m * n];
        gemm(0.5, av, bv, 0.0, &mut want, n);
        prop_assert_eq!(bits(&pushed), bits(&want));
        prop_assert_eq!(v.len(), 1 + m * n);
    }
}

#[test]
fn gemm_empty_and_k_zero() {
    let a = vec![1.0f32; 6];
    let mut c = vec![2.0f32; 6];
    gemm(1.0, MatRef::new(&[], 2, 0), MatRef::new(&[], 0, 3), 0.5, &mut c, 3);
    assert_eq!(c, vec![1.0; 6]);
    gemm(1.0, MatRef::new(&a, 2, 3), MatRef::new(&a, 3, 0), 0.0, &mut c, 0);
    gemm(1.0, MatRef::new(&[], 0, 3), MatRef::new(&a, 3, 2), 0.0, &mut [], 2);
}

/// Views whose rows overlap (a row stride shorter than a row, or 0: one row repeated) are legal
/// `MatRef`s; tall and wide enough that `A` is packed and the next row tile asked for ahead.
#[test]
fn gemm_on_views_whose_rows_overlap() {
    let (m, k, n) = (40, 400, 200);
    let b = vals(k * n, -1.0, 1.0, 5);
    for rs in [0, 3, 17] {
        let data = vals((m - 1) * rs + k, -1.0, 1.0, 7);
        let a = MatRef::strided(&data, m, k, rs, 1);
        let bv = MatRef::new(&b, k, n);
        let mut c = vec![f32::NAN; m * n];
        gemm(1.0, a, bv, 0.0, &mut c, n);
        let (want, scale) = gemm_f64(1.0, a, bv, 0.0, &c, n);
        for (j, (&got, (&w, &s))) in c.iter().zip(want.iter().zip(&scale)).enumerate() {
            assert!((got as f64 - w).abs() <= 1e-5 * s + 1e-30, "rs {rs}: C[{j}] = {got} vs {w}");
        }
    }
}

#[test]
fn gemm_batched_matches_per_batch_reference() {
    let (batch, m, k, n) = (5, 13, 37, 11);
    let (sa, sb, sc) = (m * k + 3, k * n + 1, m * n + 2);
    let a = vals(batch * sa, -1.0, 1.0, 1);
    let b = vals(batch * sb, -1.0, 1.0, 2);
    let mut c = vals(batch * sc, -1.0, 1.0, 3);
    let old = c.clone();
    // B_i given transposed: stored [n × k] at offset i·sb.
    let bv = MatRef::new(&b, n, k).t();
    let av = MatRef::new(&a, m, k);
    gemm_batched(batch, 0.75, av, sa, bv, sb, 0.5, &mut c, n, sc);
    for i in 0..batch {
        let ai = MatRef::new(&a[i * sa..], m, k);
        let bi = MatRef::new(&b[i * sb..], n, k).t();
        let (want, scale) = gemm_f64(0.75, ai, bi, 0.5, &old[i * sc..], n);
        for j in 0..m * n {
            let got = c[i * sc + j] as f64;
            assert!((got - want[j]).abs() <= 1e-5 * scale[j], "batch {i} elem {j}");
        }
        if i + 1 < batch {
            assert_eq!(c[i * sc + m * n..(i + 1) * sc], old[i * sc + m * n..(i + 1) * sc]);
        }
    }
}

// ---------------------------------------------------------------- thread count

/// Runs every kernel once on fixed inputs large enough to be split; returns all outputs' bits.
fn all_kernels() -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let n = 100_003;
    let a = vals(n, -3.0, 3.0, 21);
    let b = vals(n, -3.0, 3.0, 22);
    let mut o = vec![0.0; n];
    add(&a, &b, &mut o);
    out.push(bits(&o));
    mul(&a, &b, &mut o);
    out.push(bits(&o));
    axpy(0.3, &a, &mut o);
    out.push(bits(&o));
    scale(&mut o, 1.7);
    out.push(bits(&o));
    out.push(vec![sum(&a).to_bits(), dot(&a, &b).to_bits()]);
    gelu_erf(&a, &mut o);
    out.push(bits(&o));
    gelu_erf_backward(&a, &b, &mut o);
    out.push(bits(&o));
    let (rows, c) = (491, 197);
    let (x, dy) = (&a[..rows * c], &b[..rows * c]);
    let mut s = x.to_vec();
    softmax_rows(&mut s, c);
    out.push(bits(&s));
    let mut d = vec![0.0; rows * c];
    softmax_backward_rows(&s, dy, &mut d, c);
    out.push(bits(&d));
    let mut cs = vec![0.0; c];
    sum_rows_into(x, c, &mut cs);
    out.push(bits(&cs));
    let (gamma, beta) = (vals(c, -1.0, 1.0, 23), vals(c, -1.0, 1.0, 24));
    let (mut y, mut m, mut r) = (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
    layernorm_forward(x, &gamma, &beta, 1e-6, &mut y, &mut m, &mut r);
    out.extend([bits(&y), bits(&m), bits(&r)]);
    let (mut dx, mut dg, mut db) = (vec![0.0; rows * c], vec![0.0; c], vec![0.0; c]);
    let (dxs, dgs, dbs) = (Some(&mut dx[..]), Some(&mut dg[..]), Some(&mut db[..]));
    layernorm_backward(x, &gamma, &m, &r, dy, dxs, dgs, dbs);
    out.extend([bits(&dx), bits(&dg), bits(&db)]);
    let (mut m2, mut r2) = (vec![0.0; rows], vec![0.0; rows]);
    out.push(bits(&layernorm_forward_new(x, &gamma, &beta, 1e-6, &mut m2, &mut r2)));
    out.push(bits(&layernorm_backward_new(x, &gamma, &m, &r, dy, Some(&mut dg), None)));
    // GEMM: tall (row split) and short-wide (column split), B transposed, a depth over two
    // blocks; prepacked panels with a bias; every kernel this CPU runs.
    for &(gm, gk, gn) in &[(301, 129, 77), (5, 64, 3001), (1576, 192, 64), (197, 800, 576)] {
        let ga = vals(gm * gk, -1.0, 1.0, 25);
        let gb = vals(gn * gk, -1.0, 1.0, 26);
        let mut gc = vec![0.0; gm * gn];
        let (av, bv) = (MatRef::new(&ga, gm, gk), MatRef::new(&gb, gn, gk).t());
        gemm(1.0, av, bv, 0.0, &mut gc, gn);
        out.push(bits(&gc));
        for isa in Isa::available() {
            gemm_isa(isa, 1.0, av, bv, 0.0, &mut gc, gn);
            out.push(bits(&gc));
            gemm_ext(1.0, av, Rhs::Packed(&PackedB::new(isa, bv)), 0.0, Some(&gb[..gn]), &mut gc, gn);
            out.push(bits(&gc));
        }
        out.push(bits(&gemm_new(1.0, av, Rhs::View(bv), None)));
    }
    let mut bc = vec![0.0; 6 * 1600];
    let (av, bv) = (MatRef::new(&a, 40, 50), MatRef::new(&b, 50, 40));
    gemm_batched(6, 1.0, av, 2000, bv, 2000, 0.0, &mut bc, 40, 1600);
    out.push(bits(&bc));
    out
}

/// All kernels give bit-identical results with 1, 2 and 3 threads and the default, inside a
/// parallel region (spinning workers) and outside it (rayon).
#[test]
fn results_do_not_depend_on_thread_count() {
    let original = par::threads();
    let default = all_kernels();
    for t in [1, 2, 3] {
        par::set_threads(t);
        for (how, got) in [("", all_kernels()), (" in a region", par::region(all_kernels))] {
            for (i, (g, d)) in got.iter().zip(&default).enumerate() {
                assert!(g == d, "output {i} differs with {t} thread(s){how}");
            }
        }
    }
    par::set_threads(original);
}

/// A smoke run of the GEMM report:
/// `cargo test --release --test kernels -- --ignored --nocapture gemm_report`.
#[test]
#[ignore]
fn gemm_report_smoke() {
    let ms = std::env::var("GEMM_BENCH_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let report = consolidator::bench::gemm::run_gemm_bench(ms).unwrap();
    println!("{report}");
    println!("{}", report.to_json());
    let one = consolidator::bench::peak::fma_peak_gflops(1, ms);
    println!("1-thread FMA peak: {one:.1} GFLOP/s");
}

/// Rough speed of the fast kernels against their twins on a ViT-sized activation
/// (`cargo test --release --test kernels -- --ignored --nocapture speed`).
#[test]
#[ignore]
fn kernel_speed_smoke() {
    use std::time::Instant;
    fn best(mut f: impl FnMut()) -> f64 {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }
    let (rows, c) = (1576, 768);
    let x = vals(rows * c, -3.0, 3.0, 1);
    let dy = vals(rows * c, -1.0, 1.0, 2);
    let (g, bt) = (vals(c, 0.5, 1.5, 3), vals(c, -0.5, 0.5, 4));
    let mut o = vec![0.0; rows * c];
    let (mut m, mut r) = (vec![0.0; rows], vec![0.0; rows]);
    let report = |name: &str, fast: f64, slow: f64| {
        println!("{name:<22} fast {:8.3} ms  scalar {:8.3} ms  x{:.1}", fast * 1e3, slow * 1e3, slow / fast);
    };
    let f = best(|| gelu_erf(&x, &mut o));
    let s = best(|| gelu_erf_scalar(&x, &mut o));
    report("gelu_erf", f, s);
    let f = best(|| gelu_erf_backward(&x, &dy, &mut o));
    let s = best(|| gelu_erf_backward_scalar(&x, &dy, &mut o));
    report("gelu_erf_backward", f, s);
    let f = best(|| layernorm_forward(&x, &g, &bt, 1e-6, &mut o, &mut m, &mut r));
    let s = best(|| layernorm_forward_scalar(&x, &g, &bt, 1e-6, &mut o, &mut m, &mut r));
    report("layernorm_forward", f, s);
    let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
    let f = best(|| layernorm_backward(&x, &g, &m, &r, &dy, Some(&mut o), Some(&mut dg), Some(&mut db)));
    let s = best(|| layernorm_backward_scalar(&x, &g, &m, &r, &dy, Some(&mut o), Some(&mut dg), Some(&mut db)));
    report("layernorm_backward", f, s);
    let n = 197;
    let att = vals(8 * 3 * 197 * n, -5.0, 5.0, 5);
    let mut a1 = att.clone();
    let f = best(|| {
        a1.copy_from_slice(&att);
        softmax_rows(&mut a1, n)
    });
    let s = best(|| {
        a1.copy_from_slice(&att);
        softmax_rows_scalar(&mut a1, n)
    });
    report("softmax_rows (+copy)", f, s);
    let f = best(|| add(&x, &dy, &mut o));
    let s = best(|| add_scalar(&x, &dy, &mut o));
    report("add", f, s);
    let f = best(|| {
        std::hint::black_box(dot(&x, &dy));
    });
    let s = best(|| {
        std::hint::black_box(dot_scalar(&x, &dy));
    });
    report("dot", f, s);
    let mut cs = vec![0.0; c];
    let f = best(|| sum_rows_into(&x, c, &mut cs));
    let s = best(|| sum_rows_into_scalar(&x, c, &mut cs));
    report("sum_rows_into", f, s);
}

/// Regression: `erf_f64(0.0)` used to loop forever (its series stop test was `t < 1e-17·sum`,
/// never true when both are 0). Found by the dense `erf` grid.
#[test]
fn erf_f64_at_zero_terminates() {
    assert_eq!(erf_f64(0.0), 0.0);
    assert_eq!(erf_f64(-0.0), 0.0);
    assert_eq!(erf(0.0), 0.0);
}

#[test]
fn parallel_zeros_and_repeated_rows_match_the_serial_ones() {
    for n in [0, 1, 7, (1 << 16) - 1, 1 << 16, (1 << 16) + 13, 1 << 20] {
        let z = consolidator::par::zeros(n);
        assert_eq!(z.len(), n);
        assert!(z.iter().all(|&v| v == 0.0));
    }
    for (o, rows) in [(3, 1), (768, 1), (768, 100), (577, 300), (1, 70_000)] {
        let row: Vec<f32> = (0..o).map(|i| i as f32 * 0.5 - 1.0).collect();
        assert_eq!(consolidator::par::repeat_rows(&row, rows), row.repeat(rows), "{o}×{rows}");
    }
    assert!(consolidator::par::repeat_rows(&[], 5).is_empty());
}
