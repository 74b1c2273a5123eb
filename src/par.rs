//! The parallelism switch.
//!
//! Kernels ask [`threads`] how many workers they may use. `set_threads(1)` (or the environment
//! variable `CONSOLIDATOR_THREADS=1`, or building without the `rayon` feature) makes every kernel run
//! on the calling thread, for reproducible runs. Kernels split work by output rows, so each output
//! value is computed by one thread in one order: results do not depend on the thread count.

use std::sync::atomic::{AtomicUsize, Ordering};

static THREADS: AtomicUsize = AtomicUsize::new(0); // 0 = not decided yet

/// Number of worker threads kernels may use (at least 1).
pub fn threads() -> usize {
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

/// Splits `rows` rows into at most [`threads`] contiguous ranges of at least `min_rows` rows.
pub fn row_chunk(rows: usize, min_rows: usize) -> usize {
    let t = threads();
    let per = rows.div_ceil(t.max(1));
    per.max(min_rows).max(1)
}
