//! One pass over the directory: read what changed, decide who is alive, fold the dead into
//! the persisted totals, update the store, delete folded files.
//!
//! Invariants, in the order a round relies on them:
//! - a worker file is only ever read up to its `used` size, and a file that cannot be read
//!   keeps its last good values (never dropped, never double counted);
//! - a dead worker's files are read once more after it is found dead (they are final then),
//!   and their values reach the retired files (written atomically, directory fsynced) before
//!   the store forgets the worker and before any file is deleted;
//! - every store change of a round happens under one write lock, so no render sees a worker
//!   both folded and live, or neither;
//! - with `multiprocessCompact: false` the directory is read-only for the sidecar: departed
//!   values are retired by the store (in memory), as for any other source.
//!
//! Cost: a file whose size did not change is compared value slot by value slot with the last
//! read (the client only ever appends keys and rewrites values in place); only the series
//! whose values changed are re-applied (`Scope::Series`), from a [`Plan`] built when the
//! worker's keys last changed, so steady state parses no JSON at all.

use super::LogOnce;
use super::Stats;
use super::format::{self, FileError, FileKind, RETIRED_PID};
use super::liveness::{Liveness, LivenessMode, LivenessPolicy};
use super::merge::{self, FxHashMap, FxHashSet, MergeIssues, Parsed, Plan, PlanBuilder, Slot};
use super::retired::{self, FOLDABLE, FoldedFile, Retired, Table};
use crate::app::App;
use crate::model::Family;
use crate::store::{Now, Scope, Source, Store, StoreError, WorkerKey};
use monasca_config::SidecarConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The store id of the worker holding the persisted retired totals.
pub const RETIRED_WORKER_ID: &str = "multiprocess:retired";

/// Largest `used` size read. The real client needs ~150 bytes per series, so this is far
/// beyond `maxSeriesPerWorker`; it stops a corrupt header from making the sidecar allocate
/// gigabytes.
pub const MAX_FILE_BYTES: usize = 256 << 20;

/// First read of a file of unknown size, like the client's reader: a page, then the rest of
/// `used` if it is larger (files are preallocated to 64 KiB, mostly unused).
const INITIAL_READ: usize = 4096;

/// At most this many worker files are kept open between scans (a steady file then costs a
/// single `pread` per scan); beyond, files are opened for each read.
const MAX_OPEN_FILES: usize = 512;

/// A quiet (stale) worker's unchanged files are read anyway every this many rounds, in case
/// a write did not move the mtime (mmap writes to a page not yet written back do not).
const QUIET_REREAD_ROUNDS: u64 = 10;

/// How long to wait before retrying a failed write or delete in the directory.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Above this share of changed series, a worker is re-applied whole (cheaper than the
/// bookkeeping of a partial update).
const PARTIAL_MAX_SHARE: usize = 4;

/// The store id of a pid's worker.
pub fn worker_id(pid: &str) -> String {
    format!("multiprocess:pid={pid}")
}

fn worker_key(pid: &str) -> WorkerKey {
    WorkerKey::new(
        Source::Multiprocess,
        worker_id(pid),
        vec![("pid".to_string(), pid.to_string())],
    )
}

fn retired_key() -> WorkerKey {
    WorkerKey::new(
        Source::Multiprocess,
        RETIRED_WORKER_ID,
        vec![("pid".to_string(), RETIRED_PID.to_string())],
    )
}

/// A plan slot: the file kind's rank and the value's offset in that file.
fn slot(kind: FileKind, offset: u32) -> Slot {
    ((kind.rank() as u64) << 32) | u64::from(offset)
}

/// What the sidecar knows about one worker file.
#[derive(Debug)]
struct FileState {
    kind: FileKind,
    pid: String,
    dev: u64,
    ino: u64,
    /// The last good content, `used` bytes. Meaningful only when `good`.
    raw: Vec<u8>,
    /// Value offsets of the entries of `raw`.
    offsets: Vec<u32>,
    good: bool,
    mtime: SystemTime,
    /// When the content was last seen to change (the file's mtime at first sight).
    changed: SystemTime,
    /// Why the current content cannot be read, if it cannot.
    corrupt: Option<&'static str>,
    /// (mtime, length) at the last `stat` of a quiet file.
    quiet_stat: Option<(SystemTime, u64)>,
    /// Kept open between scans (see [`MAX_OPEN_FILES`]).
    handle: Option<std::fs::File>,
    /// `raw` and `offsets` were dropped (a quiet worker that can never be folded): only
    /// `released_len` and `released_hash` say what the content was. Read back from disk
    /// before the worker is applied again ([`DirState::restore`]).
    released: bool,
    released_len: usize,
    released_hash: u64,
}

impl FileState {
    fn new(kind: FileKind, pid: &str, ident: Ident, raw: Vec<u8>, offsets: Vec<u32>) -> Self {
        FileState {
            kind,
            pid: pid.to_string(),
            dev: ident.dev,
            ino: ident.ino,
            raw,
            offsets,
            good: true,
            mtime: ident.mtime,
            changed: ident.mtime,
            corrupt: None,
            quiet_stat: None,
            handle: None,
            released: false,
            released_len: 0,
            released_hash: 0,
        }
    }

    /// Drops the copy of the content, keeping what tells a change.
    fn release(&mut self) {
        self.released_len = self.raw.len();
        self.released_hash = retired::fnv1a(&self.raw);
        self.raw = Vec::new();
        self.offsets = Vec::new();
        self.handle = None;
        self.released = true;
    }

    fn value(&self, offset: u32) -> Option<(f64, f64)> {
        format::value_at(&self.raw, offset as usize)
    }
}

#[derive(Debug, Default)]
struct PidState {
    in_store: bool,
    /// Apply the whole worker (keys changed, liveness changed, never applied, or a failure).
    full: bool,
    /// Value slots changed since the last apply (keys unchanged).
    changed: Vec<Slot>,
    /// The last apply included live gauges.
    applied_alive: bool,
    /// The last apply was rejected; retried when the files change.
    failed: bool,
    /// The structure of the worker's values; None when its keys changed.
    plan: Option<Plan>,
    /// Per file kind (by rank), per entry of the file (in `offsets` order): its series in
    /// `plan`, or `u32::MAX` when it does not contribute.
    entry_series: Vec<Vec<u32>>,
    /// Found dead (or stale) last round: its files are only checked, not read (see
    /// [`DirState::quiet_unchanged`]).
    quiet: bool,
    /// Its files' contents and its plan were dropped (see [`FileState::release`]); the store
    /// holds its values.
    released: bool,
}

/// Identity of a file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ident {
    dev: u64,
    ino: u64,
    mtime: SystemTime,
}

/// A change to the retired totals prepared in a round, written before it takes effect.
enum Fold {
    /// Every value of an old content (a dead or replaced file).
    Whole { kind: FileKind, raw: Vec<u8> },
    /// Only the entries at these value offsets (counters that went down: `Counter.reset()`).
    Entries {
        kind: FileKind,
        raw: Vec<u8>,
        offsets: Vec<usize>,
    },
}

/// What applying a pid's update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Applied,
    /// Nothing to show (only live gauges of a dead worker): not in the store.
    Empty,
    /// Rejected: the store keeps what it had; the whole worker is re-applied next round.
    Failed,
}

/// One pid's update for the store, built before the lock is taken.
enum Update<'p> {
    Full(Vec<Family<'p>>),
    Partial(Vec<Family<'p>>),
}

/// Everything known about one directory.
pub struct DirState {
    pub dir: PathBuf,
    files: FxHashMap<String, FileState>,
    pids: FxHashMap<String, PidState>,
    retired: Retired,
    retired_loaded: bool,
    /// The store holds the current retired totals.
    retired_in_store: bool,
    /// Worker files already folded into the retired totals: deleted as soon as possible,
    /// ignored until then. `bool`: keep (unreadable when folded, so never deleted).
    folded: FxHashMap<String, (FoldedFile, bool)>,
    liveness: Liveness,
    scratch: Vec<u8>,
    /// A worker file was in prometheus_client's layout before 0.17 (no timestamps): the
    /// retired files are then written in it too. Sticky: one directory, one client version.
    legacy_layout: bool,
    /// Files that may still be kept open this round.
    open_budget: usize,
    /// Rounds so far (quiet files are read every [`QUIET_REREAD_ROUNDS`]).
    round_number: u64,
    retry_writes_at: Option<Instant>,
    retry_deletes_at: Option<Instant>,
    /// The store's epoch when its values were last applied (see [`Store::epoch`]).
    store_epoch: u64,
    /// Worker files over the cap in the last listing.
    skipped: usize,
    /// Tests: stop every round right before deleting folded files, as a crash would.
    #[cfg(test)]
    pub(crate) crash_before_delete: bool,
}

/// How a round went, for self-metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundSummary {
    pub files: usize,
    pub live: usize,
    pub dead: usize,
    pub retired_series: usize,
    pub liveness: Option<LivenessMode>,
    /// Worker files left unread because of `limits.maxMultiprocessFiles`.
    pub skipped: usize,
    /// Files held without a copy of their content (quiet workers that cannot be folded).
    pub released: usize,
    /// Why dead workers' files are not compacted, if they are not.
    pub not_compacting: Option<NotCompacting>,
}

/// Why the directory is not compacted: a fixed set (metric label values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotCompacting {
    /// Liveness from file changes: the app's processes are not visible in `/proc` (no shared
    /// process namespace, or the config says `mtime`), so no worker can be proven dead.
    MtimeLiveness,
    /// `multiprocessCompact: false`.
    CompactionOff,
}

impl NotCompacting {
    pub const ALL: [NotCompacting; 2] =
        [NotCompacting::MtimeLiveness, NotCompacting::CompactionOff];

    pub fn label(self) -> &'static str {
        match self {
            NotCompacting::MtimeLiveness => "mtime_liveness",
            NotCompacting::CompactionOff => "compaction_off",
        }
    }
}

impl DirState {
    pub fn new(dir: PathBuf, policy: LivenessPolicy) -> Self {
        DirState {
            dir,
            files: FxHashMap::default(),
            pids: FxHashMap::default(),
            retired: Retired::default(),
            retired_loaded: false,
            retired_in_store: false,
            folded: FxHashMap::default(),
            liveness: Liveness::new(policy),
            scratch: Vec::new(),
            legacy_layout: false,
            open_budget: 0,
            round_number: 0,
            retry_writes_at: None,
            retry_deletes_at: None,
            store_epoch: 0,
            skipped: 0,
            #[cfg(test)]
            crash_before_delete: false,
        }
    }

    /// Applies a (reloaded) liveness policy.
    pub fn set_liveness_policy(&mut self, policy: LivenessPolicy) {
        self.liveness.set_policy(policy);
    }

    /// The store no longer holds any of the directory's values (it was cleared): every worker
    /// and the retired totals are applied whole next time.
    fn forget_store(&mut self) {
        self.retired_in_store = false;
        for st in self.pids.values_mut() {
            st.in_store = false;
            st.failed = false;
            st.full = true;
        }
    }

    /// The directory is no longer read (config changed): its workers leave the store the
    /// ordinary way, retiring their counters in memory.
    pub fn detach(self, store: &mut Store) {
        for (pid, state) in &self.pids {
            if state.in_store {
                store.retire_worker(&worker_id(pid));
            }
        }
        store.retire_worker(RETIRED_WORKER_ID);
    }

    /// One pass. See the module documentation for the invariants.
    pub fn round(
        &mut self,
        app: &App,
        cfg: &SidecarConfig,
        stats: &Stats,
        log: &mut LogOnce,
    ) -> RoundSummary {
        let compact = cfg.multiprocess_compact;
        let stale_after = cfg.stale_after.as_std();
        // 1. List the directory; new files only up to the cap, counted before anything is
        // read or allocated for them.
        let cap = usize::try_from(cfg.limits.max_multiprocess_files).unwrap_or(usize::MAX);
        let tracked = self.files.len() + self.folded.len();
        let known = |name: &str| self.files.contains_key(name) || self.folded.contains_key(name);
        let listing = match list_dir(&self.dir, cap.saturating_sub(tracked), &known) {
            Ok(l) => {
                log.clear("list");
                l
            }
            Err(e) => {
                if log.first("list") {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the multiprocess directory; keeping the last values");
                }
                stats.error("list");
                touch_all(app, &self.pids, self.retired_in_store);
                return self.summary(0, 0, compact);
            }
        };
        // After a `POST /v1/clear` the store holds nothing of the directory: apply it whole.
        let epoch = app.store.read().epoch();
        if epoch != self.store_epoch {
            self.store_epoch = epoch;
            self.forget_store();
        }
        // The retired totals are loaded once the directory is readable (never overwritten
        // with an empty table because they could not be read).
        if !self.retired_loaded {
            self.load_retired(compact, stats, log);
        }
        self.skipped = listing.skipped;
        if listing.skipped > 0 {
            if log.first("file-cap") {
                tracing::warn!(dir = %self.dir.display(), skipped = listing.skipped, cap, "more multiprocess files than limits.maxMultiprocessFiles: the files beyond it are not read (their values are missing) until others are gone");
            }
        } else {
            log.clear("file-cap");
        }
        let mut present: FxHashSet<&str> = FxHashSet::default();
        present.reserve(listing.files.len());
        let mut retired_present: BTreeSet<FileKind> = BTreeSet::new();
        let mut folds: Vec<(String, Fold)> = Vec::new();
        for unknown in &listing.unknown {
            if log.first(&format!("unknown:{unknown}")) {
                tracing::debug!(file = %unknown, "ignoring a .db file that is not a prometheus_client multiprocess file");
            }
        }

        // Liveness detection needs only the names; a pid already gone before its files are
        // read has final files (no second read before folding).
        if self.liveness.detect(
            &self.dir,
            listing.files.iter().map(|(_, _, pid, _)| pid.as_str()),
        ) {
            tracing::info!(dir = %self.dir.display(), "the app's processes are visible: worker liveness from /proc, dead workers' files are compacted");
        }
        let mut gone_before: FxHashSet<&str> = FxHashSet::default();
        {
            for (_, _, pid, _) in &listing.files {
                if pid != RETIRED_PID
                    && !gone_before.contains(pid.as_str())
                    && self.liveness.gone(pid)
                {
                    gone_before.insert(pid);
                }
            }
        }

        // 2. Read what changed.
        let open = self.files.values().filter(|f| f.handle.is_some()).count();
        self.open_budget = MAX_OPEN_FILES.saturating_sub(open);
        for (name, kind, pid, ino) in &listing.files {
            if pid == RETIRED_PID {
                retired_present.insert(*kind);
                continue;
            }
            present.insert(name);
            if let Some((rec, _)) = self.folded.get(name) {
                match std::fs::metadata(self.dir.join(name)) {
                    Ok(m) if m.dev() == rec.dev && m.ino() == rec.ino => continue,
                    // A new file under a folded name: a new process with a reused pid.
                    _ => {
                        self.folded.remove(name);
                    }
                }
            }
            if self.quiet_unchanged(name, pid, *ino, gone_before.contains(pid.as_str())) {
                continue;
            }
            self.read_file(name, *kind, pid, *ino, compact, stats, log, &mut folds);
        }
        self.folded
            .retain(|name, _| present.contains(name.as_str()));
        self.round_number = self.round_number.wrapping_add(1);

        // 3. Files that disappeared without the sidecar deleting them (a wiped directory,
        // `mark_process_dead` for live gauges): their last values leave with them.
        let vanished: Vec<String> = self
            .files
            .keys()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        for name in vanished {
            if let Some(f) = self.files.remove(&name) {
                log.clear(&format!("corrupt:{name}"));
                let st = self.pids.entry(f.pid.clone()).or_default();
                st.full = true;
                st.plan = None;
                if compact && f.good && !f.released && f.kind.folds() {
                    folds.push((
                        f.pid,
                        Fold::Whole {
                            kind: f.kind,
                            raw: f.raw,
                        },
                    ));
                }
            }
        }

        // 4. Liveness, per pid.
        let mut by_pid: FxHashMap<String, Vec<String>> = FxHashMap::default();
        for (name, f) in &self.files {
            by_pid.entry(f.pid.clone()).or_default().push(name.clone());
        }
        let mut alive: FxHashMap<String, bool> = FxHashMap::default();
        // Dead pids to fold, and whether their files must be read once more first.
        let mut dead_to_fold: Vec<(String, bool)> = Vec::new();
        let can_write =
            self.retired_loaded && self.retry_writes_at.is_none_or(|t| Instant::now() >= t);
        for (pid, names) in &by_pid {
            let files = names.iter().filter_map(|n| self.files.get(n));
            let (newest_write, last_change) = files.fold((UNIX_EPOCH, UNIX_EPOCH), |acc, f| {
                (acc.0.max(f.mtime), acc.1.max(f.changed))
            });
            let verdict = if gone_before.contains(pid.as_str()) {
                // No process: dead, and final (no need to ask /proc again).
                super::liveness::Verdict {
                    alive: false,
                    reliable: true,
                }
            } else {
                self.liveness
                    .check(&self.dir, pid, newest_write, last_change, stale_after)
            };
            alive.insert(pid.clone(), verdict.alive);
            let mut was_quiet = false;
            if let Some(st) = self.pids.get_mut(pid) {
                was_quiet = st.quiet;
                st.quiet = !verdict.alive;
            }
            if !verdict.alive && verdict.reliable && compact && can_write {
                // Files read before the worker was found dead may miss its last writes, and a
                // worker that looked dead earlier (unproven) had its files only checked, not
                // read: a dead worker's files are final, so read them again, unless it was
                // already gone before they were read this round.
                let reread = !gone_before.contains(pid.as_str()) || was_quiet;
                dead_to_fold.push((pid.clone(), reread));
            }
        }

        // A released worker found dead (liveness became reliable since) is read back before
        // folding; if it cannot be, it is folded in a later round.
        dead_to_fold.retain(|(pid, _)| {
            !self.pids.get(pid).is_some_and(|st| st.released) || self.restore(pid, stats)
        });

        // 5. Fold: the dead workers, vanished files and counter resets, written before use.
        let mut newly_folded: Vec<(String, FoldedFile, bool)> = Vec::new();
        for (pid, reread) in &dead_to_fold {
            for name in by_pid.get(pid).into_iter().flatten() {
                if *reread {
                    self.reread_final(name, stats);
                }
                let Some(f) = self.files.get(name) else {
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
                    folds.push((
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
            self.retired
                .tables
                .iter()
                .filter(|(k, t)| !t.is_empty() && !retired_present.contains(k))
                .map(|(k, _)| *k)
                .collect()
        } else {
            Vec::new()
        };
        let mut committed = false;
        if self.retired_loaded
            && (!folds.is_empty() || !newly_folded.is_empty() || !missing_retired.is_empty())
        {
            committed = self.commit_folds(&folds, &newly_folded, &missing_retired, stats, log);
        }

        // Pids whose store entries must be dropped without retiring (their values are now in
        // the retired totals).
        let mut forget: FxHashSet<String> = FxHashSet::default();
        if committed {
            for (pid, _) in &folds {
                forget.insert(pid.clone());
            }
            for (name, rec, keep) in newly_folded {
                self.files.remove(&name);
                self.folded.insert(name, (rec, keep));
            }
            for (pid, _) in &dead_to_fold {
                self.liveness.forget(pid);
                stats.folded_workers.inc();
                tracing::debug!(pid = %pid, "worker is dead: folded into the retired totals");
            }
        }

        // A released worker that must be applied again (the store lost it, its liveness
        // changed, one of its files changed) is read back from disk first.
        let to_restore: Vec<String> = self
            .pids
            .iter()
            .filter(|(pid, st)| {
                st.released
                    && (!st.in_store
                        || st.full
                        || forget.contains(pid.as_str())
                        || Some(&st.applied_alive) != alive.get(pid.as_str()))
            })
            .map(|(pid, _)| pid.clone())
            .collect();
        for pid in to_restore {
            self.restore(&pid, stats);
        }

        // 6. Build every update before taking the store lock.
        let now = app.now();
        let retired_families: Option<Vec<Family<'_>>> = if !self.retired_in_store {
            let parsed = self.retired.parsed();
            let mut issues = MergeIssues::default();
            Some(merge::build_families(&parsed, &mut issues))
        } else {
            None
        };
        let mut pid_files: FxHashMap<&str, Vec<&FileState>> = FxHashMap::default();
        for f in self.files.values() {
            pid_files.entry(f.pid.as_str()).or_default().push(f);
        }
        let mut bad_keys = 0usize;
        let mut issues = MergeIssues::default();
        let (mut live, mut dead) = (0, 0);
        // Plans first (they are kept in `self.pids`), then the families borrowing them.
        for (pid, files) in &pid_files {
            let is_alive = alive.get(*pid).copied().unwrap_or(true);
            let st = self.pids.entry(pid.to_string()).or_default();
            if st.released {
                // Nothing to apply: the store holds its values (see the restore above).
                continue;
            }
            if forget.contains(*pid) || !st.in_store {
                // The store holds nothing of this worker now: it must be applied whole,
                // even if its last apply was rejected.
                st.full = true;
                st.failed = st.failed && !forget.contains(*pid);
            }
            if st.applied_alive != is_alive {
                st.full = true;
            }
            if st.plan.is_none() {
                st.failed = false;
                let (plan, entry_series, bad) = build_plan(files, &mut issues);
                bad_keys += bad;
                st.plan = Some(plan);
                st.entry_series = entry_series;
                st.full = true;
            }
        }
        if bad_keys > 0 {
            stats.corrupt_keys(bad_keys as u64);
        }
        let mut updates: Vec<(&str, Update<'_>, bool)> = Vec::new();
        for (pid, files) in &pid_files {
            let is_alive = alive.get(*pid).copied().unwrap_or(true);
            if is_alive {
                live += 1;
            } else {
                dead += 1;
            }
            let Some(st) = self.pids.get(*pid) else {
                continue;
            };
            let Some(plan) = &st.plan else { continue };
            let mut by_rank: [Option<&FileState>; FileKind::COUNT] = [None; FileKind::COUNT];
            for f in files {
                if f.good {
                    by_rank[f.kind.rank()] = Some(f);
                }
            }
            let value_of = |s: Slot| {
                by_rank
                    .get((s >> 32) as usize)
                    .copied()
                    .flatten()
                    .and_then(|f| f.value(s as u32))
            };
            if st.failed && st.changed.is_empty() {
                // Rejected last time and nothing changed since: the same update would be
                // rejected again (a series limit, a type conflict held by another source).
                continue;
            }
            if st.full {
                let families = plan.families(None, !is_alive, &value_of);
                updates.push((pid, Update::Full(families), is_alive));
            } else if !st.changed.is_empty() {
                let mut series: Vec<u32> = st
                    .changed
                    .iter()
                    .filter_map(|&s| {
                        let rank = (s >> 32) as usize;
                        let file = by_rank.get(rank).copied().flatten()?;
                        let i = file.offsets.binary_search(&(s as u32)).ok()?;
                        let series = *st.entry_series.get(rank)?.get(i)?;
                        (series != u32::MAX).then_some(series)
                    })
                    .collect();
                series.sort_unstable();
                series.dedup();
                if series.is_empty() {
                    continue;
                }
                if series.len() * PARTIAL_MAX_SHARE > plan.len() {
                    let families = plan.families(None, !is_alive, &value_of);
                    updates.push((pid, Update::Full(families), is_alive));
                } else {
                    let families = plan.families(Some(&series), !is_alive, &value_of);
                    updates.push((pid, Update::Partial(families), is_alive));
                }
            }
        }
        let gone: Vec<String> = self
            .pids
            .keys()
            .filter(|p| !pid_files.contains_key(p.as_str()))
            .cloned()
            .collect();

        // 7. Apply under one lock.
        let mut applied: Vec<(String, Outcome, bool)> = Vec::with_capacity(updates.len());
        let mut retired_applied = None;
        let mut raced = false;
        'apply: {
            let mut store = app.store.write();
            if store.epoch() != self.store_epoch {
                // Cleared since this round began: apply nothing now, everything next round.
                raced = true;
                break 'apply;
            }
            if let Some(families) = &retired_families {
                retired_applied = Some(if families.is_empty() {
                    store.remove_worker(RETIRED_WORKER_ID);
                    true
                } else {
                    apply_fallback(&mut store, &retired_key(), families, now, true, stats, log)
                });
            }
            for pid in &forget {
                store.forget_worker(&worker_id(pid));
            }
            for pid in &gone {
                if !forget.contains(pid) {
                    // Vanished without a committed fold: retire in memory.
                    store.remove_worker(&worker_id(pid));
                }
            }
            for (pid, update, is_alive) in &updates {
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
                    Update::Partial(families) => {
                        match store.apply(&worker, families, Scope::Series, now) {
                            Ok(_) => Outcome::Applied,
                            Err(e) => {
                                // The next round re-applies the whole worker.
                                stats.rejected(e.reason(), 1);
                                Outcome::Failed
                            }
                        }
                    }
                };
                applied.push((pid.to_string(), outcome, *is_alive));
            }
            for (pid, st) in &self.pids {
                if st.in_store && !forget.contains(pid) {
                    store.touch(&worker_id(pid), now);
                }
            }
            if self.retired_in_store || retired_applied == Some(true) {
                store.touch(RETIRED_WORKER_ID, now);
            }
        }
        drop(updates);
        drop(pid_files);
        drop(retired_families);
        if raced {
            self.forget_store();
        }

        // Bookkeeping of what the store now holds.
        if let Some(ok) = retired_applied {
            self.retired_in_store = ok;
        }
        for pid in &forget {
            if let Some(st) = self.pids.get_mut(pid) {
                st.in_store = false;
            }
        }
        for pid in &gone {
            self.pids.remove(pid);
        }
        for (pid, outcome, is_alive) in applied {
            if let Some(st) = self.pids.get_mut(&pid) {
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

        // Quiet workers that can never be folded (no proof of death, or no compaction) keep
        // no copy of their files: the store holds their values, the files stay on disk.
        if !compact || self.liveness.mode() == LivenessMode::Mtime {
            self.release_quiet();
        }

        // 8. Delete folded files, now that their values are safe.
        #[cfg(test)]
        if self.crash_before_delete {
            return self.summary(live, dead, compact);
        }
        if compact && self.retry_deletes_at.is_none_or(|t| Instant::now() >= t) {
            self.delete_folded(stats, log);
        }
        self.summary(live, dead, compact)
    }

    /// Folds into copies of the affected tables, writes them, and installs them only when
    /// written. Returns false (nothing changed) when the directory cannot be written.
    fn commit_folds(
        &mut self,
        folds: &[(String, Fold)],
        newly_folded: &[(String, FoldedFile, bool)],
        missing_retired: &[FileKind],
        stats: &Stats,
        log: &mut LogOnce,
    ) -> bool {
        let mut staged: BTreeMap<FileKind, Table> = BTreeMap::new();
        let base = &self.retired;
        let mut bad_keys = 0;
        fn stage<'t>(
            staged: &'t mut BTreeMap<FileKind, Table>,
            base: &Retired,
            kind: FileKind,
        ) -> Option<&'t mut Table> {
            if !kind.folds() {
                return None;
            }
            Some(
                staged
                    .entry(kind)
                    .or_insert_with(|| base.tables.get(&kind).cloned().unwrap_or_default()),
            )
        }
        for (_, fold) in folds {
            let (kind, raw, only) = match fold {
                Fold::Whole { kind, raw } => (*kind, raw, None),
                Fold::Entries { kind, raw, offsets } => (*kind, raw, Some(offsets)),
            };
            if let Some(table) = stage(&mut staged, base, kind) {
                bad_keys += fold_raw(table, kind, raw, only.map(Vec::as_slice));
            }
        }
        for (_, rec, _) in newly_folded {
            if let Some(name) = format::parse_file_name(&rec.file) {
                stage(&mut staged, base, name.kind);
            }
        }
        for kind in missing_retired {
            stage(&mut staged, base, *kind);
        }
        if bad_keys > 0 {
            stats.corrupt_keys(bad_keys as u64);
        }
        // Each table records the files folded into it that may still exist.
        for (kind, table) in staged.iter_mut() {
            table.folded = self
                .folded
                .values()
                .map(|(rec, _)| rec)
                .chain(newly_folded.iter().map(|(_, rec, _)| rec))
                .filter(|rec| {
                    rec.len > 0
                        && format::parse_file_name(&rec.file).is_some_and(|n| n.kind == *kind)
                })
                .cloned()
                .collect();
        }
        // The retired files stay readable by the workers' own MultiProcessCollector.
        let layout = if self.legacy_layout {
            format::Layout::Legacy
        } else {
            format::Layout::Current
        };
        match write_tables(&self.dir, &staged, layout) {
            Ok(()) => {
                self.retry_writes_at = None;
                log.clear("persist");
                for (kind, table) in staged {
                    self.retired.tables.insert(kind, table);
                }
                self.retired_in_store = false;
                true
            }
            Err(e) => {
                if log.first("persist") {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the retired totals; dead workers are kept as they are and their files stay");
                }
                stats.error("persist");
                self.retry_writes_at = Some(Instant::now() + RETRY_AFTER);
                false
            }
        }
    }

    fn summary(&self, live: usize, dead: usize, compact: bool) -> RoundSummary {
        let not_compacting = if !compact {
            Some(NotCompacting::CompactionOff)
        } else if self.liveness.mode() == LivenessMode::Mtime {
            Some(NotCompacting::MtimeLiveness)
        } else {
            None
        };
        RoundSummary {
            files: self.files.len() + self.folded.len(),
            live,
            dead,
            retired_series: self.retired.series(),
            liveness: Some(self.liveness.mode()),
            skipped: self.skipped,
            released: self.files.values().filter(|f| f.released).count(),
            not_compacting,
        }
    }

    /// Drops the file copies and plans of quiet workers that are fully applied.
    fn release_quiet(&mut self) {
        let releasable: FxHashSet<String> = self
            .pids
            .iter()
            .filter(|(_, st)| {
                st.quiet
                    && !st.released
                    && st.in_store
                    && !st.full
                    && !st.failed
                    && !st.applied_alive
                    && st.changed.is_empty()
            })
            .map(|(pid, _)| pid.clone())
            .collect();
        if releasable.is_empty() {
            return;
        }
        for f in self.files.values_mut() {
            if f.good && f.corrupt.is_none() && !f.released && releasable.contains(&f.pid) {
                f.release();
            }
        }
        for pid in &releasable {
            if let Some(st) = self.pids.get_mut(pid) {
                st.released = true;
                st.plan = None;
                st.entry_series = Vec::new();
            }
        }
    }

    /// Reads a released worker's files back from disk, so it can be applied or folded again.
    /// Returns false (the worker stays released) when one of them cannot be read as the same
    /// file.
    fn restore(&mut self, pid: &str, stats: &Stats) -> bool {
        let names: Vec<String> = self
            .files
            .iter()
            .filter(|(_, f)| f.pid == pid && f.released)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Ok((ident, Ok(()))) = read_db(
                &self.dir.join(&name),
                &mut self.scratch,
                &mut self.legacy_layout,
            ) else {
                return false;
            };
            stats.file_reads.inc();
            let Ok(offsets) = layout(&self.scratch) else {
                return false;
            };
            let Some(f) = self.files.get_mut(&name) else {
                continue;
            };
            if ident.dev != f.dev || ident.ino != f.ino {
                return false;
            }
            f.raw = std::mem::take(&mut self.scratch);
            f.offsets = offsets;
            f.mtime = ident.mtime;
            f.released = false;
        }
        if let Some(st) = self.pids.get_mut(pid) {
            st.released = false;
            st.plan = None;
            st.full = true;
        }
        true
    }

    /// Reads one worker file; records what changed for its pid, and folds for values that
    /// went away (compaction only).
    #[allow(clippy::too_many_arguments)]
    fn read_file(
        &mut self,
        name: &str,
        kind: FileKind,
        pid: &str,
        ino: u64,
        compact: bool,
        stats: &Stats,
        log: &mut LogOnce,
        folds: &mut Vec<(String, Fold)>,
    ) {
        let path = self.dir.join(name);
        // A known file still under its name (same inode in the listing) is read through the
        // handle kept open, with its last size as the read size: one syscall.
        let cached = self
            .files
            .get(name)
            .filter(|f| f.ino == ino && f.handle.is_some());
        let read = match cached {
            Some(f) => {
                let hint = if f.good { f.raw.len() } else { 0 };
                let ident = Ident {
                    dev: f.dev,
                    ino: f.ino,
                    mtime: f.mtime,
                };
                match &f.handle {
                    Some(h) => read_content(h, &mut self.scratch, hint, &mut self.legacy_layout)
                        .map(|r| (ident, r, None)),
                    None => Err(io::Error::from(io::ErrorKind::NotFound)),
                }
            }
            None => {
                let budget = &mut self.open_budget;
                let legacy = &mut self.legacy_layout;
                std::fs::File::open(&path).and_then(|file| {
                    let ident = ident_of(&file)?;
                    let hint = self
                        .files
                        .get(name)
                        .filter(|f| f.good && f.ino == ident.ino)
                        .map_or(0, |f| f.raw.len());
                    let r = read_content(&file, &mut self.scratch, hint, legacy)?;
                    let keep = (*budget > 0).then(|| {
                        *budget -= 1;
                        file
                    });
                    Ok((ident, r, keep))
                })
            }
        };
        let (ident, result, handle) = match read {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                if log.first(&format!("read:{name}")) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read a multiprocess file; keeping its last values");
                }
                stats.error("read");
                return;
            }
        };
        if let Some(f) = self.files.get_mut(name)
            && handle.is_some()
        {
            f.handle = None;
        }
        let handle = match (self.files.get_mut(name), handle) {
            (Some(f), Some(h)) if f.dev == ident.dev && f.ino == ident.ino => {
                f.handle = Some(h);
                None
            }
            (_, h) => h,
        };
        stats.file_reads.inc();
        let now = SystemTime::now();

        // A released file (no copy kept): unchanged when its length and hash are.
        if let Some(f) = self.files.get_mut(name)
            && f.released
            && result.is_ok()
            && f.dev == ident.dev
            && f.ino == ident.ino
            && f.released_len == self.scratch.len()
            && f.released_hash == retired::fnv1a(&self.scratch)
        {
            f.mtime = ident.mtime;
            return;
        }

        // The common case: same file, same size. The client never rewrites keys, so only
        // the value slots can differ.
        if let Some(f) = self.files.get_mut(name)
            && result.is_ok()
            && f.good
            && f.dev == ident.dev
            && f.ino == ident.ino
            && f.raw.len() == self.scratch.len()
        {
            f.mtime = ident.mtime;
            if f.corrupt.take().is_some() {
                log.clear(&format!("corrupt:{name}"));
            }
            // One vectorised comparison for the usual "nothing changed".
            if f.raw == self.scratch {
                return;
            }
            let changed: Vec<u32> = f
                .offsets
                .iter()
                .copied()
                .filter(|&o| {
                    let o = o as usize;
                    f.raw.get(o..o + 16) != self.scratch.get(o..o + 16)
                })
                .collect();
            if changed.is_empty() {
                return;
            }
            if compact && kind.is_cumulative() {
                let went_down: Vec<usize> = changed
                    .iter()
                    .map(|&o| o as usize)
                    .filter(|&o| {
                        let old = format::value_at(&f.raw, o).map(|v| v.0);
                        let new = format::value_at(&self.scratch, o).map(|v| v.0);
                        matches!((old, new), (Some(a), Some(b)) if b < a)
                    })
                    .collect();
                if let Some(fold) = reset_fold(kind, &f.raw, went_down) {
                    folds.push((pid.to_string(), fold));
                }
            }
            std::mem::swap(&mut f.raw, &mut self.scratch);
            f.changed = now;
            let st = self.pids.entry(pid.to_string()).or_default();
            st.changed
                .extend(changed.into_iter().map(|o| slot(kind, o)));
            return;
        }

        let offsets = result.and_then(|()| layout(&self.scratch));
        let offsets = match offsets {
            Ok(o) => o,
            Err(e) => {
                let reason = e.reason();
                if log.first(&format!("corrupt:{name}")) {
                    tracing::warn!(file = %path.display(), error = %e, "corrupt multiprocess file skipped; its last good values are kept");
                    stats.corrupt(reason);
                }
                match self.files.get_mut(name) {
                    Some(f) => {
                        f.corrupt = Some(reason);
                        f.mtime = ident.mtime;
                    }
                    None => {
                        let mut f = FileState::new(kind, pid, ident, Vec::new(), Vec::new());
                        f.good = false;
                        f.corrupt = Some(reason);
                        self.files.insert(name.to_string(), f);
                    }
                }
                return;
            }
        };
        log.clear(&format!("corrupt:{name}"));
        match self.files.get_mut(name) {
            Some(f) => {
                // A released file has no old content to fold: the store retires what it held.
                if compact && f.good && !f.released {
                    let replaced = f.dev != ident.dev
                        || f.ino != ident.ino
                        || self.scratch.len() < f.raw.len();
                    if replaced {
                        if kind.folds() {
                            folds.push((
                                pid.to_string(),
                                Fold::Whole {
                                    kind,
                                    raw: f.raw.clone(),
                                },
                            ));
                        }
                    } else if kind.is_cumulative() {
                        let went_down = decreased(&f.raw, &self.scratch);
                        if let Some(fold) = reset_fold(kind, &f.raw, went_down) {
                            folds.push((pid.to_string(), fold));
                        }
                    }
                }
                std::mem::swap(&mut f.raw, &mut self.scratch);
                f.offsets = offsets;
                f.good = true;
                f.released = false;
                f.dev = ident.dev;
                f.ino = ident.ino;
                f.mtime = ident.mtime;
                f.changed = now;
                f.corrupt = None;
                if handle.is_some() {
                    f.handle = handle;
                }
            }
            None => {
                let mut f =
                    FileState::new(kind, pid, ident, std::mem::take(&mut self.scratch), offsets);
                f.handle = handle;
                self.files.insert(name.to_string(), f);
            }
        }
        let st = self.pids.entry(pid.to_string()).or_default();
        st.full = true;
        st.plan = None;
    }

    /// True when `name` belongs to a worker found dead (or stale) last round and is certainly
    /// unchanged, so reading it can be skipped: a dead process's files are final when `/proc`
    /// says it is gone; otherwise the file's inode, mtime and length must not have moved
    /// (and it is read anyway every [`QUIET_REREAD_ROUNDS`] rounds). Without this, thousands
    /// of dead workers' files would be read every second when compaction is off.
    fn quiet_unchanged(&mut self, name: &str, pid: &str, ino: u64, gone: bool) -> bool {
        if !self.pids.get(pid).is_some_and(|st| st.quiet && st.in_store) {
            return false;
        }
        let Some(f) = self.files.get_mut(name) else {
            return false;
        };
        if f.ino != ino || !f.good || f.corrupt.is_some() {
            return false;
        }
        if gone {
            return true;
        }
        if self.round_number.is_multiple_of(QUIET_REREAD_ROUNDS) {
            f.quiet_stat = None;
            return false;
        }
        let Ok(meta) = std::fs::metadata(self.dir.join(name)) else {
            return false;
        };
        let now = (meta.modified().unwrap_or(UNIX_EPOCH), meta.len());
        if meta.ino() == ino && f.quiet_stat == Some(now) {
            return true;
        }
        f.quiet_stat = Some(now);
        false
    }

    /// Reads a dead worker's file once more and keeps the content if it is valid and the same
    /// file (otherwise the last good content stays).
    fn reread_final(&mut self, name: &str, stats: &Stats) {
        let Some(f) = self.files.get_mut(name) else {
            return;
        };
        let Ok((ident, Ok(()))) = read_db(
            &self.dir.join(name),
            &mut self.scratch,
            &mut self.legacy_layout,
        ) else {
            return;
        };
        stats.file_reads.inc();
        if ident.dev != f.dev || ident.ino != f.ino {
            return;
        }
        let Ok(offsets) = layout(&self.scratch) else {
            return;
        };
        if f.raw != self.scratch {
            std::mem::swap(&mut f.raw, &mut self.scratch);
            f.offsets = offsets;
            f.good = true;
            f.corrupt = None;
        }
        f.mtime = ident.mtime;
    }

    /// Loads the retired totals and settles files a previous run folded but did not delete.
    /// Until every retired file has been read (or found absent), nothing is folded: writing
    /// new totals over unread ones would lose them. Retried every round.
    fn load_retired(&mut self, compact: bool, stats: &Stats, log: &mut LogOnce) {
        let mut tables = Vec::new();
        for kind in FOLDABLE {
            let name = retired::file_name(kind);
            let path = self.dir.join(&name);
            match std::fs::read(&path) {
                Ok(d) => tables.push((kind, name, path, d)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    if log.first("retired-read") {
                        tracing::error!(file = %path.display(), error = %e, "cannot read the retired totals; nothing is compacted until they can be read");
                    }
                    stats.error("read");
                    return;
                }
            }
        }
        log.clear("retired-read");
        self.retired_loaded = true;
        self.retired_in_store = false;
        for (kind, name, path, data) in tables {
            match Table::decode(kind, &data) {
                Ok(decoded) => {
                    if !decoded.trailer_ok {
                        tracing::warn!(file = %path.display(), "the retired totals' bookkeeping trailer is damaged; files folded just before the last stop may be counted again");
                    }
                    for rec in &decoded.table.folded {
                        if leftover_matches(&self.dir, rec) {
                            self.folded
                                .insert(rec.file.clone(), (rec.clone(), !compact));
                        }
                    }
                    self.retired.tables.insert(kind, decoded.table);
                }
                Err(e) => {
                    stats.corrupt(e.reason());
                    let aside = self.dir.join(format!("{name}.corrupt"));
                    let moved = compact && std::fs::rename(&path, &aside).is_ok();
                    if log.first(&format!("corrupt:{name}")) {
                        tracing::error!(file = %path.display(), error = %e, moved_aside = moved, "the retired totals are corrupt; counters of dead workers restart from zero");
                    }
                }
            }
        }
        if !self.folded.is_empty() {
            tracing::info!(
                files = self.folded.len(),
                "found files folded before the last stop; deleting them instead of counting them again"
            );
        }
    }

    fn delete_folded(&mut self, stats: &Stats, log: &mut LogOnce) {
        let mut deleted = Vec::new();
        let mut failed = false;
        for (name, (_, keep)) in &self.folded {
            if *keep {
                continue;
            }
            match std::fs::remove_file(self.dir.join(name)) {
                Ok(()) => {
                    stats.deleted_files.inc();
                    deleted.push(name.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => deleted.push(name.clone()),
                Err(e) => {
                    failed = true;
                    stats.error("delete");
                    if log.first("delete") {
                        tracing::warn!(dir = %self.dir.display(), file = %name, error = %e, "cannot delete a dead worker's file (already counted, so it is ignored); the directory is not compacted");
                    }
                }
            }
        }
        for name in deleted {
            self.folded.remove(&name);
        }
        if failed {
            self.retry_deletes_at = Some(Instant::now() + RETRY_AFTER);
        } else {
            self.retry_deletes_at = None;
            log.clear("delete");
        }
    }
}

/// The fold for counter-like entries that went down in a live file (`Counter.reset()`, or a
/// pid reused by a new process before its files were seen to go): counters keep just the
/// entries that dropped. A histogram or summary series restarted only when one of its buckets
/// or its `_count` dropped: `_sum` alone may fall (negative observations are legal); such a
/// series is folded with all its parts, and only the series that fell. `None`: nothing reset.
fn reset_fold(kind: FileKind, raw: &[u8], mut went_down: Vec<usize>) -> Option<Fold> {
    went_down.sort_unstable();
    let offsets = match kind {
        FileKind::Counter => went_down,
        _ => series_that_fell(raw, &went_down),
    };
    (!offsets.is_empty()).then(|| Fold::Entries {
        kind,
        raw: raw.to_vec(),
        offsets,
    })
}

/// The value offsets of every entry of the histogram or summary series that have a bucket or
/// `_count` entry among `went_down` (sorted).
fn series_that_fell(raw: &[u8], went_down: &[usize]) -> Vec<usize> {
    let Ok(iter) = format::entries(raw) else {
        return Vec::new();
    };
    let mut parts: Vec<(usize, String)> = Vec::new();
    let mut fell: FxHashSet<String> = FxHashSet::default();
    for entry in iter.flatten() {
        let Ok(key) = format::parse_key(entry.key) else {
            continue;
        };
        let mut id = String::from(&*key.metric);
        for (name, value) in key.labels.iter() {
            if name != "le" && name != "quantile" {
                id.push('\0');
                id.push_str(name);
                id.push('=');
                id.push_str(value);
            }
        }
        if !key.sample.ends_with("_sum") && went_down.binary_search(&entry.value_offset).is_ok() {
            fell.insert(id.clone());
        }
        parts.push((entry.value_offset, id));
    }
    parts
        .into_iter()
        .filter(|(_, id)| fell.contains(id))
        .map(|(offset, _)| offset)
        .collect()
}

/// Builds a pid's plan from its readable files. Returns the plan, the series of each entry
/// (per kind rank, in entry order) and the number of entries whose key did not parse (left
/// out).
fn build_plan(files: &[&FileState], issues: &mut MergeIssues) -> (Plan, Vec<Vec<u32>>, usize) {
    let mut builder = PlanBuilder::with_capacity(files.iter().map(|f| f.offsets.len()).sum());
    let mut entry_series: Vec<Vec<u32>> = vec![Vec::new(); FileKind::COUNT];
    let mut bad = 0;
    // A stable order (by kind) so the same files always give the same plan.
    let mut files: Vec<&FileState> = files.iter().copied().filter(|f| f.good).collect();
    files.sort_by_key(|f| f.kind);
    for f in files {
        let Ok(iter) = format::entries(&f.raw) else {
            continue;
        };
        let out = &mut entry_series[f.kind.rank()];
        out.reserve_exact(f.offsets.len());
        for entry in iter.flatten() {
            let series = match format::parse_key(entry.key) {
                Ok(key) => builder.add(f.kind, &key, slot(f.kind, entry.value_offset as u32)),
                Err(_) => {
                    bad += 1;
                    None
                }
            };
            out.push(series.unwrap_or(u32::MAX));
        }
    }
    let (plan, found) = builder.finish();
    issues.conflicts += found.conflicts;
    issues.bad_buckets += found.bad_buckets;
    (plan, entry_series, bad)
}

/// Marks every worker of the directory as seen (their files are the authority on liveness;
/// the store's `forgetAfter` sweep must not retire them a second time).
fn touch_all(app: &App, pids: &FxHashMap<String, PidState>, retired: bool) {
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

fn apply_fallback(
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

/// Decoded entries of a file, for the retired totals' families.
#[allow(dead_code)]
fn parsed_entries<'a>(kind: FileKind, raw: &'a [u8], out: &mut Vec<Parsed<'a>>) {
    let Ok(iter) = format::entries(raw) else {
        return;
    };
    for entry in iter.flatten() {
        if let Ok(key) = format::parse_key(entry.key) {
            out.push(Parsed {
                kind,
                key,
                value: entry.value,
                timestamp: entry.timestamp,
            });
        }
    }
}

/// Folds the entries of `raw` (all, or those at `only` value offsets, sorted) into `table`.
/// Returns the number of entries left out because their key is not valid JSON.
fn fold_raw(table: &mut Table, kind: FileKind, raw: &[u8], only: Option<&[usize]>) -> usize {
    let Ok(iter) = format::entries(raw) else {
        return 0;
    };
    let mut bad = 0;
    for entry in iter.flatten() {
        if only.is_some_and(|o| o.binary_search(&entry.value_offset).is_err()) {
            continue;
        }
        match format::parse_key(entry.key) {
            Ok(key) => {
                table.fold(kind, &key, entry.value, entry.timestamp);
            }
            Err(_) => bad += 1,
        }
    }
    bad
}

/// Value offsets of entries of `old` whose value is lower in `new` (same file, appended to):
/// the worker reset a counter.
fn decreased(old: &[u8], new: &[u8]) -> Vec<usize> {
    let Ok(iter) = format::entries(old) else {
        return Vec::new();
    };
    iter.flatten()
        .filter(|e| format::value_at(new, e.value_offset).is_some_and(|(v, _)| v < e.value))
        .map(|e| e.value_offset)
        .collect()
}

/// Checks a file's layout (entries within `used`, keys UTF-8) and returns the value offsets.
/// Keys are parsed when the worker's plan is built; one that is not valid JSON leaves out
/// only its entry.
fn layout(raw: &[u8]) -> Result<Vec<u32>, FileError> {
    let mut offsets = Vec::new();
    for entry in format::entries(raw)? {
        offsets.push(entry?.value_offset as u32);
    }
    Ok(offsets)
}

/// Reads a worker file by path: `used` first, then exactly `used` bytes into `buf`. The
/// outer error is I/O; the inner one says the content is not a valid file (yet, or any more).
fn read_db(
    path: &Path,
    buf: &mut Vec<u8>,
    legacy: &mut bool,
) -> io::Result<(Ident, Result<(), FileError>)> {
    let file = std::fs::File::open(path)?;
    let ident = ident_of(&file)?;
    let result = read_content(&file, buf, 0, legacy)?;
    Ok((ident, result))
}

fn ident_of(file: &std::fs::File) -> io::Result<Ident> {
    let meta = file.metadata()?;
    Ok(Ident {
        dev: meta.dev(),
        ino: meta.ino(),
        mtime: meta.modified().unwrap_or(UNIX_EPOCH),
    })
}

/// Reads the first `used` bytes of `file` into `buf` (exactly `used` long afterwards). One
/// `pread` when `hint` (the last known `used`) is still right, two when the file grew.
/// `buf` is only grown, never cleared first, so a steady file costs no zero-filling.
fn read_content(
    file: &std::fs::File,
    buf: &mut Vec<u8>,
    hint: usize,
    legacy: &mut bool,
) -> io::Result<Result<(), FileError>> {
    let want = if hint >= format::HEADER_LEN {
        hint
    } else {
        INITIAL_READ
    };
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let got = read_at_most(file, &mut buf[..want], 0)?;
    let empty = |buf: &mut Vec<u8>| {
        buf.truncate(0);
        buf.extend_from_slice(&[0u8; format::HEADER_LEN]);
    };
    if got == 0 {
        // Created, not yet sized by the client: empty.
        empty(buf);
        return Ok(Ok(()));
    }
    let used = match format::read_used(&buf[..got]) {
        Ok(u) => u,
        Err(e) => return Ok(Err(e)),
    };
    if used == 0 {
        empty(buf);
        return Ok(Ok(()));
    }
    if used > MAX_FILE_BYTES {
        return Ok(Err(FileError::TooLarge(used)));
    }
    let mut have = got;
    if used > got && got == want {
        if buf.len() < used {
            buf.resize(used, 0);
        }
        have = got + read_at_most(file, &mut buf[got..used], got as u64)?;
    }
    if have < used {
        buf.truncate(have);
        return Ok(Err(FileError::UsedBeyondEnd { used, len: have }));
    }
    buf.truncate(used);
    // Everything past this point (offsets, change detection, folds) sees the current layout.
    if format::normalize_legacy(buf) {
        *legacy = true;
    }
    Ok(Ok(()))
}

/// `pread` until `buf` is full or the file ends; returns the bytes read.
fn read_at_most(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The directory's `.db` files.
struct Listing {
    /// (file name, kind, pid, inode), in directory order.
    files: Vec<(String, FileKind, String, u64)>,
    /// `.db` files that are not prometheus_client files (at most [`MAX_UNKNOWN_LISTED`]).
    unknown: Vec<String>,
    /// Worker files over the cap: not listed, never read.
    skipped: usize,
}

/// Names of unknown `.db` files remembered per listing (they are only logged).
const MAX_UNKNOWN_LISTED: usize = 64;

/// Lists the directory: the retired files and the worker files `known` says are tracked
/// always, other worker files while fewer than `new_allowed` have been taken.
fn list_dir(dir: &Path, new_allowed: usize, known: &dyn Fn(&str) -> bool) -> io::Result<Listing> {
    let mut files = Vec::new();
    let mut unknown = Vec::new();
    let mut new = 0usize;
    let mut skipped = 0usize;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.ends_with(".db") || name.starts_with('.') {
            continue;
        }
        match format::parse_file_name(&name) {
            Some(n) => {
                if n.pid != RETIRED_PID && !known(&name) {
                    if new >= new_allowed {
                        skipped += 1;
                        continue;
                    }
                    new += 1;
                }
                let (kind, pid) = (n.kind, n.pid.to_string());
                files.push((name, kind, pid, entry.ino()));
            }
            None if unknown.len() < MAX_UNKNOWN_LISTED => unknown.push(name),
            None => {}
        }
    }
    Ok(Listing {
        files,
        unknown,
        skipped,
    })
}

/// True when `rec` describes the file now in the directory (same inode, same content).
fn leftover_matches(dir: &Path, rec: &FoldedFile) -> bool {
    let path = dir.join(&rec.file);
    let Ok(meta) = std::fs::metadata(&path) else {
        return false;
    };
    if meta.dev() != rec.dev || meta.ino() != rec.ino {
        return false;
    }
    if rec.len == 0 {
        return true;
    }
    let mut buf = Vec::new();
    match read_db(&path, &mut buf, &mut false) {
        Ok((_, Ok(()))) => buf.len() as u64 == rec.len && retired::fnv1a(&buf) == rec.hash,
        _ => false,
    }
}

/// Writes the staged tables atomically, then makes the renames durable.
fn write_tables(
    dir: &Path,
    staged: &BTreeMap<FileKind, Table>,
    layout: format::Layout,
) -> io::Result<()> {
    for (kind, table) in staged {
        let data = table
            .encode(layout)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        retired::write_atomic(dir, &retired::file_name(*kind), &data)?;
    }
    retired::sync_dir(dir)
}
