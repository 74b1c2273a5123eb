//! Pure functions on slices: no autograd, no files. Each fast kernel has a slow twin beside it
//! (`gemm_naive`, `*_scalar`) that the property tests use as the oracle.
//!
//! The fast kernels work on eight lanes at a time with `wide::f32x8` (AVX2 when the build targets
//! x86-64-v3, two SSE halves on a baseline x86-64 build). Lengths that are not multiples of 8 end
//! in a *tail*: the last eight values read as one window that overlaps the last full chunk (or,
//! below eight values, copied into a padded 8-lane buffer), run through the same vector code. So
//! every output value is computed by the same instructions wherever it sits; that, plus
//! splitting work only at row boundaries, keeps results independent of the thread count.
//!
//! ```
//! use consolidator::kernels::elementwise::{add, add_scalar};
//! let (a, b) = (vec![1.0f32; 13], vec![2.0f32; 13]);
//! let (mut fast, mut slow) = (vec![0.0; 13], vec![0.0; 13]);
//! add(&a, &b, &mut fast);
//! add_scalar(&a, &b, &mut slow);
//! assert_eq!(fast, slow);
//! ```

pub mod activation;
pub mod elementwise;
pub mod gemm;
pub mod grouped;
pub mod layernorm;
pub mod packed;
pub mod softmax;

pub use gemm::{gemm, gemm_batched, gemm_naive, gemm_new, MatRef};
pub use packed::{Isa, PackedB, Rhs};

/// Asks for every cache line of `s` to be brought into L2 (a hint; never faults, no-op off
/// x86-64): for an operand a later step of the same worker will read from memory.
pub(crate) fn prefetch_l2(s: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for i in (0..s.len()).step_by(16) {
        // SAFETY: `i` is in bounds, and prefetches do not fault.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(s.as_ptr().add(i).cast()) };
    }
}

/// Shared eight-lane helpers: loads, stores, padded tails, a vector `exp`, and the row split.
pub(crate) mod simd {
    use wide::{f32x8, i32x8, CmpGe, CmpLt};

    /// Lanes per vector.
    pub const W: usize = 8;

    /// Work (in elements) below which a kernel stays on the calling thread.
    pub const PAR_MIN_ELEMS: usize = 1 << 16;

    /// Loads the first eight values of `s`.
    #[inline(always)]
    pub fn load(s: &[f32]) -> f32x8 {
        let a: [f32; 8] = s[..W].try_into().unwrap();
        f32x8::new(a)
    }

    /// Stores `v` into the first eight values of `s`.
    #[inline(always)]
    pub fn store(v: f32x8, s: &mut [f32]) {
        s[..W].copy_from_slice(v.as_array_ref());
    }

    /// Loads up to eight values (the first eight of a longer slice), padding missing lanes
    /// with `fill`.
    #[inline(always)]
    pub fn load_partial(s: &[f32], fill: f32) -> f32x8 {
        if s.len() >= W {
            return load(s);
        }
        let mut a = [fill; W];
        let n = s.len().min(W);
        a[..n].copy_from_slice(&s[..n]);
        f32x8::new(a)
    }

    /// Stores the first `min(8, s.len())` lanes of `v`.
    #[inline(always)]
    pub fn store_partial(v: f32x8, s: &mut [f32]) {
        if s.len() >= W {
            return store(v, s);
        }
        let n = s.len().min(W);
        s[..n].copy_from_slice(&v.as_array_ref()[..n]);
    }

    /// The last eight values of `s` (which has at least eight).
    #[inline(always)]
    pub fn load_last(s: &[f32]) -> f32x8 {
        load(&s[s.len() - W..])
    }

    /// Stores `v` into the last eight values of `s` (which has at least eight).
    #[inline(always)]
    pub fn store_last(v: f32x8, s: &mut [f32]) {
        let n = s.len();
        store(v, &mut s[n - W..]);
    }

    /// For a slice of `n ≥ 8` values whose last eight are read as one window
    /// ([`load_last`]): all-ones bits in the lanes not covered by the full chunks before it
    /// (the last `n % 8`), zero elsewhere. Reading the tail as an overlapping window instead of
    /// a padded copy avoids a store-to-load stall per row.
    #[inline(always)]
    pub fn tail_lanes(n: usize) -> f32x8 {
        let lane = f32x8::new([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        lane.cmp_ge(f32x8::splat((W - n % W) as f32))
    }

    /// `out[i] = f(x[i])` lane-wise. The tail is the last eight values as one overlapping
    /// window (values in the overlap are computed twice, identically), or padded below eight.
    #[inline(always)]
    pub fn map1(x: &[f32], out: &mut [f32], f: impl Fn(f32x8) -> f32x8) {
        assert_eq!(x.len(), out.len());
        let mut xc = x.chunks_exact(W);
        let mut oc = out.chunks_exact_mut(W);
        for (xs, os) in (&mut xc).zip(&mut oc) {
            store(f(load(xs)), os);
        }
        if !xc.remainder().is_empty() {
            if x.len() >= W {
                store_last(f(load_last(x)), out);
            } else {
                store_partial(f(load_partial(x, 0.0)), out);
            }
        }
    }

    /// `out[i] = f(a[i], b[i])` lane-wise, the tail as in [`map1`].
    #[inline(always)]
    pub fn map2(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32x8, f32x8) -> f32x8) {
        assert!(a.len() == b.len() && a.len() == out.len());
        let mut ac = a.chunks_exact(W);
        let mut bc = b.chunks_exact(W);
        let mut oc = out.chunks_exact_mut(W);
        for ((xs, ys), os) in (&mut ac).zip(&mut bc).zip(&mut oc) {
            store(f(load(xs), load(ys)), os);
        }
        if !ac.remainder().is_empty() {
            if a.len() >= W {
                store_last(f(load_last(a), load_last(b)), out);
            } else {
                store_partial(f(load_partial(a, 0.0), load_partial(b, 0.0)), out);
            }
        }
    }

    /// Reinterprets integer lanes as float bits.
    #[inline(always)]
    fn from_bits(v: i32x8) -> f32x8 {
        f32x8::new(v.to_array().map(|b| f32::from_bits(b as u32)))
    }

    /// `e^x` lane-wise, relative error ≤ ~2e-7 for `−87 ≤ x ≤ 88`; `0` below `−87.3` (and for
    /// `−∞`), saturating near `e^88` above.
    ///
    /// Cody–Waite reduction `x = n·ln2 + r`, `|r| ≤ ln2/2` (ln 2 split in a high part exact in
    /// `f32` and a low correction), then the degree-7 Taylor polynomial of `e^r` (truncation error
    /// `|r|⁸/8! ≤ 5e-9`), then scaling by `2ⁿ` built directly in the exponent bits.
    #[inline(always)]
    pub fn exp8(x: f32x8) -> f32x8 {
        const LOG2_E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_145_75; // 0x3f317200: 16 significant bits, n·LN2_HI is exact
        const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 − LN2_HI
        let xc = x.fast_max(f32x8::splat(-87.5)).fast_min(f32x8::splat(88.0)); // NaN → −87.5
        let n = (xc * f32x8::splat(LOG2_E)).round();
        let r = n.mul_neg_add(f32x8::splat(LN2_HI), xc);
        let r = n.mul_neg_add(f32x8::splat(LN2_LO), r);
        let mut p = f32x8::splat(1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = p.mul_add(r, f32x8::splat(c));
        }
        let two_n = from_bits((n.fast_round_int() + i32x8::splat(127)) << 23); // n is integral
        let y = p * two_n;
        x.cmp_lt(f32x8::splat(-87.3)).blend(f32x8::ZERO, y)
    }

    /// Length of the chunks that split `rows` rows of `row_len` values across the worker
    /// threads: whole rows, and everything in one chunk when the work is small.
    pub fn rows_chunk_len(rows: usize, row_len: usize) -> usize {
        let total = rows * row_len;
        if total < PAR_MIN_ELEMS || crate::par::threads() <= 1 {
            return total.max(1);
        }
        crate::par::row_chunk(rows, 1) * row_len.max(1)
    }

    /// Chunk length (a multiple of 8) for splitting a flat elementwise kernel over `len` values.
    pub fn flat_chunk_len(len: usize) -> usize {
        let t = crate::par::threads();
        if len < PAR_MIN_ELEMS || t <= 1 {
            return len.max(1);
        }
        len.div_ceil(t).next_multiple_of(W)
    }
}
