//! The parallel helpers of `par`: every task runs once, in and out of a region (spinning
//! workers), nested or not; a panicking task is raised by its caller.
use consolidator::par::{for_each_chunk_mut, for_each_index, region, set_threads, threads};
use std::sync::atomic::{AtomicU32, Ordering};

/// Every index runs exactly once, in and out of a region, nested or not, with chunks that
/// cover the data exactly.
#[test]
fn every_task_runs_once() {
    let original = threads();
    set_threads(2);
    let check = || {
        for n in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
            for_each_index(n, |i| {
                // A nested call runs on this thread and still covers its range.
                let inner = AtomicU32::new(0);
                for_each_index(3, |_| {
                    inner.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(inner.load(Ordering::Relaxed), 3);
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n = {n}");
            let mut v: Vec<usize> = vec![0; n];
            for_each_chunk_mut(&mut v, 7, |c, chunk| chunk.iter_mut().enumerate().for_each(|(j, x)| *x += c * 7 + j));
            assert!(v.iter().enumerate().all(|(i, &x)| x == i), "chunks of n = {n}");
        }
    };
    check();
    region(|| {
        check();
        region(check);
    });
    set_threads(original);
}

/// A panicking task is raised by the call that posted it, after every task ended; the
/// region (and the thread) can be used again.
#[test]
fn a_panicking_task_is_raised_by_its_caller() {
    let original = threads();
    set_threads(2);
    region(|| {
        let done = AtomicU32::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for_each_index(8, |i| {
                if i == 3 {
                    panic!("task 3");
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(r.is_err());
        assert_eq!(done.load(Ordering::Relaxed), 7);
        let again = AtomicU32::new(0);
        for_each_index(8, |_| {
            again.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(again.load(Ordering::Relaxed), 8);
    });
    set_threads(original);
}

/// A region opened on a rayon worker (a caller parallel at a coarser grain) runs its body there
/// with every task done once, while other workers are busy.
#[cfg(feature = "rayon")]
#[test]
fn a_region_inside_a_rayon_task_still_runs_every_task() {
    let original = threads();
    set_threads(2);
    let total = AtomicU32::new(0);
    rayon::scope(|s| {
        for _ in 0..4 {
            s.spawn(|_| {
                region(|| {
                    for_each_index(50, |_| {
                        total.fetch_add(1, Ordering::Relaxed);
                    })
                })
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 200);
    set_threads(original);
}
