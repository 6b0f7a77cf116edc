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

mod apply;
mod bus_guard;
mod fold;
mod fs;
mod read;
mod round;
mod share;

/// Tests: runs `action` inside the next guarded read of a mapped file on this thread, after
/// the reader's `fstat` and before the bytes are read (to cut a file at the worst moment).
#[cfg(test)]
pub(crate) fn on_next_mapped_read(action: impl FnOnce() + 'static) {
    fs::test_hooks::on_next_read(action);
}

use super::LogOnce;
use super::Stats;
use super::format::{self, FileKind, RETIRED_PID};
use super::liveness::{Liveness, LivenessMode, LivenessPolicy};
use super::merge::{FxHashMap, FxHashSet, Plan, Slot};
use super::retired::{self, FoldedFile, Retired};
use crate::app::App;
use crate::store::{Source, Store, WorkerKey};
use fs::Listing;
use monasca_config::SidecarConfig;
use round::{Round, RoundCtx};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

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

/// A mapped file is compared whole with the last read (keys too, in place through its
/// mapping) anyway every this many rounds, at a round of its own (staggered by inode), in case
/// bytes other than values were rewritten in place without moving the ctime (a writer's
/// mapping of an already dirty page).
pub(super) const FULL_READ_ROUNDS: u64 = 16;

/// From this many value slots in mapped files, a round reads them on two threads: below, the
/// thread costs more than it saves (measured when a thread was started per scrape: a start
/// cost about 4,000 slots read from memory; 64,000 slots take ~1.0 ms on one thread and
/// ~0.6 ms on two, cold). The kept helper's wake-up ([`share`]) costs less; the threshold
/// was not measured again.
const LOOK_AHEAD_MIN_SLOTS: usize = 16_384;

/// CPUs this process may use (its cgroup quota and affinity included), read once per
/// directory: a sidecar limited to one CPU never starts the look-ahead thread.
fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

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
    /// The file's first `raw.len()` bytes mapped, once they were seen equal to `raw`, with a
    /// copy of its value slots: a steady file is then checked slot by slot in place
    /// ([`DirState::read_mapped`]).
    map: Option<read::Mapped>,
    /// The file's ctime when `map` was last checked against `raw` byte for byte, if it was
    /// old enough then to be sure to move on any later write (see `fs::settled`). While it
    /// stands, only the value slots are read: any other change than the client's (values
    /// written through its mapping, entries appended) moves it.
    map_ctime: Option<(i64, i64)>,
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
            map: None,
            map_ctime: None,
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
        self.map = None;
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
    /// Entries whose values changed since the last apply (keys unchanged): their file's kind
    /// rank and their index in its `offsets` (so a changed value finds its series without a
    /// search).
    changed: Vec<(u32, u32)>,
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
    /// Where the store holds the plan's series (see [`crate::store::HeldSlots`]); filled by
    /// the store while the plan is borrowed by the round's updates.
    held: std::cell::RefCell<crate::store::HeldSlots>,
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
    /// The changed value slots of the file being read in place (entry index, new bytes);
    /// reused from file to file.
    slot_changes: read::SlotBuffer,
    /// A worker file was in prometheus_client's layout before 0.17 (no timestamps): the
    /// retired files are then written in it too. Sticky: one directory, one client version.
    legacy_layout: bool,
    /// Files that may still be kept open this round.
    open_budget: usize,
    /// Rounds so far (quiet files are read every [`QUIET_REREAD_ROUNDS`]).
    round_number: u64,
    /// The round's mapped files are looked at on two threads from this many value slots on
    /// ([`DirState::look_ahead`]); `usize::MAX` when only one CPU is available.
    look_ahead_min_slots: usize,
    /// Changed-slot buffers of the look-ahead, kept between rounds.
    look_pool: Vec<read::SlotBuffer>,
    retry_writes_at: Option<Instant>,
    retry_deletes_at: Option<Instant>,
    /// The store's epoch when its values were last applied (see [`Store::epoch`]).
    store_epoch: u64,
    /// Worker files over the cap in the last listing.
    skipped: usize,
    /// The last listing, reused while the directory stands as it was (see
    /// [`DirState::cached_listing`]).
    listing_cache: Option<CachedListing>,
    /// Tests: directory listings read (not reused).
    #[cfg(test)]
    pub(crate) listings: u64,
    /// Tests: files checked by their value slots alone (see [`FileState::map_ctime`]).
    #[cfg(test)]
    pub(crate) slot_only_reads: u64,
    /// Tests: workers whose changed values went through their held store positions.
    #[cfg(test)]
    pub(crate) held_updates: u64,
    /// Tests: files compared whole through their mapping (ctime moved, or their
    /// [`FULL_READ_ROUNDS`] round).
    #[cfg(test)]
    pub(crate) mapped_whole_compares: u64,
    /// Tests: stop every round right before deleting folded files, as a crash would.
    #[cfg(test)]
    pub(crate) crash_before_delete: bool,
    /// Tests: files whose look was taken on two threads ([`DirState::look_ahead`]).
    #[cfg(test)]
    pub(crate) looked_ahead: u64,
    /// Tests: run on the look-ahead thread inside its first guarded read (see
    /// [`on_next_mapped_read`]).
    #[cfg(test)]
    look_ahead_hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// A listing and what it was taken under.
struct CachedListing {
    stamp: fs::DirStamp,
    file_cap: usize,
    listing: Listing,
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
            slot_changes: Vec::new(),
            legacy_layout: false,
            open_budget: 0,
            round_number: 0,
            look_ahead_min_slots: if available_cpus() >= 2 {
                LOOK_AHEAD_MIN_SLOTS
            } else {
                usize::MAX
            },
            look_pool: Vec::new(),
            retry_writes_at: None,
            retry_deletes_at: None,
            store_epoch: 0,
            skipped: 0,
            listing_cache: None,
            #[cfg(test)]
            listings: 0,
            #[cfg(test)]
            slot_only_reads: 0,
            #[cfg(test)]
            held_updates: 0,
            #[cfg(test)]
            mapped_whole_compares: 0,
            #[cfg(test)]
            crash_before_delete: false,
            #[cfg(test)]
            looked_ahead: 0,
            #[cfg(test)]
            look_ahead_hook: std::sync::Mutex::new(None),
        }
    }

    /// Tests: look at the mapped files on two threads whenever there are two (see
    /// [`DirState::look_ahead`]), however few their slots.
    #[cfg(test)]
    pub(crate) fn force_look_ahead(&mut self) {
        self.look_ahead_min_slots = 0;
    }

    /// Tests: runs `action` inside the look-ahead thread's next guarded read, after its
    /// `fstat` (to cut a file under that thread's read).
    #[cfg(test)]
    pub(crate) fn on_next_look_ahead_read(&mut self, action: impl FnOnce() + Send + 'static) {
        if let Ok(mut hook) = self.look_ahead_hook.lock() {
            *hook = Some(Box::new(action));
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

    /// One pass. See the module documentation for the invariants, and [`round`] for the
    /// phases.
    pub fn round(
        &mut self,
        app: &App,
        cfg: &SidecarConfig,
        stats: &Stats,
        log: &mut LogOnce,
    ) -> RoundSummary {
        let ctx = RoundCtx {
            app,
            stats,
            log,
            compact: cfg.multiprocess_compact,
            stale_after: cfg.stale_after.as_std(),
            file_cap: usize::try_from(cfg.limits.max_multiprocess_files).unwrap_or(usize::MAX),
        };
        // List the directory; new files only up to the cap, counted before anything is read
        // or allocated for them.
        // (The stamp comes first: a change while the directory is read moves it.)
        let (stamp, file_cap) = (fs::DirStamp::settled(&self.dir), ctx.file_cap);
        let listing = match self.cached_listing(stamp, file_cap) {
            Some(listing) => listing,
            None => {
                #[cfg(test)]
                {
                    self.listings += 1;
                }
                let tracked = self.files.len() + self.folded.len();
                let known =
                    |name: &str| self.files.contains_key(name) || self.folded.contains_key(name);
                match fs::list_dir(&self.dir, file_cap.saturating_sub(tracked), &known) {
                    Ok(l) => {
                        ctx.log.clear("list");
                        l
                    }
                    Err(e) => {
                        if ctx.log.first("list") {
                            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the multiprocess directory; keeping the last values");
                        }
                        stats.error("list");
                        apply::touch_all(app, &self.pids, self.retired_in_store);
                        return self.summary(0, 0, ctx.compact);
                    }
                }
            }
        };
        let summary = Round::new(self, ctx, &listing).run();
        if let Some(stamp) = stamp
            && listing.skipped == 0
        {
            self.listing_cache = Some(CachedListing {
                stamp,
                file_cap,
                listing,
            });
        }
        summary
    }

    /// The last listing, when it still describes the directory: the directory's settled
    /// stamp is the one taken before it was read (any entry created, removed or renamed since
    /// would have moved it), the cap is the same and it skipped no file (which files the cap
    /// leaves out depends on what is tracked). Listed anyway every [`FULL_READ_ROUNDS`]
    /// rounds, for file systems that do not keep a directory's ctime.
    fn cached_listing(&mut self, stamp: Option<fs::DirStamp>, file_cap: usize) -> Option<Listing> {
        let cached = self.listing_cache.take()?;
        (stamp? == cached.stamp
            && cached.file_cap == file_cap
            && !self.round_number.is_multiple_of(FULL_READ_ROUNDS))
        .then_some(cached.listing)
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
}
