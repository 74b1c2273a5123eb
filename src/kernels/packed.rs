//! Our GEMM: register-tiled micro-kernels over packed panels of `B`, chosen at run time.
//!
//! `C = α·A·B + β·C (+ a bias row)` is computed one `MR × NR` tile at a time: the tile's
//! accumulators live in registers while the depth index `p` runs over a block of `KC` values,
//! each step broadcasting `MR` values of `A` and loading `NR` values of `B`:
//!
//! | kernel | tile `MR × NR` | registers | chosen when |
//! |---|---|---|---|
//! | AVX-512 | 12 × 32 | 24 accumulators (16 lanes), 2 `B` vectors, 1 broadcast | the CPU has AVX-512F |
//! | AVX2 + FMA | 6 × 16 | 12 accumulators (8 lanes), 2 `B` vectors, 1 broadcast | AVX2 and FMA |
//!
//! Without either, `gemm` uses `matrixmultiply` (the portable fallback). Each kernel has a
//! scalar twin ([`Isa::Scalar512`], [`Isa::Scalar256`]): the same tiles, packing and order of
//! operations with `f32::mul_add`, so a SIMD kernel and its twin agree bit for bit (the tests
//! check this).
//!
//! **Packing.** `B` is copied into panels of `NR` columns, `KC` rows deep, zero-padded past
//! column `N`, so the kernel reads it with aligned, contiguous vector loads ([`PackedB`]); a
//! frozen weight's panels can be packed once and kept ([`PackedB`] is what `Tensor` caches).
//! Narrow blocks of a `B` with contiguous rows (one or two column tiles, as a 16-wide attention
//! head or a 24-wide group of the consolidator's weight gradient) are read in place instead,
//! with masked loads, on the AVX-512 kernel: there packing costs more than it saves.
//! `A` is read in place when its rows are contiguous and few column tiles reuse them (a
//! row-major activation), or when its columns are contiguous (a transposed one; AVX-512): the
//! kernel broadcasts `A[r][p]` straight from memory. Rows that four or more column tiles reuse,
//! partial row tiles and other strides are packed into a zero-padded `KC × MR` panel; with `B`
//! packed too, the kernels then run four depth steps per turn of their loop.
//!
//! **Blocking.** For each depth block of `KC` (the first block writes `α·acc + β·C + bias`,
//! later ones add `α·acc`), for each block of columns (its panels stay in L2: `BLOCK_VALUES`),
//! for each row tile (its `A` stays in L1), for each column tile: one kernel call. Every output
//! value is therefore accumulated in the same order (its depth blocks in turn, `p` increasing
//! within each) wherever its tile sits and whichever worker computes it: the results do not
//! depend on how the output is split among workers or among blocks of columns.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Depth of a block: a 12-row tile of `A` (12·384·4 B = 18 KiB) stays in L1 while the column
/// tiles pass.
pub(crate) const KC: usize = 384;
/// Values of `B` packed at a time, at most: a block of `kc` rows takes as many whole column
/// tiles as fit (576 at full depth, 1,152 at 192), and wider products take blocks of near-equal
/// width. Its 864 KiB stay in a core's 2 MB L2 beside the row tiles of `A` and the output.
const BLOCK_VALUES: usize = KC * 576;

/// A micro-kernel: the SIMD kernels and their scalar twins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// 12 × 32 tiles, AVX-512F.
    Avx512,
    /// 6 × 16 tiles, AVX2 + FMA.
    Avx2,
    /// The scalar twin of [`Isa::Avx512`]: 12 × 32 tiles, `f32::mul_add`.
    Scalar512,
    /// The scalar twin of [`Isa::Avx2`]: 6 × 16 tiles, `f32::mul_add`.
    Scalar256,
}

impl Isa {
    /// The best SIMD kernel this CPU runs, if any (detected once).
    pub fn detect() -> Option<Isa> {
        use std::sync::OnceLock;
        static ISA: OnceLock<Option<Isa>> = OnceLock::new();
        *ISA.get_or_init(|| {
            if std::env::var("CONSOLIDATOR_GEMM").is_ok_and(|v| v == "matrixmultiply") {
                return None;
            }
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = std::env::var("CONSOLIDATOR_GEMM").is_ok_and(|v| v == "avx2");
                let has_avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                if has_avx2 && is_x86_feature_detected!("avx512f") && !avx2 {
                    return Some(Isa::Avx512);
                }
                if has_avx2 {
                    return Some(Isa::Avx2);
                }
            }
            None
        })
    }
    /// Every kernel this CPU can run: the SIMD ones it supports and both scalar twins.
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar512, Isa::Scalar256];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2);
            if is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }
    /// `(MR, NR)`.
    pub fn tile(self) -> (usize, usize) {
        match self {
            Isa::Avx512 | Isa::Scalar512 => (12, 32),
            Isa::Avx2 | Isa::Scalar256 => (6, 16),
        }
    }
}

/// Whether `isa` is a SIMD kernel (not a scalar twin): then the CPU has AVX2 and FMA (see
/// [`Isa::available`]), which the packers' SIMD paths use.
fn is_simd(isa: Isa) -> bool {
    matches!(isa, Isa::Avx512 | Isa::Avx2)
}

/// How a kernel reads `A` (see [`Tile`]): rows in place, columns in place, a packed panel.
const A_ROWS: u8 = 0;
const A_COLS: u8 = 1;
const A_PACKED: u8 = 2;

/// One kernel call: `rows × cols` of C (at most `MR × NR`) from `k` depth steps.
struct Tile {
    k: usize,
    /// `A[r][p]` is `a[r·lda + p]` ([`A_ROWS`]: contiguous rows read in place), else
    /// `a[r + p·lda]` ([`A_COLS`]: contiguous columns read in place; [`A_PACKED`]: a packed
    /// panel, `lda = MR`).
    a: *const f32,
    lda: usize,
    a_layout: u8,
    /// `B[p][j]` is `b[p·ldb + j]`: packed panels (`ldb = NR`, zero-padded), or `B`'s own rows
    /// read in place (`ldb` its row stride; only the first `cols` values of a row are read).
    b: *const f32,
    ldb: usize,
    b_in_place: bool,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    alpha: f32,
    /// Applied to the old `C` (not read when 0).
    beta: f32,
    /// `cols` values added to every row, or null.
    bias: *const f32,
    /// Lines to ask into L2 while the tile runs (the AVX-512 kernel, packed `A`; [`NextA`]).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    next_a: NextA,
}

/// A share of the next row tile's rows of `A`, asked into L2 one line every [`NEXT_A_EVERY`]
/// depth steps of a kernel call, so that packing that tile finds them there instead of in L3:
/// `lines` lines in all, `row_lines` per row, from `at` on, rows `ld` values apart.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct NextA {
    at: *const f32,
    ld: usize,
    row_lines: usize,
    lines: usize,
    /// The next line's place in its row.
    col: usize,
}

impl NextA {
    const NONE: NextA = NextA { at: std::ptr::null(), ld: 0, row_lines: 1, lines: 0, col: 0 };

    /// Asks for the next line at every [`NEXT_A_EVERY`]-th depth step `p`, until `lines` are
    /// asked (a running address, no division in the kernel's loop).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn step(&mut self, p: usize) {
        if p.is_multiple_of(NEXT_A_EVERY) && self.lines > 0 {
            // SAFETY: a prefetch never faults, wherever it points.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(self.at as *const i8) };
            self.lines -= 1;
            self.col += 1;
            self.at = if self.col == self.row_lines {
                self.col = 0;
                // Wrapping: a view may overlap its rows (`ld` < a row's lines).
                self.at.wrapping_add(self.ld).wrapping_sub((self.row_lines - 1) * 16)
            } else {
                self.at.wrapping_add(16)
            };
        }
    }
}

impl Tile {
    /// Runs the tile on `isa`'s kernel.
    ///
    /// # Safety
    /// `a` must be readable at every `(r, p)` with `r < MR` (or `< rows` when packed and padded),
    /// `p < k`; `b` at `p·ldb + j` for `p < k` and `j < NR` (packed) or `j < cols` (in place);
    /// `c` readable (if `beta ≠ 0`) and writable at `rows × cols`
    /// values `ldc` apart; `bias` (if not null) at `cols` values; `isa` supported by the CPU.
    unsafe fn run(&self, isa: Isa) {
        match (isa, self.a_layout, self.b_in_place) {
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, A_ROWS, false) => avx512_any::<A_ROWS, false>(self),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, A_COLS, false) => avx512_any::<A_COLS, false>(self),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, _, false) => avx512_any::<A_PACKED, false>(self),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, A_ROWS, true) => avx512_any::<A_ROWS, true>(self),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, A_COLS, true) => avx512_any::<A_COLS, true>(self),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, _, true) => avx512_any::<A_PACKED, true>(self),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, A_ROWS, _) => avx2::<A_ROWS>(self),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, A_COLS, _) => avx2::<A_COLS>(self),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, _, _) => avx2::<A_PACKED>(self),
            (Isa::Scalar256, ..) => scalar::<6, 16>(self),
            _ => scalar::<12, 32>(self),
        }
    }
    /// `A[r][p]`.
    #[inline(always)]
    unsafe fn a_at<const A: u8>(&self, r: usize, p: usize) -> f32 {
        if A == A_ROWS {
            *self.a.add(r * self.lda + p)
        } else {
            *self.a.add(r + p * self.lda)
        }
    }
}

/// The scalar twin: the SIMD kernels' arithmetic, one lane at a time.
unsafe fn scalar<const MR: usize, const NR: usize>(t: &Tile) {
    let mut acc = [[0.0f32; NR]; MR];
    let mut b = [0.0f32; NR];
    for p in 0..t.k {
        let w = if t.b_in_place { t.cols } else { NR };
        b[..w].copy_from_slice(std::slice::from_raw_parts(t.b.add(p * t.ldb), w));
        for (r, row) in acc.iter_mut().enumerate() {
            let x = if t.a_layout == A_ROWS { t.a_at::<A_ROWS>(r, p) } else { t.a_at::<A_COLS>(r, p) };
            for (v, &bv) in row.iter_mut().zip(&b) {
                *v = x.mul_add(bv, *v);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(t.rows) {
        for (j, &v) in row.iter().enumerate().take(t.cols) {
            let c = t.c.add(r * t.ldc + j);
            let mut v = v * t.alpha;
            if t.beta != 0.0 {
                v = t.beta.mul_add(*c, v);
            }
            if !t.bias.is_null() {
                v += *t.bias.add(j);
            }
            *c = v;
        }
    }
}

/// Runs `step(p)` for `p` in `0..k`; when `unroll`, four steps per turn of the loop. Measured
/// with a packed `A` panel and packed `B` panels (streaming from L2): the 12 × 32 kernel alone
/// 1.10–1.15× as fast (K = 192, one thread), the ViT-shape GEMMs 1.02–1.10× on one thread and
/// 1.02–1.05× on two, the AVX2 kernel's 1.08–1.16×. With `A` or `B` read in place it was slower
/// (rows of `A` in place: 3,152 × 768 × 192 at 0.7×; a weight gradient with `B`'s 64-wide rows
/// in place: 0.65×), so those loop one step at a time.
#[cfg(target_arch = "x86_64")]
macro_rules! depth_loop {
    ($k:expr, $step:ident, $unroll:expr) => {{
        let mut p = 0;
        if $unroll {
            while p + 4 <= $k {
                for u in 0..4 {
                    $step(p + u);
                }
                p += 4;
            }
        }
        while p < $k {
            $step(p);
            p += 1;
        }
    }};
}

/// [`avx512`] with one vector per row for a tile of at most 16 columns (half the FMAs).
#[cfg(target_arch = "x86_64")]
unsafe fn avx512_any<const A: u8, const B_IN_PLACE: bool>(t: &Tile) {
    if t.cols <= 16 {
        avx512::<A, 1, B_IN_PLACE>(t)
    } else {
        avx512::<A, 2, B_IN_PLACE>(t)
    }
}

/// The AVX-512 kernel, 12 × 32 (`NV = 2` vectors per row), or 12 × 16 (`NV = 1`, the first
/// 16 columns of the panel).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<const A: u8, const NV: usize, const B_IN_PLACE: bool>(t: &Tile) {
    // Ask for the output's lines now, for writing: their transfer overlaps the FMAs (a fresh
    // output buffer is not in cache, and a store that misses waits for its line).
    for r in 0..12 {
        if r < t.rows {
            for h in 0..NV {
                _mm_prefetch::<_MM_HINT_ET0>(t.c.wrapping_add(r * t.ldc + 16 * h) as *const i8);
            }
        }
    }
    let lanes = |n: usize| if n >= 16 { 0xffff } else { (1u32 << n) as u16 - 1 };
    let masks = [lanes(t.cols), lanes(t.cols.saturating_sub(16))];
    let mut acc = [_mm512_setzero_ps(); 24];
    let mut b = t.b;
    let mut ap = [0, 3, 6, 9].map(|r| t.a.wrapping_add(r * t.lda));
    let mut next_a = t.next_a;
    // One depth step: 12 broadcasts of `A`, `NV` vectors of `B`, `12·NV` FMAs.
    let mut step = |p: usize| {
        // Operands read in place along a stride (A's columns, B's rows) are asked for `AHEAD`
        // depth steps early: the hardware prefetchers do not follow strides of a KiB or more
        // from memory, and a step that waits for its line stalls 24 FMAs.
        if A == A_COLS {
            prefetch_span(t.a.wrapping_add((p + AHEAD) * t.lda), 12);
        }
        if B_IN_PLACE {
            prefetch_span(b.wrapping_add(AHEAD * t.ldb), t.cols);
        }
        if A == A_PACKED {
            next_a.step(p);
        }
        let bv = if B_IN_PLACE {
            [_mm512_maskz_loadu_ps(masks[0], b), _mm512_maskz_loadu_ps(masks[NV - 1], b.wrapping_add(16 * (NV - 1)))]
        } else {
            [_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16 * (NV - 1)))]
        };
        for r in 0..12 {
            // In place, row `r` is base `r / 3` plus 0, 1 or 2 row strides: the addresses
            // need no chain of additions per step (+3 % on the ViT shapes).
            let x = if A == A_ROWS { *ap[r / 3].wrapping_add((r % 3) * t.lda) } else { t.a_at::<A_COLS>(r, p) };
            let x = _mm512_set1_ps(x);
            for h in 0..NV {
                acc[2 * r + h] = _mm512_fmadd_ps(x, bv[h], acc[2 * r + h]);
            }
        }
        b = b.wrapping_add(t.ldb);
        if A == A_ROWS {
            for g in &mut ap {
                *g = g.wrapping_add(1);
            }
        }
    };
    depth_loop!(t.k, step, A == A_PACKED && !B_IN_PLACE);
    let (alpha, beta) = (_mm512_set1_ps(t.alpha), _mm512_set1_ps(t.beta));
    let bias = masks.map(|_| _mm512_setzero_ps());
    let bias = if t.bias.is_null() {
        bias
    } else {
        [_mm512_maskz_loadu_ps(masks[0], t.bias), _mm512_maskz_loadu_ps(masks[1], t.bias.wrapping_add(16))]
    };
    for r in 0..12 {
        if r < t.rows {
            for h in 0..NV {
                let c = t.c.wrapping_add(r * t.ldc + 16 * h);
                let mut v = _mm512_mul_ps(acc[2 * r + h], alpha);
                if t.beta != 0.0 {
                    v = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(masks[h], c), v);
                }
                if !t.bias.is_null() {
                    v = _mm512_add_ps(v, bias[h]);
                }
                _mm512_mask_storeu_ps(c, masks[h], v);
            }
        }
    }
}

/// Depth steps between two asks for a line of the next row tile of `A` ([`NextA`]): 96 asks
/// per call at `KC`, enough for a call's share when four column tiles share a row tile (the
/// fewest that pack it): three rows of 25 lines. Every 2 or 8 steps measured the same on
/// 1,576 × 768 × 192.
#[cfg(target_arch = "x86_64")]
const NEXT_A_EVERY: usize = 4;

/// Depth steps ahead that strided in-place operands are prefetched: 16 measured best of 8, 16
/// and 32 (cold operands, e.g. `dW` over 6,400 rows 256 → 64: 174–187 → 202–219 GFLOP/s).
#[cfg(target_arch = "x86_64")]
const AHEAD: usize = 16;

/// Asks for every line of the `len` values from `p`, `1 ≤ len ≤ 32` (at most three lines: the
/// first value's, the next one and the last value's). Never faults.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_span(p: *const f32, len: usize) {
    // SAFETY: prefetches do not fault, whatever the address.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
        if len > 16 {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(16) as *const i8);
        }
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(len - 1) as *const i8);
    }
}

/// The AVX2 + FMA kernel, 6 × 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const A: u8>(t: &Tile) {
    // The output's lines, as in `avx512`.
    for r in 0..6 {
        if r < t.rows {
            for h in 0..2 {
                _mm_prefetch::<_MM_HINT_ET0>(t.c.wrapping_add(r * t.ldc + 8 * h) as *const i8);
            }
        }
    }
    let mut acc = [_mm256_setzero_ps(); 12];
    let mut b = t.b;
    let mut ap = [0, 3].map(|r| t.a.wrapping_add(r * t.lda)); // in-place rows, as in `avx512`
    let mut step = |p: usize| {
        if A == A_COLS {
            prefetch_span(t.a.wrapping_add((p + AHEAD) * t.lda), 6); // as in `avx512`
        }
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for r in 0..6 {
            let x = if A == A_ROWS { *ap[r / 3].wrapping_add((r % 3) * t.lda) } else { t.a_at::<A_COLS>(r, p) };
            let x = _mm256_set1_ps(x);
            acc[2 * r] = _mm256_fmadd_ps(x, b0, acc[2 * r]);
            acc[2 * r + 1] = _mm256_fmadd_ps(x, b1, acc[2 * r + 1]);
        }
        b = b.add(16);
        if A == A_ROWS {
            for g in &mut ap {
                *g = g.wrapping_add(1);
            }
        }
    };
    depth_loop!(t.k, step, A == A_PACKED);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let masks = [t.cols as i32, t.cols as i32 - 8].map(|n| _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
    let (alpha, beta) = (_mm256_set1_ps(t.alpha), _mm256_set1_ps(t.beta));
    let bias = if t.bias.is_null() {
        [_mm256_setzero_ps(); 2]
    } else {
        [_mm256_maskload_ps(t.bias, masks[0]), _mm256_maskload_ps(t.bias.wrapping_add(8), masks[1])]
    };
    for r in 0..6 {
        if r < t.rows {
            for h in 0..2 {
                let c = t.c.wrapping_add(r * t.ldc + 8 * h);
                let mut v = _mm256_mul_ps(acc[2 * r + h], alpha);
                if t.beta != 0.0 {
                    v = _mm256_fmadd_ps(beta, _mm256_maskload_ps(c, masks[h]), v);
                }
                if !t.bias.is_null() {
                    v = _mm256_add_ps(v, bias[h]);
                }
                _mm256_maskstore_ps(c, masks[h], v);
            }
        }
    }
}

/// `B` (`K × N`) packed for one kernel: for each depth block of `KC` rows, its panels of `NR`
/// columns one after another, each `kc × NR` values, zero-padded past column `N`. A frozen
/// weight's `PackedB` is built once and kept with its tensor (see `Tensor`'s pack cache).
#[derive(Debug)]
pub struct PackedB {
    isa: Isa,
    k: usize,
    n: usize,
    buf: Vec<f32>,
    /// Offset of the first value in `buf` (64-byte alignment).
    off: usize,
}

impl PackedB {
    /// Packs all of `b` for `isa`'s kernel.
    pub fn new(isa: Isa, b: MatRef) -> PackedB {
        let (k, n) = (b.rows, b.cols);
        let nr = isa.tile().1;
        let mut p = PackedB { isa, k, n, buf: Vec::new(), off: 0 };
        p.off = alloc_aligned(&mut p.buf, k * n.div_ceil(nr) * nr);
        let mut pc = 0;
        while pc < k {
            let kc = KC.min(k - pc);
            let start = p.off + pc * n.div_ceil(nr) * nr;
            pack_b(b, nr, pc, kc, 0, n, &mut p.buf[start..], is_simd(isa));
            pc += kc;
        }
        p
    }
    /// Rows (depth) and columns of the packed matrix.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
    /// The kernel it was packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Panel `j` (columns `j·NR..`) of the depth block starting at row `pc`, and its length.
    fn panel_at(&self, pc: usize, j: usize) -> (usize, usize) {
        let (nr, kc) = (self.isa.tile().1, KC.min(self.k - pc));
        (self.off + pc * self.n.div_ceil(nr) * nr + j * kc * nr, kc * nr)
    }
    /// A pointer to [`panel_at`](Self::panel_at) (the panels after it follow).
    fn panel(&self, pc: usize, j: usize) -> *const f32 {
        self.buf[self.panel_at(pc, j).0..].as_ptr()
    }
}

/// Grows `buf` to hold `len` values from a 64-byte aligned offset, which it returns (the
/// values are whatever was there: every packer writes all of its output).
fn alloc_aligned(buf: &mut Vec<f32>, len: usize) -> usize {
    if buf.len() < len + 16 {
        *buf = vec![0.0; len + 16];
    }
    buf.as_ptr().align_offset(64).min(16)
}

/// Packs columns `j0..j1` of rows `pc..pc + kc` of `b` into panels of `nr` columns (`j0` a
/// multiple of `nr`), zero-padded to whole panels.
/// `simd`: the CPU runs a SIMD kernel (so has AVX2), and rows and transposes use it (the scalar
/// twins pack element by element).
#[allow(clippy::too_many_arguments)]
fn pack_b(b: MatRef, nr: usize, pc: usize, kc: usize, j0: usize, j1: usize, out: &mut [f32], simd: bool) {
    for (jp, panel) in out.chunks_exact_mut(kc * nr).take((j1 - j0).div_ceil(nr)).enumerate() {
        let c0 = j0 + jp * nr;
        let w = nr.min(j1 - c0);
        if b.cs == 1 {
            for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
                let src = &b.data[(pc + p) * b.rs + c0..][..w];
                #[cfg(target_arch = "x86_64")]
                prefetch_span(src.as_ptr().wrapping_add(AHEAD * b.rs), w); // rows a stride apart, as in `avx512`
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: `src` holds `w ≤ nr` values, `dst` holds `nr`; `simd`: AVX2 present.
                    unsafe { copy_padded(src, dst) };
                    continue;
                }
                dst[..w].copy_from_slice(src);
                dst[w..].fill(0.0);
            }
        } else {
            if w < nr {
                panel.fill(0.0);
            }
            // Columns contiguous (B = Wᵀ): 8 × 8 blocks transposed in registers.
            #[cfg(target_arch = "x86_64")]
            if b.rs == 1 && simd && (w, kc) >= (8, 8) {
                let col = |j: usize| &b.data[(c0 + j) * b.cs + pc..(c0 + j) * b.cs + pc + kc];
                for j in (0..w / 8 * 8).step_by(8) {
                    // The last column of the block bounds every read of the transpose.
                    let _ = col(j + 7);
                    for p in (0..kc / 8 * 8).step_by(8) {
                        // SAFETY: rows c0 + j .. c0 + j + 8 of the stored matrix hold values
                        // pc + p .. pc + p + 8 (checked above through `col`); the panel holds
                        // rows p .. p + 8 of nr values from column j + 8 ≤ nr; `simd`: AVX.
                        unsafe { transpose8(col(j)[p..].as_ptr(), b.cs, panel[p * nr + j..].as_mut_ptr(), nr) };
                    }
                    for jj in j..j + 8 {
                        for p in kc / 8 * 8..kc {
                            panel[p * nr + jj] = col(jj)[p];
                        }
                    }
                }
                for jj in w / 8 * 8..w {
                    for (p, &v) in col(jj).iter().enumerate() {
                        panel[p * nr + jj] = v;
                    }
                }
                continue;
            }
            for j in 0..w {
                let col = &b.data[(c0 + j) * b.cs + pc * b.rs..];
                for (p, d) in panel.iter_mut().skip(j).step_by(nr).take(kc).enumerate() {
                    *d = col[p * b.rs];
                }
            }
        }
    }
}

/// `dst = src` then zeros: one row of a panel by masked 8-lane loads, no `memmove` and
/// `memset` calls per short row (a 16-wide attention head in a 32-wide panel).
///
/// # Safety
/// `src.len() ≤ dst.len()`, `dst.len()` a multiple of 8, AVX2 present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_padded(src: &[f32], dst: &mut [f32]) {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for j in (0..dst.len()).step_by(8) {
        let n = src.len().saturating_sub(j).min(8);
        let m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane);
        let v = _mm256_maskload_ps(src.as_ptr().wrapping_add(j), m);
        _mm256_storeu_ps(dst[j..j + 8].as_mut_ptr(), v);
    }
}

/// Within each 128-bit half, a 4 × 4 transpose of four rows: lane `i` of output `q` is lane `q`
/// of row `i` (low half), lane `i` of output `q`'s high half is lane `q + 4` of row `i`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_halves(r: [__m256; 4]) -> [__m256; 4] {
    let (t0, t1) = (_mm256_unpacklo_ps(r[0], r[1]), _mm256_unpackhi_ps(r[0], r[1]));
    let (t2, t3) = (_mm256_unpacklo_ps(r[2], r[3]), _mm256_unpackhi_ps(r[2], r[3]));
    [
        _mm256_shuffle_ps::<0x44>(t0, t2),
        _mm256_shuffle_ps::<0xee>(t0, t2),
        _mm256_shuffle_ps::<0x44>(t1, t3),
        _mm256_shuffle_ps::<0xee>(t1, t3),
    ]
}

/// `dst[p·ldd + i] = src[i·lds + p]` for `i, p < 8`: an 8 × 8 transpose in AVX registers.
///
/// # Safety
/// `src` readable at `i·lds + p`, `dst` writable at `p·ldd + i` for `i, p < 8`; AVX present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
    let half = |i: usize, p: usize| _mm_loadu_ps(src.add(i * lds + p));
    // Row `i`'s values p..p+4 in the low half, row `i + 4`'s in the high half.
    let rows = |i: usize, p: usize| _mm256_insertf128_ps(_mm256_castps128_ps256(half(i, p)), half(i + 4, p), 1);
    for h in 0..2 {
        let out = transpose_halves([0, 1, 2, 3].map(|i| rows(i, 4 * h)));
        for (q, v) in out.into_iter().enumerate() {
            _mm256_storeu_ps(dst.add((4 * h + q) * ldd), v);
        }
    }
}

/// `dst[p·ldd + i] = src[i·lds + p]` for `i < 4`, `p < 8`: four rows of eight values into eight
/// rows of four (the last third of a 12-row tile; 16-byte stores, which never straddle a line).
///
/// # Safety
/// `src` readable at `i·lds + p`, `dst` writable at `p·ldd + i` for `i < 4`, `p < 8`; AVX present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose4x8(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
    // Column q in the low half, column q + 4 in the high half.
    let cols = transpose_halves([0, 1, 2, 3].map(|i| _mm256_loadu_ps(src.add(i * lds))));
    for (q, v) in cols.into_iter().enumerate() {
        _mm_storeu_ps(dst.add(q * ldd), _mm256_castps256_ps128(v));
        _mm_storeu_ps(dst.add((q + 4) * ldd), _mm256_extractf128_ps::<1>(v));
    }
}

/// Packs rows `r0..r0 + rows` (at most `mr`) of columns `pc..pc + kc` of `a` as `kc × mr`,
/// zero-padded past `rows`. `simd` as in [`pack_b`]: whole tiles of contiguous columns are
/// row copies, of contiguous rows transposes (rows 0–7 of a 12-row tile 8 × 8, rows 8–11 4 × 8).
#[allow(clippy::too_many_arguments)]
fn pack_a(a: MatRef, mr: usize, r0: usize, rows: usize, pc: usize, kc: usize, out: &mut [f32], simd: bool) {
    let out = &mut out[..kc * mr];
    if rows < mr {
        out.fill(0.0);
    }
    if rows == mr && a.rs == 1 {
        // A copy of a length known at compile time: a `memmove` call per 12 values cost more
        // than the copy (2 % of a vit_tiny training step, in the weight gradients' `dyᵀ`).
        fn copy_rows<const MR: usize>(a: MatRef, r0: usize, pc: usize, out: &mut [f32]) {
            for (p, d) in out.chunks_exact_mut(MR).enumerate() {
                #[cfg(target_arch = "x86_64")]
                prefetch_span(a.data.as_ptr().wrapping_add(r0 + (pc + p + AHEAD) * a.cs), MR);
                let src: &[f32; MR] = a.data[r0 + (pc + p) * a.cs..][..MR].try_into().expect("MR values");
                d.copy_from_slice(src);
            }
        }
        match mr {
            12 => copy_rows::<12>(a, r0, pc, out),
            6 => copy_rows::<6>(a, r0, pc, out),
            _ => unreachable!("tiles are 12 or 6 rows"),
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if rows == 12 && mr == 12 && a.cs == 1 && simd && kc >= 8 {
        let row = |r: usize| &a.data[(r0 + r) * a.rs + pc..][..kc];
        let _ = row(11); // bounds every read of the transposes
        for p in (0..kc / 8 * 8).step_by(8) {
            // SAFETY: rows r0 .. r0 + 12 hold columns pc + p .. pc + p + 8 (checked through
            // `row`); `out` holds rows p .. p + 8 of 12 values; `simd`: AVX.
            unsafe {
                transpose8(row(0)[p..].as_ptr(), a.rs, out[p * mr..].as_mut_ptr(), mr);
                transpose4x8(row(8)[p..].as_ptr(), a.rs, out[p * mr + 8..].as_mut_ptr(), mr);
            }
        }
        for r in 0..12 {
            for p in kc / 8 * 8..kc {
                out[p * mr + r] = row(r)[p];
            }
        }
        return;
    }
    for r in 0..rows {
        let row = &a.data[(r0 + r) * a.rs + pc * a.cs..];
        for (p, d) in out.iter_mut().skip(r).step_by(mr).take(kc).enumerate() {
            *d = row[p * a.cs];
        }
    }
}

/// A read-only matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The backing values; the view starts at `data[0]`.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride: distance in elements between `(r, c)` and `(r + 1, c)`.
    pub rs: usize,
    /// Column stride: distance in elements between `(r, c)` and `(r, c + 1)`.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }
    /// A strided view.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        MatRef { data, rows, cols, rs, cs }
    }
    /// The transpose, as a view.
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    /// Element `(r, c)`.
    #[inline]
    pub fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.rs + c * self.cs]
    }
    /// Panics (an engine invariant, not a user error) if the view reaches past its slice.
    pub(super) fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "gemm: operand {what} view {self:?} exceeds its slice");
        }
    }
    /// The sub-view of rows `r0..r0 + n`.
    pub(super) fn rows_range(self, r0: usize, n: usize) -> Self {
        let off = if n == 0 { 0 } else { r0 * self.rs };
        MatRef { data: &self.data[off.min(self.data.len())..], rows: n, ..self }
    }
    /// The sub-view of columns `c0..c0 + n`.
    pub(super) fn cols_range(self, c0: usize, n: usize) -> Self {
        let off = if n == 0 { 0 } else { c0 * self.cs };
        MatRef { data: &self.data[off.min(self.data.len())..], cols: n, ..self }
    }
}

/// The right operand of a product: a view (packed on the fly), or panels packed before.
#[derive(Clone, Copy, Debug)]
pub enum Rhs<'a> {
    /// Any strided view.
    View(MatRef<'a>),
    /// Panels packed for one kernel (e.g. a frozen weight's, kept with its tensor).
    Packed(&'a PackedB),
}

impl Rhs<'_> {
    /// `(K, N)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Rhs::View(v) => (v.rows, v.cols),
            Rhs::Packed(p) => p.dims(),
        }
    }
    /// The kernel packed panels are for.
    pub(crate) fn isa(&self) -> Option<Isa> {
        match self {
            Rhs::View(_) => None,
            Rhs::Packed(p) => Some(p.isa),
        }
    }
}

/// What the kernels write: `α·A·B + β·C + bias` (bias: one value per column, every row), then
/// `finish` on each part of a row once it holds its final values.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub alpha: f32,
    pub beta: f32,
    pub bias: Option<&'a [f32]>,
    pub finish: Option<&'a Finish<'a>>,
}

/// A pass over the output while it is still in cache: `f(r, j0, part)` gets columns
/// `j0..j0 + part.len()` of row `r`, final, once each (on the worker that wrote them).
pub type Finish<'a> = dyn Fn(usize, usize, &mut [f32]) + Sync + 'a;

/// The output: `C[r][j]` at `ptr[r·ldc + j]`; a raw pointer so that workers can write disjoint
/// tiles of it.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr {
    pub ptr: *mut f32,
    pub ldc: usize,
}
// SAFETY: an `OutPtr` is only shared between workers that write disjoint tiles (see `run`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

std::thread_local! {
    /// Per-thread packing buffers (panels of B, one row tile of A), reused across calls.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Computes rows `rows` × columns `cols` (`cols.start` a multiple of `NR`) of
/// `C = epilogue(A·B)` on the calling thread.
///
/// # Safety
/// `out` must be valid for reads (if `β ≠ 0`) and writes at every `(r, j)` of the block,
/// nobody else may access those values meanwhile, `a` and `b` must cover `m × k` and `k × n`
/// (checked by the caller), the bias (if any) `n` values, and `isa` must run on this CPU.
pub(crate) unsafe fn run_block(
    isa: Isa,
    a: MatRef,
    b: Rhs,
    epi: Epilogue,
    out: OutPtr,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    let (mr, nr) = isa.tile();
    let k = a.cols;
    SCRATCH.with(|s| {
        let (bbuf, abuf) = &mut *s.borrow_mut();
        let mut pc = 0;
        while pc < k {
            let kc = KC.min(k - pc);
            let first = pc == 0;
            let mut jc = cols.start;
            while jc < cols.end {
                // Blocks of near-equal width (whole column tiles): no narrow last block, whose
                // row tiles would read `A` in place one step per turn (N = 576 and 768: 1.03×).
                let widest = (BLOCK_VALUES / kc / nr).max(1) * nr;
                let blocks = cols.len().div_ceil(widest);
                let jn = cols.len().div_ceil(blocks).div_ceil(nr).saturating_mul(nr).min(cols.end - jc);
                // B's first value, the distance between its depth steps and between its column
                // tiles. Contiguous rows of B are read in place when packing would not pay for
                // itself: one column tile, or two that at most eight row tiles reuse. Measured
                // on one thread, K = 3,152: in place is 1.13–1.49× as fast with N ≤ 32
                // (M = 24…197), 1.03–1.43× with N = 64 and M ≤ 96, a wash at N = 96 and
                // 0.86–0.90× at N = 192 (there the packed panels' aligned, contiguous lines win).
                // Only on the AVX-512 kernel (and its twin): AVX2's masked loads made the
                // 8-lane kernel 5–20 % slower on the same shapes.
                let in_place = matches!(b, Rhs::View(v) if v.cs == 1 && nr == 32
                    && (jn <= nr || (jn <= 2 * nr && rows.len() <= 8 * mr)));
                let (bp, ldb, panel): (*const f32, usize, usize) = match b {
                    Rhs::Packed(p) => (p.panel(pc, jc / nr), nr, kc * nr),
                    Rhs::View(v) if in_place => (v.data[pc * v.rs + jc..].as_ptr(), v.rs, nr),
                    Rhs::View(v) => {
                        let off = alloc_aligned(bbuf, kc * jn.div_ceil(nr) * nr);
                        pack_b(v, nr, pc, kc, jc, jc + jn, &mut bbuf[off..], is_simd(isa));
                        (bbuf[off..].as_ptr(), nr, kc * nr)
                    }
                };
                let mut ir = rows.start;
                while ir < rows.end {
                    let rr = mr.min(rows.end - ir);
                    // A's rows are read in place only when few column tiles use them; a tile
                    // that four or more reuse is packed: its values then sit in consecutive
                    // lines (in place, rows a multiple of 1 KiB apart fight over a few L1
                    // sets), and the kernel steps through one pointer. Measured on the ViT
                    // shapes: +5 % over reading rows in place. A's columns (a transposed
                    // operand, as `dyᵀ` in a weight gradient) are always read in place by the
                    // AVX-512 kernel: the `MR` values of a depth step are contiguous, and
                    // packing them again for every block of columns cost more than it saved
                    // (weight gradients over 3,152 tokens: 0.93–1.04× at N = 192, 1.0–1.1× at
                    // N = 576 and 768; the AVX2 kernel was 5–12 % slower so).
                    let reused = jn > 3 * nr;
                    let (ap, lda, a_layout) = if rr == mr && a.cs == 1 && !reused {
                        (a.data[ir * a.rs + pc..].as_ptr(), a.rs, A_ROWS)
                    } else if rr == mr && a.rs == 1 && a.cs != 1 && (nr == 32 || !reused) {
                        (a.data[ir + pc * a.cs..].as_ptr(), a.cs, A_COLS)
                    } else {
                        let off = alloc_aligned(abuf, kc * mr);
                        pack_a(a, mr, ir, rr, pc, kc, &mut abuf[off..], is_simd(isa));
                        (abuf[off..].as_ptr(), mr, A_PACKED)
                    };
                    let mut jr = 0;
                    while jr < jn {
                        let j = jc + jr;
                        // Kept panels of a large weight come from L3 or memory (each is read
                        // once per forward): the first row tile asks for the next panel into
                        // L2 while it computes this one, so the others find the block there.
                        // Inference, interleaved rounds: vit_small b1 and vit_tiny b1/b8 1–4 %
                        // faster (per-round medians 0.96–0.99); a small model's weights (under
                        // 128 KiB) stay in cache between calls and are left alone.
                        if let (true, Rhs::Packed(p)) = (ir == rows.start && jr + nr < jn, b) {
                            if p.buf.len() >= 1 << 15 {
                                let (at, len) = p.panel_at(pc, j / nr + 1);
                                super::prefetch_l2(&p.buf[at..at + len]);
                            }
                        }
                        // Packing `A` reads its rows from L3 (a 1,576-row activation is 4.8 MB at
                        // K = 768; pack_a was 8.8 % of that product's samples): each column tile
                        // asks for its share of the next row tile's rows, a line at a time among
                        // its FMAs (a burst of asks before each call stalled the loop instead).
                        // `bench gemm` shapes on two threads, per-pair medians: 1,576 × 768 × 192
                        // 1.04×, the others 0.99–1.02×; training steps 0.97–0.99. The AVX2
                        // kernel, slower, gained nothing from it and does not ask.
                        let (t, tiles, next) = (jr / nr, jn.div_ceil(nr), ir + mr);
                        let share = mr.min(rows.end.saturating_sub(next));
                        let (r0, r1) = (t * share / tiles, (t + 1) * share / tiles);
                        let next_a = if isa == Isa::Avx512 && a_layout == A_PACKED && a.cs == 1 && r1 > r0 {
                            let (at, row_lines) = (a.data[(next + r0) * a.rs + pc..].as_ptr(), kc / 16 + 1);
                            NextA { at, ld: a.rs, row_lines, lines: (r1 - r0) * row_lines, col: 0 }
                        } else {
                            NextA::NONE
                        };
                        let tile = Tile {
                            next_a,
                            k: kc,
                            a: ap,
                            lda,
                            a_layout,
                            b: bp.add(jr / nr * panel),
                            ldb,
                            b_in_place: in_place,
                            c: out.ptr.add(ir * out.ldc + j),
                            ldc: out.ldc,
                            rows: rr,
                            cols: nr.min(cols.end - j),
                            alpha: epi.alpha,
                            beta: if first { epi.beta } else { 1.0 },
                            bias: match (first, epi.bias) {
                                (true, Some(bias)) => bias[j..].as_ptr(),
                                _ => std::ptr::null(),
                            },
                        };
                        tile.run(isa);
                        jr += nr;
                    }
                    if let (Some(f), true) = (epi.finish, pc + kc == k) {
                        for r in ir..ir + rr {
                            // SAFETY: the caller gave this block to this thread alone.
                            f(r, jc, std::slice::from_raw_parts_mut(out.ptr.add(r * out.ldc + jc), jn));
                        }
                    }
                    ir += mr;
                }
                jc += jn;
            }
            pc += kc;
        }
    });
}
