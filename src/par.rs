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
    if threads() > 1 && data.len() > chunk_len && !team::in_task() {
        let (len, base) = (data.len(), SendPtr(data.as_mut_ptr()));
        let chunk = |i: usize| {
            let start = i * chunk_len;
            // SAFETY: chunk `i` is `start..start + chunk_len` (clipped) of `data`, which is
            // borrowed mutably for this call; each index runs once, so chunks are disjoint.
            let c = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), chunk_len.min(len - start)) };
            f(i, c)
        };
        if team::run(len.div_ceil(chunk_len), &chunk) {
            return;
        }
        use rayon::prelude::*;
        data.par_chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c));
        return;
    }
    data.chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c));
}

/// Runs `f(i)` for `i in 0..n`, in parallel when more than one thread is allowed.
pub fn for_each_index(n: usize, f: impl Fn(usize) + Sync + Send) {
    #[cfg(feature = "rayon")]
    if threads() > 1 && n > 1 && !team::in_task() {
        if team::run(n, &f) {
            return;
        }
        use rayon::prelude::*;
        (0..n).into_par_iter().with_max_len(1).for_each(f);
        return;
    }
    (0..n).for_each(f);
}

/// A pointer that may cross to the worker threads (each uses a disjoint part of what it points to).
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: see the users: every worker touches only its own chunk.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Runs `f` with the workers kept ready: every parallel kernel called by this thread inside `f`
/// hands its tasks to workers that wait by spinning instead of sleeping, so a short op costs
/// no wake-up. A `vit_tiny` forward at batch 1 is ~150 parallel ops of ~100 µs, and waking a
/// sleeping worker takes tens of microseconds: in a region that forward is ~1.15× faster on two
/// cores (18.3 → 15.8 ms). The workers spin only until `f` returns (sleeping in short naps
/// after a millisecond without work). Nested calls, calls with one thread (or one core), calls
/// from inside a parallel task and calls from a rayon worker (the caller is already parallel
/// at a coarser grain, and a spinning worker would hold up its pool) just run `f`. The results
/// are the same as outside a region: kernels split their work the same way.
pub fn region<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "rayon")]
    if threads() > 1 && !team::leading() && !team::in_task() && rayon::current_thread_index().is_none() {
        // Never more spinning threads than cores: with more, a spinning worker takes the core
        // the leader needs (six threads on two cores made a batch-1 forward 3× slower).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let size = threads().min(rayon::current_num_threads()).min(cores);
        if size > 1 {
            return team::Team::lead(size, f);
        }
    }
    f()
}

#[cfg(feature = "rayon")]
mod team {
    //! The spinning workers behind [`super::region`]: the thread that opened the region posts
    //! one task list at a time; it claims tasks from the front of the list, the workers from
    //! the back.
    use std::cell::{Cell, RefCell};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::ptr;
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    std::thread_local! {
        /// The team this thread leads, inside [`super::region`].
        static CURRENT: RefCell<Option<Arc<Team>>> = const { RefCell::new(None) };
        /// Whether this thread is running one of a team's tasks (nested parallel calls then run
        /// on this thread).
        static IN_TASK: Cell<bool> = const { Cell::new(false) };
    }

    /// Whether this thread leads a team (is inside [`super::region`]).
    pub fn leading() -> bool {
        CURRENT.with(|c| c.borrow().is_some())
    }

    /// Runs `f(i)` for `i in 0..n` on the team this thread leads; false if it leads none.
    pub fn run(n: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        CURRENT.with(|c| c.borrow().as_ref().map(|t| t.run(n, f)).is_some())
    }

    pub fn in_task() -> bool {
        IN_TASK.with(Cell::get)
    }

    /// One posted task list: `f(i)` for `i in 0..n`. On a cache line of its own: it lives on
    /// the leader's stack, whose other values the leader writes while the workers claim tasks.
    #[repr(align(128))]
    struct Job {
        f: *const (dyn Fn(usize) + Sync),
        /// The indices not yet claimed, `lo..hi`, as `lo | hi << 32`.
        left: AtomicU64,
        done: AtomicUsize,
        panicked: AtomicBool,
    }

    impl Job {
        /// Claims the first (the leader) or last (workers) index left: the leader and a worker
        /// each run one contiguous range and meet where the work ends, so neighbouring tasks,
        /// which often share cache lines at their edges, are not run by two cores at once.
        fn claim(&self, from_back: bool) -> Option<usize> {
            let mut cur = self.left.load(Relaxed);
            loop {
                let (lo, hi) = (cur & 0xFFFF_FFFF, cur >> 32);
                if lo >= hi {
                    return None;
                }
                let (next, i) = if from_back { (lo | (hi - 1) << 32, hi - 1) } else { ((lo + 1) | hi << 32, lo) };
                match self.left.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                    Ok(_) => return Some(i as usize),
                    Err(now) => cur = now,
                }
            }
        }

        /// Claims and runs indices until none are left.
        fn work(&self, from_back: bool) {
            IN_TASK.with(|t| t.set(true));
            while let Some(i) = self.claim(from_back) {
                // SAFETY: `f` lives until `done` reaches `n` (see `Team::run`), and this index
                // is not done yet.
                let f = unsafe { &*self.f };
                if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                    self.panicked.store(true, Relaxed);
                }
                self.done.fetch_add(1, Release);
            }
            IN_TASK.with(|t| t.set(false));
        }
    }

    pub struct Team {
        /// The posted job, or null between jobs.
        job: AtomicPtr<Job>,
        /// Bumped for every posted job: what waiting workers watch.
        epoch: AtomicUsize,
        /// Workers between reading `job` and finishing with it.
        busy: AtomicUsize,
        stop: AtomicBool,
        leader: std::thread::ThreadId,
    }

    impl Team {
        /// Runs `f` on this thread with `threads - 1` spinning workers from rayon's pool.
        pub fn lead<R>(threads: usize, f: impl FnOnce() -> R) -> R {
            let team = Arc::new(Team {
                job: AtomicPtr::new(ptr::null_mut()),
                epoch: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                stop: AtomicBool::new(false),
                leader: std::thread::current().id(),
            });
            for _ in 1..threads {
                let t = team.clone();
                rayon::spawn(move || t.serve());
            }
            struct Stop(Arc<Team>);
            impl Drop for Stop {
                fn drop(&mut self) {
                    self.0.stop.store(true, Release);
                    CURRENT.with(|c| c.borrow_mut().take());
                }
            }
            CURRENT.with(|c| *c.borrow_mut() = Some(team.clone()));
            let _stop = Stop(team);
            f()
        }

        /// A worker: waits for jobs until the team stops. A worker that rayon runs on the
        /// leader's own thread (while the leader waits inside rayon) leaves at once.
        fn serve(&self) {
            if std::thread::current().id() == self.leader {
                return;
            }
            let (mut seen, mut spins) = (0, 0u32);
            let mut idle = Instant::now();
            while !self.stop.load(Acquire) {
                let e = self.epoch.load(Acquire);
                if e == seen {
                    // The clock is read every 256 turns only: on a VM it can cost as much as
                    // the wait for the next job.
                    spins = spins.wrapping_add(1);
                    if spins % 256 != 0 || idle.elapsed() < Duration::from_millis(1) {
                        std::hint::spin_loop();
                    } else {
                        std::thread::park_timeout(Duration::from_micros(50));
                        spins = 255; // asleep: look at the clock again next turn
                    }
                    continue;
                }
                seen = e;
                self.busy.fetch_add(1, SeqCst);
                let job = self.job.load(SeqCst);
                if !job.is_null() {
                    // SAFETY: the leader keeps the job alive while `busy` counts this worker.
                    unsafe { &*job }.work(true);
                }
                self.busy.fetch_sub(1, SeqCst);
                idle = Instant::now();
            }
        }

        /// Runs `f(i)` for `i in 0..n` on this thread (the leader) and the workers, and returns
        /// when all are done. A panic in any task is raised here after all tasks are done.
        pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
            // SAFETY: only the lifetime is erased; `f` outlives the job (we wait below until no
            // worker can reach it).
            let f: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(f) };
            assert!(n < 1 << 32, "par: {n} tasks");
            let left = AtomicU64::new((n as u64) << 32);
            let job = Job { f, left, done: AtomicUsize::new(0), panicked: AtomicBool::new(false) };
            self.job.store(&job as *const Job as *mut Job, SeqCst);
            self.epoch.fetch_add(1, Release);
            job.work(false);
            while job.done.load(Acquire) < n {
                std::hint::spin_loop();
            }
            // No worker reaches the job after this store unless it was already counted in `busy`.
            self.job.store(ptr::null_mut(), SeqCst);
            while self.busy.load(SeqCst) != 0 {
                std::hint::spin_loop();
            }
            if job.panicked.load(Relaxed) {
                panic!("a parallel task panicked");
            }
        }
    }
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
