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

mod key;
pub(crate) mod persist;
mod resilient;
mod rules;
#[cfg(test)]
mod tests;
mod view;

pub use key::{SeriesKeyBuilder, escape_label_value};
pub use persist::StoreCapture;
pub use rules::{GaugeRules, resolve_mode};
pub(crate) use view::SeriesView;

use crate::model::{Family, MetricKind, Value};
use indexmap::IndexMap;
use monasca_config::GaugeMode;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
}

impl WorkerKey {
    /// A worker with no common labels.
    pub fn new(source: Source, id: impl Into<String>, labels: Vec<(String, String)>) -> Self {
        WorkerKey {
            id: id.into(),
            source,
            labels,
            common_labels: Vec::new(),
        }
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

/// Why an update was rejected. Nothing of a rejected update is applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("type conflict: {family} is a {existing}, not a {pushed}")]
    TypeConflict {
        family: String,
        existing: &'static str,
        pushed: &'static str,
    },
    #[error("family {0} appears twice in one update")]
    DuplicateFamily(String),
    #[error("duplicate series {0} (after removing worker labels)")]
    DuplicateSeries(SeriesName),
    #[error(
        "histogram {series} has bucket bounds {pushed} but this series is aggregated with {existing}"
    )]
    HistogramLayoutMismatch {
        series: SeriesName,
        existing: String,
        pushed: String,
    },
    #[error(
        "invalid {AGGREGATE_LABEL} value {0:?}: expected one of sum, min, max, mean, mostrecent, all or a live variant"
    )]
    InvalidAggregate(String),
    #[error("worker would hold {count} series, more than the limit of {limit}")]
    TooManySeries { count: usize, limit: usize },
    #[error("metric name {0} uses the prefix reserved for the sidecar's own metrics")]
    ReservedName(String),
    #[error("label {label} of {series} is reserved: {why}")]
    ReservedLabel {
        series: SeriesName,
        label: String,
        why: &'static str,
    },
    #[error(
        "{family} ({kind}) would expose the name {name}, which {other} already uses; rename one of them"
    )]
    NameCollision {
        family: String,
        kind: &'static str,
        name: String,
        other: String,
    },
    #[error("{series}: {why}")]
    Invalid {
        series: SeriesName,
        why: &'static str,
    },
    #[error(
        "{series} has the non-finite value {value}; counters, buckets and counts must be finite"
    )]
    NonFinite { series: SeriesName, value: f64 },
    #[error("{series} is aggregated with {existing} (the first mode seen wins), not {pushed}")]
    ModeConflict {
        series: SeriesName,
        existing: &'static str,
        pushed: &'static str,
    },
}

impl StoreError {
    /// A fixed label for self-metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::TypeConflict { .. } => "type_conflict",
            StoreError::DuplicateFamily(_) => "duplicate_family",
            StoreError::DuplicateSeries(_) => "duplicate_series",
            StoreError::HistogramLayoutMismatch { .. } => "histogram_layout_mismatch",
            StoreError::InvalidAggregate(_) => "invalid_aggregate",
            StoreError::TooManySeries { .. } => "too_many_series",
            StoreError::ReservedName(_) => "reserved_name",
            StoreError::NonFinite { .. } => "non_finite",
            StoreError::ReservedLabel { .. } => "reserved_label",
            StoreError::NameCollision { .. } => "name_collision",
            StoreError::Invalid { .. } => "invalid_value",
            StoreError::ModeConflict { .. } => "mode_conflict",
        }
    }

    /// The family the error is about, when it is about one: lets a source leave out just that
    /// family and apply the rest (see [`Store::apply_resilient`]).
    pub fn family(&self) -> Option<&str> {
        match self {
            StoreError::TypeConflict { family, .. } => Some(family),
            StoreError::DuplicateFamily(name) | StoreError::ReservedName(name) => Some(name),
            StoreError::NameCollision { family, .. } => Some(family),
            StoreError::DuplicateSeries(series)
            | StoreError::HistogramLayoutMismatch { series, .. }
            | StoreError::NonFinite { series, .. }
            | StoreError::ReservedLabel { series, .. }
            | StoreError::Invalid { series, .. }
            | StoreError::ModeConflict { series, .. } => Some(&series.family),
            StoreError::InvalidAggregate(_) | StoreError::TooManySeries { .. } => None,
        }
    }
}

/// The series an error is about: its family as data (for [`StoreError::family`]) and its
/// canonical label text. Displays as `family{labels}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesName {
    pub family: String,
    pub labels: String,
}

impl SeriesName {
    pub fn new(family: &str, labels: &str) -> Self {
        SeriesName {
            family: family.to_string(),
            labels: labels.to_string(),
        }
    }
}

impl std::fmt::Display for SeriesName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{{{}}}", self.family, self.labels)
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

/// The values of one series across workers.
#[derive(Clone, Debug)]
pub(crate) enum SeriesData {
    Scalar {
        entries: Vec<ScalarEntry>,
        /// Counters: the sum of departed or reset workers' values.
        retired: f64,
        /// Gauges: departed workers' last values.
        retired_gauge: Option<Box<RetiredGauge>>,
    },
    Dist {
        /// Histogram upper bounds (empty for summaries).
        bounds: Arc<[f64]>,
        entries: Vec<DistEntry>,
        /// Element-wise sum of departed or reset workers' values.
        retired: Option<Box<[f64]>>,
    },
}

impl SeriesData {
    /// An empty series shaped for `value`.
    fn empty_for(value: &Value) -> SeriesData {
        match value {
            Value::Scalar(_) => SeriesData::Scalar {
                entries: Vec::new(),
                retired: 0.0,
                retired_gauge: None,
            },
            Value::Histogram(h) => SeriesData::Dist {
                bounds: h.bounds.as_slice().into(),
                entries: Vec::new(),
                retired: None,
            },
            Value::Summary { .. } => SeriesData::Dist {
                bounds: Arc::from([]),
                entries: Vec::new(),
                retired: None,
            },
        }
    }
}

/// One series of a family.
#[derive(Clone, Debug)]
pub(crate) struct SeriesState {
    /// Gauge mode fixed by the source or an `_aggregate` label.
    pub(crate) mode: Option<GaugeMode>,
    pub(crate) data: SeriesData,
}

impl SeriesState {
    /// The generation in which the worker last set this series (with the [`DROPPED`] flag),
    /// if it holds it.
    fn entry_generation(&self, worker: u32) -> Option<u32> {
        match &self.data {
            SeriesData::Scalar { entries, .. } => entries
                .iter()
                .find(|e| e.worker == worker)
                .map(|e| e.generation),
            SeriesData::Dist { entries, .. } => entries
                .iter()
                .find(|e| e.worker == worker)
                .map(|e| e.generation),
        }
    }

    /// True when the series can be dropped without changing any output.
    fn is_empty(&self, kind: MetricKind) -> bool {
        match &self.data {
            SeriesData::Scalar {
                entries,
                retired,
                retired_gauge,
            } => {
                entries.is_empty()
                    && match kind {
                        MetricKind::Counter => *retired == 0.0,
                        _ => retired_gauge.is_none(),
                    }
            }
            SeriesData::Dist {
                entries, retired, ..
            } => entries.is_empty() && retired.is_none(),
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
    pub(crate) kind: MetricKind,
    pub(crate) help: Option<Box<str>>,
    pub(crate) unit: Option<Box<str>>,
    /// Series by canonical label text (`a="1",b="2"`, sorted, escaped).
    pub(crate) series: IndexMap<Box<str>, SeriesState>,
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
    /// Incremented by [`Store::clear`].
    epoch: u64,
    /// Incremented by every change of values (see [`Store::version`]).
    version: u64,
}

/// An update after validation: canonical keys computed, nothing applied yet.
struct Prepared<'a> {
    family_index: usize,
    key: String,
    mode: Option<GaugeMode>,
    value: &'a Value,
    ts: Option<f64>,
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
            epoch: 0,
            version: 0,
        }
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Applies new settings (config reload). Worker labels apply to later updates.
    pub fn set_settings(&mut self, settings: StoreSettings) {
        self.key_builder = SeriesKeyBuilder::new(&settings.worker_labels);
        self.rules = GaugeRules::from_config(&settings.aggregation);
        self.settings = settings;
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
        for p in &prepared {
            let family = &families[p.family_index];
            let ts = p.ts.unwrap_or(now.wall);
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
                                kind: family.kind,
                                help: family.help.as_deref().map(Into::into),
                                unit: family.unit.as_deref().map(Into::into),
                                series: IndexMap::new(),
                            })
                        }),
                ),
            };
            let kind = state.kind;
            let series = match state.series.get_mut(p.key.as_str()) {
                Some(s) => s,
                None => {
                    stats.new_series += 1;
                    let key: Box<str> = p.key.as_str().into();
                    state.series.entry(key).or_insert(SeriesState {
                        mode: p.mode,
                        data: SeriesData::empty_for(p.value),
                    })
                }
            };
            let counts = &mut touched[p.family_index];
            let update = update_entry(series, kind, worker_id, generation, p.value, ts);
            match update.before {
                Held::No => counts.inserted += 1,
                Held::Live => counts.updated += 1,
                Held::Dropped => counts.revived += 1,
            }
            if update.reset {
                stats.resets += 1;
            }
        }
        self.resets += stats.resets as u64;

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
            if scope != Scope::Series && t.updated < before {
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
            if scope == Scope::Worker && live > 0 {
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
        // new ones (rotating label values) must not grow without bound.
        if total_dropped > self.settings.max_series_per_worker.max(MIN_DROPPED_KEPT) {
            self.retire_dropped(worker_id);
        }
        Ok(stats)
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

    /// Validates an update and computes canonical keys.
    fn prepare<'f>(
        &mut self,
        worker: &WorkerKey,
        existing_worker: Option<u32>,
        families: &'f [Family<'_>],
        scope: Scope,
    ) -> Result<Vec<Prepared<'f>>, StoreError> {
        let mut prepared = Vec::with_capacity(families.iter().map(|f| f.series.len()).sum());
        let mut seen_families: HashSet<&str> = HashSet::with_capacity(families.len());
        let worker_state = existing_worker.and_then(|w| self.workers.get(w as usize)?.as_ref());
        // Series this worker would hold afterwards.
        let mut resulting = match (scope, worker_state) {
            (_, None) | (Scope::Worker, _) => 0,
            (_, Some(w)) => w.series,
        };
        for (family_index, family) in families.iter().enumerate() {
            if family.name.starts_with(SELF_PREFIX) {
                return Err(StoreError::ReservedName(family.name.to_string()));
            }
            if !seen_families.insert(&family.name) {
                return Err(StoreError::DuplicateFamily(family.name.to_string()));
            }
            let existing = self.families.get(&*family.name);
            if let Some(existing) = existing
                && existing.kind != family.kind
            {
                return Err(StoreError::TypeConflict {
                    family: family.name.to_string(),
                    existing: existing.kind.text_name(),
                    pushed: family.kind.text_name(),
                });
            }
            if existing.is_none() {
                self.check_collision(&family.name, family.kind, families)?;
            }
            if scope == Scope::Families
                && let Some(w) = worker_state
                && let Some(f) = w.families.iter().find(|f| *f.name == *family.name)
            {
                resulting -= f.series as usize;
            }
            let first = prepared.len();
            for series in &family.series {
                let (key, mode) = self
                    .key_builder
                    .build(&series.labels, &worker.common_labels)
                    .map_err(StoreError::InvalidAggregate)?;
                let held = existing.and_then(|f| f.series.get(key.as_str()));
                if let (Some(held), Value::Histogram(h)) = (held, &series.value)
                    && let SeriesData::Dist { bounds, .. } = &held.data
                    && !same_bounds(bounds, &h.bounds)
                {
                    self.layout_mismatches += 1;
                    return Err(StoreError::HistogramLayoutMismatch {
                        series: SeriesName::new(&family.name, &key),
                        existing: format_bounds(bounds),
                        pushed: format_bounds(&h.bounds),
                    });
                }
                check_labels(family, series, &worker.common_labels, &key)?;
                if let Some(bad) = non_finite(family.kind, &series.value) {
                    return Err(StoreError::NonFinite {
                        series: SeriesName::new(&family.name, &key),
                        value: bad,
                    });
                }
                if let Some(why) = invalid_value(family.kind, &series.value) {
                    return Err(StoreError::Invalid {
                        series: SeriesName::new(&family.name, &key),
                        why,
                    });
                }
                let mode = family.mode.or(mode);
                if let (Some(pushed), Some(held)) = (mode, held)
                    && !family.kind.is_counter_like()
                {
                    let fixed = held
                        .mode
                        .unwrap_or_else(|| resolve_mode(&self.rules, &family.name));
                    if fixed != pushed {
                        return Err(StoreError::ModeConflict {
                            series: SeriesName::new(&family.name, &key),
                            existing: fixed.as_str(),
                            pushed: pushed.as_str(),
                        });
                    }
                }
                let already_held = match (scope, held, existing_worker) {
                    (Scope::Series, Some(s), Some(w)) => {
                        s.entry_generation(w).is_some_and(|g| g & DROPPED == 0)
                    }
                    _ => false,
                };
                if !already_held {
                    resulting += 1;
                }
                prepared.push(Prepared {
                    family_index,
                    key,
                    mode,
                    value: &series.value,
                    ts: series.timestamp,
                });
            }
            let mut keys_in_family: HashSet<&str> = HashSet::with_capacity(prepared.len() - first);
            for p in &prepared[first..] {
                if !keys_in_family.insert(p.key.as_str()) {
                    return Err(StoreError::DuplicateSeries(SeriesName::new(
                        &family.name,
                        &p.key,
                    )));
                }
            }
        }
        if resulting > self.settings.max_series_per_worker {
            return Err(StoreError::TooManySeries {
                count: resulting,
                limit: self.settings.max_series_per_worker,
            });
        }
        Ok(prepared)
    }

    /// Refuses a new family whose exposed names (samples, and the OpenMetrics family name of a
    /// counter) are already exposed by another family, of the store or of the same update:
    /// Prometheus would keep one of the two at random, or reject the scrape.
    fn check_collision(
        &self,
        name: &str,
        kind: MetricKind,
        update: &[Family<'_>],
    ) -> Result<(), StoreError> {
        for exposed in exposed_names(name, kind) {
            for candidate in claimants(&exposed) {
                if candidate == name {
                    continue;
                }
                let other_kind = self
                    .families
                    .get(candidate.as_str())
                    .map(|f| f.kind)
                    .or_else(|| {
                        update
                            .iter()
                            .find(|f| *f.name == *candidate)
                            .map(|f| f.kind)
                    });
                if let Some(other_kind) = other_kind
                    && exposed_names(&candidate, other_kind).contains(&exposed)
                {
                    return Err(StoreError::NameCollision {
                        family: name.to_string(),
                        kind: kind.text_name(),
                        name: exposed,
                        other: format!("{} {candidate}", other_kind.text_name()),
                    });
                }
            }
        }
        Ok(())
    }

    fn add_worker(&mut self, worker: &WorkerKey, now: Now) -> u32 {
        let mut label_text = String::new();
        let mut labels = worker.labels.clone();
        labels.sort();
        for (i, (name, value)) in labels.iter().enumerate() {
            if i > 0 {
                label_text.push(',');
            }
            label_text.push_str(name);
            label_text.push_str("=\"");
            escape_label_value(value, &mut label_text);
            label_text.push('"');
        }
        let state = WorkerState {
            key: worker.clone(),
            label_text: label_text.into(),
            last_seen: now.mono,
            last_seen_wall: now.wall,
            families: Vec::new(),
            series: 0,
            departed: false,
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

    /// The worker left (DELETE, a dead process, a removed scrape target). Its values stay as
    /// they are until `forgetAfter` after it was last seen (counters counted, gauges shown by
    /// the non-live modes only), so that a return under the same id continues its counters and
    /// replaces its gauges; then [`Store::sweep`] retires them for good.
    /// Returns false when the worker was unknown.
    pub fn remove_worker(&mut self, id: &str) -> bool {
        let Some(&worker_id) = self.worker_index.get(id) else {
            return false;
        };
        match self.workers.get_mut(worker_id as usize) {
            Some(Some(w)) if !w.departed => {
                w.departed = true;
                self.version += 1;
                true
            }
            _ => false,
        }
    }

    /// Retires a worker for good now, without waiting for `forgetAfter`: a later worker with
    /// the same id counts as new (the multiprocess reader switching directories: the same pid
    /// in another directory is another process).
    pub fn retire_worker(&mut self, id: &str) -> bool {
        self.drop_worker(id, true)
    }

    /// Drops a worker *without* retiring its values: the caller has accounted for them
    /// elsewhere (the multiprocess reader moves a dead pid's values into its persisted totals).
    pub fn forget_worker(&mut self, id: &str) -> bool {
        self.drop_worker(id, false)
    }

    /// Retires a worker for good: counters, histograms and summaries into the per-series
    /// totals, gauges kept for the non-live modes; its memory is released.
    fn drop_worker(&mut self, id: &str, retire: bool) -> bool {
        let Some(worker_id) = self.worker_index.remove(id) else {
            return false;
        };
        let Some(state) = self
            .workers
            .get_mut(worker_id as usize)
            .and_then(Option::take)
        else {
            return false;
        };
        self.version += 1;
        for wf in &state.families {
            let Some(family) = self.families.get_mut(&wf.name) else {
                continue;
            };
            let family = Arc::make_mut(family);
            let kind = family.kind;
            let family_mode = resolve_mode(&self.rules, &wf.name);
            family.series.retain(|_, s| {
                let departure = if retire {
                    Departure::Departed {
                        labels: &state.label_text,
                        mode: s.mode.unwrap_or(family_mode),
                    }
                } else {
                    Departure::Forgotten
                };
                take_entry(s, kind, worker_id, departure);
                !s.is_empty(kind)
            });
            if family.series.is_empty() {
                self.families.remove(&wf.name);
            }
        }
        self.free_workers.push(worker_id);
        true
    }

    /// Retires, for good, workers not seen for `forgetAfter` (departed or silent). Returns
    /// their ids.
    pub fn sweep(&mut self, now: Now) -> Vec<String> {
        let forget_after = self.settings.forget_after;
        let expired: Vec<String> = self
            .worker_states()
            .filter(|w| now.mono.saturating_duration_since(w.last_seen) > forget_after)
            .map(|w| w.key.id.clone())
            .collect();
        for id in &expired {
            self.drop_worker(id, true);
        }
        expired
    }

    /// Removes every worker and every retired value (the JSON API's `POST /v1/clear`), and
    /// starts a new [`Store::epoch`] so that sources whose state lives outside the store (the
    /// multiprocess files) apply it in full again.
    pub fn clear(&mut self) {
        self.families.clear();
        self.workers.clear();
        self.worker_index.clear();
        self.free_workers.clear();
        self.epoch += 1;
        self.version += 1;
    }

    /// Changes on every [`Store::clear`]: a source that applies only what changed must apply
    /// everything again when the epoch is not the one it last applied in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A snapshot of one worker for `/v1/workers`.
    pub fn workers_info(&self, now: Now) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let w = w.as_ref().filter(|w| !w.departed)?;
                Some(WorkerInfo {
                    id: w.key.id.clone(),
                    source: w.key.source.as_str(),
                    labels: w.key.labels.iter().cloned().collect(),
                    last_seen: w.last_seen_wall,
                    age_seconds: now
                        .mono
                        .saturating_duration_since(w.last_seen)
                        .as_secs_f64(),
                    stale: self.is_stale(i as u32, now.mono),
                    series: w.series,
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
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

/// A worker as `/v1/workers` shows it.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct WorkerInfo {
    pub id: String,
    pub source: &'static str,
    pub labels: BTreeMap<String, String>,
    /// Unix time of the last update, in seconds.
    pub last_seen: f64,
    pub age_seconds: f64,
    pub stale: bool,
    pub series: usize,
}

fn same_bounds(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn format_bounds(bounds: &[f64]) -> String {
    let parts: Vec<String> = bounds
        .iter()
        .map(|b| {
            if b.is_infinite() {
                "+Inf".to_string()
            } else {
                b.to_string()
            }
        })
        .collect();
    format!("[{}]", parts.join(","))
}

/// Flattens a histogram or summary value: buckets, then sum, then count.
fn dist_values(value: &Value) -> Box<[f64]> {
    match value {
        Value::Histogram(h) => {
            let mut v = Vec::with_capacity(h.buckets.len() + 2);
            v.extend_from_slice(&h.buckets);
            v.push(h.sum);
            v.push(h.count);
            v.into_boxed_slice()
        }
        Value::Summary { sum, count } => Box::new([*sum, *count]),
        Value::Scalar(v) => Box::new([*v]),
    }
}

/// True when a cumulative distribution went backwards: the worker restarted.
fn dist_reset(old: &[f64], new: &[f64]) -> bool {
    let n = old.len();
    if n != new.len() || n < 2 {
        return true;
    }
    // Count (last) or any bucket (all but sum) went down. `_sum` may legitimately fall with
    // negative observations, so it alone does not signal a reset.
    new[n - 1] < old[n - 1] || old[..n - 2].iter().zip(&new[..n - 2]).any(|(o, n)| n < o)
}

fn add_into(total: &mut Option<Box<[f64]>>, values: &[f64]) {
    match total {
        Some(t) if t.len() == values.len() => {
            for (t, v) in t.iter_mut().zip(values) {
                *t += v;
            }
        }
        _ => *total = Some(values.into()),
    }
}

/// At most this many dropped series are kept per worker, or `maxSeriesPerWorker` if larger.
const MIN_DROPPED_KEPT: usize = 1024;

/// How an update changed a worker's entries of one family.
#[derive(Clone, Copy, Debug, Default)]
struct Touched {
    /// Live entries set again.
    updated: u32,
    /// New entries.
    inserted: u32,
    /// Dropped entries reported again.
    revived: u32,
}

/// What a sweep did to a worker's entries of one family.
#[derive(Clone, Copy, Debug, Default)]
struct Swept {
    /// Counter-like entries marked dropped.
    dropped: usize,
    /// Gauge entries forgotten.
    removed: usize,
}

impl Swept {
    /// Moves the swept entries out of a family's `live` count (counter-like ones stay held,
    /// as `dropped`). Returns how many left the live set.
    fn settle(self, live: &mut u32, dropped: &mut u32) -> usize {
        let left = self.dropped + self.removed;
        *live -= left as u32;
        *dropped += self.dropped as u32;
        left
    }
}

/// Whether the worker held the series before an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    No,
    Live,
    Dropped,
}

/// What setting a worker's value did.
struct Updated {
    before: Held,
    /// A counter-like value went down: the old value was retired (a worker restart).
    reset: bool,
}

/// The names a family puts in an exposition: its sample names in either format, and the
/// family name itself (an OpenMetrics counter `x_total` is family `x`).
fn exposed_names(name: &str, kind: MetricKind) -> Vec<String> {
    match kind {
        MetricKind::Counter => {
            let base = name.strip_suffix("_total").unwrap_or(name);
            vec![
                name.to_string(),
                base.to_string(),
                format!("{base}_total"),
                format!("{base}_created"),
            ]
        }
        MetricKind::Histogram => ["", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        MetricKind::Summary => ["", "_sum", "_count", "_created"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        MetricKind::Gauge | MetricKind::Untyped => vec![name.to_string()],
    }
}

/// Family names that could expose `exposed` (see [`exposed_names`]).
fn claimants(exposed: &str) -> Vec<String> {
    let mut out = vec![exposed.to_string(), format!("{exposed}_total")];
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(base) = exposed.strip_suffix(suffix) {
            out.push(base.to_string());
            if suffix == "_created" {
                out.push(format!("{base}_total"));
            }
        }
    }
    out
}

/// Refuses labels that would make the exposition invalid: `__`-prefixed names (reserved by
/// Prometheus, `__name__` among them), `le` on a histogram and `quantile` on a summary, from
/// the series or from the worker's grouping key.
fn check_labels(
    family: &Family<'_>,
    series: &crate::model::Series<'_>,
    common: &[(String, String)],
    key: &str,
) -> Result<(), StoreError> {
    let names = series
        .labels
        .iter()
        .map(|l| l.name.as_ref())
        .chain(common.iter().map(|(n, _)| n.as_str()));
    for name in names {
        let why = if name.starts_with("__") {
            "names starting with __ are reserved for Prometheus"
        } else if name == "le" && family.kind == MetricKind::Histogram {
            "le holds a histogram's bucket bounds"
        } else if name == "quantile" && family.kind == MetricKind::Summary {
            "quantile holds a summary's quantiles"
        } else {
            continue;
        };
        return Err(StoreError::ReservedLabel {
            series: SeriesName::new(&family.name, key),
            label: name.to_string(),
            why,
        });
    }
    Ok(())
}

/// Why a counter-like value cannot be a cumulative value, if it cannot: counters and counts
/// are never negative, histogram buckets never decrease with `le`, and the `+Inf` bucket is
/// the count.
fn invalid_value(kind: MetricKind, value: &Value) -> Option<&'static str> {
    match (kind, value) {
        (MetricKind::Counter, Value::Scalar(v)) if *v < 0.0 => Some("a counter cannot be negative"),
        (_, Value::Histogram(h)) => {
            if h.buckets.iter().any(|b| *b < 0.0) || h.count < 0.0 {
                Some("histogram counts cannot be negative")
            } else if h.buckets.windows(2).any(|w| w[1] < w[0]) {
                Some("histogram buckets must not decrease as le grows")
            } else if h.buckets.last().is_some_and(|inf| *inf != h.count) {
                Some("the +Inf bucket must equal _count")
            } else {
                None
            }
        }
        (_, Value::Summary { count, .. }) if *count < 0.0 => {
            Some("a summary count cannot be negative")
        }
        _ => None,
    }
}

/// The first value that may not be stored: counters, buckets and counts must be finite, or
/// they would poison the retired totals for good.
fn non_finite(kind: MetricKind, value: &Value) -> Option<f64> {
    match (kind, value) {
        (MetricKind::Counter, Value::Scalar(v)) => Some(*v),
        (_, Value::Histogram(h)) => h
            .buckets
            .iter()
            .copied()
            .chain([h.count])
            .find(|v| !v.is_finite()),
        (_, Value::Summary { count, .. }) => Some(*count),
        _ => None,
    }
    .filter(|v| !v.is_finite())
}

/// Sets the worker's value of one series. A value at or above the previous one continues it
/// (also when the series had been dropped or the worker had departed); a counter-like value
/// below it is a restart: the old value is retired.
fn update_entry(
    series: &mut SeriesState,
    kind: MetricKind,
    worker: u32,
    generation: u32,
    value: &Value,
    ts: f64,
) -> Updated {
    let held = |g: u32| {
        if g & DROPPED != 0 {
            Held::Dropped
        } else {
            Held::Live
        }
    };
    match (&mut series.data, value) {
        (
            SeriesData::Scalar {
                entries, retired, ..
            },
            Value::Scalar(v),
        ) => match entries.iter_mut().find(|e| e.worker == worker) {
            Some(e) => {
                let before = held(e.generation);
                let reset = kind == MetricKind::Counter && *v < e.value;
                if reset {
                    *retired += e.value;
                }
                e.value = *v;
                e.ts = ts;
                e.generation = generation;
                Updated { before, reset }
            }
            None => {
                entries.push(ScalarEntry {
                    worker,
                    generation,
                    ts,
                    value: *v,
                });
                Updated {
                    before: Held::No,
                    reset: false,
                }
            }
        },
        (
            SeriesData::Dist {
                entries, retired, ..
            },
            v,
        ) => {
            let values = dist_values(v);
            match entries.iter_mut().find(|e| e.worker == worker) {
                Some(e) => {
                    let before = held(e.generation);
                    let reset = dist_reset(&e.values, &values);
                    if reset {
                        add_into(retired, &e.values);
                    }
                    e.values = values;
                    e.generation = generation;
                    Updated { before, reset }
                }
                None => {
                    entries.push(DistEntry {
                        worker,
                        generation,
                        values,
                    });
                    Updated {
                        before: Held::No,
                        reset: false,
                    }
                }
            }
        }
        // Kinds are checked in `prepare`: a distribution never lands in a scalar series.
        (SeriesData::Scalar { .. }, _) => Updated {
            before: Held::Live,
            reset: false,
        },
    }
}

/// Marks the worker's entry of a counter-like series as dropped (it keeps counting).
fn set_dropped(s: &mut SeriesState, worker: u32) {
    match &mut s.data {
        SeriesData::Scalar { entries, .. } => {
            if let Some(e) = entries.iter_mut().find(|e| e.worker == worker) {
                e.generation |= DROPPED;
            }
        }
        SeriesData::Dist { entries, .. } => {
            if let Some(e) = entries.iter_mut().find(|e| e.worker == worker) {
                e.generation |= DROPPED;
            }
        }
    }
}

/// Why a worker's entry leaves a series.
#[derive(Clone, Copy)]
enum Departure<'a> {
    /// A living worker stopped reporting the series: counters are retired, gauges forgotten.
    Dropped,
    /// The worker is gone (deleted, dead, expired): counters are retired and gauges kept for
    /// the non-live modes, under the worker's label text.
    Departed { labels: &'a str, mode: GaugeMode },
    /// The caller accounts for the values elsewhere: nothing is kept.
    Forgotten,
}

/// Takes the worker's entry out of the series.
fn take_entry(s: &mut SeriesState, kind: MetricKind, worker: u32, departure: Departure<'_>) {
    let keep = !matches!(departure, Departure::Forgotten);
    match &mut s.data {
        SeriesData::Scalar {
            entries,
            retired,
            retired_gauge,
        } => {
            if let Some(pos) = entries.iter().position(|e| e.worker == worker) {
                let e = entries.swap_remove(pos);
                if kind == MetricKind::Counter {
                    if keep {
                        *retired += e.value;
                    }
                } else if let Departure::Departed { labels, mode } = departure
                    && !mode.is_live()
                {
                    retired_gauge.get_or_insert_with(Default::default).add(
                        labels,
                        e.value,
                        e.ts,
                        mode == GaugeMode::All,
                    );
                }
            }
        }
        SeriesData::Dist {
            entries, retired, ..
        } => {
            if let Some(pos) = entries.iter().position(|e| e.worker == worker) {
                let e = entries.swap_remove(pos);
                if keep {
                    add_into(retired, &e.values);
                }
            }
        }
    }
}
