//! Deterministic fan-out for the fit: `map` runs independent jobs (k-means
//! initialisations, EM restarts) on up to `threads` scoped threads and
//! returns their results in job order, so what the caller keeps never
//! depends on the thread count or on which thread finished first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// The machine's cores (1 if unknown): the default thread count.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f(0) … f(jobs − 1)` on up to `threads` threads, results in job order;
/// `done(finished, jobs)` is called on the calling thread as each ends.
pub fn map<T: Send>(
    jobs: usize,
    threads: usize,
    f: impl Fn(usize) -> T + Sync,
    done: &mut dyn FnMut(usize, usize),
) -> Vec<T> {
    let threads = threads.clamp(1, jobs.max(1));
    if threads == 1 {
        return (0..jobs)
            .map(|i| {
                let out = f(i);
                done(i + 1, jobs);
                out
            })
            .collect();
    }
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<T>> = (0..jobs).map(|_| None).collect();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..threads {
            let (tx, next, f) = (tx.clone(), &next, &f);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs || tx.send((i, f(i))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (finished, (i, out)) in rx.into_iter().enumerate() {
            slots[i] = Some(out);
            done(finished + 1, jobs);
        }
    });
    slots
        .into_iter()
        .map(|s| s.expect("every job ran (a panicking job re-panics at scope end)"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_back_in_job_order_whatever_the_threads() {
        for threads in [1, 2, 4, 9] {
            let mut seen = Vec::new();
            let out = super::map(7, threads, |i| i * i, &mut |d, of| seen.push((d, of)));
            assert_eq!(out, vec![0, 1, 4, 9, 16, 25, 36]);
            assert_eq!(seen.last(), Some(&(7, 7)));
        }
    }
}
