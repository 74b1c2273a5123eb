//! General matrix multiply: `C = α·A·B + β·C`, on the crate's own packed micro-kernels
//! ([`super::packed`]: AVX-512 or AVX2 + FMA, chosen at run time) and on `matrixmultiply::sgemm`
//! where the CPU has neither (the portable fallback).
//!
//! Operands are [`MatRef`]s: a slice plus row and column strides, so a transposed operand is just
//! a view (`W.t()` for `x·Wᵀ` with `W: [out, in]`): no transpose copy, ever. The output is
//! row-major with a leading dimension. `tiled` cuts the output into blocks of whole row tiles or
//! whole column tiles among [`crate::par::threads`] workers (`split` weighs each worker's share of
//! the multiply-adds against the operand values it must read and pack: tall outputs go by rows,
//! short and wide ones, as one image at inference, by columns); every output value is computed
//! by one worker with the same reduction order, so results do not depend on the thread count.
//!
//! [`gemm_naive`] is the slow twin: a triple loop accumulating in `f64`, the test oracle.
//!
//! ## The fallback's split, measured
//!
//! Without our kernels, each worker calls `matrixmultiply` on one contiguous block of output rows
//! (or columns), so each worker packs the whole of the other operand once; on the ViT shapes
//! that costs `1/m_chunk` of the work and is cheap. `matrixmultiply` picks its own micro-kernel
//! at run time (16×16 with AVX-512, 8×8 with AVX2 + FMA), blocking `mc = 64`, `nc = 1024` and
//! `kc = 256` — 512 in builds from this repository (`.cargo/config.toml`, through its
//! `constconf` feature). On a 2-core Xeon (AVX-512), shared with other jobs, interleaved best-of
//! runs of the split into 2, 4, 6 and 8 row blocks and 2 column blocks gave (GFLOP/s, measured
//! when this was the only path):
//!
//! | M×K×N          | rows/2 | rows/4 | rows/8 | cols/2 |
//! |----------------|-------:|-------:|-------:|-------:|
//! | 1576×192×576   | 277    | 262    | 246    | 266    |
//! | 1576×768×192   | 129    | 129    | 122    | 120    |
//! | 1576×384×1536  | 132    | 130    | 121    | 139    |
//! | 2048×2048×2048 | 231    | 219    | 223    | 240    |
//!
//! One block per thread is best or within noise of the best, so that is what the fallback does.
//! For short outputs (M = 197, one ViT image) splitting the columns beat splitting the rows on
//! every ViT-Tiny/Small shape (e.g. 197×192×576: 106–111 against 97–107 GFLOP/s; 197×384×1152:
//! 126–136 against 113–116), since the weight operand is then packed once in total, not once
//! per worker; from 512 rows on, rows. Our kernels run the same shapes at 350–420 GFLOP/s on
//! that machine (`consolidator bench gemm` reports each against the FMA peak).
//!
//! ```
//! use consolidator::kernels::{gemm, gemm_naive, MatRef};
//! // y = x·Wᵀ with W: [out = 2, in = 3], read through its transpose view (no copy).
//! let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
//! let w = [1.0, 0.0, -1.0, 0.5, 0.5, 0.5]; // [2, 3]
//! let (mut y, mut y_ref) = ([0.0f32; 4], [0.0f32; 4]);
//! gemm(1.0, MatRef::new(&x, 2, 3), MatRef::new(&w, 2, 3).t(), 0.0, &mut y, 2);
//! gemm_naive(1.0, MatRef::new(&x, 2, 3), MatRef::new(&w, 2, 3).t(), 0.0, &mut y_ref, 2);
//! assert_eq!(y, [-2.0, 3.0, -2.0, 7.5]);
//! assert_eq!(y, y_ref);
//! ```

pub use super::packed::MatRef;
use super::packed::{self, Epilogue, Finish, Isa, OutPtr, Rhs};
use crate::par;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Outputs with at least this many rows are split by rows across workers, shorter ones by columns.
const ROWS_SPLIT_MIN: usize = 512;

/// Below this many multiply-adds a product runs on one thread.
const PAR_MIN_MACS: usize = 1 << 18;

/// `C[m×n] = α·A[m×k]·B[k×n] + β·C`, `C` row-major with leading dimension `ldc`.
///
/// With `β = 0` the old contents of `C` are ignored (NaN included), as in BLAS.
pub fn gemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], ldc: usize) {
    gemm_ext(alpha, a, Rhs::View(b), beta, None, c, ldc)
}

/// [`gemm`] with the right operand a view or packed panels ([`Rhs`]), and a bias row added to
/// every row of the result: `C = α·A·B + β·C + bias`, in one pass over `C`.
pub fn gemm_ext(alpha: f32, a: MatRef, b: Rhs, beta: f32, bias: Option<&[f32]>, c: &mut [f32], ldc: usize) {
    let t = PROFILE.load(Ordering::Relaxed).then(std::time::Instant::now);
    let n = b.dims().1;
    check_operands(a, &b, c.len(), ldc);
    assert!(bias.is_none_or(|v| v.len() >= n), "gemm: bias shorter than n");
    match b.isa().or_else(Isa::detect) {
        // SAFETY: the operands and `c` were checked to cover the product.
        Some(isa) => unsafe {
            tiled(
                isa,
                a,
                b,
                Epilogue { alpha, beta, bias, finish: None },
                OutPtr { ptr: c.as_mut_ptr(), ldc },
                par::threads(),
            )
        },
        None => {
            let Rhs::View(b) = b else { unreachable!("packed panels always name their kernel") };
            let mut beta = beta;
            if let (Some(bias), true) = (bias, a.rows > 0) {
                for row in c.chunks_mut(ldc).take(a.rows) {
                    for (v, &s) in row[..n].iter_mut().zip(bias) {
                        *v = if beta == 0.0 { s } else { beta.mul_add(*v, s) };
                    }
                }
                beta = 1.0;
            }
            gemm_matrixmultiply(alpha, a, b, beta, c, ldc);
        }
    }
    if let Some(t) = t {
        GEMM_NANOS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// A new `m × n` matrix `α·A·B (+ bias in every row)`, written once: no zeroing pass first.
pub fn gemm_new(alpha: f32, a: MatRef, b: Rhs, bias: Option<&[f32]>) -> Vec<f32> {
    gemm_new_then(alpha, a, b, bias, None)
}

/// [`gemm_new`], then `finish` on every part of every row as soon as it is final (while the
/// worker that wrote it still has it in cache): a fused elementwise pass, e.g. an activation.
pub(crate) fn gemm_new_then(alpha: f32, a: MatRef, b: Rhs, bias: Option<&[f32]>, finish: Option<&Finish>) -> Vec<f32> {
    let (m, (k, n)) = (a.rows, b.dims());
    let isa = b.isa().or_else(Isa::detect).filter(|_| k > 0 && m > 0 && n > 0);
    let Some(isa) = isa else {
        let mut c = vec![0.0; m * n];
        gemm_ext(alpha, a, b, 0.0, bias, &mut c, n.max(1));
        if let Some(f) = finish.filter(|_| n > 0) {
            c.chunks_exact_mut(n).enumerate().for_each(|(r, row)| f(r, 0, row));
        }
        return c;
    };
    check_operands(a, &b, m * n, n);
    assert!(bias.is_none_or(|v| v.len() >= n), "gemm: bias shorter than n");
    let t = PROFILE.load(Ordering::Relaxed).then(std::time::Instant::now);
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the operands were checked; with β = 0 and k > 0 the kernels write every value of
    // the m × n output without reading it, so all `m·n` values are initialised before `set_len`.
    unsafe {
        tiled(
            isa,
            a,
            b,
            Epilogue { alpha, beta: 0.0, bias, finish },
            OutPtr { ptr: c.as_mut_ptr(), ldc: n },
            par::threads(),
        );
        c.set_len(m * n);
    }
    if let Some(t) = t {
        GEMM_NANOS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    c
}

/// Appends `α·A·B` (`m × n`, row-major) to `v` on the calling thread, written once (no zeroing
/// pass); returns the new values. For per-head attention scores kept for a backward pass.
pub fn gemm_push<'v>(alpha: f32, a: MatRef, b: MatRef, v: &'v mut Vec<f32>) -> &'v mut [f32] {
    let (m, n, start) = (a.rows, b.cols, v.len());
    match Isa::detect().filter(|_| a.cols > 0 && m > 0 && n > 0) {
        Some(isa) => {
            check_operands(a, &Rhs::View(b), m * n, n);
            v.reserve(m * n);
            let out = OutPtr { ptr: v.spare_capacity_mut().as_mut_ptr().cast(), ldc: n };
            // SAFETY: the operands were checked and `v` has room for `m·n` more values; with
            // β = 0 and k > 0 the kernels write every one of them without reading it, so they
            // are initialised before `set_len`.
            unsafe {
                tiled(isa, a, Rhs::View(b), Epilogue { alpha, beta: 0.0, bias: None, finish: None }, out, 1);
                v.set_len(start + m * n);
            }
        }
        None => {
            v.resize(start + m * n, 0.0);
            gemm_batched(1, alpha, a, 0, b, 0, 0.0, &mut v[start..], n.max(1), m * n);
        }
    }
    &mut v[start..]
}

static PROFILE: AtomicBool = AtomicBool::new(false);
static GEMM_NANOS: AtomicU64 = AtomicU64::new(0);

/// Starts (or stops) accounting the wall time spent in [`gemm`] calls (for benchmarks that
/// report the share of time in GEMM) and resets the counter. Hidden from the docs: a
/// process-wide switch for the `bench` workloads, not an API (`Tape::profiled` is).
#[doc(hidden)]
pub fn profile_gemm(on: bool) {
    PROFILE.store(on, Ordering::Relaxed);
    GEMM_NANOS.store(0, Ordering::Relaxed);
}

/// Wall time spent in [`gemm`] since [`profile_gemm`]`(true)`, in seconds.
#[doc(hidden)]
pub fn gemm_seconds() -> f64 {
    GEMM_NANOS.load(Ordering::Relaxed) as f64 * 1e-9
}

/// Checks the operands of `C[m×n] = A·B` against each other and against `C`'s slice.
fn check_operands(a: MatRef, b: &Rhs, c_len: usize, ldc: usize) {
    let (m, (k, n)) = (a.rows, b.dims());
    assert_eq!(k, a.cols, "gemm: inner dimensions {}x{} · {k}x{n}", a.rows, a.cols);
    assert!(ldc >= n, "gemm: ldc {ldc} < n {n}");
    if m > 0 && n > 0 {
        assert!(c_len >= (m - 1) * ldc + n, "gemm: C slice too short for {m}x{n} (ldc {ldc})");
        a.check("A");
        if let Rhs::View(v) = b {
            v.check("B");
        }
    }
}

/// [`gemm`] on a given micro-kernel (SIMD or scalar twin; see [`packed`]): the tests run every
/// kernel this CPU has. Panics if the CPU cannot run `isa`.
pub fn gemm_isa(isa: Isa, alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], ldc: usize) {
    assert!(Isa::available().contains(&isa), "gemm: this CPU cannot run the {isa:?} kernel");
    check_operands(a, &Rhs::View(b), c.len(), ldc);
    let epi = Epilogue { alpha, beta, bias: None, finish: None };
    // SAFETY: the operands and `c` were checked to cover the product.
    unsafe { tiled(isa, a, Rhs::View(b), epi, OutPtr { ptr: c.as_mut_ptr(), ldc }, par::threads()) }
}

/// Splits the output among `threads` workers (blocks of whole row tiles or column tiles, as
/// [`split`] chooses) and runs [`packed::run_block`] on each.
///
/// # Safety
/// `a` covers `m × k`, `b` covers `k × n`, `out` is valid for `m × n` values `ldc` apart (read
/// only if `β ≠ 0`) and `isa` runs on this CPU.
unsafe fn tiled(isa: Isa, a: MatRef, b: Rhs, epi: Epilogue, out: OutPtr, threads: usize) {
    let (m, k) = (a.rows, a.cols);
    let n = b.dims().1;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            for j in 0..n {
                let c = out.ptr.add(r * out.ldc + j);
                let old = if epi.beta == 0.0 { 0.0 } else { epi.beta * *c };
                *c = old + epi.bias.map_or(0.0, |v| v[j]);
            }
        }
        return;
    }
    if threads <= 1 || m * k * n < PAR_MIN_MACS {
        return packed::run_block(isa, a, b, epi, out, 0..m, 0..n);
    }
    let (mr, nr) = isa.tile();
    let (by_rows, per) = split(m, n, (mr, nr), threads);
    let len = if by_rows { m } else { n };
    par::for_each_index(len.div_ceil(per), |i| {
        let r = i * per..(i * per + per).min(len);
        let (rows, cols) = if by_rows { (r, 0..n) } else { (0..m, r) };
        // SAFETY: the tasks' blocks of rows (or columns) are disjoint.
        unsafe { packed::run_block(isa, a, b, epi, out, rows, cols) }
    });
}

/// How to cut an `m × n` output (tiles `mr × nr`) among `threads` workers: by rows or by
/// columns, and how many rows or columns (whole tiles) go in one task. Tasks are handed out one
/// at a time, so the busiest worker runs `⌈tasks / threads⌉` of them; the choice minimises its
/// estimated time in multiply-adds (over the depth `k`, which every term shares): its share of
/// the product plus [`READ_COST`] for every operand value it reads. A row task reads its rows of
/// `A` and all of `B` (packing it, unless kept packed), a column task all of `A` and its columns
/// of `B`. So columns, which make every worker read all of `A`, are chosen where that pays (a
/// short, wide output: batch-1 inference), not for a slightly better balance of a tall one.
/// Counting tiles alone did that: 4,160 rows are 347 row tiles, an odd count, while 6, 18 or 24
/// column tiles split evenly, so every product of the 32² workload (and of vit_tiny at batch
/// 16) went by columns and read `A` twice; their training steps are 8–10 % faster by rows.
/// Among equal costs the first tried wins: two tasks per worker (a worker that loses its core
/// mid-task leaves less behind), the direction with more tiles.
fn split(m: usize, n: usize, (mr, nr): (usize, usize), threads: usize) -> (bool, usize) {
    let (pm, pn) = (m.div_ceil(mr), n.div_ceil(nr));
    // (estimated time, by rows, rows or columns per task)
    let mut best = (usize::MAX, true, m);
    for by_rows in if pm >= pn { [true, false] } else { [false, true] } {
        let (panels, unit, len, other) = if by_rows { (pm, mr, m, n) } else { (pn, nr, n, m) };
        for per_worker in [2, 1] {
            let per = panels.div_ceil(threads * per_worker);
            let tasks = panels.div_ceil(per).div_ceil(threads);
            let share = (tasks * per * unit).min(len);
            let cost = share * other + READ_COST * (tasks * other + share);
            if cost < best.0 {
                best = (cost, by_rows, per * unit);
            }
        }
    }
    (best.1, best.2)
}

/// What reading one operand value from L2 or beyond (and packing it) costs a worker, in
/// multiply-adds of its kernel (32 a cycle on AVX-512): about half a cycle.
const READ_COST: usize = 16;

/// The portable path: matrixmultiply, the output split across workers by rows (or by columns
/// when short and wide).
fn gemm_matrixmultiply(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], ldc: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions {}x{} · {}x{}", a.rows, a.cols, b.rows, b.cols);
    assert!(ldc >= n, "gemm: ldc {ldc} < n {n}");
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: C slice too short for {m}x{n} (ldc {ldc})");
    a.check("A");
    b.check("B");
    let threads = par::threads();
    if threads <= 1 || m * k * n < PAR_MIN_MACS {
        gemm_serial_mm(alpha, a, b, beta, c, ldc);
        return;
    }
    // Split rows when each worker gets enough of them to amortise packing all of B; short
    // outputs (one 197-token image) split columns instead, so B is packed once in total.
    if m >= ROWS_SPLIT_MIN || n < 32 * threads {
        let rows = par::row_chunk(m, 16);
        par::for_each_chunk_mut(&mut c[..(m - 1) * ldc + n], rows * ldc, |i, cc| {
            let r0 = i * rows;
            let nr = rows.min(m - r0);
            gemm_serial_mm(alpha, a.rows_range(r0, nr), b, beta, cc, ldc);
        });
    } else {
        // Short, wide outputs: each worker computes a block of columns into its own buffer
        // (with C's old values when β ≠ 0), then the blocks are copied into place.
        let cols = par::row_chunk(n, 16);
        let span = |j: usize| (j * cols, cols.min(n - j * cols));
        let mut blocks: Vec<Vec<f32>> = (0..n.div_ceil(cols))
            .map(|j| {
                let (c0, nc) = span(j);
                if beta == 0.0 {
                    vec![0.0; m * nc]
                } else {
                    (0..m).flat_map(|r| c[r * ldc + c0..r * ldc + c0 + nc].iter().copied()).collect()
                }
            })
            .collect();
        par::for_each_chunk_mut(&mut blocks, 1, |j, blk| {
            let (c0, nc) = span(j);
            gemm_serial_mm(alpha, a, b.cols_range(c0, nc), beta, &mut blk[0], nc);
        });
        for (j, blk) in blocks.iter().enumerate() {
            let (c0, nc) = span(j);
            for (r, row) in blk.chunks_exact(nc).enumerate() {
                c[r * ldc + c0..r * ldc + c0 + nc].copy_from_slice(row);
            }
        }
    }
}

/// One-thread product on this CPU's kernel (matrixmultiply without one).
fn gemm_serial(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], ldc: usize) {
    match Isa::detect() {
        Some(isa) if a.rows > 0 && b.cols > 0 => {
            check_operands(a, &Rhs::View(b), c.len(), ldc);
            let epi = Epilogue { alpha, beta, bias: None, finish: None };
            // SAFETY: the operands and `c` were checked to cover the product.
            unsafe { tiled(isa, a, Rhs::View(b), epi, OutPtr { ptr: c.as_mut_ptr(), ldc }, 1) }
        }
        _ => gemm_serial_mm(alpha, a, b, beta, c, ldc),
    }
}

/// One-thread product through matrixmultiply (its AVX2/FMA kernel is chosen at run time).
fn gemm_serial_mm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], ldc: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // matrixmultiply handles k = 0, but keep β = 0 semantics explicit.
        for r in 0..m {
            for v in &mut c[r * ldc..r * ldc + n] {
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return;
    }
    sgemm_checked(alpha, a, b, beta, c, ldc, 1);
}

/// One-thread `C = α·A·B + β·C` with `C`'s rows `rsc` and columns `csc` apart (any strides: the
/// grouped kernels write reordered columns in place): our kernels when `csc = 1`, else
/// matrixmultiply. Every view is
/// bounds-checked here, once, before the unchecked call.
pub(crate) fn sgemm_checked(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], rsc: usize, csc: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions {}x{} · {}x{}", a.rows, a.cols, b.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * rsc + (n - 1) * csc < c.len(), "gemm: C view exceeds its slice");
    if let (Some(isa), 1) = (Isa::detect(), csc) {
        // Unit column stride: our kernels (on this thread).
        check_operands(a, &Rhs::View(b), c.len(), rsc);
        let epi = Epilogue { alpha, beta, bias: None, finish: None };
        // SAFETY: the operands and `c` were checked to cover the product.
        return unsafe { tiled(isa, a, Rhs::View(b), epi, OutPtr { ptr: c.as_mut_ptr(), ldc: rsc }, 1) };
    }
    if k > 0 {
        a.check("A");
        b.check("B");
    }
    // SAFETY: every address matrixmultiply forms from these pointers and strides lies inside
    // the slices (checked above).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// Batched product: for `i in 0..batch`, `C_i = α·A_i·B_i + β·C_i`, where operand `i` starts
/// `i·stride` elements after operand 0. Batches run in parallel, each on one thread.
#[allow(clippy::too_many_arguments)]
pub fn gemm_batched(
    batch: usize,
    alpha: f32,
    a: MatRef,
    stride_a: usize,
    b: MatRef,
    stride_b: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    stride_c: usize,
) {
    let (m, n) = (a.rows, b.cols);
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    assert!(stride_c >= (m - 1) * ldc + n, "gemm_batched: output batches overlap");
    assert!(c.len() >= (batch - 1) * stride_c + (m - 1) * ldc + n, "gemm_batched: C too short");
    let at = |i: usize| MatRef { data: &a.data[(i * stride_a).min(a.data.len())..], ..a };
    let bt = |i: usize| MatRef { data: &b.data[(i * stride_b).min(b.data.len())..], ..b };
    for i in 0..batch {
        at(i).check("A_i");
        bt(i).check("B_i");
    }
    let used = (batch - 1) * stride_c + (m - 1) * ldc + n;
    let c = &mut c[..used];
    if par::threads() <= 1 {
        for (i, cc) in c.chunks_mut(stride_c).enumerate() {
            gemm_serial(alpha, at(i), bt(i), beta, cc, ldc);
        }
    } else {
        par::for_each_chunk_mut(c, stride_c, |i, cc| gemm_serial(alpha, at(i), bt(i), beta, cc, ldc));
    }
}

/// The oracle: a triple loop with `f64` accumulation.
pub fn gemm_naive(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], ldc: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += a.at(i, p) as f64 * b.at(p, j) as f64;
            }
            let old = if beta == 0.0 { 0.0 } else { beta as f64 * c[i * ldc + j] as f64 };
            c[i * ldc + j] = (alpha as f64 * acc + old) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A tall output goes by rows even when its row tiles split less evenly than its column
    /// tiles (a split by columns would make each worker read all of `A`); a short, wide one by
    /// columns.
    #[test]
    fn tall_outputs_split_by_rows_short_wide_ones_by_columns() {
        // 4,160 rows (347 row tiles) × 192 columns (6 tiles): one row task per worker.
        assert_eq!(split(4160, 192, (12, 32), 2), (true, 2088));
        // One 197-token image through a 576-wide layer: by columns.
        assert!(!split(197, 576, (12, 32), 2).0);
    }

    /// `finish` sees every value once, final: doubling it in the hook doubles the product, on
    /// the SIMD path and the fallback (k = 0, empty outputs), across column blocks and workers.
    #[test]
    fn finish_sees_every_value_once_and_final() {
        for (m, k, n) in [(0, 3, 4), (5, 0, 7), (37, 19, 600), (200, 64, 70), (1, 5, 1)] {
            let a: Vec<f32> = (0..m * k).map(|v| (v % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..k * n).map(|v| (v % 5) as f32 * 0.5).collect();
            let bias: Vec<f32> = (0..n).map(|v| v as f32).collect();
            let (av, bv) = (MatRef::new(&a, m, k), Rhs::View(MatRef::new(&b, k, n)));
            let seen: Vec<AtomicU32> = (0..m * n).map(|_| AtomicU32::new(0)).collect();
            let double = |r: usize, j0: usize, part: &mut [f32]| {
                for (j, v) in part.iter_mut().enumerate() {
                    seen[r * n + j0 + j].fetch_add(1, Ordering::Relaxed);
                    *v *= 2.0;
                }
            };
            let got = gemm_new_then(1.0, av, bv, Some(&bias), Some(&double));
            let want: Vec<f32> = gemm_new(1.0, av, bv, Some(&bias)).iter().map(|v| 2.0 * v).collect();
            assert_eq!(got, want, "{m}x{k}x{n}");
            assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1), "{m}x{k}x{n}");
        }
    }
}
