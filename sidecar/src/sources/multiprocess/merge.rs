//! One worker's file entries as ingest-model families, merged the way MultiProcessCollector
//! merges samples (`_accumulate_metrics`), so the store's cross-worker aggregation then gives
//! the collector's answer.
//!
//! The merge is split in two so that a worker whose values change but whose keys do not (the
//! common case: a counter goes up) costs no key parsing: a [`Plan`] is built once from the
//! keys (which family and series each entry belongs to, with what role), and
//! [`Plan::families`] fills values in, for all series or only the changed ones.

use super::format::{FileKind, Key, parse_bound};
use crate::model::{Family, HistogramValue, Label, Labels, MetricKind, Series, Value};
use crate::store::{HeldSeries, HeldValue};
use monasca_config::GaugeMode;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::ops::Range;

/// A fast non-cryptographic hasher (FxHash) for the reader's internal maps. Their keys come
/// from the app's own files in its own pod, so hash flooding is not a threat worth SipHash's
/// cost on every series of every worker.
#[derive(Clone, Copy, Default)]
pub struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

/// `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
/// `HashSet` with [`FxHasher`].
pub type FxHashSet<K> = std::collections::HashSet<K, BuildHasherDefault<FxHasher>>;

/// One decoded entry with its value (for sources that are not files: the retired totals).
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed<'a> {
    pub kind: FileKind,
    pub key: Key<'a>,
    pub value: f64,
    pub timestamp: f64,
}

/// Entries a plan could not place. Never produced by the real client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeIssues {
    /// A family name used with two metric types or two gauge modes by one worker.
    pub conflicts: usize,
    /// A histogram bucket without a parsable `le`.
    pub bad_buckets: usize,
}

/// Where a value is read from when a plan is filled: opaque to the plan (the reader uses
/// file and offset, [`build_families`] an index).
pub type Slot = u64;

/// What an entry is within its series.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Part {
    Scalar,
    Bucket(f64),
    Sum,
    Count,
}

#[derive(Clone, Copy, Debug)]
struct Ref {
    slot: Slot,
    part: Part,
}

/// A span of the plan's string arena.
type Span = Range<u32>;

#[derive(Debug)]
struct PlanFamily {
    name: Span,
    help: Span,
    kind: MetricKind,
    mode: Option<GaugeMode>,
    series: Vec<u32>,
}

#[derive(Debug)]
struct PlanSeries {
    family: u32,
    /// Range of `Plan::labels`.
    labels: Range<u32>,
    /// Histogram buckets are kept sorted by bound.
    refs: SmallVec<[Ref; 1]>,
}

/// The structure of one worker's values: families, series (labels) and which entries make
/// each series. Owns its strings, so it outlives the bytes it was built from.
#[derive(Debug, Default)]
pub struct Plan {
    arena: String,
    labels: Vec<(Span, Span)>,
    families: Vec<PlanFamily>,
    series: Vec<PlanSeries>,
}

/// Builds a [`Plan`], one entry at a time.
#[derive(Default)]
pub struct PlanBuilder {
    plan: Plan,
    family_index: FxHashMap<Box<str>, u32>,
    /// Hash of (family, labels without `le`) to series indices.
    series_index: FxHashMap<u64, SmallVec<[u32; 1]>>,
    hasher: BuildHasherDefault<FxHasher>,
    pub issues: MergeIssues,
}

impl PlanBuilder {
    /// A builder for about `entries` entries.
    pub fn with_capacity(entries: usize) -> Self {
        let mut b = PlanBuilder::default();
        b.series_index.reserve(entries);
        b.plan.series.reserve(entries);
        b.plan.labels.reserve(entries * 2);
        b.plan.arena.reserve(entries * 24);
        b
    }

    /// Places one entry: `kind` is its file's kind, `slot` where its value will be read.
    /// Returns the series it belongs to, or None when it does not contribute (`_created`,
    /// conflicts, bad buckets).
    ///
    /// - counters: family = sample name (`requests_total`), as text 0.0.4 exposes it;
    /// - gauges: family = sample name, mode from the file name;
    /// - histograms: family = metric name; `_bucket` (per-bucket values, by `le`) and `_sum`;
    /// - summaries: family = metric name; `_count` and `_sum`.
    pub fn add(&mut self, kind: FileKind, key: &Key<'_>, slot: Slot) -> Option<u32> {
        let (name, mkind, mode): (&str, MetricKind, Option<GaugeMode>) = match kind {
            FileKind::Counter => (&key.sample, MetricKind::Counter, None),
            FileKind::Gauge(m) => (&key.sample, MetricKind::Gauge, Some(m)),
            FileKind::Histogram => (&key.metric, MetricKind::Histogram, None),
            FileKind::Summary => (&key.metric, MetricKind::Summary, None),
        };
        let suffix = key.sample.strip_prefix(key.metric.as_ref());
        let part = match mkind {
            MetricKind::Histogram => match suffix {
                Some("_bucket") => match key.label("le").and_then(parse_bound) {
                    Some(b) => Part::Bucket(b),
                    None => {
                        self.issues.bad_buckets += 1;
                        return None;
                    }
                },
                Some("_sum") => Part::Sum,
                // `_count` is derived from the buckets; `_created` is not aggregated.
                _ => return None,
            },
            MetricKind::Summary => match suffix {
                Some("_sum") => Part::Sum,
                Some("_count") => Part::Count,
                _ => return None,
            },
            _ => Part::Scalar,
        };
        let family = match self.family_index.get(name) {
            Some(&i) => {
                let f = &self.plan.families[i as usize];
                if f.kind != mkind || f.mode != mode {
                    self.issues.conflicts += 1;
                    return None;
                }
                i
            }
            None => {
                let name_span = self.plan.intern(name);
                let help = self.plan.intern(&key.help);
                self.plan.families.push(PlanFamily {
                    name: name_span,
                    help,
                    kind: mkind,
                    mode,
                    series: Vec::new(),
                });
                let i = (self.plan.families.len() - 1) as u32;
                self.family_index.insert(name.into(), i);
                i
            }
        };
        let skip_le = mkind == MetricKind::Histogram;
        let id_labels = || {
            key.labels
                .iter()
                .filter(move |(n, _)| !(skip_le && n == "le"))
                .map(|(n, v)| (n.as_ref(), v.as_ref()))
        };
        let hash = {
            let mut h = self.hasher.build_hasher();
            h.write_u32(family);
            for (n, v) in id_labels() {
                h.write(n.as_bytes());
                h.write_u8(0xff);
                h.write(v.as_bytes());
                h.write_u8(0xff);
            }
            h.finish()
        };
        let plan = &self.plan;
        let found = self.series_index.get(&hash).and_then(|candidates| {
            candidates.iter().copied().find(|&s| {
                let series = &plan.series[s as usize];
                let have = &plan.labels[series.labels.start as usize..series.labels.end as usize];
                series.family == family
                    && have.len() == id_labels().count()
                    && have
                        .iter()
                        .zip(id_labels())
                        .all(|((n, v), (kn, kv))| plan.str(n) == kn && plan.str(v) == kv)
            })
        });
        let series = match found {
            Some(s) => s,
            None => {
                let start = self.plan.labels.len() as u32;
                for (n, v) in id_labels() {
                    let n = self.plan.intern(n);
                    let v = self.plan.intern(v);
                    self.plan.labels.push((n, v));
                }
                let end = self.plan.labels.len() as u32;
                self.plan.series.push(PlanSeries {
                    family,
                    labels: start..end,
                    refs: SmallVec::new(),
                });
                let s = (self.plan.series.len() - 1) as u32;
                self.plan.families[family as usize].series.push(s);
                self.series_index.entry(hash).or_default().push(s);
                s
            }
        };
        let refs = &mut self.plan.series[series as usize].refs;
        let r = Ref { slot, part };
        match part {
            Part::Bucket(b) => {
                let at = refs
                    .iter()
                    .position(|x| matches!(x.part, Part::Bucket(o) if o > b))
                    .unwrap_or(refs.len());
                refs.insert(at, r);
            }
            _ => refs.push(r),
        }
        Some(series)
    }

    pub fn finish(self) -> (Plan, MergeIssues) {
        (self.plan, self.issues)
    }
}

impl Plan {
    fn intern(&mut self, s: &str) -> Span {
        let start = self.arena.len() as u32;
        self.arena.push_str(s);
        start..self.arena.len() as u32
    }

    fn str(&self, span: &Span) -> &str {
        self.arena
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The families with values filled in by `value_of(slot) -> (value, timestamp)`.
    ///
    /// `only`: the series to include (sorted, deduplicated), or all of them. `skip_live`
    /// leaves out `live*` gauges (for dead workers). A `mostrecent` gauge whose value was
    /// never set (timestamp 0 everywhere) is left out, as the collector never shows it.
    pub fn families<'p>(
        &'p self,
        only: Option<&[u32]>,
        skip_live: bool,
        value_of: &dyn Fn(Slot) -> Option<(f64, f64)>,
    ) -> Vec<Family<'p>> {
        let mut out: Vec<Family<'p>> = Vec::new();
        let emit = |out: &mut Vec<Family<'p>>, s: u32| {
            let Some(series) = self.series.get(s as usize) else {
                return;
            };
            let pf = &self.families[series.family as usize];
            if skip_live && pf.mode.is_some_and(GaugeMode::is_live) {
                return;
            }
            let Some((value, timestamp)) = self.value(pf, series, value_of) else {
                return;
            };
            let name = self.str(&pf.name);
            if out.last().is_none_or(|f| f.name != name) {
                let mut family = Family::new(Cow::Borrowed(name), pf.kind);
                if only.is_none() {
                    family.series.reserve_exact(pf.series.len());
                }
                family.mode = pf.mode;
                let help = self.str(&pf.help);
                if !help.is_empty() {
                    family.help = Some(Cow::Borrowed(help));
                }
                out.push(family);
            }
            if let Some(f) = out.last_mut() {
                f.series.push(Series {
                    labels: self.series_labels(series),
                    value,
                    timestamp,
                });
            }
        };
        match only {
            None => {
                for f in &self.families {
                    for &s in &f.series {
                        emit(&mut out, s);
                    }
                }
            }
            Some(series) => {
                // Grouped by family so each family appears once.
                let mut sorted: Vec<(u32, u32)> = series
                    .iter()
                    .filter_map(|&s| Some((self.series.get(s as usize)?.family, s)))
                    .collect();
                sorted.sort_unstable();
                sorted.dedup();
                for (_, s) in sorted {
                    emit(&mut out, s);
                }
            }
        }
        out
    }

    /// One series' new value for [`crate::store::Store::update_held`] (families and series
    /// numbered as in this plan): None when [`Plan::families`] would leave it out.
    pub fn held_value(
        &self,
        s: u32,
        skip_live: bool,
        value_of: &dyn Fn(Slot) -> Option<(f64, f64)>,
    ) -> Option<HeldValue> {
        let series = self.series.get(s as usize)?;
        let pf = self.families.get(series.family as usize)?;
        if skip_live && pf.mode.is_some_and(GaugeMode::is_live) {
            return None;
        }
        let (value, timestamp) = self.value(pf, series, value_of)?;
        Some(HeldValue {
            family: series.family,
            series: s,
            value,
            timestamp,
        })
    }

    fn series_labels(&self, series: &PlanSeries) -> Labels<'_> {
        self.labels[series.labels.start as usize..series.labels.end as usize]
            .iter()
            .map(|(n, v)| Label {
                name: Cow::Borrowed(self.str(n)),
                value: Cow::Borrowed(self.str(v)),
            })
            .collect()
    }

    /// One series' value, merged like the collector: counters and counter-like parts summed,
    /// histogram buckets cumulated in bound order (`None` while `+Inf` is not written yet,
    /// `_count` = total),
    /// gauges last-wins or, for `mostrecent`, latest timestamp.
    fn value(
        &self,
        family: &PlanFamily,
        series: &PlanSeries,
        value_of: &dyn Fn(Slot) -> Option<(f64, f64)>,
    ) -> Option<(Value, Option<f64>)> {
        let values = series
            .refs
            .iter()
            .filter_map(|r| value_of(r.slot).map(|(v, ts)| (r.part, v, ts)));
        match family.kind {
            MetricKind::Counter => Some((Value::Scalar(values.map(|(_, v, _)| v).sum()), None)),
            MetricKind::Histogram => {
                let mut bounds: Vec<f64> = Vec::with_capacity(series.refs.len());
                let mut buckets: Vec<f64> = Vec::with_capacity(series.refs.len());
                let (mut acc, mut sum) = (0.0, 0.0);
                for (part, v, _) in values {
                    match part {
                        Part::Bucket(b) => {
                            acc += v;
                            if bounds.last() == Some(&b) {
                                if let Some(last) = buckets.last_mut() {
                                    *last = acc;
                                }
                            } else {
                                bounds.push(b);
                                buckets.push(acc);
                            }
                        }
                        Part::Sum => sum += v,
                        _ => {}
                    }
                }
                // prometheus_client writes a new histogram's `_sum` and then its buckets in bound
                // order, `+Inf` last: without `+Inf` the worker is still creating the series.
                // Skip it this scan instead of fixing a truncated bucket layout for good.
                if bounds.last() != Some(&f64::INFINITY) {
                    return None;
                }
                Some((
                    Value::Histogram(HistogramValue {
                        bounds,
                        buckets,
                        sum,
                        count: acc,
                    }),
                    None,
                ))
            }
            MetricKind::Summary => {
                let (mut sum, mut count) = (0.0, 0.0);
                for (part, v, _) in values {
                    match part {
                        Part::Sum => sum += v,
                        Part::Count => count += v,
                        _ => {}
                    }
                }
                Some((Value::Summary { sum, count }, None))
            }
            _ => {
                if family
                    .mode
                    .is_some_and(|m| m.base() == GaugeMode::Mostrecent)
                {
                    let mut best: Option<(f64, f64)> = None;
                    for (_, v, ts) in values {
                        if ts != 0.0 && best.is_none_or(|(_, t)| ts >= t) {
                            best = Some((v, ts));
                        }
                    }
                    best.map(|(v, ts)| (Value::Scalar(v), Some(ts)))
                } else {
                    values.last().map(|(_, v, _)| (Value::Scalar(v), None))
                }
            }
        }
    }
}

/// The plan's numbering of families and series is the one its held values use.
impl HeldSeries for Plan {
    fn family_name(&self, family: u32) -> &str {
        self.families
            .get(family as usize)
            .map_or("", |f| self.str(&f.name))
    }

    fn labels(&self, series: u32) -> Labels<'_> {
        self.series
            .get(series as usize)
            .map(|s| self.series_labels(s))
            .unwrap_or_default()
    }
}

/// Builds one worker's families from decoded entries (all of its files), with the semantics
/// of [`PlanBuilder::add`] and [`Plan::families`]; the families own what they need from the
/// entries, so this is for small inputs (the retired totals, tests).
pub fn build_families<'a>(entries: &[Parsed<'a>], issues: &mut MergeIssues) -> Vec<Family<'a>> {
    let mut builder = PlanBuilder::default();
    for (i, e) in entries.iter().enumerate() {
        builder.add(e.kind, &e.key, i as Slot);
    }
    let (plan, found) = builder.finish();
    issues.conflicts += found.conflicts;
    issues.bad_buckets += found.bad_buckets;
    let value_of = |slot: Slot| entries.get(slot as usize).map(|e| (e.value, e.timestamp));
    plan.families(None, false, &value_of)
        .into_iter()
        .map(into_owned)
        .collect()
}

/// A family that no longer borrows the plan.
fn into_owned<'a>(f: Family<'_>) -> Family<'a> {
    Family {
        name: Cow::Owned(f.name.into_owned()),
        kind: f.kind,
        help: f.help.map(|h| Cow::Owned(h.into_owned())),
        unit: f.unit.map(|u| Cow::Owned(u.into_owned())),
        mode: f.mode,
        series: f
            .series
            .into_iter()
            .map(|s| Series {
                labels: s
                    .labels
                    .into_iter()
                    .map(|l| Label {
                        name: Cow::Owned(l.name.into_owned()),
                        value: Cow::Owned(l.value.into_owned()),
                    })
                    .collect(),
                value: s.value,
                timestamp: s.timestamp,
            })
            .collect(),
    }
}
