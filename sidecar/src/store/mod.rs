//! The store: each worker's latest cumulative value of each series, plus what departed
//! workers left behind.
//!
//! State is "latest cumulative value per worker, then combine", never "add each push". A
//! counter (and every histogram bucket, `_count` and `_sum`) never goes backwards while the
//! sidecar lives: when a worker's value drops (restart) or the worker goes away, its last value
//! is *retired* into a per-series total that is never subtracted. The output of a counter is
//! `retired + sum(current values)`.
//!
//! Everything here is pure: time comes in as [`Now`], nothing does I/O, so the semantics are
//! tested by feeding values in (see `tests.rs`).

mod entry;
mod error;
mod held;
mod key;
pub(crate) mod persist;
mod resilient;
mod rules;
mod series_map;
pub mod sweeper;
#[cfg(test)]
mod tests;
mod validate;
mod view;
mod workers;

use entry::*;
pub use error::{SeriesName, StoreError};
pub use held::{HeldSeries, HeldSlots, HeldValue, NotHeld};
pub use key::{SeriesKeyBuilder, escape_label_value, push_label};
pub use persist::StoreCapture;
pub use rules::{GaugeRules, resolve_mode};
pub(crate) use view::SeriesView;
pub use workers::WorkerInfo;

use series_map::SeriesMap;

use crate::model::{Family, MetricKind, Value};
use monasca_config::GaugeMode;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The gauge client libraries' process collectors export: the process's start time, which
/// changes only when the process starts again (see [`WorkerKey::one_process`]).
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

/// How far a worker's [`PROCESS_START_TIME`] may move without meaning another process.
/// Clients that add the boot time of `/proc/stat` to the process's start ticks at every
/// collect (Go's `procfs`) see it move by a whole second now and then, in either direction,
/// while the process lives on (client_golang#289); taking that for a restart would count every
/// counter of the worker twice. A process that restarts sooner than this after the previous
/// one started is still caught by a counter going down.
pub const START_TIME_JITTER_SECONDS: f64 = 2.0;
/// Label carrying a per-series gauge mode (`_aggregate`); never part of series identity.
pub const AGGREGATE_LABEL: &str = "_aggregate";
/// Prefix reserved for the sidecar's own metrics.
pub const SELF_PREFIX: &str = "monasca_sidecar_";

/// The moment an operation happens: a monotonic instant for staleness and wall-clock seconds
/// since the epoch for `mostrecent` gauges.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub wall: f64,
}

#[allow(clippy::new_ret_no_self, clippy::self_named_constructors)]
impl Now {
    /// The current time.
    pub fn now() -> Now {
        Now {
            mono: Instant::now(),
            wall: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        }
    }

    /// This moment plus `d` (for tests and simulated time).
    pub fn after(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall + d.as_secs_f64(),
        }
    }
}

/// Where a worker's values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Push,
    Json,
    Statsd,
    Multiprocess,
    Scrape,
    /// OTLP metrics (OpenTelemetry SDKs).
    Otlp,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Push => "push",
            Source::Json => "json",
            Source::Statsd => "statsd",
            Source::Multiprocess => "multiprocess",
            Source::Scrape => "scrape",
            Source::Otlp => "otlp",
        }
    }
}

/// Who is sending: one source identity (a grouping key, a pid, a scrape target, an `_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerKey {
    /// Unique identity, e.g. `push:job=api,instance=w1` or `multiprocess:pid=42`.
    pub id: String,
    pub source: Source,
    /// The worker's identifying labels, shown only by `all`/`liveall` gauges.
    pub labels: Vec<(String, String)>,
    /// Labels added to every series of this worker, overriding labels of the same name in the
    /// series (Pushgateway's grouping-key labels such as `job`).
    pub common_labels: Vec<(String, String)>,
    /// Whether a counter-like value going down, or a later [`PROCESS_START_TIME`] (see
    /// [`START_TIME_JITTER_SECONDS`]), shows that the whole worker restarted, so that every
    /// counter-like value it held belongs to its previous life (see [`Store::apply`]). True
    /// where the worker is one process sending its whole registry under an id that outlives
    /// it: a Pushgateway grouping key, and a scrape target with `scrape.oneProcessPerTarget`.
    /// A process that restarts counts everything from zero again, and a counter that is back
    /// at or above its old value by the first update after the restart (a rarely counted
    /// outcome) would otherwise continue and lose the previous life's count.
    ///
    /// Not for a scrape target by default, whose exporter may mirror outside counters that
    /// reset one at a time (a network interface made again), nor for the JSON API's and
    /// StatsD's series-by-series updates; OTLP and multiprocess files know a process's life
    /// exactly (start times, pids).
    pub one_process: bool,
}

impl WorkerKey {
    /// A worker with no common labels; one process if it pushes (a grouping key).
    pub fn new(source: Source, id: impl Into<String>, labels: Vec<(String, String)>) -> Self {
        WorkerKey {
            id: id.into(),
            source,
            labels,
            common_labels: Vec::new(),
            one_process: source == Source::Push,
        }
    }

    /// Sets [`WorkerKey::one_process`].
    pub fn with_one_process(mut self, yes: bool) -> Self {
        self.one_process = yes;
        self
    }
}

/// What an update replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything the worker had (Pushgateway `PUT`, a scrape, a multiprocess file).
    Worker,
    /// Only the families in the update (Pushgateway `POST`).
    Families,
    /// Only the series in the update (StatsD, JSON ingest).
    Series,
}

/// Settings the store needs; derived from the sidecar config and updated on reload.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub worker_labels: Vec<String>,
    pub stale_after: Duration,
    pub forget_after: Duration,
    pub max_series_per_worker: usize,
    pub aggregation: monasca_config::Aggregation,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings::from_config(&monasca_config::SidecarConfig::default())
    }
}

impl StoreSettings {
    pub fn from_config(c: &monasca_config::SidecarConfig) -> Self {
        StoreSettings {
            worker_labels: c.worker_labels.clone(),
            stale_after: c.stale_after.as_std(),
            forget_after: c.forget_after.as_std().max(c.stale_after.as_std()),
            max_series_per_worker: usize::try_from(c.limits.max_series_per_worker)
                .unwrap_or(usize::MAX),
            aggregation: c.aggregation.clone(),
        }
    }
}

/// What an accepted update did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub samples: usize,
    pub new_series: usize,
    /// Series whose value went down and whose old value was retired (worker restarts).
    pub resets: usize,
    /// Series the worker no longer has (retired or forgotten).
    pub removed: usize,
    /// The update showed that the worker restarted ([`WorkerKey::one_process`]):
    /// everything counter-like it held before was retired.
    pub restarted: bool,
}

/// How a one-process worker's [`PROCESS_START_TIME`] moved in an update. Ordered so that
/// the most telling of several (one per label set) wins: a restart over a regression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StartTimeMove {
    /// The same (within [`START_TIME_JITTER_SECONDS`]), or nothing to compare.
    Same,
    /// Earlier by more than the jitter: no process starts before the one it replaces.
    Earlier,
    /// Later by more than the jitter: another process.
    Later,
}

impl StartTimeMove {
    pub(crate) fn between(old: f64, new: f64) -> StartTimeMove {
        if new > old + START_TIME_JITTER_SECONDS {
            StartTimeMove::Later
        } else if new < old - START_TIME_JITTER_SECONDS {
            StartTimeMove::Earlier
        } else {
            StartTimeMove::Same
        }
    }
}

/// How many of a worker's values a family holds.
#[derive(Clone, Debug)]
struct WorkerFamily {
    name: Box<str>,
    /// Series the worker currently reports.
    series: u32,
    /// Counter-like series the worker stopped reporting, kept (still counted) so that a
    /// series that comes back at or above its last value continues instead of counting twice.
    dropped: u32,
}

/// One worker's bookkeeping.
#[derive(Debug)]
pub(crate) struct WorkerState {
    pub(crate) key: WorkerKey,
    /// Canonical rendering of `key.labels` (`pid="42"`), used by `all` gauges.
    pub(crate) label_text: Box<str>,
    pub(crate) last_seen: Instant,
    pub(crate) last_seen_wall: f64,
    families: Vec<WorkerFamily>,
    pub(crate) series: usize,
    /// The worker left (DELETE, a dead pid, a removed target) but may come back under the
    /// same id until `forgetAfter` after it was last seen: its values stay where they are
    /// (counters still counted, gauges for the non-live modes only), so a return continues
    /// or replaces them instead of adding to them. Folded into the retired totals by
    /// [`Store::sweep`].
    pub(crate) departed: bool,
    /// A start time that went back was logged for this worker ([`Store::apply`]).
    start_time_regression_logged: bool,
}

/// A departed worker's gauge value, kept for the non-live modes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RetiredGauge {
    pub(crate) count: u32,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) latest_ts: f64,
    pub(crate) latest: f64,
    /// For `all`: (worker label text, value).
    pub(crate) by_worker: Vec<(Box<str>, f64)>,
}

impl RetiredGauge {
    /// Adds a departed worker's last value; `per_worker` keeps it under the worker's labels
    /// (for `all`), replacing an earlier value of the same worker.
    fn add(&mut self, worker_labels: &str, value: f64, ts: f64, per_worker: bool) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
        if self.count == 1 || ts >= self.latest_ts {
            self.latest_ts = ts;
            self.latest = value;
        }
        if !per_worker {
            return;
        }
        match self
            .by_worker
            .iter_mut()
            .find(|(w, _)| &**w == worker_labels)
        {
            Some(slot) => slot.1 = value,
            None => self.by_worker.push((worker_labels.into(), value)),
        }
    }
}

/// Flag in an entry's `generation`: the worker stopped reporting this (counter-like) series.
const DROPPED: u32 = 1 << 31;

/// One worker's current value of a scalar series.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarEntry {
    pub(crate) worker: u32,
    /// The update that last set it, and the [`DROPPED`] flag.
    generation: u32,
    pub(crate) ts: f64,
    pub(crate) value: f64,
}

/// One worker's current value of a histogram or summary: buckets, then sum, then count.
#[derive(Clone, Debug)]
pub(crate) struct DistEntry {
    pub(crate) worker: u32,
    /// The update that last set it, and the [`DROPPED`] flag.
    generation: u32,
    pub(crate) values: Box<[f64]>,
}

/// The workers' values of one scalar series. Most series have one worker (a pushed group, a
/// StatsD series): its entry lives inline, so a series costs no allocation for its values.
pub(crate) type ScalarEntries = smallvec::SmallVec<[ScalarEntry; 1]>;

/// The values of one series across workers.
///
/// Most series are scalars with one worker: their variant holds it inline (56 bytes with the
/// mode and the tag); the rarer distributions are boxed so that they do not widen it.
#[derive(Clone, Debug)]
pub(crate) enum SeriesData {
    Scalar {
        /// Gauge mode fixed by the source or an `_aggregate` label.
        mode: Option<GaugeMode>,
        entries: ScalarEntries,
        /// Counters: the sum of departed or reset workers' values.
        retired: f64,
        /// Gauges: departed workers' last values.
        retired_gauge: Option<Box<RetiredGauge>>,
    },
    Dist(Box<DistSeries>),
}

/// The values of one histogram or summary series across workers.
#[derive(Clone, Debug)]
pub(crate) struct DistSeries {
    /// The mode an `_aggregate` label named (kept, as the state file records it).
    pub(crate) mode: Option<GaugeMode>,
    /// Histogram upper bounds (empty for summaries).
    pub(crate) bounds: Arc<[f64]>,
    pub(crate) entries: Vec<DistEntry>,
    /// Element-wise sum of departed or reset workers' values.
    pub(crate) retired: Option<Box<[f64]>>,
}

impl SeriesData {
    /// An empty series shaped for `value`.
    fn empty_for(mode: Option<GaugeMode>, value: &Value) -> SeriesData {
        let bounds: Arc<[f64]> = match value {
            Value::Scalar(_) => {
                return SeriesData::Scalar {
                    mode,
                    entries: ScalarEntries::new(),
                    retired: 0.0,
                    retired_gauge: None,
                };
            }
            Value::Histogram(h) => h.bounds.as_slice().into(),
            Value::Summary { .. } => Arc::from([]),
        };
        SeriesData::Dist(Box::new(DistSeries {
            mode,
            bounds,
            entries: Vec::new(),
            retired: None,
        }))
    }
}

/// One series of a family.
#[derive(Clone, Debug)]
pub(crate) struct SeriesState {
    pub(crate) data: SeriesData,
}

impl SeriesState {
    /// Gauge mode fixed by the source or an `_aggregate` label.
    pub(crate) fn mode(&self) -> Option<GaugeMode> {
        match &self.data {
            SeriesData::Scalar { mode, .. } => *mode,
            SeriesData::Dist(d) => d.mode,
        }
    }

    /// The generation in which the worker last set this series (with the [`DROPPED`] flag),
    /// if it holds it.
    fn entry_generation(&self, worker: u32) -> Option<u32> {
        self.entry_at(worker, NO_HINT)
            .map(|(_, generation)| generation)
    }

    /// The index and generation of the worker's entry, looked for at `hint` first (see
    /// [`entry_index`]).
    fn entry_at(&self, worker: u32, hint: u32) -> Option<(u32, u32)> {
        let (index, generation) = match &self.data {
            SeriesData::Scalar { entries, .. } => {
                let i = entry_index(entries, hint, |e| e.worker == worker)?;
                (i, entries[i].generation)
            }
            SeriesData::Dist(d) => {
                let i = entry_index(&d.entries, hint, |e| e.worker == worker)?;
                (i, d.entries[i].generation)
            }
        };
        Some((index as u32, generation))
    }

    /// True when the series can be dropped without changing any output.
    fn is_empty(&self, kind: MetricKind) -> bool {
        match &self.data {
            SeriesData::Scalar {
                entries,
                retired,
                retired_gauge,
                ..
            } => {
                entries.is_empty()
                    && match kind {
                        MetricKind::Counter => *retired == 0.0,
                        _ => retired_gauge.is_none(),
                    }
            }
            SeriesData::Dist(d) => d.entries.is_empty() && d.retired.is_none(),
        }
    }
}

/// One metric family: metadata and series by canonical label text.
///
/// The store holds each family behind an `Arc` so that the state writer can capture a
/// consistent cut of the whole store in O(workers + families) under the read lock (see
/// [`Store::capture`]) and encode it after the lock is released. An update of a family that
/// a capture still holds copies it first ([`Arc::make_mut`]): at most once per family and
/// snapshot, and only while that snapshot is being encoded.
#[derive(Clone, Debug)]
pub(crate) struct FamilyState {
    /// Unique within the store's life: a family removed and made again gets another, so
    /// positions found in the old one are never used in the new one (see [`HeldSlots`]).
    pub(crate) id: u64,
    pub(crate) kind: MetricKind,
    pub(crate) help: Option<Box<str>>,
    pub(crate) unit: Option<Box<str>>,
    /// Series by canonical label text (`a="1",b="2"`, sorted, escaped).
    pub(crate) series: SeriesMap,
}

/// Gives out the next [`FamilyState::id`] (a free function, so that it can be called while
/// the store's families are borrowed).
fn next_family_id(last: &mut u64) -> u64 {
    *last += 1;
    *last
}

/// The store of all workers' values.
#[derive(Debug)]
pub struct Store {
    settings: StoreSettings,
    pub(crate) families: BTreeMap<Box<str>, Arc<FamilyState>>,
    pub(crate) workers: Vec<Option<WorkerState>>,
    worker_index: HashMap<String, u32>,
    free_workers: Vec<u32>,
    generation: u32,
    key_builder: SeriesKeyBuilder,
    rules: GaugeRules,
    /// Histogram/summary updates rejected because of a bucket layout mismatch.
    pub layout_mismatches: u64,
    /// Counter-like series whose value went down (a worker restart), over the store's life.
    pub resets: u64,
    /// Updates that showed their worker restarted ([`ApplyStats::restarted`]).
    pub worker_restarts: u64,
    /// Updates of a one-process worker whose [`PROCESS_START_TIME`] was earlier than the one
    /// it held (`StartTimeMove::Earlier`).
    pub start_time_regressions: u64,
    /// Incremented by [`Store::clear`].
    epoch: u64,
    /// Incremented by every change of values (see [`Store::version`]).
    version: u64,
    /// The last [`FamilyState::id`] given out.
    last_family_id: u64,
    /// Changes when the same labels may give another canonical key (settings) or the store
    /// was cleared: [`HeldSlots`] found before are forgotten.
    keys_epoch: u64,
}

impl Store {
    pub fn new(settings: StoreSettings) -> Self {
        Store {
            key_builder: SeriesKeyBuilder::new(&settings.worker_labels),
            rules: GaugeRules::from_config(&settings.aggregation),
            settings,
            families: BTreeMap::new(),
            workers: Vec::new(),
            worker_index: HashMap::new(),
            free_workers: Vec::new(),
            generation: 0,
            layout_mismatches: 0,
            resets: 0,
            worker_restarts: 0,
            start_time_regressions: 0,
            epoch: 0,
            version: 0,
            last_family_id: 0,
            keys_epoch: 1,
        }
    }

    /// A new [`FamilyState::id`].
    pub(crate) fn new_family_id(&mut self) -> u64 {
        next_family_id(&mut self.last_family_id)
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Applies new settings (config reload). Worker labels apply to later updates.
    pub fn set_settings(&mut self, settings: StoreSettings) {
        self.key_builder = SeriesKeyBuilder::new(&settings.worker_labels);
        self.rules = GaugeRules::from_config(&settings.aggregation);
        self.settings = settings;
        self.keys_epoch += 1;
    }

    /// The gauge rules in force (config `aggregation`).
    pub fn rules(&self) -> &GaugeRules {
        &self.rules
    }

    /// Number of known workers that have not departed.
    pub fn worker_count(&self) -> usize {
        self.worker_states().filter(|w| !w.departed).count()
    }

    /// Number of aggregated series (before gauge `all` expansion).
    pub fn series_count(&self) -> usize {
        self.families.values().map(|f| f.series.len()).sum()
    }

    /// Number of families (what a state capture copies pointers of, see [`Store::capture`]).
    pub fn family_count(&self) -> usize {
        self.families.len()
    }

    /// Number of (worker, series) values held.
    pub fn worker_series_count(&self) -> usize {
        self.workers.iter().flatten().map(|w| w.series).sum()
    }

    /// True if `id` is a known worker that has not departed.
    pub fn has_worker(&self, id: &str) -> bool {
        self.worker_index
            .get(id)
            .and_then(|&w| self.workers.get(w as usize)?.as_ref())
            .is_some_and(|w| !w.departed)
    }

    /// Iterates known workers.
    pub(crate) fn worker_states(&self) -> impl Iterator<Item = &WorkerState> {
        self.workers.iter().flatten()
    }

    /// True when the worker has departed or has not been seen for `staleAfter`: `live*`
    /// gauges leave it out.
    pub(crate) fn is_stale(&self, worker: u32, now: Instant) -> bool {
        match self.workers.get(worker as usize) {
            Some(Some(w)) => {
                w.departed || now.saturating_duration_since(w.last_seen) > self.settings.stale_after
            }
            _ => true,
        }
    }

    /// Marks a worker as seen without changing its values (a multiprocess file that did not
    /// change while its process lives).
    pub fn touch(&mut self, id: &str, now: Now) {
        if let Some(&w) = self.worker_index.get(id)
            && let Some(Some(state)) = self.workers.get_mut(w as usize)
        {
            state.last_seen = now.mono;
            state.last_seen_wall = now.wall;
        }
    }

    /// Replaces what `scope` covers of the worker's values with `families`.
    ///
    /// The update is validated as a whole first (type conflicts, duplicates, histogram
    /// layouts, non-finite counters, gauge mode conflicts, the series limit); a rejected update
    /// changes nothing. A departed worker that applies again under the same id comes back:
    /// its counters continue (or reset, when they went down) and its gauges are replaced.
    ///
    /// For a source whose worker is one process ([`WorkerKey::one_process`]), one
    /// counter-like value going down, or a [`PROCESS_START_TIME`] later than the held one by
    /// more than [`START_TIME_JITTER_SECONDS`], means the process restarted: every
    /// counter-like value the worker held before the update is retired, those the update
    /// continued and those it left out alike, and the update's values count from zero. An
    /// earlier start time is no restart (a new process never started before the old one):
    /// it is counted ([`Store::start_time_regressions`]) and logged once per worker.
    pub fn apply(
        &mut self,
        worker: &WorkerKey,
        families: &[Family<'_>],
        scope: Scope,
        now: Now,
    ) -> Result<ApplyStats, StoreError> {
        let existing_worker = self.worker_index.get(&worker.id).copied();
        let prepared = self.prepare(worker, existing_worker, families, scope)?;
        self.generation = self.generation.wrapping_add(1) & !DROPPED;
        let generation = self.generation;
        self.version += 1;
        let worker_id = match existing_worker {
            Some(w) => w,
            None => self.add_worker(worker, now),
        };
        if let Some(Some(w)) = self.workers.get_mut(worker_id as usize) {
            w.departed = false;
        }
        let mut stats = ApplyStats {
            samples: prepared.len(),
            ..ApplyStats::default()
        };
        // Per family of the update: how the worker's entries changed.
        let mut touched: Vec<Touched> = vec![Touched::default(); families.len()];
        // Values the update continued, by prepared index: retired if it shows a restart.
        // Sized once (no regrowth copies); pages nobody writes are never touched.
        let spans = worker.one_process;
        let start_time = if spans {
            self.start_time_move(worker_id, families, &prepared)
        } else {
            StartTimeMove::Same
        };
        if start_time == StartTimeMove::Earlier {
            self.note_start_time_regression(worker_id);
        }
        let mut continued: Vec<(usize, Continued)> =
            Vec::with_capacity(if spans { prepared.len() } else { 0 });
        // `prepare` keeps a family's samples together, so each family is looked up once.
        let mut first = 0;
        for group in prepared.chunk_by(|a, b| a.family_index == b.family_index) {
            let group_start = first;
            first += group.len();
            let family = &families[group[0].family_index];
            let state = match self.families.get_mut(&*family.name) {
                Some(f) => {
                    let f = Arc::make_mut(f);
                    if f.help.is_none() {
                        f.help = family.help.as_deref().map(Into::into);
                    }
                    f
                }
                None => Arc::make_mut(
                    self.families
                        .entry(family.name.as_ref().into())
                        .or_insert_with(|| {
                            Arc::new(FamilyState {
                                id: next_family_id(&mut self.last_family_id),
                                kind: family.kind,
                                help: family.help.as_deref().map(Into::into),
                                unit: family.unit.as_deref().map(Into::into),
                                series: SeriesMap::new(),
                            })
                        }),
                ),
            };
            let kind = state.kind;
            let counts = &mut touched[group[0].family_index];
            for (offset, p) in group.iter().enumerate() {
                let ts = p.ts.unwrap_or(now.wall);
                let made = match p.position {
                    Some(i) => state.series.at_mut(i).map(|series| (series, false)),
                    None => state.series.get_or_insert_with(&p.key, || SeriesState {
                        data: SeriesData::empty_for(p.mode, p.value),
                    }),
                };
                // `prepare` refused an update whose keys would not fit (a held position is
                // always in range: nothing was removed since `prepare` found it).
                let Some((series, new)) = made else {
                    continue;
                };
                if new {
                    stats.new_series += 1;
                }
                let update =
                    update_entry(series, kind, worker_id, generation, p.value, ts, NO_HINT);
                match update.before {
                    Held::No => counts.inserted += 1,
                    Held::Live => counts.updated += 1,
                    Held::Dropped => counts.revived += 1,
                }
                if update.reset {
                    stats.resets += 1;
                }
                if spans && let Some(old) = update.continued {
                    continued.push((group_start + offset, old));
                }
            }
        }
        self.resets += stats.resets as u64;
        stats.restarted = spans && (stats.resets > 0 || start_time == StartTimeMove::Later);
        if stats.restarted {
            self.worker_restarts += 1;
            for (index, old) in continued {
                let p = &prepared[index];
                if let Some(f) = self.families.get_mut(&*families[p.family_index].name) {
                    let f = Arc::make_mut(f);
                    let position = p.position.or_else(|| f.series.position(&p.key));
                    if let Some(series) = position.and_then(|i| f.series.at_mut(i)) {
                        retire_continued(series, old);
                    }
                }
            }
        }

        // Work out, per family, how many series the worker now holds, sweeping out the
        // entries the update replaced but did not mention.
        let previous: Vec<WorkerFamily> = match self.workers.get_mut(worker_id as usize) {
            Some(Some(w)) => std::mem::take(&mut w.families),
            _ => Vec::new(),
        };
        let mut held: BTreeMap<Box<str>, (u32, u32)> = BTreeMap::new();
        for (family, t) in families.iter().zip(&touched) {
            let (before, before_dropped) = previous
                .iter()
                .find(|f| *f.name == *family.name)
                .map_or((0, 0), |f| (f.series, f.dropped));
            let mut live = before + t.inserted + t.revived;
            let mut dropped = before_dropped - t.revived;
            let left_out = t.updated < before;
            if left_out && (scope != Scope::Series || self.restart_covers(stats, &family.name)) {
                stats.removed += self
                    .sweep_family(&family.name, worker_id, generation)
                    .settle(&mut live, &mut dropped);
            }
            if live > 0 || dropped > 0 {
                held.insert(family.name.as_ref().into(), (live, dropped));
            }
        }
        for wf in previous {
            if held.contains_key(&wf.name) || families.iter().any(|f| *f.name == *wf.name) {
                continue;
            }
            let (mut live, mut dropped) = (wf.series, wf.dropped);
            if live > 0 && (scope == Scope::Worker || self.restart_covers(stats, &wf.name)) {
                stats.removed += self
                    .sweep_family(&wf.name, worker_id, generation)
                    .settle(&mut live, &mut dropped);
            }
            if live > 0 || dropped > 0 {
                held.insert(wf.name, (live, dropped));
            }
        }
        let mut total_dropped = 0;
        if let Some(Some(w)) = self.workers.get_mut(worker_id as usize) {
            w.series = held.values().map(|&(n, _)| n as usize).sum();
            total_dropped = held.values().map(|&(_, d)| d as usize).sum();
            w.families = held
                .into_iter()
                .map(|(name, (series, dropped))| WorkerFamily {
                    name,
                    series,
                    dropped,
                })
                .collect();
            w.last_seen = now.mono;
            w.last_seen_wall = now.wall;
        }
        // Dropped series are kept so that they can come back; a worker that keeps dropping
        // new ones (rotating label values) must not grow without bound. A reset in this update
        // means the worker restarted: what it dropped belongs to its previous life, so a return
        // must count anew (a child the new process creates later starts from zero, and
        // continuing the old value would lose what the new process counts up to it). For a
        // worker that is one process, what the update left out was swept into the dropped
        // ones above, whatever the scope.
        if ((stats.resets > 0 || stats.restarted) && total_dropped > 0)
            || total_dropped > self.settings.max_series_per_worker.max(MIN_DROPPED_KEPT)
        {
            self.retire_dropped(worker_id);
        }
        Ok(stats)
    }

    /// How the worker's [`PROCESS_START_TIME`] in the update compares with the one it holds
    /// (see [`START_TIME_JITTER_SECONDS`]). `Later` means the process started again, even
    /// if none of its counters went down (every one already back at or above its old value).
    fn start_time_move(
        &self,
        worker: u32,
        families: &[Family<'_>],
        prepared: &[validate::Prepared<'_>],
    ) -> StartTimeMove {
        let Some(state) = self.families.get(PROCESS_START_TIME) else {
            return StartTimeMove::Same;
        };
        // `prepare` refused an update that names a family twice.
        let Some(family) = families.iter().position(|f| *f.name == *PROCESS_START_TIME) else {
            return StartTimeMove::Same;
        };
        prepared
            .iter()
            .filter(|p| p.family_index == family)
            .map(|p| {
                let Value::Scalar(new) = *p.value else {
                    return StartTimeMove::Same;
                };
                let old = state.series.get(&p.key).and_then(|s| match &s.data {
                    SeriesData::Scalar { entries, .. } => {
                        entries.iter().find(|e| e.worker == worker).map(|e| e.value)
                    }
                    SeriesData::Dist(_) => None,
                });
                match old {
                    Some(old) if old.is_finite() && new.is_finite() => {
                        StartTimeMove::between(old, new)
                    }
                    _ => StartTimeMove::Same,
                }
            })
            .max()
            .unwrap_or(StartTimeMove::Same)
    }

    /// Counts a start time that went back, and says so once per worker: two processes
    /// update under one worker id (a shared push grouping key, a port answered by several
    /// processes in turn), or the clock was stepped back.
    fn note_start_time_regression(&mut self, worker: u32) {
        self.start_time_regressions += 1;
        if let Some(Some(w)) = self.workers.get_mut(worker as usize)
            && !w.start_time_regression_logged
        {
            w.start_time_regression_logged = true;
            tracing::warn!(
                worker = %w.key.id,
                "{PROCESS_START_TIME} went back: two processes seem to update under this one \
                 worker id (its counters cannot be aggregated right), or the clock was stepped \
                 back; not taken as a restart"
            );
        }
    }

    /// Whether a restart shown by the update ([`ApplyStats::restarted`]) takes the worker's
    /// entries of `family` that the update did not set out of the live set, whatever the
    /// scope: counter-like ones belong to the previous life. Gauges stay as the scope says.
    fn restart_covers(&self, stats: ApplyStats, family: &str) -> bool {
        stats.restarted
            && self
                .families
                .get(family)
                .is_some_and(|f| f.kind.is_counter_like())
    }

    /// Takes the worker's entries of `family` that the current update did not set out of the
    /// live set: counter-like ones are marked dropped (still counted, see [`WorkerFamily`]),
    /// gauges are forgotten.
    fn sweep_family(&mut self, name: &str, worker: u32, generation: u32) -> Swept {
        let Some(family) = self.families.get_mut(name) else {
            return Swept::default();
        };
        let family = Arc::make_mut(family);
        let kind = family.kind;
        let mut swept = Swept::default();
        family.series.retain(|_, s| {
            let Some(g) = s.entry_generation(worker) else {
                return true;
            };
            if g == generation || g & DROPPED != 0 {
                return true;
            }
            if kind.is_counter_like() {
                set_dropped(s, worker);
                swept.dropped += 1;
            } else {
                take_entry(s, kind, worker, Departure::Dropped);
                swept.removed += 1;
            }
            !s.is_empty(kind)
        });
        if family.series.is_empty() {
            self.families.remove(name);
        }
        swept
    }

    /// Retires every dropped series of a worker for good: a later return counts as new.
    fn retire_dropped(&mut self, worker: u32) {
        let Some(Some(w)) = self.workers.get_mut(worker as usize) else {
            return;
        };
        let names: Vec<Box<str>> = w
            .families
            .iter_mut()
            .filter(|f| f.dropped > 0)
            .map(|f| {
                f.dropped = 0;
                f.name.clone()
            })
            .collect();
        w.families.retain(|f| f.series > 0);
        for name in names {
            let Some(family) = self.families.get_mut(&name) else {
                continue;
            };
            let family = Arc::make_mut(family);
            let kind = family.kind;
            family.series.retain(|_, s| {
                if s.entry_generation(worker).is_some_and(|g| g & DROPPED != 0) {
                    take_entry(s, kind, worker, Departure::Dropped);
                }
                !s.is_empty(kind)
            });
            if family.series.is_empty() {
                self.families.remove(&name);
            }
        }
    }

    fn add_worker(&mut self, worker: &WorkerKey, now: Now) -> u32 {
        let mut label_text = String::new();
        let mut labels = worker.labels.clone();
        labels.sort();
        for (name, value) in &labels {
            push_label(&mut label_text, name, value);
        }
        let state = WorkerState {
            key: worker.clone(),
            label_text: label_text.into(),
            last_seen: now.mono,
            last_seen_wall: now.wall,
            families: Vec::new(),
            series: 0,
            departed: false,
            start_time_regression_logged: false,
        };
        let id = match self.free_workers.pop() {
            Some(id) => {
                self.workers[id as usize] = Some(state);
                id
            }
            None => {
                self.workers.push(Some(state));
                (self.workers.len() - 1) as u32
            }
        };
        self.worker_index.insert(worker.id.clone(), id);
        id
    }

    /// [`Store::apply`] without the `maxSeriesPerWorker` limit, for the sidecar's own
    /// bookkeeping workers (the multiprocess reader's persisted retired totals, which hold the
    /// union of every dead worker's series): rejecting them would make counters go backwards.
    pub fn apply_unbounded(
        &mut self,
        worker: &WorkerKey,
        families: &[Family<'_>],
        scope: Scope,
        now: Now,
    ) -> Result<ApplyStats, StoreError> {
        let limit = std::mem::replace(&mut self.settings.max_series_per_worker, usize::MAX);
        let result = self.apply(worker, families, scope, now);
        self.settings.max_series_per_worker = limit;
        result
    }
}
