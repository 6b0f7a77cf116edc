//! OTLP metrics ingest: OpenTelemetry SDK workers become one Prometheus target.
//!
//! Pipeline: [`decode`] reads an `ExportMetricsServiceRequest` (protobuf or OTLP/JSON, the
//! `opentelemetry-proto` types); [`translate`](mod@translate) validates every data point and
//! ties it to a worker and a Prometheus family (names per the OpenTelemetry/Prometheus
//! compatibility specification, see [`names`]); [`Streams::apply`] turns points into each
//! worker's latest cumulative values and applies them to the store with [`Scope::Series`]. The
//! HTTP edge (`POST /v1/metrics` on `listen.otlp`) is in `server::routes`.
//!
//! # Worker identity
//! A worker is a resource: all its attributes, canonically sorted, form the store worker id.
//! The resource attributes named in `otlp.workerAttributes` (default `service.instance.id`,
//! `process.pid`, `worker.id`) and those whose sanitised name is one of `workerLabels` (the
//! `worker` attribute of OpenTelemetry's gunicorn example) are *worker attributes*: they are
//! never labels and never in `target_info`, like worker labels elsewhere.
//!
//! When a resource has no worker attribute, processes may send identical resources. Then a
//! cumulative stream's `start_time_unix_nano` is part of the worker id: each process has its
//! own start times (the SDK sets them when the stream begins), so two processes never share
//! a cumulative value, and a restarted process (new start time) is a new worker while the
//! old one's last value stays counted until it is forgotten (`forgetAfter`) and retired.
//! Delta streams need no identity: deltas of any process simply add up. Gauges without
//! worker attributes cannot be told apart: the last one written wins.
//!
//! When a resource has a worker attribute, a new start time of one of its cumulative
//! monotonic streams (counter, histogram, summary) is a restart: the old value is retired
//! into the series' total and counting continues from the new value; it never goes back.
//!
//! # Semantics
//! - Monotonic cumulative Sums are counters (`_total`); non-finite or negative values are
//!   rejected. Monotonic delta Sums are accumulated by the sidecar into a cumulative counter,
//!   as StatsD deltas are; a negative delta is rejected.
//! - Non-monotonic Sums (cumulative or accumulated deltas) and Gauges are gauges, combined
//!   across workers by the gauge modes (`aggregation`).
//! - Explicit-bucket Histograms are histograms (cumulative buckets ending in `+Inf`); merged
//!   only with identical bounds. Mismatched bucket counts and bounds are rejected.
//! - Summaries keep `_count` and `_sum`; quantiles cannot be aggregated and are dropped.
//! - Exponential histograms are rejected with a partial-success message: converting one
//!   exactly would need its bounds `base^i`, and the SDK changes the scale (hence every
//!   bound) as data arrives, so workers' layouts would not match from one export to the next
//!   and could never merge into Prometheus' fixed buckets without approximation.
//! - Resource: `service.namespace/service.name` is the `job` label of every series; the other
//!   non-worker attributes are the labels of `target_info` (off with `otlp.targetInfo:
//!   false`). The instrumentation scope adds `otel_scope_name`/`otel_scope_version`
//!   (`otlp.scopeLabels`).
//!
//! Rejected points are counted in `monasca_sidecar_otlp_rejected_points_total{reason}` and
//! explained in the response's `partial_success.error_message`; the other points of the
//! request are kept.

pub mod decode;
pub mod names;
#[cfg(test)]
mod tests;
pub mod translate;

pub use decode::{DecodeError, Encoding};
pub use translate::{Settings, Temporality, Translation, translate};

use crate::codec::{Dec as StateDec, DecodeError as StateError, Enc as StateEnc};
use crate::component::SelfMetrics;
use crate::model::{Family, HistogramValue, Label, Labels, MetricKind, Series, Value};
use crate::self_metrics::{Counter, EnumCounters, Registry};
use crate::store::{Now, Scope, Store};
use indexmap::IndexMap;
use monasca_config::GaugeMode;
use parking_lot::Mutex;
use prometheus_client::metrics::family::Family as MetricFamily;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use translate::{Meta, Point, PointValue};

/// How many distinct explanations a response carries at most.
const MAX_MESSAGES: usize = 5;

/// Text of a float as Prometheus writes it.
pub(crate) fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Rejected data points: how many, by fixed reason, and a few explanations.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rejections {
    pub count: u64,
    pub by_reason: BTreeMap<&'static str, u64>,
    messages: Vec<String>,
    more: usize,
}

impl Rejections {
    /// Records `n` rejected points (0 for a warning) with a fixed reason and an explanation.
    pub fn add(&mut self, reason: &'static str, n: u64, message: String) {
        self.count += n;
        if n > 0 {
            *self.by_reason.entry(reason).or_insert(0) += n;
        }
        if self.messages.contains(&message) {
            return;
        }
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(message);
        } else {
            self.more += 1;
        }
    }

    /// The `partial_success.error_message`: every distinct explanation, up to a few.
    pub fn message(&self) -> String {
        let mut m = self.messages.join("; ");
        if self.more > 0 {
            m.push_str(&format!("; and {} more", self.more));
        }
        m
    }

    fn merge(&mut self, other: Rejections) {
        for (reason, n) in other.by_reason {
            *self.by_reason.entry(reason).or_insert(0) += n;
        }
        self.count += other.count;
        for m in other.messages {
            if !self.messages.contains(&m) {
                if self.messages.len() < MAX_MESSAGES {
                    self.messages.push(m);
                } else {
                    self.more += 1;
                }
            }
        }
        self.more += other.more;
    }
}

/// What one request did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub accepted: u64,
    /// Accepted points by temporality (cumulative, delta, gauge).
    pub by_temporality: [u64; 3],
    pub rejected: Rejections,
}

impl Outcome {
    fn accept(&mut self, meta: &Meta, n: u64) {
        self.accepted += n;
        self.by_temporality[meta.temporality as usize] += n;
    }
}

/// A stream of one worker: the family name and its labels.
type StreamKey = (String, Vec<(String, String)>);

/// What the sidecar remembers of a stream between requests.
#[derive(Clone, Debug, PartialEq)]
struct Stream {
    /// Start time of the last cumulative point (restart detection).
    start: u64,
    /// The running total of a delta stream.
    total: Option<PointValue>,
}

/// Per-worker stream state: delta totals and cumulative start times. Kept only for workers
/// the store knows: when the store forgets a worker (retiring its values), its totals start
/// again from zero, so nothing is counted twice.
#[derive(Debug, Default)]
pub struct Streams {
    workers: HashMap<String, HashMap<StreamKey, Stream>>,
}

/// One series being built for the store, and the state to remember once it is applied.
struct Pending {
    value: PointValue,
    time: u64,
    stream: Option<Stream>,
    /// A cumulative restart: the old value must be retired first.
    restarted: bool,
    points: u64,
}

impl Streams {
    /// Number of streams remembered (for tests and self-metrics).
    pub fn len(&self) -> usize {
        self.workers.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a translated request to the store, worker by worker. A worker's update is
    /// applied whole when the store accepts it; otherwise family by family, so one bad
    /// family never loses the others.
    pub fn apply(&mut self, store: &mut Store, t: Translation, now: Now) -> Outcome {
        let mut outcome = Outcome {
            accepted: 0,
            by_temporality: [0; 3],
            rejected: t.rejected,
        };
        self.workers.retain(|id, _| store.has_worker(id));
        let mut by_worker: Vec<Vec<&Point>> = vec![Vec::new(); t.workers.len()];
        for p in &t.points {
            by_worker[p.worker].push(p);
        }
        for ((id, worker), points) in t.workers.iter().zip(by_worker) {
            if points.is_empty() {
                continue;
            }
            let state = self.workers.get(id);
            let (families, rejected) =
                pending_families(&t.metas, &points, state, worker.identified);
            outcome.rejected.merge(rejected);
            let built: Vec<(Family<'static>, Option<Family<'static>>, u64)> = families
                .iter()
                .map(|(meta, series)| build_family(&t.metas[*meta], series))
                .collect();
            // Retire restarted streams first (a zero value is below any old value).
            let resets: Vec<Family<'static>> =
                built.iter().filter_map(|(_, r, _)| r.clone()).collect();
            if !resets.is_empty() {
                let _ = store.apply(&worker.key, &resets, Scope::Series, now);
            }
            let all: Vec<Family<'static>> = built.iter().map(|(f, _, _)| f.clone()).collect();
            match store.apply(&worker.key, &all, Scope::Series, now) {
                Ok(_) => {
                    for ((meta, series), (_, _, n)) in families.iter().zip(&built) {
                        self.commit(id, series);
                        outcome.accept(&t.metas[*meta], *n);
                    }
                }
                Err(_) => {
                    for ((meta, series), (family, _, n)) in families.iter().zip(&built) {
                        match store.apply(
                            &worker.key,
                            std::slice::from_ref(family),
                            Scope::Series,
                            now,
                        ) {
                            Ok(_) => {
                                self.commit(id, series);
                                outcome.accept(&t.metas[*meta], *n);
                            }
                            Err(e) => outcome.rejected.add(e.reason(), *n, e.to_string()),
                        }
                    }
                }
            }
        }
        outcome
    }

    fn commit(&mut self, worker: &str, series: &IndexMap<StreamKey, Pending>) {
        for (key, p) in series {
            if let Some(stream) = &p.stream {
                self.workers
                    .entry(worker.to_string())
                    .or_default()
                    .insert(key.clone(), stream.clone());
            }
        }
    }
}

type PendingFamilies = IndexMap<usize, IndexMap<StreamKey, Pending>>;

/// Groups a worker's points into families and series, accumulating deltas onto the totals
/// remembered in `state` and spotting cumulative restarts.
fn pending_families(
    metas: &[Meta],
    points: &[&Point],
    state: Option<&HashMap<StreamKey, Stream>>,
    identified: bool,
) -> (PendingFamilies, Rejections) {
    let mut rejected = Rejections::default();
    let mut families: PendingFamilies = IndexMap::new();
    // Family name -> meta index, to refuse one name used with two kinds in one update.
    let mut names: HashMap<&str, usize> = HashMap::new();
    for p in points {
        let meta = &metas[p.meta];
        let family_meta = *names.entry(meta.name.as_str()).or_insert(p.meta);
        if metas[family_meta].kind != meta.kind
            || metas[family_meta].temporality != meta.temporality
        {
            rejected.add(
                "type_conflict",
                1,
                format!(
                    "metric {} is sent as two different types or temporalities",
                    meta.name
                ),
            );
            continue;
        }
        let series = families.entry(family_meta).or_default();
        let key: StreamKey = (meta.name.clone(), p.labels.clone());
        let remembered = state.and_then(|s| s.get(&key));
        match meta.temporality {
            Temporality::Delta => {
                let base = match series.get(&key) {
                    Some(pending) => Some(&pending.value),
                    None => remembered.and_then(|s| s.total.as_ref()),
                };
                let total = match add_delta(base, &p.value) {
                    Ok(v) => v,
                    Err((reason, msg)) => {
                        rejected.add(reason, 1, format!("{}: {msg}", meta.name));
                        continue;
                    }
                };
                let entry = series.entry(key).or_insert(Pending {
                    value: total.clone(),
                    time: p.time,
                    stream: None,
                    restarted: false,
                    points: 0,
                });
                entry.value = total.clone();
                entry.points += 1;
                entry.stream = Some(Stream {
                    start: p.start,
                    total: Some(total),
                });
            }
            Temporality::Cumulative | Temporality::Instant => {
                let cumulative = meta.temporality == Temporality::Cumulative;
                let restarted = identified
                    && cumulative
                    && meta.kind != MetricKind::Gauge
                    && remembered.is_some_and(|s| s.start != p.start);
                let stream = (identified && cumulative).then_some(Stream {
                    start: p.start,
                    total: None,
                });
                match series.get_mut(&key) {
                    Some(pending) => {
                        pending.points += 1;
                        if p.time >= pending.time {
                            pending.value = p.value.clone();
                            pending.time = p.time;
                            pending.restarted |= restarted;
                            pending.stream = stream;
                        }
                    }
                    None => {
                        series.insert(
                            key,
                            Pending {
                                value: p.value.clone(),
                                time: p.time,
                                stream,
                                restarted,
                                points: 1,
                            },
                        );
                    }
                }
            }
        }
    }
    (families, rejected)
}

/// A delta added to a running total.
fn add_delta(
    base: Option<&PointValue>,
    delta: &PointValue,
) -> Result<PointValue, (&'static str, String)> {
    // Negative monotonic deltas were refused by `translate`.
    match (base, delta) {
        (None, d) => Ok(d.clone()),
        (Some(PointValue::Scalar(a)), PointValue::Scalar(d)) => Ok(PointValue::Scalar(a + d)),
        (
            Some(PointValue::Histogram {
                bounds,
                counts,
                sum,
                count,
            }),
            PointValue::Histogram {
                bounds: b2,
                counts: c2,
                sum: s2,
                count: n2,
            },
        ) => {
            if bounds.len() != b2.len() || bounds.iter().zip(b2).any(|(a, b)| a != b) {
                return Err((
                    "histogram_layout_mismatch",
                    "delta histogram bounds changed; buckets cannot be added".into(),
                ));
            }
            Ok(PointValue::Histogram {
                bounds: bounds.clone(),
                counts: counts
                    .iter()
                    .zip(c2)
                    .map(|(a, b)| a.saturating_add(*b))
                    .collect(),
                sum: sum + s2,
                count: count.saturating_add(*n2),
            })
        }
        _ => Err((
            "type_conflict",
            "a delta stream changed its point type".into(),
        )),
    }
}

/// The store value of a point value: histogram buckets made cumulative, ending in `+Inf`.
fn store_value(v: &PointValue) -> Value {
    match v {
        PointValue::Scalar(x) => Value::Scalar(*x),
        PointValue::Histogram {
            bounds,
            counts,
            sum,
            count,
        } => {
            let mut b = Vec::with_capacity(bounds.len() + 1);
            b.extend_from_slice(bounds);
            b.push(f64::INFINITY);
            let mut running = 0u64;
            let buckets = counts
                .iter()
                .map(|c| {
                    running = running.saturating_add(*c);
                    running as f64
                })
                .collect();
            Value::Histogram(HistogramValue {
                bounds: b,
                buckets,
                sum: *sum,
                count: *count as f64,
            })
        }
        PointValue::Summary { sum, count } => Value::Summary {
            sum: *sum,
            count: *count as f64,
        },
    }
}

/// The zero of a value's shape: applied before a restarted stream's new value, it makes the
/// store retire the old one.
fn zero_value(v: &PointValue) -> Value {
    match v {
        PointValue::Scalar(_) => Value::Scalar(0.0),
        PointValue::Histogram { bounds, counts, .. } => store_value(&PointValue::Histogram {
            bounds: bounds.clone(),
            counts: vec![0; counts.len()],
            sum: 0.0,
            count: 0,
        }),
        PointValue::Summary { .. } => Value::Summary {
            sum: 0.0,
            count: 0.0,
        },
    }
}

fn model_labels(labels: &[(String, String)]) -> Labels<'static> {
    labels
        .iter()
        .map(|(n, v)| Label::new(n.clone(), v.clone()))
        .collect()
}

/// The family for the store, the family that retires restarted series (if any), and the
/// number of points behind it.
fn build_family(
    meta: &Meta,
    series: &IndexMap<StreamKey, Pending>,
) -> (Family<'static>, Option<Family<'static>>, u64) {
    let new = || {
        let mut f = Family::new(meta.name.clone(), meta.kind);
        f.help = meta.help.clone().map(Into::into);
        if meta.target_info {
            // One constant series per resource, however many workers send it.
            f.mode = Some(GaugeMode::Livemax);
        }
        f
    };
    let mut family = new();
    let mut reset = new();
    let mut points = 0;
    for ((_, labels), p) in series {
        points += p.points;
        family.series.push(Series {
            labels: model_labels(labels),
            value: store_value(&p.value),
            timestamp: None,
        });
        if p.restarted {
            reset.series.push(Series {
                labels: model_labels(labels),
                value: zero_value(&p.value),
                timestamp: None,
            });
        }
    }
    let reset = (!reset.series.is_empty()).then_some(reset);
    (family, reset, points)
}

/// The OTLP receiver's shared state: stream state and self-metrics.
pub struct Otlp {
    streams: Mutex<Streams>,
    /// By [`Encoding`] and by [`Temporality`] (index = variant).
    requests: EnumCounters<2>,
    accepted: EnumCounters<3>,
    /// By fixed reason, created on first use.
    rejected: MetricFamily<[(&'static str, &'static str); 1], Counter>,
}

impl Default for Otlp {
    fn default() -> Otlp {
        Otlp {
            streams: Mutex::default(),
            requests: EnumCounters::new(
                "encoding",
                [Encoding::Protobuf, Encoding::Json].map(Encoding::as_str),
            ),
            accepted: EnumCounters::new(
                "temporality",
                [
                    Temporality::Cumulative,
                    Temporality::Delta,
                    Temporality::Instant,
                ]
                .map(Temporality::as_str),
            ),
            rejected: MetricFamily::default(),
        }
    }
}

impl Otlp {
    pub fn new() -> Otlp {
        Otlp::default()
    }

    /// Translates and applies one decoded request. The stream lock is taken before the
    /// store's, always in that order.
    pub fn ingest(
        &self,
        store: &parking_lot::RwLock<Store>,
        req: &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
        settings: &Settings,
        encoding: Encoding,
        now: Now,
    ) -> Outcome {
        let t = translate(req, settings);
        let outcome = {
            let mut streams = self.streams.lock();
            let mut store = store.write();
            streams.apply(&mut store, t, now)
        };
        self.requests.child(encoding as usize).inc();
        for (i, n) in outcome.by_temporality.into_iter().enumerate() {
            self.accepted.child(i).inc_by(n);
        }
        for (reason, n) in &outcome.rejected.by_reason {
            self.rejected
                .get_or_create(&[("reason", reason)])
                .inc_by(*n);
        }
        outcome
    }
}

impl SelfMetrics for Otlp {
    fn register(self: Arc<Self>, registry: &mut Registry) {
        self.requests.register(
            registry,
            "otlp_requests",
            "OTLP export requests decoded, by encoding",
        );
        self.accepted.register(
            registry,
            "otlp_points",
            "OTLP data points accepted, by temporality (gauge points are instant)",
        );
        crate::self_metrics::register_listed(
            registry,
            "otlp_rejected_points",
            "OTLP data points rejected (reported in partial_success), by fixed reason",
            self.rejected.clone(),
        );
    }
}

/// Stream state read back from a state file, installed by [`Otlp::restore`].
#[derive(Debug, Default)]
pub struct RestoredStreams(Streams);

impl Otlp {
    /// Appends the OTLP part of the state file: every stream's cumulative start time and
    /// delta running total, so delta streams continue after a restart.
    pub fn encode_state(&self, e: &mut StateEnc) {
        let streams = self.streams.lock();
        e.len(streams.workers.len());
        for (worker, map) in &streams.workers {
            e.str(worker);
            e.len(map.len());
            for ((family, labels), stream) in map {
                e.str(family);
                e.pairs(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                e.u64(stream.start);
                match &stream.total {
                    None => e.u8(0),
                    Some(PointValue::Scalar(v)) => {
                        e.u8(1);
                        e.f64(*v);
                    }
                    Some(PointValue::Histogram {
                        bounds,
                        counts,
                        sum,
                        count,
                    }) => {
                        e.u8(2);
                        e.f64s(bounds);
                        e.len(counts.len());
                        for c in counts {
                            e.u64(*c);
                        }
                        e.f64(*sum);
                        e.u64(*count);
                    }
                    Some(PointValue::Summary { sum, count }) => {
                        e.u8(3);
                        e.f64(*sum);
                        e.u64(*count);
                    }
                }
            }
        }
    }

    /// Reads the OTLP part of a state file (nothing is installed yet).
    pub fn decode_state(d: &mut StateDec<'_>) -> Result<RestoredStreams, StateError> {
        let mut streams = Streams::default();
        let n = d.len(8)?;
        for _ in 0..n {
            let worker = d.str()?.to_string();
            let ns = d.len(17)?;
            let mut map = HashMap::with_capacity(ns);
            for _ in 0..ns {
                let family = d.str()?.to_string();
                let labels = d.pairs()?;
                let start = d.u64()?;
                let total = match d.u8()? {
                    0 => None,
                    1 => Some(PointValue::Scalar(d.finite()?)),
                    2 => {
                        let bounds = d.f64s()?;
                        let nc = d.len(8)?;
                        let counts = (0..nc).map(|_| d.u64()).collect::<Result<Vec<_>, _>>()?;
                        let sum = d.f64()?;
                        let count = d.u64()?;
                        if counts.len() != bounds.len() + 1 {
                            return Err(StateError::Corrupt("an OTLP histogram is malformed"));
                        }
                        Some(PointValue::Histogram {
                            bounds,
                            counts,
                            sum,
                            count,
                        })
                    }
                    3 => Some(PointValue::Summary {
                        sum: d.f64()?,
                        count: d.u64()?,
                    }),
                    _ => return Err(StateError::Corrupt("unknown OTLP stream value")),
                };
                map.insert((family, labels), Stream { start, total });
            }
            streams.workers.insert(worker, map);
        }
        Ok(RestoredStreams(streams))
    }

    /// Installs restored stream state. Streams of workers the store does not know are
    /// dropped at the next request, as always.
    pub fn restore(&self, restored: RestoredStreams) {
        *self.streams.lock() = restored.0;
    }
}
