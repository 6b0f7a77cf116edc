//! Work a scan shares with one helper thread kept for the process: the mapped files' reads
//! ([`super::DirState::look_ahead`]). (Building the workers' updates on both threads was
//! tried too: no faster, and the store update after it slower, reading what the other core
//! built.)
//!
//! Items are taken one at a time from a shared counter, so neither thread is left with a
//! fixed half: the helper's wake-up (~0.03-0.1 ms on a 2-vCPU VM) is not waited for, the scan
//! thread works meanwhile. A thread started per scrape cost the scan ~0.1 ms to start and
//! ~0.13 ms to join there (0.7 ms under load). When nothing is left to take, the scan thread
//! polls for the helper's end for a short while (it is finishing its last item, or waking to
//! find nothing left) instead of sleeping, whose wake-up costs as much again.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Stack of the helper thread: it compares slots (no recursion, no large frames; the pool's
/// own loop and a panic's unwinding fit well within it).
const HELPER_STACK: usize = 256 << 10;

/// How long the scan thread polls for the helper's end before it sleeps: longer than an
/// item's work and the helper's wake-up, both well under this.
const END_POLL: Duration = Duration::from_micros(500);

/// The process's helper thread, started on first use; `None` if it could not be started
/// (the scan then does every item itself).
fn helper() -> Option<&'static rayon_core::ThreadPool> {
    static HELPER: OnceLock<Option<rayon_core::ThreadPool>> = OnceLock::new();
    HELPER
        .get_or_init(|| {
            rayon_core::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "multiprocess-scan-helper".into())
                .stack_size(HELPER_STACK)
                .build()
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "cannot start the multiprocess scan's helper thread; scans run on one thread");
                })
                .ok()
        })
        .as_ref()
}

/// What [`share`] gives back.
pub(super) struct Shared<S, T> {
    /// Each item's output with its index, in no set order. Items the helper took are
    /// missing if it panicked.
    pub(super) done: Vec<(usize, T)>,
    /// Both threads' states, this thread's first (the helper's is `S::default()` if it
    /// panicked: it may have been left half-changed).
    pub(super) states: [S; 2],
}

/// Runs `work(state, i)` for every `i` in `0..n` on this thread and the helper, each with a
/// `states` entry of its own (this thread the first). Without a helper thread, this thread
/// does every item. `helper_first` (tests): runs first on the helper, which then takes every
/// item.
pub(super) fn share<S, T, W>(
    n: usize,
    states: [S; 2],
    work: W,
    helper_first: Option<Box<dyn FnOnce() + Send>>,
) -> Shared<S, T>
where
    S: Send + Default,
    T: Send,
    W: Fn(&mut S, usize) -> T + Sync,
{
    let next = AtomicUsize::new(0);
    let take_all = |state: &mut S| {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return done;
            }
            done.push((i, work(state, i)));
        }
    };
    let [mut mine, theirs] = states;
    let Some(helper) = helper() else {
        let done = take_all(&mut mine);
        return Shared {
            done,
            states: [mine, theirs],
        };
    };
    let ended = AtomicBool::new(false);
    let helper_only = helper_first.is_some();
    let mut helper_out: Option<(Vec<(usize, T)>, S)> = None;
    let mut done = helper.in_place_scope(|scope| {
        let (helper_out, ended, take_all) = (&mut helper_out, &ended, &take_all);
        scope.spawn(move |_| {
            *helper_out = catch_unwind(AssertUnwindSafe(move || {
                if let Some(first) = helper_first {
                    first();
                }
                let mut state = theirs;
                (take_all(&mut state), state)
            }))
            .ok();
            // Tests: a read hook that did not fire must not fire in a later scan's job.
            #[cfg(test)]
            super::fs::test_hooks::clear();
            ended.store(true, Ordering::Release);
        });
        if helper_only {
            return Vec::new();
        }
        let done = take_all(&mut mine);
        let polled = Instant::now();
        while !ended.load(Ordering::Acquire) && polled.elapsed() < END_POLL {
            std::hint::spin_loop();
        }
        done
    });
    let theirs = match helper_out {
        Some((theirs_done, theirs)) => {
            done.extend(theirs_done);
            theirs
        }
        None => S::default(),
    };
    Shared {
        done,
        states: [mine, theirs],
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn every_item_is_done_once_and_both_states_come_back() {
        let shared = share(
            1_000,
            [0usize, 0usize],
            |count, i| {
                *count += 1;
                i * 2
            },
            None,
        );
        let mut done = shared.done;
        done.sort_unstable();
        let expected: Vec<(usize, usize)> = (0..1_000).map(|i| (i, i * 2)).collect();
        assert_eq!(done, expected);
        assert_eq!(
            shared.states[0] + shared.states[1],
            1_000,
            "items counted by the states"
        );
    }

    #[test]
    fn a_helper_that_panics_loses_only_its_items_and_its_state() {
        // The helper takes every item when given `helper_first`, and panics before any.
        let shared = share(
            8,
            [vec![1], vec![2]],
            |_, i| i,
            Some(Box::new(|| panic!("helper panics (expected by the test)"))),
        );
        assert!(shared.done.is_empty());
        assert_eq!(shared.states, [vec![1], Vec::new()]);
        // The helper thread is still there for the next call.
        let shared = share(8, [(), ()], |_, i| i, None);
        assert_eq!(shared.done.len(), 8);
    }

    #[test]
    fn no_items_is_no_work() {
        let shared = share(0, [(), ()], |_, i: usize| i, None);
        assert!(shared.done.is_empty());
    }
}
