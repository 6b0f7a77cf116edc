//! Accumulation: StatsD is a delta stream, Prometheus wants cumulative values. Like
//! statsd_exporter, counters add, gauges set (or adjust), timers and histograms observe into
//! Prometheus histograms with the configured `statsd.buckets`. The accumulated values are
//! handed to the store in batches (see [`Accumulator::take_changes`]) as ONE worker's latest
//! cumulative values, so the store lock is taken per flush, never per line.
//!
//! How each StatsD type lands, by the mapping rule's `metricType` override (none = the
//! StatsD type decides):
//!
//! | line type | none | `counter` | `gauge` | `histogram` |
//! | --- | --- | --- | --- | --- |
//! | `c` | counter += v/rate | counter += v/rate | gauge += v/rate | observe v (weight 1/rate) |
//! | `g` | gauge = v, or += v when signed (etsy) | counter += v | gauge = v / += v | observe v |
//! | `ms` `h` `d` | observe (`ms` / 1000, weight 1/rate) | counter += obs/rate | gauge = obs | observe |
//!
//! Deliberate choices:
//! - **Negative counter deltas** (monasca-statsd's `decrement()` sends `name:-1|c`): a
//!   Prometheus counter must never go backwards, so a negative delta into a counter is dropped
//!   and counted in `monasca_sidecar_statsd_dropped_total{reason="negative_counter"}`. To keep
//!   an up-down count, map the name with `metricType: gauge`: then increments and decrements
//!   both adjust a gauge.
//! - **monasca-statsd timers** arrive as `g` seconds (`db.query_seconds:0.25|g`). They stay
//!   gauges (the last duration), because nothing in the line says they are timers; a mapping
//!   rule with `metricType: histogram` turns them into real histograms (values already in
//!   seconds, so no unit conversion).
//! - **Counters get `_total`** appended (unless the name already ends with it), so text 0.0.4
//!   and OpenMetrics expose the same sample name (`demo.requests` -> `demo_requests_total`).
//! - **Sample rates never scale gauges** (`g:+3|g|@0.5` adds 3), as statsd_exporter and
//!   etsy statsd do: a gauge is a value, not a count of sampled events.
//! - **Signed gauge values are relative** (`+3|g`, `-3|g`) in the etsy dialect (the
//!   etsy/statsd_exporter rule; a negative absolute gauge needs `0|g` then `-N|g`). The
//!   monasca-statsd dialect sends absolute values (its timers too, as `g` seconds), so there
//!   `-5|g` is the value -5: a line is monasca-statsd when it carries dict tags
//!   (`|#{'k': 'v'}`), or every line is when `statsd.dialect` is `monasca`.
//! - **Non-finite values** never reach the accumulated state: a line whose value or
//!   rate-scaled value is not finite is refused by the parser
//!   (`errors_total{reason="non_finite"}`), and a sample whose accumulation would overflow
//!   to infinity is dropped (`dropped_total{reason="non_finite"}`).
//! - **Expiry** (`statsd.expireAfter`, off by default): series not updated for that long are
//!   removed by [`Accumulator::expire`]; the flush then hands the store the remaining series
//!   of those families, so the store retires the expired counters and histograms (never
//!   backwards) and forgets the gauges.
//! - **Worker labels and `_aggregate`** in tags (`pid`, `instance`, ...) are removed: all
//!   StatsD traffic is one delta stream and one store worker, and keeping them would make
//!   series collide once the store strips them. `le` tags are removed too (they would clash
//!   with histogram buckets); both count as tag errors.
//! - **Type conflicts** (the same family name as counter and then gauge, not forced by a
//!   mapping) keep the first type; the later samples are dropped and counted.

use super::line::{self, Line, LineError, Sample, SampleType, TagStyle};
use super::mapping::{Mapped, MappedName, Mapper, MappingError};
use crate::codec::{Dec, DecodeError, Enc};
use crate::model::{Family, HistogramValue, Label, MetricKind, Series, Value};
use crate::store::{AGGREGATE_LABEL, push_label};
use monasca_config::{SidecarConfig, StatsdDialect, StatsdMetricType, is_label_name};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Why a well-formed sample was not applied (label of `monasca_sidecar_statsd_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A mapping rule with `action: drop` matched.
    Mapping,
    /// A negative delta for a counter (counters never go backwards).
    NegativeCounter,
    /// The family already exists with another type.
    TypeConflict,
    /// The accumulator holds `limits.maxSeriesPerWorker` series already.
    SeriesLimit,
    /// The name starts with `monasca_sidecar_`.
    ReservedName,
    /// The store refused the family at flush (e.g. another source owns the name with another
    /// type); counted per series.
    StoreRejected,
    /// Accumulating the sample would make the value, sum, count or a bucket infinite.
    NonFinite,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Mapping,
        DropReason::NegativeCounter,
        DropReason::TypeConflict,
        DropReason::SeriesLimit,
        DropReason::ReservedName,
        DropReason::StoreRejected,
        DropReason::NonFinite,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            DropReason::Mapping => "mapping",
            DropReason::NegativeCounter => "negative_counter",
            DropReason::TypeConflict => "type_conflict",
            DropReason::SeriesLimit => "series_limit",
            DropReason::ReservedName => "reserved_name",
            DropReason::StoreRejected => "store_rejected",
            DropReason::NonFinite => "non_finite",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Counts since the last [`Accumulator::take_counts`]; added to the atomics once per batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Non-blank lines seen.
    pub lines: u64,
    /// Samples applied to the accumulated state.
    pub samples: u64,
    /// Rejected lines by [`LineError`].
    pub errors: [u64; LineError::ALL.len()],
    /// Dropped samples by [`DropReason`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Tags skipped (no value, reserved or worker label names, `le`) on lines that were applied.
    pub tag_errors: u64,
}

impl Counts {
    /// Rejected lines for one reason.
    pub fn error(&self, e: LineError) -> u64 {
        self.errors[e.index()]
    }

    /// Dropped samples for one reason.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.dropped[r.index()]
    }
}

/// The accumulator's maps (StatsD names, families, series keys: three lookups per line) use
/// [`HashState`](crate::hashing::HashState).
type FastMap<K, V> = HashMap<K, V, crate::hashing::HashState>;

/// Families and series keep their positions while nothing is removed (an insert appends), so a
/// cached line shape reaches its series by position instead of two lookups; every removal
/// moves the [`Accumulator::layout`] on, which makes the cached positions stale.
type IndexedMap<K, V> = indexmap::IndexMap<K, V, crate::hashing::HashState>;

/// The labels of one accumulated series, shared with flush snapshots.
pub type SeriesLabels = Arc<[(Box<str>, Box<str>)]>;

#[derive(Clone, Debug)]
enum AccValue {
    Scalar(f64),
    Histogram {
        /// Upper bounds, the last is `+Inf`.
        bounds: Arc<[f64]>,
        /// Per-bucket (not cumulative) counts.
        counts: Box<[f64]>,
        sum: f64,
        count: f64,
    },
}

#[derive(Debug)]
struct SeriesAcc {
    labels: SeriesLabels,
    value: AccValue,
    dirty: bool,
    /// The accumulator's clock when a sample last changed it (for `statsd.expireAfter`).
    updated: Instant,
}

#[derive(Debug)]
struct FamilyAcc {
    kind: MetricKind,
    series: IndexedMap<Box<str>, SeriesAcc>,
    dirty: bool,
}

/// Mapping results are cached per distinct StatsD name; the cache is emptied when it grows
/// past this (a client that puts ids in names must not grow memory without bound).
const MAPPING_CACHE_LIMIT: usize = 100_000;

/// The accumulated state of every StatsD series.
#[derive(Debug)]
pub struct Accumulator {
    mapper: Mapper,
    name_index: FastMap<Box<str>, u32>,
    mapped: Vec<Mapped>,
    families: IndexedMap<Box<str>, FamilyAcc>,
    /// Moves on with every removal of a family or series (their positions change then): a
    /// [`SeriesTarget`]'s cached position is used only while it was found in this layout.
    layout: u64,
    /// Histogram bounds for new series: `statsd.buckets` plus `+Inf`.
    bounds: Arc<[f64]>,
    worker_labels: Vec<String>,
    max_series: usize,
    series: usize,
    /// Scratch buffer for canonical series keys (reused; a resolved line copies its key out
    /// once, into its target).
    key: String,
    counts: Counts,
    /// `statsd.dialect`: every line is monasca-statsd (absolute gauges).
    all_monasca: bool,
    /// The time stamped on updated series; set per receive batch ([`Accumulator::set_clock`])
    /// rather than read per line.
    clock: Instant,
    /// What each recently seen line shape resolves to (see [`Shape`]); `None` only while a
    /// cached line is applied.
    shapes: Option<FastMap<Box<[u8]>, Shape>>,
    /// Scratch buffer for shape keys.
    shape_key: Vec<u8>,
    /// Most shapes cached before the cache is emptied.
    shape_limit: usize,
}

/// Line shapes cached at most (then the cache is emptied, as the mapping cache is): far more
/// than the distinct lines of an instrumented service (a series per call site and tag set),
/// at a few hundred bytes each (about 4 MiB when full). A client that puts ids or timestamps
/// in names or tags only misses the cache.
const SHAPE_CACHE_LIMIT: usize = 16_384;

/// A line's shape: the line without its value (its name, tags, type and rate), and what
/// every line of that shape resolves to. The slow path parses a line, maps its name,
/// sanitizes, filters and sorts its tags and builds the series key; a line whose shape was
/// seen before only has its value parsed, and lands where the first one did. Only lines of
/// one sample are cached; the cache is emptied when the configuration changes.
#[derive(Debug)]
struct Shape {
    kind: SampleType,
    rate: f64,
    /// Tag errors the line counts each time.
    tag_errors: u64,
    target: Target,
}

/// Where one sample lands.
#[derive(Debug)]
enum Target {
    Dropped(DropReason),
    Series(SeriesTarget),
}

/// One accumulated series, by family name and key.
#[derive(Debug)]
struct SeriesTarget {
    family: Box<str>,
    kind: MetricKind,
    key: Box<str>,
    labels: SeriesLabels,
    /// Gauges are absolute (the monasca-statsd dialect).
    monasca: bool,
    /// Where the series was last found: `(layout, family position, series position)`.
    at: Cell<(u64, u32, u32)>,
}

/// No position known.
const NOWHERE: (u64, u32, u32) = (u64::MAX, 0, 0);

/// One family's changed series, owned, so the store can be updated without holding the
/// accumulator's lock.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyChange {
    pub name: Box<str>,
    pub kind: MetricKind,
    pub series: Vec<(SeriesLabels, Value)>,
}

impl FamilyChange {
    /// The change as the store's ingest model (borrowing from `self`).
    pub fn family(&self) -> Family<'_> {
        let mut family = Family::new(&*self.name, self.kind);
        family.series = self
            .series
            .iter()
            .map(|(labels, value)| Series {
                labels: labels.iter().map(|(n, v)| Label::new(&**n, &**v)).collect(),
                value: value.clone(),
                timestamp: None,
            })
            .collect();
        family
    }
}

/// An accumulator for the default configuration (no mapping rules).
impl Default for Accumulator {
    fn default() -> Accumulator {
        let mut acc = Accumulator::empty();
        acc.configure(&SidecarConfig::default(), Mapper::default());
        acc
    }
}

impl Accumulator {
    /// An empty accumulator for `config` (mapping rules, buckets, worker labels, series limit).
    pub fn new(config: &SidecarConfig) -> Result<Accumulator, MappingError> {
        let mut acc = Accumulator::empty();
        acc.reconfigure(config)?;
        Ok(acc)
    }

    fn empty() -> Accumulator {
        Accumulator {
            mapper: Mapper::default(),
            name_index: FastMap::default(),
            mapped: Vec::new(),
            families: IndexedMap::default(),
            layout: 0,
            bounds: Arc::from([f64::INFINITY]),
            worker_labels: Vec::new(),
            max_series: usize::MAX,
            series: 0,
            key: String::with_capacity(256),
            counts: Counts::default(),
            all_monasca: false,
            clock: Instant::now(),
            shapes: Some(FastMap::default()),
            shape_key: Vec::with_capacity(256),
            shape_limit: SHAPE_CACHE_LIMIT,
        }
    }

    /// Tests: an accumulator that caches at most `limit` line shapes (0: parses and resolves
    /// every line, the reference the cache is checked against).
    #[cfg(test)]
    pub(crate) fn with_shape_limit(
        config: &SidecarConfig,
        limit: usize,
    ) -> Result<Accumulator, MappingError> {
        let mut acc = Accumulator::new(config)?;
        acc.shape_limit = limit;
        Ok(acc)
    }

    /// Sets the time stamped on the series updated from now on (the receivers call it once
    /// per batch).
    pub fn set_clock(&mut self, now: Instant) {
        self.clock = now;
    }

    /// Applies a new configuration. Existing series keep their histogram bounds and names;
    /// new mapping rules apply to lines from now on.
    pub fn reconfigure(&mut self, config: &SidecarConfig) -> Result<(), MappingError> {
        let mapper = Mapper::new(&config.statsd)?;
        self.configure(config, mapper);
        Ok(())
    }

    fn configure(&mut self, config: &SidecarConfig, mapper: Mapper) {
        self.mapper = mapper;
        self.name_index.clear();
        self.mapped.clear();
        if let Some(shapes) = &mut self.shapes {
            shapes.clear();
        }
        let mut bounds: Vec<f64> = config.statsd.buckets.clone();
        bounds.push(f64::INFINITY);
        self.bounds = bounds.into();
        self.worker_labels = config.worker_labels.clone();
        self.all_monasca = config.statsd.dialect == StatsdDialect::Monasca;
        self.max_series =
            usize::try_from(config.limits.max_series_per_worker).unwrap_or(usize::MAX);
    }

    /// Series currently held.
    pub fn series_count(&self) -> usize {
        self.series
    }

    /// Counts since the last call (and resets them).
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// Counts since the last [`Accumulator::take_counts`], without resetting.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Forgets every series (the store lost the StatsD worker: `POST /v1/clear`).
    pub fn reset(&mut self) {
        self.families.clear();
        self.series = 0;
        self.layout += 1;
    }

    /// Forgets one family (the store refused it); returns how many series it held.
    pub fn forget_family(&mut self, name: &str) -> usize {
        let n = self
            .families
            .swap_remove(name)
            .map_or(0, |f| f.series.len());
        self.series -= n;
        self.layout += 1;
        n
    }

    /// Accumulates every line of a datagram. Malformed lines are counted and skipped; they
    /// never affect the other lines.
    pub fn ingest_datagram(&mut self, datagram: &[u8]) {
        for l in line::lines(datagram) {
            self.ingest_line(l);
        }
    }

    /// Accumulates one line (already split and trimmed), counting the outcome.
    pub fn ingest_line(&mut self, raw: &[u8]) {
        self.counts.lines += 1;
        let span = line::value_span(raw);
        if let Some((start, end)) = span {
            self.shape_key.clear();
            self.shape_key.extend_from_slice(&raw[..start]);
            // (0xFF never occurs in UTF-8: the key cannot be read two ways.)
            self.shape_key.push(0xFF);
            self.shape_key.extend_from_slice(&raw[end..]);
            if let Some(shapes) = self.shapes.take() {
                let shape = shapes.get(self.shape_key.as_slice());
                if let Some(shape) = shape {
                    match line::sample_of_shape(&raw[start..end], shape.kind, shape.rate) {
                        Ok(sample) => self.apply_shape(shape, &sample),
                        Err(e) => self.count_error(e),
                    }
                }
                let hit = shape.is_some();
                self.shapes = Some(shapes);
                if hit {
                    return;
                }
            }
        }
        match line::parse_line(raw) {
            Ok(parsed) => {
                let shape = self.apply_parsed(&parsed);
                // `shape_key` still holds this line's key: `apply_parsed` does not touch it.
                if let (Some(shape), Some(_), Some(shapes)) = (shape, span, &mut self.shapes)
                    && self.shape_limit > 0
                {
                    if shapes.len() >= self.shape_limit {
                        shapes.clear();
                    }
                    shapes.insert(self.shape_key.as_slice().into(), shape);
                }
            }
            Err(e) => self.count_error(e),
        }
    }

    /// Counts a line rejected before parsing (too long, cut by truncation).
    pub fn reject_line(&mut self, e: LineError) {
        self.counts.lines += 1;
        self.count_error(e);
    }

    fn count_error(&mut self, e: LineError) {
        self.counts.errors[e.index()] += 1;
    }

    /// Index of the cached mapping of a StatsD name.
    fn mapping(&mut self, name: &str) -> usize {
        if let Some(&i) = self.name_index.get(name) {
            return i as usize;
        }
        if self.mapped.len() >= MAPPING_CACHE_LIMIT {
            self.name_index.clear();
            self.mapped.clear();
        }
        self.mapped.push(self.mapper.map(name));
        let i = self.mapped.len() - 1;
        self.name_index.insert(name.into(), i as u32);
        i
    }

    /// Applies a parsed line; returns its [`Shape`] when it can be cached (one sample).
    fn apply_parsed(&mut self, line: &Line<'_>) -> Option<Shape> {
        let (tag_errors, targets) = self.resolve(line);
        self.counts.tag_errors += tag_errors;
        for (sample, target) in line.samples.iter().zip(&targets) {
            self.apply_sample(target, sample);
        }
        match (line.samples.as_slice(), targets.into_inner()) {
            ([sample], Ok([target])) => Some(Shape {
                kind: sample.kind,
                rate: sample.rate,
                tag_errors,
                target,
            }),
            _ => None,
        }
    }

    /// Applies a line of a cached shape.
    fn apply_shape(&mut self, shape: &Shape, sample: &Sample) {
        self.counts.tag_errors += shape.tag_errors;
        self.apply_sample(&shape.target, sample);
    }

    /// Where each sample of a line lands, and the line's tag errors.
    fn resolve(&mut self, line: &Line<'_>) -> (u64, SmallVec<[Target; 1]>) {
        let index = self.mapping(&line.name);
        let mapped: &MappedName = match &self.mapped[index] {
            Mapped::Drop => return (0, dropped(DropReason::Mapping, line)),
            Mapped::Map(m) if m.reserved => return (0, dropped(DropReason::ReservedName, line)),
            Mapped::Map(m) => m,
        };

        // Labels: tags (sanitized) then rule labels (which win), minus worker/control labels.
        let mut labels: SmallVec<[(Cow<'_, str>, &str); 8]> = SmallVec::new();
        let mut tag_errors = line.bad_tags as u64;
        for tag in &line.tags {
            let name: Cow<'_, str> = if is_label_name(&tag.name) {
                Cow::Borrowed(&*tag.name)
            } else {
                let mut s = String::with_capacity(tag.name.len() + 1);
                crate::sources::statsd::mapping::sanitize_label_name(&tag.name, &mut s);
                Cow::Owned(s)
            };
            if name.starts_with("__")
                || name == "le"
                || name == AGGREGATE_LABEL
                || self.worker_labels.iter().any(|w| *w == *name)
            {
                tag_errors += 1;
                continue;
            }
            if tag.value.is_empty() {
                continue;
            }
            labels.push((name, &*tag.value));
        }
        for (name, value) in &mapped.labels {
            labels.retain(|(n, _)| **n != **name);
            if !value.is_empty() && !self.worker_labels.iter().any(|w| **w == **name) {
                labels.push((Cow::Borrowed(&**name), &**value));
            }
        }
        // Stable sort, then keep the last of each name (later tags win).
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let mut i = 0;
        while i + 1 < labels.len() {
            if labels[i].0 == labels[i + 1].0 {
                labels.remove(i);
                tag_errors += 1;
            } else {
                i += 1;
            }
        }
        self.key.clear();
        for (name, value) in labels.iter() {
            push_label(&mut self.key, name, value);
        }
        let key: Box<str> = self.key.as_str().into();
        let owned: SeriesLabels = labels
            .iter()
            .map(|(n, v)| (Box::from(&**n), Box::from(*v)))
            .collect();
        let monasca = self.all_monasca || line.style == TagStyle::Monasca;
        let targets = line
            .samples
            .iter()
            .map(|sample| {
                let kind = target_kind(sample.kind, mapped.kind);
                let family = if kind == MetricKind::Counter {
                    &mapped.counter_name
                } else {
                    &mapped.name
                };
                Target::Series(SeriesTarget {
                    family: family.clone(),
                    kind,
                    key: key.clone(),
                    labels: owned.clone(),
                    monasca,
                    at: Cell::new(NOWHERE),
                })
            })
            .collect();
        (tag_errors, targets)
    }

    /// Applies one sample where it lands.
    fn apply_sample(&mut self, target: &Target, sample: &Sample) {
        let target = match target {
            Target::Dropped(reason) => {
                self.counts.dropped[reason.index()] += 1;
                return;
            }
            Target::Series(t) => t,
        };
        let kind = target.kind;
        let delta = sample.scaled();
        if kind == MetricKind::Counter && delta < 0.0 {
            self.counts.dropped[DropReason::NegativeCounter.index()] += 1;
            return;
        }
        let (layout, f, i) = target.at.get();
        let (f, i) = if layout == self.layout {
            (f as usize, i as usize)
        } else {
            match self.find_or_add(target) {
                Some((f, i)) => {
                    target.at.set((self.layout, f as u32, i as u32));
                    (f, i)
                }
                None => return,
            }
        };
        // (Positions found in this layout always hold: nothing was removed since.)
        let Some((_, family)) = self.families.get_index_mut(f) else {
            debug_assert!(false, "a family position outlived its layout");
            return;
        };
        let FamilyAcc {
            series,
            dirty: family_dirty,
            ..
        } = family;
        let Some((_, series)) = series.get_index_mut(i) else {
            debug_assert!(false, "a series position outlived its layout");
            return;
        };
        // Every new value is computed first and stored only if finite, so a sample that
        // would overflow leaves the series exactly as it was.
        let applied = match (&mut series.value, kind) {
            (AccValue::Scalar(v), MetricKind::Counter) => set_finite(v, *v + delta),
            (AccValue::Scalar(v), _) => {
                let adjust = match sample.kind {
                    SampleType::Counter => true,
                    SampleType::Gauge => sample.signed && !target.monasca,
                    _ => false,
                };
                if adjust {
                    set_finite(v, *v + delta)
                } else {
                    set_finite(v, sample.observation())
                }
            }
            (
                AccValue::Histogram {
                    bounds,
                    counts,
                    sum,
                    count,
                },
                _,
            ) => {
                let x = sample.observation();
                let weight = 1.0 / sample.effective_rate();
                let bucket = bounds.partition_point(|b| *b < x).min(counts.len() - 1);
                let new_sum = *sum + x * weight;
                let new_count = *count + weight;
                let new_bucket = counts[bucket] + weight;
                if new_sum.is_finite() && new_count.is_finite() && new_bucket.is_finite() {
                    counts[bucket] = new_bucket;
                    *sum = new_sum;
                    *count = new_count;
                    true
                } else {
                    false
                }
            }
        };
        if !applied {
            self.counts.dropped[DropReason::NonFinite.index()] += 1;
            return;
        }
        series.dirty = true;
        series.updated = self.clock;
        *family_dirty = true;
        self.counts.samples += 1;
    }

    /// The positions of a target's family and series, found by name and key, either created
    /// if new; `None` (and the sample counted as dropped) on a type conflict or at the series
    /// limit.
    fn find_or_add(&mut self, target: &SeriesTarget) -> Option<(usize, usize)> {
        let kind = target.kind;
        let f = match self.families.get_index_of(&*target.family) {
            Some(f) => f,
            None if self.series >= self.max_series => {
                // (A new family would be a new series: not created, so nothing moves.)
                self.counts.dropped[DropReason::SeriesLimit.index()] += 1;
                return None;
            }
            None => {
                self.families
                    .insert_full(
                        target.family.clone(),
                        FamilyAcc {
                            kind,
                            series: IndexedMap::default(),
                            dirty: false,
                        },
                    )
                    .0
            }
        };
        let family = &mut self.families[f];
        if family.kind != kind {
            self.counts.dropped[DropReason::TypeConflict.index()] += 1;
            return None;
        }
        if let Some(i) = family.series.get_index_of(&*target.key) {
            return Some((f, i));
        }
        if self.series >= self.max_series {
            self.counts.dropped[DropReason::SeriesLimit.index()] += 1;
            return None;
        }
        self.series += 1;
        let value = match kind {
            MetricKind::Histogram => AccValue::Histogram {
                bounds: self.bounds.clone(),
                counts: vec![0.0; self.bounds.len()].into_boxed_slice(),
                sum: 0.0,
                count: 0.0,
            },
            _ => AccValue::Scalar(0.0),
        };
        let (i, _) = family.series.insert_full(
            target.key.clone(),
            SeriesAcc {
                labels: target.labels.clone(),
                value,
                dirty: false,
                updated: self.clock,
            },
        );
        Some((f, i))
    }

    /// Takes every series changed since the last call, as cumulative values.
    pub fn take_changes(&mut self) -> Vec<FamilyChange> {
        let mut out = Vec::new();
        for (name, family) in &mut self.families {
            if !family.dirty {
                continue;
            }
            family.dirty = false;
            let mut series = Vec::new();
            for s in family.series.values_mut() {
                if !s.dirty {
                    continue;
                }
                s.dirty = false;
                series.push((s.labels.clone(), value_of(&s.value)));
            }
            if !series.is_empty() {
                out.push(FamilyChange {
                    name: name.clone(),
                    kind: family.kind,
                    series,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Removes the series not updated since `cutoff` (`statsd.expireAfter`) and returns, for
    /// every family that lost series, ALL of its remaining series (possibly none), to be
    /// applied to the store with [`crate::store::Scope::Families`]: the store then retires
    /// the expired counters and histograms and forgets the expired gauges. Empty when nothing
    /// expired.
    pub fn expire(&mut self, cutoff: Instant) -> Vec<FamilyChange> {
        let mut out = Vec::new();
        let mut removed_total = 0;
        self.families.retain(|name, family| {
            let before = family.series.len();
            family.series.retain(|_, s| s.updated >= cutoff);
            let removed = before - family.series.len();
            if removed == 0 {
                return true;
            }
            removed_total += removed;
            out.push(FamilyChange {
                name: name.clone(),
                kind: family.kind,
                series: family
                    .series
                    .values_mut()
                    .map(|s| {
                        s.dirty = false;
                        (s.labels.clone(), value_of(&s.value))
                    })
                    .collect(),
            });
            family.dirty = false;
            !family.series.is_empty()
        });
        self.series -= removed_total;
        if removed_total > 0 {
            self.layout += 1;
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every series, as if all had changed (after a reset of the store side).
    pub fn mark_all_dirty(&mut self) {
        for family in self.families.values_mut() {
            family.dirty = true;
            for s in family.series.values_mut() {
                s.dirty = true;
            }
        }
    }
}

/// Every sample of `line` dropped for `reason`.
fn dropped(reason: DropReason, line: &Line<'_>) -> SmallVec<[Target; 1]> {
    line.samples
        .iter()
        .map(|_| Target::Dropped(reason))
        .collect()
}

/// Stores `new` in `slot` if it is finite; false (and `slot` unchanged) otherwise.
fn set_finite(slot: &mut f64, new: f64) -> bool {
    if new.is_finite() {
        *slot = new;
        true
    } else {
        false
    }
}

/// The Prometheus type a sample lands in.
fn target_kind(sample: SampleType, forced: Option<StatsdMetricType>) -> MetricKind {
    match (forced, sample) {
        (Some(StatsdMetricType::Counter), _) => MetricKind::Counter,
        (Some(StatsdMetricType::Gauge), _) => MetricKind::Gauge,
        (Some(StatsdMetricType::Histogram), _) => MetricKind::Histogram,
        (None, SampleType::Counter) => MetricKind::Counter,
        (None, SampleType::Gauge) => MetricKind::Gauge,
        (None, SampleType::Timer | SampleType::Histogram | SampleType::Distribution) => {
            MetricKind::Histogram
        }
    }
}

fn value_of(v: &AccValue) -> Value {
    match v {
        AccValue::Scalar(x) => Value::Scalar(*x),
        AccValue::Histogram {
            bounds,
            counts,
            sum,
            count,
        } => {
            let mut cumulative = Vec::with_capacity(counts.len());
            let mut running = 0.0;
            for c in counts.iter() {
                running += c;
                cumulative.push(running);
            }
            Value::Histogram(HistogramValue {
                bounds: bounds.to_vec(),
                buckets: cumulative,
                sum: *sum,
                count: *count,
            })
        }
    }
}

/// The accumulated series read back from a state file, installed by [`Accumulator::restore`].
#[derive(Debug, Default)]
pub struct Restored {
    families: IndexedMap<Box<str>, FamilyAcc>,
    series: usize,
}

impl Accumulator {
    /// Appends the accumulator's part of the state file: every series with its cumulative
    /// value and the wall-clock time it was last updated (for `statsd.expireAfter`).
    pub fn encode_state(&self, now: crate::store::Now, e: &mut Enc) {
        e.len(self.families.len());
        for (name, family) in &self.families {
            e.str(name);
            e.u8(crate::store::persist::kind_code(family.kind));
            e.len(family.series.len());
            for (key, s) in &family.series {
                e.str(key);
                e.pairs(s.labels.iter().map(|(n, v)| (&**n, &**v)));
                let age = now.mono.saturating_duration_since(s.updated).as_secs_f64();
                e.f64(now.wall - age);
                match &s.value {
                    AccValue::Scalar(v) => {
                        e.u8(0);
                        e.f64(*v);
                    }
                    AccValue::Histogram {
                        bounds,
                        counts,
                        sum,
                        count,
                    } => {
                        e.u8(1);
                        e.f64s(bounds);
                        e.f64s(counts);
                        e.f64(*sum);
                        e.f64(*count);
                    }
                }
            }
        }
    }

    /// Reads the accumulator's part of a state file (nothing is installed yet).
    pub fn decode_state(d: &mut Dec<'_>, now: crate::store::Now) -> Result<Restored, DecodeError> {
        let mut out = Restored::default();
        let n = d.len(8)?;
        for _ in 0..n {
            let name: Box<str> = d.str()?.into();
            let kind = crate::store::persist::kind_from(d.u8()?)?;
            let ns = d.len(8)?;
            let mut series = IndexedMap::with_capacity_and_hasher(ns, Default::default());
            for _ in 0..ns {
                let key: Box<str> = d.str()?.into();
                let labels: SeriesLabels = d
                    .pairs()?
                    .into_iter()
                    .map(|(n, v)| (n.into_boxed_str(), v.into_boxed_str()))
                    .collect();
                let age = (now.wall - d.f64()?).max(0.0);
                let updated = std::time::Duration::try_from_secs_f64(age)
                    .ok()
                    .and_then(|age| now.mono.checked_sub(age))
                    .unwrap_or(now.mono);
                let value = match (d.u8()?, kind) {
                    (0, MetricKind::Counter) => AccValue::Scalar(d.finite()?),
                    (0, MetricKind::Gauge) => AccValue::Scalar(d.f64()?),
                    (1, MetricKind::Histogram) => {
                        let bounds: Arc<[f64]> = d.f64s()?.into();
                        let counts = d.f64s()?;
                        let sum = d.f64()?;
                        let count = d.finite()?;
                        if bounds.is_empty()
                            || counts.len() != bounds.len()
                            || counts.iter().any(|c| !c.is_finite())
                        {
                            return Err(DecodeError::Corrupt("a StatsD histogram is malformed"));
                        }
                        AccValue::Histogram {
                            bounds,
                            counts: counts.into(),
                            sum,
                            count,
                        }
                    }
                    _ => return Err(DecodeError::Corrupt("a StatsD value does not fit its kind")),
                };
                let acc = SeriesAcc {
                    labels,
                    value,
                    dirty: true,
                    updated,
                };
                if series.insert(key, acc).is_some() {
                    return Err(DecodeError::Corrupt("a StatsD series appears twice"));
                }
            }
            out.series += series.len();
            let family = FamilyAcc {
                kind,
                series,
                dirty: true,
            };
            if out.families.insert(name, family).is_some() {
                return Err(DecodeError::Corrupt("a StatsD family appears twice"));
            }
        }
        Ok(out)
    }

    /// Installs restored series in place of the current ones, all marked changed so the next
    /// flush hands them to the store (which holds the same or older values: they continue).
    pub fn restore(&mut self, restored: Restored) {
        self.families = restored.families;
        self.series = restored.series;
        self.layout += 1;
    }
}
