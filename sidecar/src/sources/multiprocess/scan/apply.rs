//! Putting a round's updates into the store: the store's answer per worker, and the
//! resilient apply ([`Store::apply_resilient`]) with the reader's self-metrics and log.

use super::{PidState, RETIRED_WORKER_ID, worker_id};
use crate::app::App;
use crate::model::Family;
use crate::sources::multiprocess::merge::FxHashMap;
use crate::sources::multiprocess::{LogOnce, Stats};
use crate::store::{Now, Store, WorkerKey};

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

pub(super) fn apply_fallback(
    store: &mut Store,
    worker: &WorkerKey,
    families: &[Family<'_>],
    now: Now,
    unbounded: bool,
    stats: &Stats,
    log: &mut LogOnce,
) -> bool {
    store.apply_resilient(worker, families, now, unbounded, &mut |err| {
        stats.rejected(err.reason(), 1);
        if log.first(&format!("reject:{}:{}", worker.id, err.reason())) {
            tracing::warn!(worker = %worker.id, error = %err, "multiprocess values rejected by the store; the family is left out");
        }
    })
}
