//! Zero-code ingest for Python multiprocess apps: reads prometheus_client's
//! `PROMETHEUS_MULTIPROC_DIR` (`*.db` files, one set per worker pid) directly, and keeps the
//! directory bounded.
//!
//! - [`format`](mod@format): the file layout, parsed from bytes (fuzzable) and written (for
//!   the sidecar's own files); checked against the real client in `tests/multiprocess*.rs`.
//! - [`merge`]: one worker's entries as ingest-model families, the way MultiProcessCollector
//!   merges them; each pid is one store worker (`pid` label), applied with `Scope::Worker`.
//! - [`liveness`]: `/proc` when the app's processes are visible, file changes otherwise.
//! - [`retired`]: dead workers' values folded into `*_retired.db` files the collector also
//!   reads, written atomically before the dead workers' files are deleted.
//! - `scan`: the round that ties them together.
//!
//! Differences from MultiProcessCollector, all deliberate:
//! - `live*` gauges of dead workers disappear even when nobody called `mark_process_dead`;
//! - a corrupt or truncated file is skipped (its last good values kept) instead of failing
//!   the whole scrape;
//! - with compaction on, a dead worker's `all`-mode gauges leave with its files (they would be
//!   one series per dead pid forever); its counters, histograms, summaries and
//!   `sum`/`min`/`max`/`mostrecent` gauges are kept in the retired totals;
//! - counters never go backwards: a counter that drops inside a live file (`Counter.reset()`)
//!   keeps its previous value in the retired totals.
//!
//! Scans run on a thread of their own at least every second, and on demand right before a
//! `/metrics` render ([`crate::component::Refresh`]); an unchanged directory costs a `stat`, a
//! `pread` and a `memcmp` per file.

pub mod format;
pub mod liveness;
pub mod merge;
pub mod retired;
mod scan;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_incremental;

pub use liveness::{LivenessMode, LivenessPolicy};
pub use scan::{MAX_FILE_BYTES, NotCompacting, RETIRED_WORKER_ID, worker_id};

use crate::app::App;
use crate::component::{Refresh, SelfMetrics};
use crate::lifecycle::{CancellationToken, Handle};
use crate::self_metrics::{Counter, MetricType, Registry, SecondsGauge, const_family, const_gauge};
use crate::sources::SourceContext;
use monasca_config::{MultiprocessLiveness, SidecarConfig};
use parking_lot::{Condvar, Mutex};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::family::Family as MetricFamily;
use scan::DirState;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How the reader runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// How worker liveness is decided (see [`liveness`]).
    pub liveness: LivenessPolicy,
    /// Time between background scans.
    pub interval: Duration,
    /// The directory used when the config names none: `PROMETHEUS_MULTIPROC_DIR` (or the
    /// deprecated `prometheus_multiproc_dir`) of the sidecar's environment, read once.
    pub env_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            liveness: LivenessPolicy::Auto,
            interval: Duration::from_secs(1),
            env_dir: std::env::var_os("PROMETHEUS_MULTIPROC_DIR")
                .or_else(|| std::env::var_os("prometheus_multiproc_dir"))
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// The running reader. Dropping it stops the background thread (after the current scan).
pub struct Multiprocess {
    shared: Arc<Shared>,
    handle: Handle,
}

/// Starts the reader with default [`Options`]: registers its self-metrics and its refresh
/// hook with the context's app, and scans on a background thread. The directory comes from
/// the config (`multiprocessDir`, re-read every scan so reloads apply), else from the
/// environment; with neither, the reader idles.
pub fn spawn(ctx: &SourceContext) -> Multiprocess {
    spawn_with(ctx, Options::default())
}

/// [`spawn`] with explicit options.
pub fn spawn_with(ctx: &SourceContext, options: Options) -> Multiprocess {
    let app = ctx.app();
    let reader = Reader::new(options.clone());
    let mut handle = Handle::new("multiprocess", ctx.child_token());
    let shared = Arc::new(Shared {
        app: Arc::downgrade(app),
        stats: reader.stats.clone(),
        scanner: Mutex::new(reader),
        stop: handle.token().clone(),
        wake: Mutex::new(false),
        wake_cv: Condvar::new(),
    });
    app.register(shared.clone());
    app.register_refresh(shared.clone());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("multiprocess".into())
            .spawn(move || shared.run(options.interval))
    };
    match thread {
        Ok(t) => {
            let waker = shared.clone();
            handle.add_thread(t, move || waker.wake());
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the multiprocess reader thread; scanning only before each /metrics render");
        }
    }
    Multiprocess { shared, handle }
}

impl Multiprocess {
    /// Scans now unless a scan started after this call began (another caller's or the
    /// background one), and returns when the store reflects the files. Blocking.
    pub fn refresh_now(&self) {
        self.shared.refresh();
    }

    /// The hook registered with [`App::register_refresh`], for callers that hold the handle.
    pub fn refresher(&self) -> Arc<dyn Refresh> {
        self.shared.clone()
    }

    /// Stops the background thread and waits for it (blocking: callable without a runtime).
    pub fn stop(self) {
        self.handle.stop_blocking();
    }
}

struct Shared {
    app: Weak<App>,
    scanner: Mutex<Reader>,
    stats: Arc<Stats>,
    /// Cancelled when the reader stops.
    stop: CancellationToken,
    wake: Mutex<bool>,
    wake_cv: Condvar,
}

impl Shared {
    /// Wakes the background thread (to see that it is stopped).
    fn wake(&self) {
        let mut woken = self.wake.lock();
        *woken = true;
        self.wake_cv.notify_all();
    }

    fn run(&self, interval: Duration) {
        while !self.stop.is_cancelled() {
            {
                let mut scanner = self.scanner.lock();
                let fresh = scanner
                    .last_started
                    .is_some_and(|t| t.elapsed() < interval / 2);
                if !fresh {
                    let Some(app) = self.app.upgrade() else {
                        return;
                    };
                    scanner.scan(&app);
                }
            }
            let mut woken = self.wake.lock();
            if !*woken {
                self.wake_cv.wait_for(&mut woken, interval);
            }
            *woken = false;
        }
    }
}

impl Refresh for Shared {
    fn refresh(&self) {
        if self.stop.is_cancelled() {
            return;
        }
        let requested = Instant::now();
        let mut scanner = self.scanner.lock();
        if scanner.last_started.is_some_and(|t| t >= requested) {
            return;
        }
        if let Some(app) = self.app.upgrade() {
            scanner.scan(&app);
        }
    }
}

/// The reader without a thread: one synchronous pass per [`Reader::scan`] (what the
/// background thread and the refresh hook call; benchmarks and tools can drive it directly).
pub struct Reader {
    state: Option<DirState>,
    options: Options,
    log: LogOnce,
    last_started: Option<Instant>,
    stats: Arc<Stats>,
    /// Consecutive scans that found worker files and could not compact them.
    not_compacting_scans: u32,
}

/// With `auto` liveness the app may show up in `/proc` a little after its files: the
/// directory is reported as not compactable only after this many scans (about one
/// re-detection), not on the first.
const NOT_COMPACTING_REPORT_AFTER: u32 = 15;

impl Reader {
    pub fn new(options: Options) -> Reader {
        Reader {
            state: None,
            options,
            log: LogOnce::default(),
            last_started: None,
            stats: Arc::new(Stats::default()),
            not_compacting_scans: 0,
        }
    }

    /// Tests: the directory state, once a scan created it.
    #[cfg(test)]
    fn dir_state(&mut self) -> Option<&mut DirState> {
        self.state.as_mut()
    }

    /// The liveness policy: the config's when it names one, else the reader's option.
    fn policy(&self, cfg: &SidecarConfig) -> LivenessPolicy {
        match cfg.multiprocess_liveness {
            MultiprocessLiveness::Auto => self.options.liveness,
            MultiprocessLiveness::Proc => LivenessPolicy::Proc,
            MultiprocessLiveness::Mtime => LivenessPolicy::Mtime,
        }
    }

    /// One pass over the directory named by `app`'s config (see the module docs).
    pub fn scan(&mut self, app: &App) {
        let stats = &*self.stats.clone();
        let started = Instant::now();
        self.last_started = Some(started);
        let cfg = app.config();
        let dir = resolve_dir(&cfg, self.options.env_dir.as_ref());
        if self.state.as_ref().map(|s| &s.dir) != dir.as_ref() {
            if let Some(old) = self.state.take() {
                tracing::info!(dir = %old.dir.display(), "no longer reading the multiprocess directory");
                old.detach(&mut app.store.write());
            }
            if let Some(dir) = dir {
                tracing::info!(dir = %dir.display(), compact = cfg.multiprocess_compact, "reading prometheus_client multiprocess files");
                self.log = LogOnce::default();
                self.state = Some(DirState::new(dir, self.policy(&cfg)));
            }
        }
        let policy = self.policy(&cfg);
        let Some(state) = self.state.as_mut() else {
            stats.set_summary(None);
            return;
        };
        state.set_liveness_policy(policy);
        let summary = state.round(app, &cfg, stats, &mut self.log);
        self.report_not_compacting(&summary, policy, &cfg);
        stats.scans.inc();
        stats.set_duration(started.elapsed());
        stats.set_summary(Some(summary));
    }
}

impl Reader {
    /// One log line (and the `not_compacting` self-metric, from the summary) when dead
    /// workers' files cannot be compacted, saying why.
    fn report_not_compacting(
        &mut self,
        summary: &scan::RoundSummary,
        policy: LivenessPolicy,
        cfg: &SidecarConfig,
    ) {
        let Some(why) = summary.not_compacting.filter(|_| summary.files > 0) else {
            self.not_compacting_scans = 0;
            self.log.clear("not-compacting");
            return;
        };
        self.not_compacting_scans = self.not_compacting_scans.saturating_add(1);
        let settled = policy != LivenessPolicy::Auto
            || why == NotCompacting::CompactionOff
            || self.not_compacting_scans >= NOT_COMPACTING_REPORT_AFTER;
        if !settled || !self.log.first("not-compacting") {
            return;
        }
        let dir = self.state.as_ref().map(|s| s.dir.display().to_string());
        let cap = cfg.limits.max_multiprocess_files;
        match why {
            NotCompacting::MtimeLiveness => tracing::warn!(
                dir,
                max_files = cap,
                "the multiprocess directory cannot be compacted: the app's processes are not visible in /proc (no shared process namespace, or multiprocessLiveness: mtime), so no worker can be proven dead; dead workers' files stay (counted, never deleted), quiet ones are held without a copy, and at most limits.maxMultiprocessFiles files are read"
            ),
            NotCompacting::CompactionOff => tracing::info!(
                dir,
                max_files = cap,
                "the multiprocess directory is not compacted (multiprocessCompact: false): dead workers' files stay; at most limits.maxMultiprocessFiles files are read"
            ),
        }
    }
}

/// The directory to read: config first, then the environment.
fn resolve_dir(cfg: &SidecarConfig, env_dir: Option<&PathBuf>) -> Option<PathBuf> {
    cfg.multiprocess_dir
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env_dir.cloned())
}

/// Log keys already reported, so a broken file logs once, not every second.
#[derive(Default)]
struct LogOnce {
    seen: HashSet<String>,
}

impl LogOnce {
    /// Bound on remembered keys; beyond it everything logs again (and memory stays bounded).
    const MAX: usize = 10_000;

    /// True the first time `key` is reported (until cleared).
    fn first(&mut self, key: &str) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        if self.seen.len() >= Self::MAX {
            self.seen.clear();
        }
        self.seen.insert(key.to_string());
        true
    }

    /// The condition is over: report it again if it comes back.
    fn clear(&mut self, key: &str) {
        self.seen.remove(key);
    }
}

/// The reader's self-metrics (`prometheus-client` atomics; the per-reason and per-operation
/// series exist from the start, at zero). The last round's summary is read at render time.
struct Stats {
    scans: Counter,
    file_reads: Counter,
    /// Mapped reads thrown away because the file shrank under them (see `scan::bus_guard`).
    mapped_read_faults: Counter,
    folded_workers: Counter,
    deleted_files: Counter,
    duration: SecondsGauge,
    corrupt: ReasonFamily,
    errors: ReasonFamily,
    rejected: ReasonFamily,
    summary: Mutex<Option<scan::RoundSummary>>,
}

/// Counters by one `&'static` label value.
type ReasonFamily = MetricFamily<[(&'static str, &'static str); 1], Counter>;

/// Operations of `monasca_sidecar_multiprocess_errors_total{op}`.
const IO_OPERATIONS: [&str; 4] = ["list", "read", "persist", "delete"];

impl Default for Stats {
    fn default() -> Stats {
        let with = |label: &'static str, values: &[&'static str]| {
            let family = ReasonFamily::default();
            for v in values {
                family.get_or_create_owned(&[(label, v)]);
            }
            family
        };
        Stats {
            scans: Counter::default(),
            file_reads: Counter::default(),
            mapped_read_faults: Counter::default(),
            folded_workers: Counter::default(),
            deleted_files: Counter::default(),
            duration: SecondsGauge::default(),
            corrupt: with("reason", &format::FileError::REASONS),
            errors: with("op", &IO_OPERATIONS),
            rejected: ReasonFamily::default(),
            summary: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

impl Stats {
    fn corrupt(&self, reason: &'static str) {
        self.corrupt.get_or_create(&[("reason", reason)]).inc();
    }

    /// Entries whose key is not valid JSON (left out; the rest of the file is used).
    fn corrupt_keys(&self, n: u64) {
        self.corrupt
            .get_or_create(&[("reason", "bad_key")])
            .inc_by(n);
    }

    fn error(&self, op: &'static str) {
        self.errors.get_or_create(&[("op", op)]).inc();
    }

    fn rejected(&self, reason: &'static str, n: u64) {
        self.rejected.get_or_create(&[("reason", reason)]).inc_by(n);
    }

    fn set_duration(&self, d: Duration) {
        self.duration.set(d.as_secs_f64());
    }

    fn set_summary(&self, summary: Option<scan::RoundSummary>) {
        *self.summary.lock() = summary;
    }
}

impl SelfMetrics for Shared {
    fn register(self: Arc<Self>, registry: &mut Registry) {
        let s = &self.stats;
        let counters = [
            (
                &s.scans,
                "multiprocess_scans",
                "Scans of the multiprocess directory",
            ),
            (
                &s.file_reads,
                "multiprocess_file_reads",
                "Worker files read (each scan reads every file up to its used size)",
            ),
            (
                &s.mapped_read_faults,
                "multiprocess_mapped_read_faults",
                "Mapped reads of a worker file that shrank under them (read again whole)",
            ),
            (
                &s.folded_workers,
                "multiprocess_folded_workers",
                "Dead workers folded into the retired totals",
            ),
            (
                &s.deleted_files,
                "multiprocess_deleted_files",
                "Dead workers' files deleted after folding",
            ),
        ];
        for (counter, name, help) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "multiprocess_scan_duration_seconds",
            "Duration of the last scan of the multiprocess directory",
            s.duration.clone(),
        );
        registry.register(
            "multiprocess_corrupt_files",
            "Unreadable multiprocess files (skipped, last good values kept), by reason",
            s.corrupt.clone(),
        );
        registry.register(
            "multiprocess_errors",
            "I/O failures on the multiprocess directory, by operation",
            s.errors.clone(),
        );
        crate::self_metrics::register_listed(
            registry,
            "multiprocess_rejected",
            "Families of multiprocess workers the store rejected, by reason",
            s.rejected.clone(),
        );
        registry.register_collector(Box::new(self.stats.clone()));
    }
}

/// The last round's summary, read at render time.
impl Collector for Stats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let last = *self.summary.lock();
        let summary = last.unwrap_or_default();
        let enabled = last.is_some();
        let one_if = |b: bool| if b { 1.0 } else { 0.0 };
        let e = &mut encoder;
        const_gauge(
            e,
            "multiprocess_enabled",
            "1 when a prometheus_client multiprocess directory is being read",
            one_if(enabled),
        )?;
        const_gauge(
            e,
            "multiprocess_files",
            "Worker files in the directory (without the sidecar's own)",
            summary.files as f64,
        )?;
        const_family(
            e,
            "multiprocess_workers",
            "Worker pids with files in the directory, by liveness",
            MetricType::Gauge,
            "state",
            [("live", summary.live as f64), ("dead", summary.dead as f64)],
        )?;
        const_gauge(
            e,
            "multiprocess_retired_series",
            "Series in the persisted totals of dead workers",
            summary.retired_series as f64,
        )?;
        const_family(
            e,
            "multiprocess_not_compacting",
            "1 for the reason dead workers' files are not compacted: mtime_liveness (the app's processes are not visible in /proc: no shared process namespace) or compaction_off",
            MetricType::Gauge,
            "reason",
            NotCompacting::ALL.map(|reason| {
                let v = one_if(enabled && summary.not_compacting == Some(reason));
                (reason.label(), v)
            }),
        )?;
        const_gauge(
            e,
            "multiprocess_skipped_files",
            "Worker files left unread at the last scan because of limits.maxMultiprocessFiles",
            summary.skipped as f64,
        )?;
        const_gauge(
            e,
            "multiprocess_released_files",
            "Files of quiet workers held without a copy of their content (they cannot be compacted)",
            summary.released as f64,
        )?;
        const_family(
            e,
            "multiprocess_liveness",
            "How worker liveness is decided: proc (shared pid namespace, compaction possible) or mtime",
            MetricType::Gauge,
            "method",
            [LivenessMode::Proc, LivenessMode::Mtime]
                .map(|mode| (mode.as_str(), one_if(summary.liveness == Some(mode)))),
        )
    }
}
