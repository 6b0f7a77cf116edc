//! Putting a round's updates into the store: the store's answer per worker, and the
//! resilient apply ([`Store::apply_resilient`]) with the reader's self-metrics and log.

use super::{FileState, PidState, RETIRED_WORKER_ID, worker_id};
use crate::app::App;
use crate::model::Family;
use crate::sources::multiprocess::format::FileKind;
use crate::sources::multiprocess::merge::{FxHashMap, Plan, Slot};
use crate::sources::multiprocess::{LogOnce, Stats};
use crate::store::{HeldSlots, HeldValue, Now, Store, WorkerKey};
use std::cell::RefCell;

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
    /// New values of series the worker holds, its keys unchanged: written through their
    /// positions in the store ([`Store::update_held`]), or applied series by series
    /// (validated) when the store does not hold them all.
    Held(HeldUpdate<'p>),
}

/// A worker's changed values by their series in its plan.
pub(super) struct HeldUpdate<'p> {
    pub(super) plan: &'p Plan,
    /// Where the plan's series are in the store: found by the store, kept by the worker.
    pub(super) slots: &'p RefCell<HeldSlots>,
    pub(super) values: Vec<HeldValue>,
    /// The changed series (sorted) and where their values are read, for the validated apply.
    pub(super) series: Vec<u32>,
    pub(super) files: FilesByRank<'p>,
    pub(super) skip_live: bool,
}

impl<'p> HeldUpdate<'p> {
    /// The same values as families, for the validated apply.
    pub(super) fn families(&self) -> Vec<Family<'p>> {
        let files = self.files;
        self.plan
            .families(Some(&self.series), self.skip_live, &move |s| files.value(s))
    }
}

/// A worker's readable files by kind rank: where a plan slot's value is read.
#[derive(Clone, Copy)]
pub(super) struct FilesByRank<'p>([Option<&'p FileState>; FileKind::COUNT]);

impl<'p> FilesByRank<'p> {
    pub(super) fn new(files: &[&'p FileState]) -> Self {
        let mut by_rank = [None; FileKind::COUNT];
        for f in files {
            if f.good {
                by_rank[f.kind.rank()] = Some(*f);
            }
        }
        FilesByRank(by_rank)
    }

    pub(super) fn file(&self, rank: usize) -> Option<&'p FileState> {
        self.0.get(rank).copied().flatten()
    }

    /// The value and timestamp at a plan slot.
    pub(super) fn value(&self, s: Slot) -> Option<(f64, f64)> {
        self.file((s >> 32) as usize)?.value(s as u32)
    }
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
