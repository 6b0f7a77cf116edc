//! One round over the directory, one method per phase, in the order they run:
//! [`Round::prepare`] (state the listing implies), [`Round::read_changed`],
//! [`Round::drop_vanished`], [`Round::check_liveness`], [`Round::fold_dead`],
//! [`Round::plan_and_apply`] (every update built before the store lock, applied under one
//! lock), [`Round::finish`] (release quiet workers, delete folded files). The listing itself
//! comes first, in [`DirState::round`], because a directory that cannot be listed ends the
//! round there.

use super::apply::{FilesByRank, HeldUpdate, Outcome, Update, apply_fallback};
use super::fold::build_plan;
use super::fs::Listing;
use super::{
    DirState, FileState, Fold, MAX_OPEN_FILES, PARTIAL_MAX_SHARE, PidState, RETIRED_WORKER_ID,
    RoundSummary, retired_key, worker_id, worker_key,
};
use crate::app::App;
use crate::model::Family;
use crate::sources::multiprocess::format::{FileKind, RETIRED_PID};
use crate::sources::multiprocess::liveness::{LivenessMode, Verdict};
use crate::sources::multiprocess::merge::{self, FxHashMap, FxHashSet, MergeIssues, Slot};
use crate::sources::multiprocess::retired::{self, FoldedFile};
use crate::sources::multiprocess::{LogOnce, Stats};
use crate::store::{Now, Scope, Store, WorkerKey};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// What a round is given from outside: the app (store and clock), the settings it reads,
/// the self-metrics and the once-per-condition log.
pub(super) struct RoundCtx<'c> {
    pub app: &'c App,
    pub stats: &'c Stats,
    pub log: &'c mut LogOnce,
    /// `multiprocessCompact`.
    pub compact: bool,
    /// `staleAfter`, for liveness from file changes.
    pub stale_after: Duration,
    /// `limits.maxMultiprocessFiles`.
    pub file_cap: usize,
}

/// The state of one round between its phases. Borrows the directory's state and this
/// round's listing.
pub(super) struct Round<'r> {
    state: &'r mut DirState,
    ctx: RoundCtx<'r>,
    listing: &'r Listing,
    /// Worker files in the listing (retired files excluded).
    present: FxHashSet<&'r str>,
    /// Retired files in the listing, by kind.
    retired_present: BTreeSet<FileKind>,
    /// Pids already gone before their files were read: their files are final.
    gone_before: FxHashSet<&'r str>,
    /// Values leaving the live files this round, folded into the retired totals.
    folds: Vec<(String, Fold)>,
    /// Liveness verdict per pid with files.
    alive: FxHashMap<String, bool>,
    /// Dead pids to fold, and whether their files must be read once more first.
    dead_to_fold: Vec<(String, bool)>,
    /// Pids whose store entries are dropped without retiring (their values are now in the
    /// retired totals).
    forget: FxHashSet<String>,
    live: usize,
    dead: usize,
}

impl<'r> Round<'r> {
    pub(super) fn new(state: &'r mut DirState, ctx: RoundCtx<'r>, listing: &'r Listing) -> Self {
        Round {
            state,
            ctx,
            listing,
            present: FxHashSet::default(),
            retired_present: BTreeSet::new(),
            gone_before: FxHashSet::default(),
            folds: Vec::new(),
            alive: FxHashMap::default(),
            dead_to_fold: Vec::new(),
            forget: FxHashSet::default(),
            live: 0,
            dead: 0,
        }
    }

    /// Runs the phases after the listing and says how the round went.
    pub(super) fn run(mut self) -> RoundSummary {
        self.prepare();
        self.read_changed();
        self.drop_vanished();
        let by_pid = self.check_liveness();
        self.fold_dead(by_pid);
        self.plan_and_apply();
        self.finish()
    }

    /// Phase 1 (after the listing): what the listing implies before anything is read: a
    /// store cleared since the last round, the retired totals still to load, the file cap,
    /// unknown files, and which pids are already gone.
    fn prepare(&mut self) {
        let state = &mut *self.state;
        let (stats, log) = (self.ctx.stats, &mut *self.ctx.log);
        // After a `POST /v1/clear` the store holds nothing of the directory: apply it whole.
        let epoch = self.ctx.app.store.read().epoch();
        if epoch != state.store_epoch {
            state.store_epoch = epoch;
            state.forget_store();
        }
        // The retired totals are loaded once the directory is readable (never overwritten
        // with an empty table because they could not be read).
        if !state.retired_loaded {
            state.load_retired(self.ctx.compact, stats, log);
        }
        state.skipped = self.listing.skipped;
        if self.listing.skipped > 0 {
            if log.first("file-cap") {
                tracing::warn!(dir = %state.dir.display(), skipped = self.listing.skipped, cap = self.ctx.file_cap, "more multiprocess files than limits.maxMultiprocessFiles: the files beyond it are not read (their values are missing) until others are gone");
            }
        } else {
            log.clear("file-cap");
        }
        self.present.reserve(self.listing.files.len());
        for unknown in &self.listing.unknown {
            if log.first(&format!("unknown:{unknown}")) {
                tracing::debug!(file = %unknown, "ignoring a .db file that is not a prometheus_client multiprocess file");
            }
        }

        // Liveness detection needs only the names; a pid already gone before its files are
        // read has final files (no second read before folding).
        if state.liveness.detect(
            &state.dir,
            self.listing.files.iter().map(|f| f.pid.as_str()),
        ) {
            tracing::info!(dir = %state.dir.display(), "the app's processes are visible: worker liveness from /proc, dead workers' files are compacted");
        }
        for file in &self.listing.files {
            if file.pid != RETIRED_PID
                && !self.gone_before.contains(file.pid.as_str())
                && state.liveness.gone(&file.pid)
            {
                self.gone_before.insert(&file.pid);
            }
        }
    }

    /// Phase 2: read what changed.
    fn read_changed(&mut self) {
        let state = &mut *self.state;
        let open = state.files.values().filter(|f| f.handle.is_some()).count();
        state.open_budget = MAX_OPEN_FILES.saturating_sub(open);
        let mut pool = std::mem::take(&mut state.look_pool);
        let mut looked = state.look_ahead(&self.listing.files, &mut pool);
        state.look_pool = pool;
        for (at, file) in self.listing.files.iter().enumerate() {
            if file.pid == RETIRED_PID {
                self.retired_present.insert(file.kind);
                continue;
            }
            let name = file.name.as_str();
            self.present.insert(name);
            if let Some((rec, _)) = state.folded.get(name) {
                match std::fs::metadata(state.dir.join(name)) {
                    Ok(m) if m.dev() == rec.dev && m.ino() == rec.ino => continue,
                    // A new file under a folded name: a new process with a reused pid.
                    _ => {
                        state.folded.remove(name);
                    }
                }
            }
            let gone = self.gone_before.contains(file.pid.as_str());
            if state.quiet_unchanged(name, &file.pid, file.ino, gone) {
                continue;
            }
            let looked = looked.get_mut(at).and_then(Option::take);
            state.read_file(file, &mut self.ctx, &mut self.folds, looked);
        }
        let present = &self.present;
        state
            .folded
            .retain(|name, _| present.contains(name.as_str()));
        state.round_number = state.round_number.wrapping_add(1);
    }

    /// Phase 3: files that disappeared without the sidecar deleting them (a wiped directory,
    /// `mark_process_dead` for live gauges): their last values leave with them.
    fn drop_vanished(&mut self) {
        let state = &mut *self.state;
        let vanished: Vec<String> = state
            .files
            .keys()
            .filter(|n| !self.present.contains(n.as_str()))
            .cloned()
            .collect();
        for name in vanished {
            if let Some(f) = state.files.remove(&name) {
                self.ctx.log.clear(&format!("corrupt:{name}"));
                let st = state.pids.entry(f.pid.clone()).or_default();
                st.full = true;
                st.plan = None;
                if self.ctx.compact && f.good && !f.released && f.kind.folds() {
                    self.folds.push((
                        f.pid,
                        Fold::Whole {
                            kind: f.kind,
                            raw: f.raw,
                        },
                    ));
                }
            }
        }
    }

    /// Phase 4: liveness, per pid. Returns the files of each pid.
    fn check_liveness(&mut self) -> FxHashMap<String, Vec<String>> {
        let state = &mut *self.state;
        let compact = self.ctx.compact;
        let mut by_pid: FxHashMap<String, Vec<String>> = FxHashMap::default();
        for (name, f) in &state.files {
            by_pid.entry(f.pid.clone()).or_default().push(name.clone());
        }
        let can_write =
            state.retired_loaded && state.retry_writes_at.is_none_or(|t| Instant::now() >= t);
        for (pid, names) in &by_pid {
            let files = names.iter().filter_map(|n| state.files.get(n));
            let (newest_write, last_change) = files.fold((UNIX_EPOCH, UNIX_EPOCH), |acc, f| {
                (acc.0.max(f.mtime), acc.1.max(f.changed))
            });
            let verdict = if self.gone_before.contains(pid.as_str()) {
                // No process: dead, and final (no need to ask /proc again).
                Verdict {
                    alive: false,
                    reliable: true,
                }
            } else {
                state.liveness.check(
                    &state.dir,
                    pid,
                    newest_write,
                    last_change,
                    self.ctx.stale_after,
                )
            };
            self.alive.insert(pid.clone(), verdict.alive);
            let mut was_quiet = false;
            if let Some(st) = state.pids.get_mut(pid) {
                was_quiet = st.quiet;
                st.quiet = !verdict.alive;
            }
            if !verdict.alive && verdict.reliable && compact && can_write {
                // Files read before the worker was found dead may miss its last writes, and a
                // worker that looked dead earlier (unproven) had its files only checked, not
                // read: a dead worker's files are final, so read them again, unless it was
                // already gone before they were read this round.
                let reread = !self.gone_before.contains(pid.as_str()) || was_quiet;
                self.dead_to_fold.push((pid.clone(), reread));
            }
        }

        // A released worker found dead (liveness became reliable since) is read back before
        // folding; if it cannot be, it is folded in a later round.
        let stats = self.ctx.stats;
        self.dead_to_fold.retain(|(pid, _)| {
            !state.pids.get(pid).is_some_and(|st| st.released) || state.restore(pid, stats)
        });
        by_pid
    }

    /// Phase 5, fold: the dead workers, vanished files and counter resets, written before use.
    fn fold_dead(&mut self, by_pid: FxHashMap<String, Vec<String>>) {
        let state = &mut *self.state;
        let (stats, compact) = (self.ctx.stats, self.ctx.compact);
        let mut newly_folded: Vec<(String, FoldedFile, bool)> = Vec::new();
        for (pid, reread) in &self.dead_to_fold {
            for name in by_pid.get(pid).into_iter().flatten() {
                if *reread {
                    state.reread_final(name, stats);
                }
                let Some(f) = state.files.get(name) else {
                    continue;
                };
                if f.good {
                    let keep = f.corrupt.is_some();
                    let rec = FoldedFile {
                        file: name.clone(),
                        dev: f.dev,
                        ino: f.ino,
                        len: f.raw.len() as u64,
                        hash: retired::fnv1a(&f.raw),
                    };
                    self.folds.push((
                        pid.clone(),
                        Fold::Whole {
                            kind: f.kind,
                            raw: f.raw.clone(),
                        },
                    ));
                    newly_folded.push((name.clone(), rec, keep));
                } else {
                    // Never readable: nothing to fold; left in place, ignored.
                    let rec = FoldedFile {
                        file: name.clone(),
                        dev: f.dev,
                        ino: f.ino,
                        len: 0,
                        hash: 0,
                    };
                    newly_folded.push((name.clone(), rec, true));
                }
            }
        }
        drop(by_pid);
        let missing_retired: Vec<FileKind> = if compact {
            state
                .retired
                .tables
                .iter()
                .filter(|(k, t)| !t.is_empty() && !self.retired_present.contains(k))
                .map(|(k, _)| *k)
                .collect()
        } else {
            Vec::new()
        };
        let mut committed = false;
        if state.retired_loaded
            && (!self.folds.is_empty() || !newly_folded.is_empty() || !missing_retired.is_empty())
        {
            committed = state.commit_folds(
                &self.folds,
                &newly_folded,
                &missing_retired,
                stats,
                self.ctx.log,
            );
        }

        if committed {
            for (pid, _) in &self.folds {
                self.forget.insert(pid.clone());
            }
            for (name, rec, keep) in newly_folded {
                state.files.remove(&name);
                state.folded.insert(name, (rec, keep));
            }
            for (pid, _) in &self.dead_to_fold {
                state.liveness.forget(pid);
                stats.folded_workers.inc();
                tracing::debug!(pid = %pid, "worker is dead: folded into the retired totals");
            }
        }

        // A released worker that must be applied again (the store lost it, its liveness
        // changed, one of its files changed) is read back from disk first.
        let to_restore: Vec<String> = state
            .pids
            .iter()
            .filter(|(pid, st)| {
                st.released
                    && (!st.in_store
                        || st.full
                        || self.forget.contains(pid.as_str())
                        || Some(&st.applied_alive) != self.alive.get(pid.as_str()))
            })
            .map(|(pid, _)| pid.clone())
            .collect();
        for pid in to_restore {
            state.restore(&pid, stats);
        }
    }

    /// Phases 6 and 7: build every update before taking the store lock, apply them under one
    /// lock, then record what the store now holds.
    fn plan_and_apply(&mut self) {
        let state = &mut *self.state;
        let stats = self.ctx.stats;
        let now = self.ctx.app.now();
        let retired_families: Option<Vec<Family<'_>>> = if !state.retired_in_store {
            let parsed = state.retired.parsed();
            let mut issues = MergeIssues::default();
            Some(merge::build_families(&parsed, &mut issues))
        } else {
            None
        };
        let mut pid_files: FxHashMap<&str, Vec<&FileState>> = FxHashMap::default();
        for f in state.files.values() {
            pid_files.entry(f.pid.as_str()).or_default().push(f);
        }
        let mut issues = MergeIssues::default();
        let verdicts = Verdicts {
            alive: &self.alive,
            forget: &self.forget,
        };
        let bad_keys = plan_workers(&mut state.pids, &pid_files, &verdicts, &mut issues);
        if bad_keys > 0 {
            stats.corrupt_keys(bad_keys as u64);
        }
        let (updates, live, dead) = build_updates(&state.pids, &pid_files, &self.alive);
        self.live = live;
        self.dead = dead;
        let gone: Vec<String> = state
            .pids
            .keys()
            .filter(|p| !pid_files.contains_key(p.as_str()))
            .cloned()
            .collect();

        // 7. Apply under one lock.
        let batch = Batch {
            retired: retired_families.as_deref(),
            updates: &updates,
            gone: &gone,
            forget: &self.forget,
            now,
        };
        let applied = store_batch(self.ctx.app, state, &batch, stats, self.ctx.log);
        drop(updates);
        drop(pid_files);
        drop(retired_families);
        let applied = applied.unwrap_or_else(|| {
            // Cleared since this round began: apply nothing now, everything next round.
            state.forget_store();
            Applied {
                retired: None,
                workers: Vec::new(),
                #[cfg(test)]
                held_updates: 0,
            }
        });

        // Bookkeeping of what the store now holds.
        if let Some(ok) = applied.retired {
            state.retired_in_store = ok;
        }
        #[cfg(test)]
        {
            state.held_updates += applied.held_updates;
        }
        for pid in &self.forget {
            if let Some(st) = state.pids.get_mut(pid) {
                st.in_store = false;
            }
        }
        for pid in &gone {
            state.pids.remove(pid);
        }
        for (pid, outcome, is_alive) in applied.workers {
            if let Some(st) = state.pids.get_mut(&pid) {
                st.changed.clear();
                match outcome {
                    Outcome::Applied | Outcome::Empty => {
                        st.full = false;
                        st.failed = false;
                        st.applied_alive = is_alive;
                        st.in_store = outcome == Outcome::Applied;
                    }
                    Outcome::Failed => {
                        st.full = true;
                        st.failed = true;
                    }
                }
            }
        }
        if issues.conflicts > 0 || issues.bad_buckets > 0 {
            stats.rejected(
                "merge_conflict",
                (issues.conflicts + issues.bad_buckets) as u64,
            );
        }
    }

    /// Phase 8: release quiet workers' copies, delete folded files now that their values are
    /// safe.
    fn finish(self) -> RoundSummary {
        let state = self.state;
        let compact = self.ctx.compact;
        // Quiet workers that can never be folded (no proof of death, or no compaction) keep
        // no copy of their files: the store holds their values, the files stay on disk.
        if !compact || state.liveness.mode() == LivenessMode::Mtime {
            state.release_quiet();
        }
        #[cfg(test)]
        if state.crash_before_delete {
            return state.summary(self.live, self.dead, compact);
        }
        if compact && state.retry_deletes_at.is_none_or(|t| Instant::now() >= t) {
            state.delete_folded(self.ctx.stats, self.ctx.log);
        }
        state.summary(self.live, self.dead, compact)
    }
}

/// The liveness verdicts of a round, as the update phases read them.
struct Verdicts<'v> {
    alive: &'v FxHashMap<String, bool>,
    forget: &'v FxHashSet<String>,
}

/// Plans first (they are kept in `pids`), before the families borrowing them are built;
/// marks who must be applied whole. Returns the number of keys that did not parse.
fn plan_workers(
    pids: &mut FxHashMap<String, PidState>,
    pid_files: &FxHashMap<&str, Vec<&FileState>>,
    verdicts: &Verdicts<'_>,
    issues: &mut MergeIssues,
) -> usize {
    let mut bad_keys = 0usize;
    for (pid, files) in pid_files {
        let is_alive = verdicts.alive.get(*pid).copied().unwrap_or(true);
        let st = pids.entry(pid.to_string()).or_default();
        if st.released {
            // Nothing to apply: the store holds its values (see the restore before).
            continue;
        }
        if verdicts.forget.contains(*pid) || !st.in_store {
            // The store holds nothing of this worker now: it must be applied whole,
            // even if its last apply was rejected.
            st.full = true;
            st.failed = st.failed && !verdicts.forget.contains(*pid);
        }
        if st.applied_alive != is_alive {
            st.full = true;
        }
        if st.plan.is_none() {
            st.failed = false;
            let (plan, entry_series, bad) = build_plan(files, issues);
            bad_keys += bad;
            st.plan = Some(plan);
            st.entry_series = entry_series;
            // The store positions were found for the old plan's numbering.
            st.held = Default::default();
            st.full = true;
        }
    }
    bad_keys
}

/// One update per pid: `(pid, update, alive)`.
type Updates<'p> = Vec<(&'p str, Update<'p>, bool)>;

/// Each pid's update from its plan and its files' current values: whole, or only the
/// series whose values changed. Also returns the counts of live and dead workers.
fn build_updates<'p>(
    pids: &'p FxHashMap<String, PidState>,
    pid_files: &FxHashMap<&'p str, Vec<&'p FileState>>,
    alive: &FxHashMap<String, bool>,
) -> (Updates<'p>, usize, usize) {
    let (mut live, mut dead) = (0, 0);
    let mut updates: Updates<'p> = Vec::new();
    for (pid, files) in pid_files {
        let is_alive = alive.get(*pid).copied().unwrap_or(true);
        if is_alive {
            live += 1;
        } else {
            dead += 1;
        }
        let Some(st) = pids.get(*pid) else {
            continue;
        };
        let Some(plan) = &st.plan else { continue };
        let by_rank = FilesByRank::new(files);
        let value_of = |s: Slot| by_rank.value(s);
        if st.failed && st.changed.is_empty() {
            // Rejected last time and nothing changed since: the same update would be
            // rejected again (a series limit, a type conflict held by another source).
            continue;
        }
        if st.full {
            let families = plan.families(None, !is_alive, &value_of);
            updates.push((pid, Update::Full(families), is_alive));
        } else if !st.changed.is_empty() {
            // (Sized up front: a collect from `filter_map` grows by doubling.)
            let mut series: Vec<u32> = Vec::with_capacity(st.changed.len());
            series.extend(st.changed.iter().filter_map(|&(rank, i)| {
                // Only entries of a file still readable.
                by_rank.file(rank as usize)?;
                let series = *st.entry_series.get(rank as usize)?.get(i as usize)?;
                (series != u32::MAX).then_some(series)
            }));
            series.sort_unstable();
            series.dedup();
            if series.is_empty() {
                continue;
            }
            if series.len() * PARTIAL_MAX_SHARE > plan.len() {
                let families = plan.families(None, !is_alive, &value_of);
                updates.push((pid, Update::Full(families), is_alive));
            } else {
                let mut values = Vec::with_capacity(series.len());
                values.extend(
                    series
                        .iter()
                        .filter_map(|&s| plan.held_value(s, !is_alive, &value_of)),
                );
                let held = HeldUpdate {
                    plan,
                    slots: &st.held,
                    values,
                    series,
                    files: by_rank,
                    skip_live: !is_alive,
                };
                updates.push((pid, Update::Held(held), is_alive));
            }
        }
    }
    (updates, live, dead)
}

/// Everything a round puts into the store, built before the lock is taken.
struct Batch<'b, 'p> {
    /// The retired totals' families, when the store does not hold the current ones.
    retired: Option<&'b [Family<'p>]>,
    updates: &'b Updates<'p>,
    /// Pids with no file left.
    gone: &'b [String],
    /// Pids whose values are now in the retired totals.
    forget: &'b FxHashSet<String>,
    now: Now,
}

/// What the store did with a [`Batch`].
struct Applied {
    /// Whether the retired totals were applied, when they were offered.
    retired: Option<bool>,
    /// `(pid, outcome, alive)` per update.
    workers: Vec<(String, Outcome, bool)>,
    /// Workers whose changed values went through their held positions.
    #[cfg(test)]
    held_updates: u64,
}

/// Applies a round's batch under one write lock. `None`: the store was cleared since the
/// round began, and nothing was applied.
fn store_batch(
    app: &App,
    state: &DirState,
    batch: &Batch<'_, '_>,
    stats: &Stats,
    log: &mut LogOnce,
) -> Option<Applied> {
    let (now, forget) = (batch.now, batch.forget);
    let mut store = app.store.write();
    if store.epoch() != state.store_epoch {
        return None;
    }
    let mut retired_applied = None;
    if let Some(families) = batch.retired {
        retired_applied = Some(if families.is_empty() {
            store.remove_worker(RETIRED_WORKER_ID);
            true
        } else {
            apply_fallback(&mut store, &retired_key(), families, now, true, stats, log)
        });
    }
    for pid in forget {
        store.forget_worker(&worker_id(pid));
    }
    for pid in batch.gone {
        if !forget.contains(pid) {
            // Vanished without a committed fold: retire in memory.
            store.remove_worker(&worker_id(pid));
        }
    }
    let mut applied: Vec<(String, Outcome, bool)> = Vec::with_capacity(batch.updates.len());
    #[cfg(test)]
    let mut held_updates = 0;
    for (pid, update, is_alive) in batch.updates {
        let worker = worker_key(pid);
        let outcome = match update {
            Update::Full(families) if families.is_empty() => {
                store.forget_worker(&worker.id);
                Outcome::Empty
            }
            Update::Full(families) => {
                if apply_fallback(&mut store, &worker, families, now, false, stats, log) {
                    Outcome::Applied
                } else {
                    Outcome::Failed
                }
            }
            Update::Held(held) if held.values.is_empty() => Outcome::Applied,
            Update::Held(held) => {
                let mut slots = held.slots.borrow_mut();
                match store.update_held(&worker, &held.values, held.plan, &mut slots, now) {
                    Ok(_) => {
                        #[cfg(test)]
                        {
                            held_updates += 1;
                        }
                        Outcome::Applied
                    }
                    // Not all held (a series the store dropped meanwhile): validated apply.
                    Err(_) => apply_series(&mut store, &worker, &held.families(), now, stats),
                }
            }
        };
        applied.push((pid.to_string(), outcome, *is_alive));
    }
    for (pid, st) in &state.pids {
        if st.in_store && !forget.contains(pid) {
            store.touch(&worker_id(pid), now);
        }
    }
    if state.retired_in_store || retired_applied == Some(true) {
        store.touch(RETIRED_WORKER_ID, now);
    }
    Some(Applied {
        retired: retired_applied,
        workers: applied,
        #[cfg(test)]
        held_updates,
    })
}

/// Applies only the series in `families` (the rest of the worker's values stay).
fn apply_series(
    store: &mut Store,
    worker: &WorkerKey,
    families: &[Family<'_>],
    now: Now,
    stats: &Stats,
) -> Outcome {
    match store.apply(worker, families, Scope::Series, now) {
        Ok(_) => Outcome::Applied,
        Err(e) => {
            // The next round re-applies the whole worker.
            stats.rejected(e.reason(), 1);
            Outcome::Failed
        }
    }
}
