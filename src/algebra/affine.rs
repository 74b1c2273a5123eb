//! Exact representations of affine maps `x ↦ x·Aᵀ + a` and the laws that collapse them.
//!
//! Row convention, as everywhere in the crate: a sample is a row `x: [I]`, a map's matrix is
//! `[O, I]` row-major (timm's and PyTorch's layout), so the map reads `x·Aᵀ + a`.
//!
//! | representation | stores | example source |
//! |---|---|---|
//! | [`Dense`] | `W`, `b` | a backbone FC layer, a merged result |
//! | [`BlockDiagonal`] | `g`, reorder flag, blocks, bias | one consolidator branch |
//! | [`Sparse`] | a pattern (derived from group specs, or CSR) + values, bias | a stage-1 delta |
//! | [`LowRank`] | `A: [r, I]`, `B: [O, r]`, scale, bias | LoRA |
//! | [`ScaleShift`] | `γ`, `β` | SSF; BitFit (β only) |
//!
//! Values are held in `f64`: every `f32` parameter converts exactly, sums and products of deltas
//! accumulate in `f64`, and a result is rounded to `f32` once, when it is written back into a
//! model ([`Dense::to_f32`]). Storage is counted in `f32` bytes, as the files store it.
//!
//! ```
//! use consolidator::algebra::{Affine, BlockDiagonal};
//! use consolidator::kernels::grouped::GroupSpec;
//! // Two branches on a 4→4 layer: g = 2 and g = 4, no reorder.
//! let a = Affine::BlockDiagonal(BlockDiagonal::new(GroupSpec::new(4, 4, 2, false)?, vec![1.0; 8], vec![0.0; 4])?);
//! let b = Affine::BlockDiagonal(BlockDiagonal::new(GroupSpec::new(4, 4, 4, false)?, vec![2.0; 4], vec![1.0; 4])?);
//! let s = a.add(&b)?;                      // one sparse map on the union support
//! assert_eq!(s.nnz(), 8);                  // g = 4 nests inside g = 2: nothing extra stored
//! let x = [1.0, 2.0, 3.0, 4.0];
//! let (ya, yb, ys) = (a.apply(&x)?, b.apply(&x)?, s.apply(&x)?);
//! for k in 0..4 { assert!((ys[k] - ya[k] - yb[k]).abs() < 1e-12); }
//! # Ok::<(), consolidator::Error>(())
//! ```

use crate::kernels::grouped::GroupSpec;
use crate::{Error, Result};

/// `x ↦ x·Wᵀ + b`, `W: [O, I]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Output width `O`.
    pub out_dim: usize,
    /// Input width `I`.
    pub in_dim: usize,
    /// `W`, `[O, I]` row-major.
    pub weight: Vec<f64>,
    /// `b`, `[O]`.
    pub bias: Vec<f64>,
}

/// One grouped connection `x ↦ x·(BD(G)·Π)ᵀ + β` (`Π` the reorder permutation, if on).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockDiagonal {
    /// Widths, group count and reorder flag.
    pub spec: GroupSpec,
    /// `[g, co, ci]`.
    pub blocks: Vec<f64>,
    /// `β`, `[O]`.
    pub bias: Vec<f64>,
}

/// Where a sparse map's entries are.
#[derive(Clone, Debug, PartialEq)]
pub enum Pattern {
    /// The union of the supports of grouped connections: derived from `(I, O, g's, reorder flags)`,
    /// so it stores no index arrays.
    Grouped(Vec<GroupSpec>),
    /// General compressed sparse rows.
    Csr {
        /// Row `o`'s entries are `row_ptr[o]..row_ptr[o + 1]` (`O + 1` offsets).
        row_ptr: Vec<usize>,
        /// Column of each entry, ascending within a row.
        cols: Vec<usize>,
    },
}

/// `x ↦ x·Sᵀ + b` with `S` zero outside its pattern; `values` in canonical order (row-major over
/// the pattern, columns ascending within a row).
#[derive(Clone, Debug, PartialEq)]
pub struct Sparse {
    /// Output width `O`.
    pub out_dim: usize,
    /// Input width `I`.
    pub in_dim: usize,
    /// Where the entries are.
    pub pattern: Pattern,
    /// The entries, in canonical order.
    pub values: Vec<f64>,
    /// `b`, `[O]`.
    pub bias: Vec<f64>,
}

/// `x ↦ scale·x·(B·A)ᵀ + b`, `A: [r, I]`, `B: [O, r]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    /// Rank `r`.
    pub rank: usize,
    /// Input width `I`.
    pub in_dim: usize,
    /// Output width `O`.
    pub out_dim: usize,
    /// `A`, `[r, I]` row-major.
    pub a: Vec<f64>,
    /// `B`, `[O, r]` row-major.
    pub b: Vec<f64>,
    /// The factor in front of `B·A` (LoRA: `α/r`).
    pub scale: f64,
    /// `b`, `[O]`.
    pub bias: Vec<f64>,
}

/// `x ↦ γ ⊙ x + β` (square).
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleShift {
    /// Per-channel scale `γ`.
    pub gamma: Vec<f64>,
    /// Per-channel shift `β`.
    pub beta: Vec<f64>,
}

/// An affine map in one of its exact representations.
#[derive(Clone, Debug, PartialEq)]
pub enum Affine {
    /// `x·Wᵀ + b`.
    Dense(Dense),
    /// `x·(BD(G)·Π)ᵀ + β`: one grouped connection.
    BlockDiagonal(BlockDiagonal),
    /// `x·Sᵀ + b` on a pattern.
    Sparse(Sparse),
    /// `scale·x·(B·A)ᵀ + b`.
    LowRank(LowRank),
    /// `γ ⊙ x + β`.
    ScaleShift(ScaleShift),
}

/// `f32` values as `f64` (exact): how parameters enter the algebra.
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn check_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::invalid(op, format!("{what} has {got} values, expected {want}")));
    }
    Ok(())
}

impl Dense {
    /// From `f32` parameters (exact conversion).
    pub fn from_f32(out_dim: usize, in_dim: usize, weight: &[f32], bias: &[f32]) -> Result<Self> {
        check_len("Dense", "weight", weight.len(), out_dim * in_dim)?;
        check_len("Dense", "bias", bias.len(), out_dim)?;
        Ok(Dense { out_dim, in_dim, weight: f64s(weight), bias: f64s(bias) })
    }
    /// The zero map.
    pub fn zeros(out_dim: usize, in_dim: usize) -> Self {
        Dense { out_dim, in_dim, weight: vec![0.0; out_dim * in_dim], bias: vec![0.0; out_dim] }
    }
    /// Rounds once to `f32`: `(W, b)`.
    pub fn to_f32(&self) -> (Vec<f32>, Vec<f32>) {
        (self.weight.iter().map(|&v| v as f32).collect(), self.bias.iter().map(|&v| v as f32).collect())
    }
}

impl BlockDiagonal {
    /// A branch from its spec, blocks `[g, co, ci]` and bias `[O]`.
    pub fn new(spec: GroupSpec, blocks: Vec<f64>, bias: Vec<f64>) -> Result<Self> {
        check_len("BlockDiagonal", "blocks", blocks.len(), spec.weight_len())?;
        check_len("BlockDiagonal", "bias", bias.len(), spec.out_dim)?;
        Ok(BlockDiagonal { spec, blocks, bias })
    }
}

impl Pattern {
    /// Sorted columns of row `o` (for `Grouped`, the union of each spec's block columns).
    pub fn row(&self, o: usize) -> Vec<usize> {
        match self {
            Pattern::Grouped(specs) => {
                let mut cols: Vec<usize> = specs
                    .iter()
                    .flat_map(|s| {
                        let (ci, i) = (s.ci(), o / s.co());
                        (i * ci..(i + 1) * ci).map(move |j| s.src(j))
                    })
                    .collect();
                cols.sort_unstable();
                cols.dedup();
                cols
            }
            Pattern::Csr { row_ptr, cols } => cols[row_ptr[o]..row_ptr[o + 1]].to_vec(),
        }
    }
    /// The pattern as CSR arrays.
    pub fn to_csr(&self, out_dim: usize) -> (Vec<usize>, Vec<usize>) {
        match self {
            Pattern::Csr { row_ptr, cols } => (row_ptr.clone(), cols.clone()),
            Pattern::Grouped(_) => {
                let mut row_ptr = vec![0];
                let mut cols = Vec::new();
                for o in 0..out_dim {
                    cols.extend(self.row(o));
                    row_ptr.push(cols.len());
                }
                (row_ptr, cols)
            }
        }
    }
    /// Number of entries over `out_dim` rows.
    pub fn nnz(&self, out_dim: usize) -> usize {
        match self {
            Pattern::Csr { cols, .. } => cols.len(),
            Pattern::Grouped(_) => (0..out_dim).map(|o| self.row(o).len()).sum(),
        }
    }
}

impl Sparse {
    /// The values of `dense` on `pattern`, in canonical order (entries outside are dropped:
    /// callers use this only for matrices supported on the pattern).
    pub fn gather(out_dim: usize, in_dim: usize, pattern: Pattern, dense: &Dense) -> Self {
        let mut values = Vec::new();
        for o in 0..out_dim {
            for c in pattern.row(o) {
                values.push(dense.weight[o * in_dim + c]);
            }
        }
        Sparse { out_dim, in_dim, pattern, values, bias: dense.bias.clone() }
    }
    /// A sparse map from its stored parts; the value count must match the pattern.
    pub fn new(out_dim: usize, in_dim: usize, pattern: Pattern, values: Vec<f64>, bias: Vec<f64>) -> Result<Self> {
        if let Pattern::Grouped(specs) = &pattern {
            if specs.iter().any(|s| s.in_dim != in_dim || s.out_dim != out_dim) {
                return Err(Error::invalid("Sparse", format!("a group spec does not fit {out_dim}x{in_dim}")));
            }
        }
        if let Pattern::Csr { row_ptr, cols } = &pattern {
            let ok = row_ptr.len() == out_dim + 1
                && row_ptr[0] == 0
                && row_ptr.windows(2).all(|w| w[0] <= w[1])
                && row_ptr[out_dim] == cols.len()
                && (0..out_dim).all(|o| cols[row_ptr[o]..row_ptr[o + 1]].windows(2).all(|w| w[0] < w[1]))
                && cols.iter().all(|&c| c < in_dim);
            if !ok {
                return Err(Error::invalid("Sparse", "malformed CSR pattern"));
            }
        }
        check_len("Sparse", "values", values.len(), pattern.nnz(out_dim))?;
        check_len("Sparse", "bias", bias.len(), out_dim)?;
        Ok(Sparse { out_dim, in_dim, pattern, values, bias })
    }
}

impl Affine {
    /// Input width.
    pub fn in_dim(&self) -> usize {
        match self {
            Affine::Dense(d) => d.in_dim,
            Affine::BlockDiagonal(b) => b.spec.in_dim,
            Affine::Sparse(s) => s.in_dim,
            Affine::LowRank(l) => l.in_dim,
            Affine::ScaleShift(s) => s.gamma.len(),
        }
    }
    /// Output width.
    pub fn out_dim(&self) -> usize {
        match self {
            Affine::Dense(d) => d.out_dim,
            Affine::BlockDiagonal(b) => b.spec.out_dim,
            Affine::Sparse(s) => s.out_dim,
            Affine::LowRank(l) => l.out_dim,
            Affine::ScaleShift(s) => s.gamma.len(),
        }
    }
    /// The representation's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Affine::Dense(_) => "dense",
            Affine::BlockDiagonal(_) => "block-diagonal",
            Affine::Sparse(_) => "sparse",
            Affine::LowRank(_) => "low-rank",
            Affine::ScaleShift(_) => "scale-shift",
        }
    }
    /// The bias (`a` in `x·Aᵀ + a`).
    pub fn bias(&self) -> &[f64] {
        match self {
            Affine::Dense(d) => &d.bias,
            Affine::BlockDiagonal(b) => &b.bias,
            Affine::Sparse(s) => &s.bias,
            Affine::LowRank(l) => &l.bias,
            Affine::ScaleShift(s) => &s.beta,
        }
    }

    /// The bias, mutably.
    pub fn bias_mut(&mut self) -> &mut Vec<f64> {
        match self {
            Affine::Dense(d) => &mut d.bias,
            Affine::BlockDiagonal(b) => &mut b.bias,
            Affine::Sparse(s) => &mut s.bias,
            Affine::LowRank(l) => &mut l.bias,
            Affine::ScaleShift(s) => &mut s.beta,
        }
    }

    /// Applies the map to the rows of `x` (`[R, I]` → `[R, O]`).
    pub fn apply(&self, x: &[f64]) -> Result<Vec<f64>> {
        let (i_dim, o_dim) = (self.in_dim(), self.out_dim());
        if i_dim == 0 || !x.len().is_multiple_of(i_dim) {
            return Err(Error::invalid("Affine::apply", format!("{} values are not rows of {i_dim}", x.len())));
        }
        let rows = x.len() / i_dim;
        let mut y = Vec::with_capacity(rows * o_dim);
        for xr in x.chunks_exact(i_dim) {
            let start = y.len();
            y.extend_from_slice(self.bias());
            let yr = &mut y[start..];
            match self {
                Affine::Dense(d) => {
                    for (o, v) in yr.iter_mut().enumerate() {
                        *v += d.weight[o * i_dim..(o + 1) * i_dim].iter().zip(xr).map(|(a, b)| a * b).sum::<f64>();
                    }
                }
                Affine::BlockDiagonal(b) => {
                    let (ci, co) = (b.spec.ci(), b.spec.co());
                    for (o, v) in yr.iter_mut().enumerate() {
                        let i = o / co;
                        *v += (0..ci).map(|s| b.blocks[o * ci + s] * xr[b.spec.src(i * ci + s)]).sum::<f64>();
                    }
                }
                Affine::Sparse(s) => {
                    let (row_ptr, cols) = s.pattern.to_csr(o_dim);
                    for (o, v) in yr.iter_mut().enumerate() {
                        *v += (row_ptr[o]..row_ptr[o + 1]).map(|k| s.values[k] * xr[cols[k]]).sum::<f64>();
                    }
                }
                Affine::LowRank(l) => {
                    let ax: Vec<f64> = (0..l.rank)
                        .map(|q| l.a[q * i_dim..(q + 1) * i_dim].iter().zip(xr).map(|(a, b)| a * b).sum())
                        .collect();
                    for (o, v) in yr.iter_mut().enumerate() {
                        *v += l.scale * (0..l.rank).map(|q| l.b[o * l.rank + q] * ax[q]).sum::<f64>();
                    }
                }
                Affine::ScaleShift(s) => {
                    for ((v, g), x) in yr.iter_mut().zip(&s.gamma).zip(xr) {
                        *v += g * x;
                    }
                }
            }
        }
        Ok(y)
    }

    /// Adds this map's matrix and bias into dense `f64` buffers `w: [O, I]`, `b: [O]`.
    pub fn add_into(&self, w: &mut [f64], b: &mut [f64]) -> Result<()> {
        let (i_dim, o_dim) = (self.in_dim(), self.out_dim());
        check_len("Affine::add_into", "weight", w.len(), o_dim * i_dim)?;
        check_len("Affine::add_into", "bias", b.len(), o_dim)?;
        for (d, v) in b.iter_mut().zip(self.bias()) {
            *d += v;
        }
        match self {
            Affine::Dense(d) => w.iter_mut().zip(&d.weight).for_each(|(a, v)| *a += v),
            Affine::BlockDiagonal(bd) => {
                let (ci, co) = (bd.spec.ci(), bd.spec.co());
                for o in 0..o_dim {
                    let i = o / co;
                    for s in 0..ci {
                        w[o * i_dim + bd.spec.src(i * ci + s)] += bd.blocks[o * ci + s];
                    }
                }
            }
            Affine::Sparse(s) => {
                let (row_ptr, cols) = s.pattern.to_csr(o_dim);
                for o in 0..o_dim {
                    for k in row_ptr[o]..row_ptr[o + 1] {
                        w[o * i_dim + cols[k]] += s.values[k];
                    }
                }
            }
            Affine::LowRank(l) => {
                for o in 0..o_dim {
                    for c in 0..i_dim {
                        w[o * i_dim + c] +=
                            l.scale * (0..l.rank).map(|q| l.b[o * l.rank + q] * l.a[q * i_dim + c]).sum::<f64>();
                    }
                }
            }
            Affine::ScaleShift(s) => {
                for (o, g) in s.gamma.iter().enumerate() {
                    w[o * i_dim + o] += g;
                }
            }
        }
        Ok(())
    }

    /// The same map as a [`Dense`].
    pub fn to_dense(&self) -> Dense {
        let mut d = Dense::zeros(self.out_dim(), self.in_dim());
        self.add_into(&mut d.weight, &mut d.bias).expect("to_dense: sizes agree by construction");
        d
    }

    /// Stored weight values (excluding the bias).
    pub fn nnz(&self) -> usize {
        match self {
            Affine::Dense(d) => d.weight.len(),
            Affine::BlockDiagonal(b) => b.blocks.len(),
            Affine::Sparse(s) => s.values.len(),
            Affine::LowRank(l) => l.a.len() + l.b.len() + 1,
            Affine::ScaleShift(s) => s.gamma.len(),
        }
    }

    /// Bytes needed to store the map as `f32` values (+ `u32` indices for a CSR pattern).
    pub fn storage_bytes(&self) -> usize {
        let index = match self {
            Affine::Sparse(Sparse { pattern: Pattern::Csr { row_ptr, cols }, .. }) => row_ptr.len() + cols.len(),
            _ => 0,
        };
        4 * (self.nnz() + self.bias().len() + index)
    }

    /// The sparsity pattern of the matrix part when it is block-structured.
    fn grouped_specs(&self) -> Option<Vec<GroupSpec>> {
        match self {
            Affine::BlockDiagonal(b) => Some(vec![b.spec]),
            Affine::Sparse(Sparse { pattern: Pattern::Grouped(s), .. }) => Some(s.clone()),
            // A diagonal is the block-diagonal pattern with g = D.
            Affine::ScaleShift(s) => Some(vec![GroupSpec {
                in_dim: s.gamma.len(),
                out_dim: s.gamma.len(),
                groups: s.gamma.len(),
                reorder: false,
            }]),
            _ => None,
        }
    }

    /// `self + other` (sum of maps: matrices and biases add), in the most compact exact form:
    /// equal block structures stay block-diagonal; block structures union into one sparse map;
    /// low-rank pairs concatenate while that is smaller than dense; everything else is dense.
    pub fn add(&self, other: &Affine) -> Result<Affine> {
        if self.in_dim() != other.in_dim() || self.out_dim() != other.out_dim() {
            return Err(Error::shape(
                "Affine::add",
                &[self.out_dim(), self.in_dim()],
                &[other.out_dim(), other.in_dim()],
            ));
        }
        let (o_dim, i_dim) = (self.out_dim(), self.in_dim());
        let bias: Vec<f64> = self.bias().iter().zip(other.bias()).map(|(a, b)| a + b).collect();
        match (self, other) {
            (Affine::BlockDiagonal(a), Affine::BlockDiagonal(b)) if a.spec == b.spec => {
                let blocks = a.blocks.iter().zip(&b.blocks).map(|(x, y)| x + y).collect();
                return Ok(Affine::BlockDiagonal(BlockDiagonal { spec: a.spec, blocks, bias }));
            }
            (Affine::ScaleShift(a), Affine::ScaleShift(b)) => {
                let gamma = a.gamma.iter().zip(&b.gamma).map(|(x, y)| x + y).collect();
                return Ok(Affine::ScaleShift(ScaleShift { gamma, beta: bias }));
            }
            (Affine::LowRank(a), Affine::LowRank(b)) if (a.rank + b.rank) * (i_dim + o_dim) < i_dim * o_dim => {
                let rank = a.rank + b.rank;
                let mut av = a.a.clone();
                av.extend_from_slice(&b.a);
                let mut bv = Vec::with_capacity(o_dim * rank);
                for o in 0..o_dim {
                    bv.extend(a.b[o * a.rank..(o + 1) * a.rank].iter().map(|v| v * a.scale));
                    bv.extend(b.b[o * b.rank..(o + 1) * b.rank].iter().map(|v| v * b.scale));
                }
                return Ok(Affine::LowRank(LowRank {
                    rank,
                    in_dim: i_dim,
                    out_dim: o_dim,
                    a: av,
                    b: bv,
                    scale: 1.0,
                    bias,
                }));
            }
            _ => {}
        }
        let mut dense = Dense::zeros(o_dim, i_dim);
        let mut scratch = vec![0.0; o_dim];
        self.add_into(&mut dense.weight, &mut scratch)?;
        other.add_into(&mut dense.weight, &mut scratch)?;
        dense.bias = bias;
        if let (Some(mut sa), Some(sb)) = (self.grouped_specs(), other.grouped_specs()) {
            for s in sb {
                if !sa.contains(&s) {
                    sa.push(s);
                }
            }
            return Ok(Affine::Sparse(Sparse::gather(o_dim, i_dim, Pattern::Grouped(sa), &dense)));
        }
        if let (Affine::Sparse(_), Affine::Sparse(_)) = (self, other) {
            // General patterns: the union as CSR.
            let mut row_ptr = vec![0];
            let mut cols = Vec::new();
            for o in 0..o_dim {
                let mut r = self.pattern_row(o);
                r.extend(other.pattern_row(o));
                r.sort_unstable();
                r.dedup();
                cols.extend(r);
                row_ptr.push(cols.len());
            }
            return Ok(Affine::Sparse(Sparse::gather(o_dim, i_dim, Pattern::Csr { row_ptr, cols }, &dense)));
        }
        Ok(Affine::Dense(dense))
    }

    fn pattern_row(&self, o: usize) -> Vec<usize> {
        match self {
            Affine::Sparse(s) => s.pattern.row(o),
            _ => (0..self.in_dim()).collect(),
        }
    }

    /// `self ∘ inner` (`x ↦ self(inner(x))`), in the most compact exact form: a scale-shift on
    /// either side keeps the other's structure (rows or columns scaled); anything else is dense.
    pub fn compose(&self, inner: &Affine) -> Result<Affine> {
        if self.in_dim() != inner.out_dim() {
            return Err(Error::shape("Affine::compose", &[self.in_dim()], &[inner.out_dim()]));
        }
        // The outer map applied to the inner bias gives the composed bias.
        let bias = self.apply(inner.bias())?;
        if let Affine::ScaleShift(s) = self {
            // diag(γ)·M: scale row o by γ[o].
            let row = |o: usize| s.gamma[o];
            return Ok(match inner {
                Affine::ScaleShift(t) => Affine::ScaleShift(ScaleShift {
                    gamma: t.gamma.iter().zip(&s.gamma).map(|(a, b)| a * b).collect(),
                    beta: bias,
                }),
                Affine::BlockDiagonal(b) => {
                    let ci = b.spec.ci();
                    let blocks = b.blocks.iter().enumerate().map(|(k, v)| v * row(k / ci)).collect();
                    Affine::BlockDiagonal(BlockDiagonal { spec: b.spec, blocks, bias })
                }
                Affine::Sparse(sp) => {
                    let (row_ptr, _) = sp.pattern.to_csr(sp.out_dim);
                    let mut values = sp.values.clone();
                    for o in 0..sp.out_dim {
                        values[row_ptr[o]..row_ptr[o + 1]].iter_mut().for_each(|v| *v *= row(o));
                    }
                    Affine::Sparse(Sparse { values, bias, ..sp.clone() })
                }
                Affine::LowRank(l) => {
                    let b = l.b.iter().enumerate().map(|(k, v)| v * row(k / l.rank)).collect();
                    Affine::LowRank(LowRank { b, bias, ..l.clone() })
                }
                Affine::Dense(d) => {
                    let weight = d.weight.iter().enumerate().map(|(k, v)| v * row(k / d.in_dim)).collect();
                    Affine::Dense(Dense { weight, bias, ..d.clone() })
                }
            });
        }
        if let Affine::ScaleShift(t) = inner {
            // M·diag(γ): scale column c by γ[c].
            let col = |c: usize| t.gamma[c];
            return Ok(match self {
                Affine::BlockDiagonal(b) => {
                    let (ci, co) = (b.spec.ci(), b.spec.co());
                    let blocks = b
                        .blocks
                        .iter()
                        .enumerate()
                        .map(|(k, v)| v * col(b.spec.src((k / (ci * co)) * ci + k % ci)))
                        .collect();
                    Affine::BlockDiagonal(BlockDiagonal { spec: b.spec, blocks, bias })
                }
                Affine::Sparse(sp) => {
                    let (_, cols) = sp.pattern.to_csr(sp.out_dim);
                    let values = sp.values.iter().zip(&cols).map(|(v, &c)| v * col(c)).collect();
                    Affine::Sparse(Sparse { values, bias, ..sp.clone() })
                }
                Affine::LowRank(l) => {
                    let a = l.a.iter().enumerate().map(|(k, v)| v * col(k % l.in_dim)).collect();
                    Affine::LowRank(LowRank { a, bias, ..l.clone() })
                }
                Affine::Dense(d) => {
                    let weight = d.weight.iter().enumerate().map(|(k, v)| v * col(k % d.in_dim)).collect();
                    Affine::Dense(Dense { weight, bias, ..d.clone() })
                }
                Affine::ScaleShift(_) => unreachable!("handled above"),
            });
        }
        // General case: dense product.
        let (a, b) = (self.to_dense(), inner.to_dense());
        let (o_dim, k_dim, i_dim) = (a.out_dim, a.in_dim, b.in_dim);
        let mut weight = vec![0.0; o_dim * i_dim];
        for o in 0..o_dim {
            for k in 0..k_dim {
                let av = a.weight[o * k_dim + k];
                if av != 0.0 {
                    for c in 0..i_dim {
                        weight[o * i_dim + c] += av * b.weight[k * i_dim + c];
                    }
                }
            }
        }
        Ok(Affine::Dense(Dense { out_dim: o_dim, in_dim: i_dim, weight, bias }))
    }
}

/// A block-diagonal branch from `f32` parameters.
pub fn branch_from_f32(spec: GroupSpec, blocks: &[f32], bias: Option<&[f32]>) -> Result<Affine> {
    let bias = bias.map(f64s).unwrap_or_else(|| vec![0.0; spec.out_dim]);
    Ok(Affine::BlockDiagonal(BlockDiagonal::new(spec, f64s(blocks), bias)?))
}
