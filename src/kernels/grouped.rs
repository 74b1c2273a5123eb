//! Grouped connection kernels: the consolidator's branches, `y += α·(BD(G)·P·x + β)`.
//!
//! A branch maps `I` inputs to `O` outputs with `g` groups (`g` divides both; `ci = I/g`,
//! `co = O/g`). Its weight `G: [g, co, ci]` is, as a matrix, the block-diagonal `BD(G)`. The
//! optional reorder `P` is the ShuffleNet interleave with the branch's own `g`:
//! `x̃[b·g + a] = x[a·ci + b]`, so reordered column `j` reads input column
//! `src(j) = (j mod g)·ci + j / g` ([`GroupSpec::src`]).
//!
//! The reorder is never materialised. Reordered column `j`'s source advances by `ci` as long as
//! `j / g` stays constant, so the inputs of a group form *runs* of constant stride
//! ([`GroupSpec::runs`]): one run per group without reorder (stride 1) or when `ci` divides `g`
//! (stride `ci`). The kernels address those runs in place (GEMM views with strides). Two regimes:
//! - large blocks (`ci·co ≥ 256`): one strided GEMM per group and run (for the forward with several
//!   runs per group, each row tile is gathered once, as a GEMM packs its operands);
//! - small blocks (the paper's `g = 384`: 2×2 … 8×2 blocks): a row-parallel loop that reads each
//!   input row once and writes each output row once: memory-bound, as it should be.
//!
//! Every kernel has a `*_scalar` twin (plain loops over `src`) used as the test oracle.
//!
//! ```
//! use consolidator::kernels::grouped::{grouped_forward, grouped_forward_scalar, GroupSpec};
//! // An 8→8 branch with g = 2 and the reorder: group 0 reads inputs 0, 4, 1, 5.
//! let spec = GroupSpec::new(8, 8, 2, true)?;
//! assert_eq!((0..8).map(|j| spec.src(j)).collect::<Vec<_>>(), [0, 4, 1, 5, 2, 6, 3, 7]);
//! assert_eq!(spec.weight_shape(), [2, 4, 4]);
//! let x: Vec<f32> = (0..16).map(|v| v as f32).collect(); // 2 rows of 8 inputs
//! let w: Vec<f32> = (0..spec.weight_len()).map(|v| (v % 5) as f32 - 2.0).collect();
//! let (mut y, mut y_ref) = (vec![0.0; 16], vec![0.0; 16]);
//! grouped_forward(&spec, 1.0, &x, &w, None, &mut y)?; // the fast kernel …
//! grouped_forward_scalar(&spec, 1.0, &x, &w, None, &mut y_ref)?; // … and its slow twin
//! assert!(y.iter().zip(&y_ref).all(|(a, b)| (a - b).abs() < 1e-4));
//! # Ok::<(), consolidator::Error>(())
//! ```

use crate::kernels::gemm::{gemm, MatRef};
use crate::par;
use crate::{Error, Result};

/// Shape of one grouped connection: `in_dim → out_dim` with `groups` groups, optional reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupSpec {
    /// Input width `I`.
    pub in_dim: usize,
    /// Output width `O`.
    pub out_dim: usize,
    /// Group count `g` (divides `I` and `O`).
    pub groups: usize,
    /// Whether the input is reordered first (the ShuffleNet interleave).
    pub reorder: bool,
}

/// A run of reordered columns `j0..j0+len` of one group, reading inputs `start + t·stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Offset of the run inside its group (`j0 − i·ci`).
    pub offset: usize,
    /// Number of columns in the run.
    pub len: usize,
    /// First input column read.
    pub start: usize,
    /// Input column stride.
    pub stride: usize,
}

impl GroupSpec {
    /// A validated spec: `groups ≥ 1` must divide both widths.
    pub fn new(in_dim: usize, out_dim: usize, groups: usize, reorder: bool) -> Result<Self> {
        if groups == 0 || in_dim == 0 || out_dim == 0 || in_dim % groups != 0 || out_dim % groups != 0 {
            return Err(Error::invalid(
                "grouped connection",
                format!("group count {groups} must be ≥ 1 and divide both the input width {in_dim} and the output width {out_dim}"),
            ));
        }
        Ok(GroupSpec { in_dim, out_dim, groups, reorder })
    }
    /// Inputs per group.
    pub fn ci(&self) -> usize {
        self.in_dim / self.groups
    }
    /// Outputs per group.
    pub fn co(&self) -> usize {
        self.out_dim / self.groups
    }
    /// Number of weights, `I·O/g`.
    pub fn weight_len(&self) -> usize {
        self.groups * self.ci() * self.co()
    }
    /// The weight's shape `[g, co, ci]`.
    pub fn weight_shape(&self) -> [usize; 3] {
        [self.groups, self.co(), self.ci()]
    }
    /// The input column that feeds reordered column `j`.
    #[inline]
    pub fn src(&self, j: usize) -> usize {
        if self.reorder {
            (j % self.groups) * self.ci() + j / self.groups
        } else {
            j
        }
    }
    /// The reordered position of input column `c` (the inverse of [`GroupSpec::src`]).
    #[inline]
    pub fn pos(&self, c: usize) -> usize {
        if self.reorder {
            (c % self.ci()) * self.groups + c / self.ci()
        } else {
            c
        }
    }
    /// The runs of group `i` (see the module docs).
    pub fn runs(&self, i: usize) -> Vec<Run> {
        let ci = self.ci();
        if !self.reorder {
            return vec![Run { offset: 0, len: ci, start: i * ci, stride: 1 }];
        }
        let mut runs = Vec::new();
        let (mut j, end) = (i * ci, (i + 1) * ci);
        while j < end {
            let next = ((j / self.groups + 1) * self.groups).min(end);
            runs.push(Run { offset: j - i * ci, len: next - j, start: self.src(j), stride: ci });
            j = next;
        }
        runs
    }
    fn small_blocks(&self) -> bool {
        self.ci() * self.co() < 256
    }
}

fn check(spec: &GroupSpec, x_len: usize, w_len: usize, y_len: usize, op: &'static str) -> Result<usize> {
    let rows = x_len / spec.in_dim;
    if x_len != rows * spec.in_dim || y_len != rows * spec.out_dim {
        return Err(Error::invalid(
            op,
            format!("x has {x_len} values and y {y_len}: not rows of {} and {}", spec.in_dim, spec.out_dim),
        ));
    }
    if w_len != spec.weight_len() {
        return Err(Error::shape(op, &spec.weight_shape(), &[w_len]));
    }
    Ok(rows)
}

/// Rows per parallel task for the small-block loops.
const ROW_TILE: usize = 64;

/// Forward: `y[r] += α·(BD(G)·P·x[r] + β)` for every row `r` of `x: [R, I]`, `y: [R, O]`.
pub fn grouped_forward(
    spec: &GroupSpec,
    alpha: f32,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let rows = check(spec, x.len(), w.len(), y.len(), "grouped_forward")?;
    let (i_dim, o_dim, ci, co, g) = (spec.in_dim, spec.out_dim, spec.ci(), spec.co(), spec.groups);
    if rows == 0 {
        return Ok(());
    }
    if spec.small_blocks() {
        let src: Vec<usize> = (0..i_dim).map(|j| spec.src(j)).collect();
        par::for_each_chunk_mut(y, ROW_TILE * o_dim, |t, yc| {
            let mut xt = vec![0.0f32; ci];
            for (rr, yr) in yc.chunks_exact_mut(o_dim).enumerate() {
                let xr = &x[(t * ROW_TILE + rr) * i_dim..][..i_dim];
                for i in 0..g {
                    for (s, v) in xt.iter_mut().enumerate() {
                        *v = xr[src[i * ci + s]];
                    }
                    let wi = &w[i * co * ci..][..co * ci];
                    for (o, yv) in yr[i * co..(i + 1) * co].iter_mut().enumerate() {
                        let wo = &wi[o * ci..][..ci];
                        let mut acc = 0.0f32;
                        for s in 0..ci {
                            acc += wo[s] * xt[s];
                        }
                        *yv += alpha * (acc + bias.map_or(0.0, |b| b[i * co + o]));
                    }
                }
            }
        });
        return Ok(());
    }
    if let Some(b) = bias {
        for yr in y.chunks_exact_mut(o_dim) {
            for (v, bv) in yr.iter_mut().zip(b) {
                *v += alpha * bv;
            }
        }
    }
    for i in 0..g {
        let runs = spec.runs(i);
        let wi = &w[i * co * ci..][..co * ci];
        let yi = &mut y[i * co..];
        if runs.len() == 1 {
            let r = runs[0];
            let xv = MatRef::strided(&x[r.start..], rows, ci, i_dim, r.stride);
            gemm(alpha, xv, MatRef::new(wi, co, ci).t(), 1.0, yi, o_dim);
        } else {
            // Several runs: gather the group's inputs tile by tile (the GEMM's own packing step).
            let tile = 256.min(rows);
            let mut xt = vec![0.0f32; tile * ci];
            for r0 in (0..rows).step_by(tile) {
                let nr = tile.min(rows - r0);
                for rr in 0..nr {
                    let xr = &x[(r0 + rr) * i_dim..][..i_dim];
                    for s in 0..ci {
                        xt[rr * ci + s] = xr[spec.src(i * ci + s)];
                    }
                }
                gemm(
                    alpha,
                    MatRef::new(&xt[..nr * ci], nr, ci),
                    MatRef::new(wi, co, ci).t(),
                    1.0,
                    &mut yi[r0 * o_dim..],
                    o_dim,
                );
            }
        }
    }
    Ok(())
}

/// Input gradient: `dx[r] += α·(BD(G)·P)ᵀ·dy[r]`.
pub fn grouped_backward_input(spec: &GroupSpec, alpha: f32, dy: &[f32], w: &[f32], dx: &mut [f32]) -> Result<()> {
    let rows = check(spec, dx.len(), w.len(), dy.len(), "grouped_backward_input")?;
    let (i_dim, o_dim, ci, co, g) = (spec.in_dim, spec.out_dim, spec.ci(), spec.co(), spec.groups);
    if rows == 0 {
        return Ok(());
    }
    if spec.small_blocks() {
        let src: Vec<usize> = (0..i_dim).map(|j| spec.src(j)).collect();
        par::for_each_chunk_mut(dx, ROW_TILE * i_dim, |t, dxc| {
            for (rr, dxr) in dxc.chunks_exact_mut(i_dim).enumerate() {
                let dyr = &dy[(t * ROW_TILE + rr) * o_dim..][..o_dim];
                for i in 0..g {
                    let wi = &w[i * co * ci..][..co * ci];
                    for s in 0..ci {
                        let mut acc = 0.0f32;
                        for o in 0..co {
                            acc += wi[o * ci + s] * dyr[i * co + o];
                        }
                        dxr[src[i * ci + s]] += alpha * acc;
                    }
                }
            }
        });
        return Ok(());
    }
    // Each run of group i writes its own input columns: dx[:, run] += α·dY_i·G_i[:, run].
    for i in 0..g {
        let wi = &w[i * co * ci..][..co * ci];
        let dyi = MatRef::strided(&dy[i * co..], rows, co, o_dim, 1);
        for r in spec.runs(i) {
            let gv = MatRef::strided(&wi[r.offset..], co, r.len, ci, 1);
            gemm_strided_c(alpha, dyi, gv, &mut dx[r.start..], i_dim, r.stride);
        }
    }
    Ok(())
}

/// Weight and bias gradients: `dG += α·Σ_r (dy_i[r] ⊗ x̃_i[r])`, `dβ += α·Σ_r dy[r]`.
pub fn grouped_backward_weight(
    spec: &GroupSpec,
    alpha: f32,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    let rows = check(spec, x.len(), dw.len(), dy.len(), "grouped_backward_weight")?;
    let (i_dim, o_dim, ci, co, g) = (spec.in_dim, spec.out_dim, spec.ci(), spec.co(), spec.groups);
    if let Some(db) = dbias {
        for dyr in dy.chunks_exact(o_dim) {
            for (d, v) in db.iter_mut().zip(dyr) {
                *d += alpha * v;
            }
        }
    }
    if rows == 0 {
        return Ok(());
    }
    if spec.small_blocks() {
        // Parallel over groups: each task owns its groups' weights and reads all rows.
        let src: Vec<usize> = (0..i_dim).map(|j| spec.src(j)).collect();
        let per = par::row_chunk(g, 1);
        par::for_each_chunk_mut(dw, per * co * ci, |t, dwc| {
            let g0 = t * per;
            let ng = dwc.len() / (co * ci);
            for r in 0..rows {
                let xr = &x[r * i_dim..][..i_dim];
                let dyr = &dy[r * o_dim..][..o_dim];
                for gi in 0..ng {
                    let i = g0 + gi;
                    let dwi = &mut dwc[gi * co * ci..][..co * ci];
                    for o in 0..co {
                        let d = alpha * dyr[i * co + o];
                        for s in 0..ci {
                            dwi[o * ci + s] += d * xr[src[i * ci + s]];
                        }
                    }
                }
            }
        });
        return Ok(());
    }
    // dG_i[:, run] += α·dY_iᵀ·X[:, run]: disjoint outputs per run.
    for i in 0..g {
        let dyi = MatRef::strided(&dy[i * co..], rows, co, o_dim, 1).t();
        let dwi = &mut dw[i * co * ci..][..co * ci];
        for r in spec.runs(i) {
            let xv = MatRef::strided(&x[r.start..], rows, r.len, i_dim, r.stride);
            gemm(alpha, dyi, xv, 1.0, &mut dwi[r.offset..], ci);
        }
    }
    Ok(())
}

/// `C += α·A·B` where `C`'s columns are `csc` apart (matrixmultiply takes any strides);
/// rows split across threads.
fn gemm_strided_c(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32], rsc: usize, csc: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    let last = (m - 1) * rsc + (n - 1) * csc;
    assert!(last < c.len(), "gemm_strided_c: C too short");
    for (v, what) in [(&a, "A"), (&b, "B")] {
        assert!(
            (v.rows - 1) * v.rs + (v.cols - 1) * v.cs < v.data.len() || v.rows * v.cols == 0,
            "gemm_strided_c: {what}"
        );
    }
    let tile = par::row_chunk(m, 32);
    let c = &mut c[..=last];
    // Row tiles of C are contiguous slices of length tile·rsc (the last one shorter).
    par::for_each_chunk_mut(c, tile * rsc, |t, cc| {
        let r0 = t * tile;
        let nr = tile.min(m - r0);
        let a_ptr = a.data[r0 * a.rs..].as_ptr();
        // SAFETY: rows r0..r0+nr of A and C lie inside their slices (asserted above); B is whole.
        unsafe {
            matrixmultiply::sgemm(
                nr,
                k,
                n,
                alpha,
                a_ptr,
                a.rs as isize,
                a.cs as isize,
                b.data.as_ptr(),
                b.rs as isize,
                b.cs as isize,
                1.0,
                cc.as_mut_ptr(),
                rsc as isize,
                csc as isize,
            );
        }
    });
}

/// Scalar twin of [`grouped_forward`].
pub fn grouped_forward_scalar(
    spec: &GroupSpec,
    alpha: f32,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let rows = check(spec, x.len(), w.len(), y.len(), "grouped_forward")?;
    let (i_dim, o_dim, ci, co) = (spec.in_dim, spec.out_dim, spec.ci(), spec.co());
    for r in 0..rows {
        for o in 0..o_dim {
            let i = o / co;
            let mut acc = bias.map_or(0.0, |b| b[o] as f64);
            for s in 0..ci {
                acc += w[(i * co + o % co) * ci + s] as f64 * x[r * i_dim + spec.src(i * ci + s)] as f64;
            }
            y[r * o_dim + o] += alpha * acc as f32;
        }
    }
    Ok(())
}

/// Scalar twin of [`grouped_backward_input`].
pub fn grouped_backward_input_scalar(
    spec: &GroupSpec,
    alpha: f32,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let rows = check(spec, dx.len(), w.len(), dy.len(), "grouped_backward_input")?;
    let (i_dim, o_dim, ci, co) = (spec.in_dim, spec.out_dim, spec.ci(), spec.co());
    for r in 0..rows {
        for j in 0..i_dim {
            let i = j / ci;
            let s = j % ci;
            let mut acc = 0.0f64;
            for o in 0..co {
                acc += w[(i * co + o) * ci + s] as f64 * dy[r * o_dim + i * co + o] as f64;
            }
            dx[r * i_dim + spec.src(j)] += alpha * acc as f32;
        }
    }
    Ok(())
}

/// Scalar twin of [`grouped_backward_weight`].
pub fn grouped_backward_weight_scalar(
    spec: &GroupSpec,
    alpha: f32,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    let rows = check(spec, x.len(), dw.len(), dy.len(), "grouped_backward_weight")?;
    let (i_dim, o_dim, ci, co) = (spec.in_dim, spec.out_dim, spec.ci(), spec.co());
    for (idx, d) in dw.iter_mut().enumerate() {
        let (i, o, s) = (idx / (co * ci), (idx / ci) % co, idx % ci);
        let acc: f64 =
            (0..rows).map(|r| dy[r * o_dim + i * co + o] as f64 * x[r * i_dim + spec.src(i * ci + s)] as f64).sum();
        *d += alpha * acc as f32;
    }
    if let Some(db) = dbias {
        for (o, d) in db.iter_mut().enumerate() {
            *d += alpha * (0..rows).map(|r| dy[r * o_dim + o] as f64).sum::<f64>() as f32;
        }
    }
    Ok(())
}
