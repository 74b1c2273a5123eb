//! The parallelism switch.
//!
//! Kernels ask [`threads`] how many workers they may use. `set_threads(1)` (or the environment
//! variable `CONSOLIDATOR_THREADS=1`, or building without the `rayon` feature) makes every kernel run
//! on the calling thread, for reproducible runs. Kernels split work by output rows, so each output
//! value is computed by one thread in one order: results do not depend on the thread count.
//!
//! The first call to [`threads`] also tunes the allocator, once ([`keep_freed_memory`]): a
//! training step allocates and frees the same large buffers every step, and glibc's defaults
//! hand them back to the kernel (buffers above 128 KiB are `mmap`ed, the heap top is trimmed
//! above 128 KiB), so every step paid page faults and page zeroing again — about 570,000 minor
//! faults over six steps of a ViT training run. With freed memory kept that drops to 100,000 and
//! the step's GEMMs run ~30 % faster (they were the ones touching the fresh pages first).

use std::sync::atomic::{AtomicUsize, Ordering};

static THREADS: AtomicUsize = AtomicUsize::new(0); // 0 = not decided yet

/// Number of worker threads kernels may use (at least 1).
pub fn threads() -> usize {
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(keep_freed_memory);
    let t = THREADS.load(Ordering::Relaxed);
    if t != 0 {
        return t;
    }
    let t = decide();
    THREADS.store(t, Ordering::Relaxed);
    t
}

fn decide() -> usize {
    if !cfg!(feature = "rayon") {
        return 1;
    }
    if let Some(n) = std::env::var("CONSOLIDATOR_THREADS").ok().and_then(|s| s.parse::<usize>().ok()) {
        return n.max(1);
    }
    #[cfg(feature = "rayon")]
    {
        rayon::current_num_threads().max(1)
    }
    #[cfg(not(feature = "rayon"))]
    1
}

/// Asks the C allocator to keep freed memory for reuse instead of returning it to the kernel
/// (glibc: `M_MMAP_THRESHOLD` 32 MiB, `M_TRIM_THRESHOLD` 1 GiB), so the buffers a step frees
/// serve the next step without fresh page faults. The process keeps its peak heap instead of
/// shrinking between steps. Called once by [`threads`]; does nothing on other C libraries or
/// when the environment sets `CONSOLIDATOR_MALLOC=system`.
pub fn keep_freed_memory() {
    if std::env::var("CONSOLIDATOR_MALLOC").is_ok_and(|v| v == "system") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt is glibc's documented, thread-safe setter of these two numbers.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

/// Sets the number of threads kernels may use (1 = single-threaded, deterministic scheduling).
/// Values above rayon's pool size are capped by the pool.
pub fn set_threads(n: usize) {
    let n = if cfg!(feature = "rayon") { n.max(1) } else { 1 };
    THREADS.store(n, Ordering::Relaxed);
}

/// Runs `f(chunk_index, chunk)` over `data` split into chunks of `chunk_len` elements, in parallel
/// when more than one thread is allowed and there is more than one chunk.
pub fn for_each_chunk_mut<T: Send>(data: &mut [T], chunk_len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let chunk_len = chunk_len.max(1);
    #[cfg(feature = "rayon")]
    if threads() > 1 && data.len() > chunk_len {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c));
        return;
    }
    data.chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c));
}

/// Runs `f(i)` for `i in 0..n`, in parallel when more than one thread is allowed.
pub fn for_each_index(n: usize, f: impl Fn(usize) + Sync + Send) {
    #[cfg(feature = "rayon")]
    if threads() > 1 && n > 1 {
        use rayon::prelude::*;
        (0..n).into_par_iter().with_max_len(1).for_each(f);
        return;
    }
    (0..n).for_each(f);
}

/// A new buffer of `n` values whose chunks of `chunk` values (the last may be shorter) are
/// written by `f(chunk index, chunk)`, in parallel when there are several. Each chunk is zeroed
/// right before `f` runs, on the worker that runs it, so the zeros are still in its cache when
/// `f` overwrites them: a separate zeroing pass over a large buffer first is a trip to memory.
pub fn build(n: usize, chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    build_with(n, chunk, &mut vec![(); n.div_ceil(chunk.max(1))], |i, c, _| f(i, c))
}

/// [`build`] with one more mutable item per chunk (`side[i]` goes with chunk `i`), for kernels
/// with several outputs (LayerNorm's row statistics).
pub fn build_with<S: Send>(
    n: usize,
    chunk: usize,
    side: &mut [S],
    f: impl Fn(usize, &mut [f32], &mut S) + Sync + Send,
) -> Vec<f32> {
    let chunk = chunk.max(1);
    assert_eq!(side.len(), n.div_ceil(chunk), "par::build_with: one side item per chunk");
    let mut v: Vec<f32> = Vec::with_capacity(n);
    let mut parts: Vec<_> = v.spare_capacity_mut()[..n].chunks_mut(chunk).zip(side).collect();
    // Small buffers stay on the calling thread: a hand-off costs more than the work.
    let group = if n < PAR_ZERO_MIN { parts.len() } else { 1 };
    for_each_chunk_mut(&mut parts, group, |g, ps| {
        for (j, (c, s)) in ps.iter_mut().enumerate() {
            c.fill(std::mem::MaybeUninit::new(0.0));
            // SAFETY: every value of `c` was just written; `MaybeUninit<f32>` has `f32`'s layout.
            let c = unsafe { &mut *(*c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            f(g * group + j, c, s)
        }
    });
    drop(parts);
    // SAFETY: the chunks cover `0..n` and each was initialised above.
    unsafe { v.set_len(n) };
    v
}

/// Buffers at least this long are zeroed by all workers.
const PAR_ZERO_MIN: usize = 1 << 16;

/// A buffer of `n` zeros. Large ones are written by all workers: with freed memory kept for reuse
/// ([`keep_freed_memory`]) a zeroed allocation is otherwise one thread's `memset`.
pub fn zeros(n: usize) -> Vec<f32> {
    filled(n, 1, |_, c| c.fill(std::mem::MaybeUninit::new(0.0)))
}

/// `rows` copies of `row`, one after another, written by all workers when large.
pub fn repeat_rows(row: &[f32], rows: usize) -> Vec<f32> {
    if row.is_empty() {
        return Vec::new();
    }
    filled(row.len() * rows, row.len(), |_, c| {
        for r in c.chunks_exact_mut(row.len()) {
            r.iter_mut().zip(row).for_each(|(d, &s)| *d = std::mem::MaybeUninit::new(s));
        }
    })
}

/// A new buffer of `n` values whose chunks (multiples of `unit` long, `n` a multiple of `unit`)
/// are initialised by `init(chunk index, chunk)`, in parallel when large. `init` must write every
/// element of its chunk.
fn filled(n: usize, unit: usize, init: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync + Send) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    let chunk = if n >= PAR_ZERO_MIN { row_chunk(n / unit, 1) * unit } else { n.max(1) };
    for_each_chunk_mut(&mut v.spare_capacity_mut()[..n], chunk, init);
    // SAFETY: the chunks cover `0..n` and both callers' `init` write every element of theirs.
    unsafe { v.set_len(n) };
    v
}

/// Splits `rows` rows into at most [`threads`] contiguous ranges of at least `min_rows` rows.
pub fn row_chunk(rows: usize, min_rows: usize) -> usize {
    let t = threads();
    let per = rows.div_ceil(t.max(1));
    per.max(min_rows).max(1)
}
