//! Putting a round's updates into the store: the store's answer per worker, and the
//! resilient apply that leaves out only the family the store rejects.

use super::{PidState, RETIRED_WORKER_ID, worker_id};
use crate::app::App;
use crate::model::Family;
use crate::multiprocess::merge::FxHashMap;
use crate::multiprocess::{LogOnce, Stats};
use crate::store::{Now, Scope, Store, StoreError, WorkerKey};

/// What applying a pid's update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Applied,
    /// Nothing to show (only live gauges of a dead worker): not in the store.
    Empty,
    /// Rejected: the store keeps what it had; the whole worker is re-applied next round.
    Failed,
}

/// One pid's update for the store, built before the lock is taken.
pub(super) enum Update<'p> {
    Full(Vec<Family<'p>>),
    Partial(Vec<Family<'p>>),
}

/// Marks every worker of the directory as seen (their files are the authority on liveness;
/// the store's `forgetAfter` sweep must not retire them a second time).
pub(super) fn touch_all(app: &App, pids: &FxHashMap<String, PidState>, retired: bool) {
    let now = app.now();
    let mut store = app.store.write();
    for (pid, st) in pids {
        if st.in_store {
            store.touch(&worker_id(pid), now);
        }
    }
    if retired {
        store.touch(RETIRED_WORKER_ID, now);
    }
}

/// Applies a worker's families (`Scope::Worker`); when the store rejects the update (a type
/// conflict with another source, a histogram layout mismatch, a reserved name), drops the
/// offending family and retries, so one bad family never hides the worker's others.
/// `on_reject` sees every rejection. Returns true when something was applied.
pub(crate) fn apply_resilient(
    store: &mut Store,
    worker: &WorkerKey,
    families: &[Family<'_>],
    now: Now,
    unbounded: bool,
    on_reject: &mut dyn FnMut(&StoreError),
) -> bool {
    let mut excluded: Vec<usize> = Vec::new();
    for _ in 0..=families.len() {
        let filtered: Vec<Family<'_>>;
        let current: &[Family<'_>] = if excluded.is_empty() {
            families
        } else {
            filtered = families
                .iter()
                .enumerate()
                .filter(|(i, _)| !excluded.contains(i))
                .map(|(_, f)| f.clone())
                .collect();
            &filtered
        };
        if current.is_empty() {
            return false;
        }
        let result = if unbounded {
            store.apply_unbounded(worker, current, Scope::Worker, now)
        } else {
            store.apply(worker, current, Scope::Worker, now)
        };
        let err = match result {
            Ok(_) => return true,
            Err(e) => e,
        };
        on_reject(&err);
        let Some(name) = err.family() else {
            return false;
        };
        let Some(pos) = families
            .iter()
            .enumerate()
            .position(|(i, f)| !excluded.contains(&i) && f.name == name)
        else {
            return false;
        };
        excluded.push(pos);
    }
    false
}

pub(super) fn apply_fallback(
    store: &mut Store,
    worker: &WorkerKey,
    families: &[Family<'_>],
    now: Now,
    unbounded: bool,
    stats: &Stats,
    log: &mut LogOnce,
) -> bool {
    apply_resilient(store, worker, families, now, unbounded, &mut |err| {
        stats.rejected(err.reason(), 1);
        if log.first(&format!("reject:{}:{}", worker.id, err.reason())) {
            tracing::warn!(worker = %worker.id, error = %err, "multiprocess values rejected by the store; the family is left out");
        }
    })
}
