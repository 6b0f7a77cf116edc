//! One OTLP request into validated data points, each tied to a worker and a Prometheus
//! family. Pure: no store, no state; every rejected point is counted with a fixed reason.

use super::names::{family_name, sanitize_label_name, value_text};
use super::{Rejections, float_text};
use crate::model::MetricKind;
use crate::store::{Source, WorkerKey};
use indexmap::IndexMap;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, NumberDataPoint, SummaryDataPoint, metric, number_data_point,
};
use std::collections::HashMap;

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`: the stream has no value (it went stale).
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// How a stream's values relate over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Temporality {
    /// Each point is the total since the stream's start time.
    Cumulative,
    /// Each point is the change since the previous point.
    Delta,
    /// Gauges: each point is the current value.
    Instant,
}

impl Temporality {
    pub fn as_str(self) -> &'static str {
        match self {
            Temporality::Cumulative => "cumulative",
            Temporality::Delta => "delta",
            Temporality::Instant => "instant",
        }
    }
}

/// Settings for the translation (from `otlp` and `workerLabels` of the config).
#[derive(Clone, Debug)]
pub struct Settings {
    pub worker_attributes: Vec<String>,
    pub worker_labels: Vec<String>,
    pub target_info: bool,
    pub scope_labels: bool,
    pub max_attributes: usize,
}

impl Settings {
    pub fn from_config(c: &monasca_config::SidecarConfig) -> Settings {
        Settings {
            worker_attributes: c.otlp.worker_attributes.clone(),
            worker_labels: c.worker_labels.clone(),
            target_info: c.otlp.target_info,
            scope_labels: c.otlp.scope_labels,
            max_attributes: usize::try_from(c.otlp.max_attributes).unwrap_or(usize::MAX),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_config(&monasca_config::SidecarConfig::default())
    }
}

/// A Prometheus family an OTLP metric maps to.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub name: String,
    pub kind: MetricKind,
    pub help: Option<String>,
    pub temporality: Temporality,
    /// The family is `target_info` (one constant series per resource).
    pub target_info: bool,
}

/// One data point's value. Histogram counts are per bucket (not cumulative), as in OTLP.
#[derive(Clone, Debug, PartialEq)]
pub enum PointValue {
    Scalar(f64),
    Histogram {
        /// Finite upper bounds; the last bucket (`+Inf`) has no bound.
        bounds: Vec<f64>,
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
    Summary {
        sum: f64,
        count: u64,
    },
}

/// A validated data point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Index into [`Translation::workers`].
    pub worker: usize,
    /// Index into [`Translation::metas`].
    pub meta: usize,
    /// Sanitised, sorted labels (attributes and scope labels).
    pub labels: Vec<(String, String)>,
    pub start: u64,
    pub time: u64,
    pub value: PointValue,
}

/// A request, translated.
#[derive(Debug, Default)]
pub struct Translation {
    pub workers: IndexMap<String, Worker>,
    pub metas: Vec<Meta>,
    pub points: Vec<Point>,
    pub rejected: Rejections,
}

/// A worker of the request.
#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    pub key: WorkerKey,
    /// The resource names the process (a worker attribute): a new start time of one of its
    /// cumulative streams is a restart. Otherwise the start time is part of the identity.
    pub identified: bool,
}

/// A resource, once per `ResourceMetrics`.
struct Resource {
    /// Canonical text of all attributes, the base of worker ids.
    id: String,
    identified: bool,
    worker_labels: Vec<(String, String)>,
    common: Vec<(String, String)>,
    /// Labels of `target_info`, when it is published.
    info: Option<Vec<(String, String)>>,
    /// Worker index in the translation by start time (`None`: the resource itself), so a
    /// worker id is built once per resource and start time, not once per point.
    workers: std::cell::RefCell<HashMap<Option<u64>, usize>>,
}

fn attr_string(kv: &KeyValue) -> String {
    let mut s = String::new();
    value_text(kv.value.as_ref(), &mut s);
    s
}

impl Resource {
    fn new(attrs: &[KeyValue], settings: &Settings) -> Resource {
        let mut sorted: Vec<(&str, String)> = attrs
            .iter()
            .map(|kv| (kv.key.as_str(), attr_string(kv)))
            .collect();
        sorted.sort();
        let mut id = String::from("otlp:");
        for (i, (k, v)) in sorted.iter().enumerate() {
            if i > 0 {
                id.push(',');
            }
            id.push_str(&k.replace('\\', "\\\\").replace(['=', ','], "\\$0"));
            id.push('=');
            id.push_str(&v.replace('\\', "\\\\").replace(',', "\\,"));
        }
        let get = |name: &str| sorted.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
        let mut common = Vec::new();
        if let Some(service) = get("service.name") {
            let job = match get("service.namespace") {
                Some(ns) if !ns.is_empty() => format!("{ns}/{service}"),
                _ => service.clone(),
            };
            common.push(("job".to_string(), job));
        }
        let mut worker_labels = Vec::new();
        let mut info_attrs: Vec<(&str, &str)> = Vec::new();
        for (k, v) in &sorted {
            let mut label = String::new();
            sanitize_label_name(k, &mut label);
            let is_worker = settings.worker_attributes.iter().any(|w| w == k)
                || settings.worker_labels.contains(&label);
            if is_worker {
                worker_labels.push((label, v.clone()));
            } else if !matches!(
                *k,
                "service.name" | "service.namespace" | "service.instance.id"
            ) {
                info_attrs.push((k, v));
            }
        }
        let identified = !worker_labels.is_empty();
        let info = settings.target_info.then(|| merge_labels(info_attrs));
        Resource {
            id,
            identified,
            worker_labels,
            common,
            info,
            workers: Default::default(),
        }
    }

    fn worker(&self, start: Option<u64>) -> (String, Worker) {
        let mut labels = self.worker_labels.clone();
        let mut id = self.id.clone();
        if let Some(start) = start {
            id.push_str(";start=");
            id.push_str(&start.to_string());
            labels.push(("start".to_string(), start.to_string()));
        }
        let key = WorkerKey {
            id: id.clone(),
            source: Source::Otlp,
            labels,
            common_labels: self.common.clone(),
            // Its start time is part of the id: a restart is another worker.
            one_process: false,
        };
        (
            id,
            Worker {
                key,
                identified: self.identified,
            },
        )
    }
}

/// Sanitises attribute keys; keys that collide after sanitising have their values joined
/// with `;` in the order of the original keys (the specification's rule). Sorted by name.
fn merge_labels<'a>(attrs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    let mut labels: Vec<(String, &str, &str)> = attrs
        .into_iter()
        .map(|(k, v)| {
            let mut name = String::with_capacity(k.len());
            sanitize_label_name(k, &mut name);
            (name, k, v)
        })
        .collect();
    labels.sort();
    let mut out: Vec<(String, String)> = Vec::with_capacity(labels.len());
    for (name, _, value) in labels {
        match out.last_mut() {
            Some((n, v)) if *n == name => {
                v.push(';');
                v.push_str(value);
            }
            _ => out.push((name, value.to_string())),
        }
    }
    out
}

impl Translation {
    fn worker_index(&mut self, resource: &Resource, start: Option<u64>) -> usize {
        if let Some(&index) = resource.workers.borrow().get(&start) {
            return index;
        }
        let (id, worker) = resource.worker(start);
        let entry = self.workers.entry(id);
        let index = entry.index();
        entry.or_insert(worker);
        resource.workers.borrow_mut().insert(start, index);
        index
    }

    fn meta_index(&mut self, meta: Meta) -> usize {
        match self.metas.iter().position(|m| *m == meta) {
            Some(i) => i,
            None => {
                self.metas.push(meta);
                self.metas.len() - 1
            }
        }
    }
}

/// Translates a request. Never fails: what cannot be used is counted in `rejected`.
pub fn translate(req: &ExportMetricsServiceRequest, settings: &Settings) -> Translation {
    let mut t = Translation::default();
    for rm in &req.resource_metrics {
        let attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let resource = Resource::new(attrs, settings);
        if let Some(info) = &resource.info
            && !info.is_empty()
        {
            let worker = t.worker_index(&resource, None);
            let meta = t.meta_index(Meta {
                name: "target_info".into(),
                kind: MetricKind::Gauge,
                help: Some("Target metadata".into()),
                temporality: Temporality::Instant,
                target_info: true,
            });
            t.points.push(Point {
                worker,
                meta,
                labels: info.clone(),
                start: 0,
                time: 0,
                value: PointValue::Scalar(1.0),
            });
        }
        for sm in &rm.scope_metrics {
            let mut scope: Vec<(&str, &str)> = Vec::new();
            if settings.scope_labels
                && let Some(s) = &sm.scope
            {
                if !s.name.is_empty() {
                    scope.push(("otel_scope_name", &s.name));
                }
                if !s.version.is_empty() {
                    scope.push(("otel_scope_version", &s.version));
                }
            }
            for m in &sm.metrics {
                translate_metric(&mut t, &resource, &scope, m, settings);
            }
        }
    }
    t
}

fn translate_metric(
    t: &mut Translation,
    resource: &Resource,
    scope: &[(&str, &str)],
    m: &opentelemetry_proto::tonic::metrics::v1::Metric,
    settings: &Settings,
) {
    let help = (!m.description.is_empty()).then(|| m.description.clone());
    let name_of = |counter: bool, gauge: bool| family_name(&m.name, &m.unit, counter, gauge);
    if m.name.is_empty() {
        let n = point_count(m.data.as_ref());
        t.rejected
            .add("invalid_name", n, "a metric has no name".into());
        return;
    }
    let Some(data) = &m.data else {
        // An unknown data type (a newer protocol): prost skipped the field. The points cannot
        // be counted; say so as a warning.
        t.rejected.add(
            "unknown_type",
            0,
            format!("metric {:?} has no data this receiver knows", m.name),
        );
        return;
    };
    match data {
        metric::Data::Gauge(g) => {
            let meta = Meta {
                name: name_of(false, true),
                kind: MetricKind::Gauge,
                help,
                temporality: Temporality::Instant,
                target_info: false,
            };
            number_points(t, resource, scope, meta, false, &g.data_points, settings);
        }
        metric::Data::Sum(s) => {
            let temporality = match temporality(s.aggregation_temporality) {
                Ok(tp) => tp,
                Err(msg) => {
                    let msg = format!("metric {:?}: {msg}", m.name);
                    t.rejected
                        .add("invalid_temporality", s.data_points.len() as u64, msg);
                    return;
                }
            };
            let meta = Meta {
                name: name_of(s.is_monotonic, !s.is_monotonic),
                kind: if s.is_monotonic {
                    MetricKind::Counter
                } else {
                    MetricKind::Gauge
                },
                help,
                temporality,
                target_info: false,
            };
            number_points(
                t,
                resource,
                scope,
                meta,
                s.is_monotonic,
                &s.data_points,
                settings,
            );
        }
        metric::Data::Histogram(h) => {
            let temporality = match temporality(h.aggregation_temporality) {
                Ok(tp) => tp,
                Err(msg) => {
                    let msg = format!("metric {:?}: {msg}", m.name);
                    t.rejected
                        .add("invalid_temporality", h.data_points.len() as u64, msg);
                    return;
                }
            };
            let meta = Meta {
                name: name_of(false, false),
                kind: MetricKind::Histogram,
                help,
                temporality,
                target_info: false,
            };
            histogram_points(t, resource, scope, meta, &h.data_points, settings);
        }
        metric::Data::ExponentialHistogram(e) => {
            t.rejected.add(
                "exponential_histogram",
                e.data_points.len() as u64,
                format!(
                    "metric {:?}: exponential histograms are not supported (their bucket layout changes with scale and cannot merge across workers into Prometheus buckets); use the explicit bucket histogram aggregation",
                    m.name
                ),
            );
        }
        metric::Data::Summary(s) => {
            let meta = Meta {
                name: name_of(false, false),
                kind: MetricKind::Summary,
                help,
                temporality: Temporality::Cumulative,
                target_info: false,
            };
            summary_points(t, resource, scope, meta, &s.data_points, settings);
        }
    }
}

fn point_count(data: Option<&metric::Data>) -> u64 {
    match data {
        Some(metric::Data::Gauge(g)) => g.data_points.len() as u64,
        Some(metric::Data::Sum(s)) => s.data_points.len() as u64,
        Some(metric::Data::Histogram(h)) => h.data_points.len() as u64,
        Some(metric::Data::ExponentialHistogram(e)) => e.data_points.len() as u64,
        Some(metric::Data::Summary(s)) => s.data_points.len() as u64,
        None => 0,
    }
}

fn temporality(value: i32) -> Result<Temporality, String> {
    match value {
        1 => Ok(Temporality::Delta),
        2 => Ok(Temporality::Cumulative),
        0 => Err("aggregation temporality is UNSPECIFIED".into()),
        other => Err(format!("unknown aggregation temporality {other}")),
    }
}

/// The labels of a point, or a rejection when it carries too many attributes.
fn labels(
    attrs: &[KeyValue],
    scope: &[(&str, &str)],
    settings: &Settings,
) -> Result<Vec<(String, String)>, String> {
    if attrs.len() > settings.max_attributes {
        return Err(format!(
            "{} attributes, more than the limit of {} (otlp.maxAttributes)",
            attrs.len(),
            settings.max_attributes
        ));
    }
    let values: Vec<String> = attrs.iter().map(attr_string).collect();
    Ok(merge_labels(
        attrs
            .iter()
            .zip(&values)
            .map(|(kv, v)| (kv.key.as_str(), v.as_str()))
            .chain(scope.iter().copied()),
    ))
}

/// Worker and labels of a point; `None` (counted) when it is rejected.
fn place(
    t: &mut Translation,
    resource: &Resource,
    scope: &[(&str, &str)],
    meta: &Meta,
    attrs: &[KeyValue],
    start: u64,
    settings: &Settings,
) -> Option<(usize, Vec<(String, String)>)> {
    let labels = match labels(attrs, scope, settings) {
        Ok(l) => l,
        Err(msg) => {
            t.rejected.add(
                "too_many_attributes",
                1,
                format!("a point of {}: {msg}", meta.name),
            );
            return None;
        }
    };
    // Without a worker attribute, a cumulative stream's start time names the process.
    let split = !resource.identified && meta.temporality == Temporality::Cumulative && start != 0;
    let worker = t.worker_index(resource, split.then_some(start));
    Some((worker, labels))
}

/// One family's points as they are placed: what [`place`] needs, and the family's metadata
/// index, interned with the first point kept.
struct FamilyPoints<'a> {
    resource: &'a Resource,
    scope: &'a [(&'a str, &'a str)],
    meta: Meta,
    settings: &'a Settings,
    index: Option<usize>,
}

impl FamilyPoints<'_> {
    /// Records a point; one that cannot be placed is counted and dropped (see [`place`]).
    fn push(
        &mut self,
        t: &mut Translation,
        attrs: &[KeyValue],
        start: u64,
        time: u64,
        value: PointValue,
    ) {
        let Some((worker, labels)) = place(
            t,
            self.resource,
            self.scope,
            &self.meta,
            attrs,
            start,
            self.settings,
        ) else {
            return;
        };
        let meta = *self
            .index
            .get_or_insert_with(|| t.meta_index(self.meta.clone()));
        t.points.push(Point {
            worker,
            meta,
            labels,
            start,
            time,
            value,
        });
    }
}

fn number_points(
    t: &mut Translation,
    resource: &Resource,
    scope: &[(&str, &str)],
    meta: Meta,
    monotonic: bool,
    points: &[NumberDataPoint],
    settings: &Settings,
) {
    let mut family = FamilyPoints {
        resource,
        scope,
        meta,
        settings,
        index: None,
    };
    for p in points {
        if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
            continue;
        }
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => {
                t.rejected.add(
                    "missing_value",
                    1,
                    format!("a point of {} has no value", family.meta.name),
                );
                continue;
            }
        };
        if monotonic && !value.is_finite() {
            t.rejected.add(
                "non_finite",
                1,
                format!(
                    "counter {} value {} is not finite",
                    family.meta.name,
                    float_text(value)
                ),
            );
            continue;
        }
        if monotonic && value < 0.0 {
            t.rejected.add(
                "negative_counter",
                1,
                format!(
                    "monotonic sum {} value {value} is negative",
                    family.meta.name
                ),
            );
            continue;
        }
        family.push(
            t,
            &p.attributes,
            p.start_time_unix_nano,
            p.time_unix_nano,
            PointValue::Scalar(value),
        );
    }
}

fn histogram_points(
    t: &mut Translation,
    resource: &Resource,
    scope: &[(&str, &str)],
    meta: Meta,
    points: &[HistogramDataPoint],
    settings: &Settings,
) {
    let mut family = FamilyPoints {
        resource,
        scope,
        meta,
        settings,
        index: None,
    };
    for p in points {
        if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
            continue;
        }
        let mut counts = p.bucket_counts.clone();
        if p.explicit_bounds.is_empty() && counts.is_empty() {
            // Only count and sum are known: one `+Inf` bucket.
            counts.push(p.count);
        }
        if counts.len() != p.explicit_bounds.len() + 1 {
            t.rejected.add(
                "bucket_count_mismatch",
                1,
                format!(
                    "histogram {} has {} bucket counts for {} bounds (expected {})",
                    family.meta.name,
                    counts.len(),
                    p.explicit_bounds.len(),
                    p.explicit_bounds.len() + 1
                ),
            );
            continue;
        }
        let increasing = p.explicit_bounds.windows(2).all(|w| w[0] < w[1]);
        if !increasing || p.explicit_bounds.iter().any(|b| !b.is_finite()) {
            t.rejected.add(
                "invalid_bounds",
                1,
                format!(
                    "histogram {} bounds must be finite and strictly increasing",
                    family.meta.name
                ),
            );
            continue;
        }
        let total = counts.iter().try_fold(0u64, |a, c| a.checked_add(*c));
        if total != Some(p.count) {
            t.rejected.add(
                "bucket_count_mismatch",
                1,
                format!(
                    "histogram {} count {} is not the sum of its bucket counts",
                    family.meta.name, p.count
                ),
            );
            continue;
        }
        // A point without a sum (optional in OTLP) keeps none: NaN marks it absent, and the
        // exposition then has no `_sum` line rather than an invented 0.
        let sum = p.sum.unwrap_or(f64::NAN);
        if p.sum.is_some() && !sum.is_finite() {
            t.rejected.add(
                "non_finite",
                1,
                format!(
                    "histogram {} sum {} is not finite",
                    family.meta.name,
                    float_text(sum)
                ),
            );
            continue;
        }
        family.push(
            t,
            &p.attributes,
            p.start_time_unix_nano,
            p.time_unix_nano,
            PointValue::Histogram {
                bounds: p.explicit_bounds.clone(),
                counts,
                sum,
                count: p.count,
            },
        );
    }
}

fn summary_points(
    t: &mut Translation,
    resource: &Resource,
    scope: &[(&str, &str)],
    meta: Meta,
    points: &[SummaryDataPoint],
    settings: &Settings,
) {
    let mut family = FamilyPoints {
        resource,
        scope,
        meta,
        settings,
        index: None,
    };
    for p in points {
        if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
            continue;
        }
        if !p.sum.is_finite() {
            t.rejected.add(
                "non_finite",
                1,
                format!(
                    "summary {} sum {} is not finite",
                    family.meta.name,
                    float_text(p.sum)
                ),
            );
            continue;
        }
        family.push(
            t,
            &p.attributes,
            p.start_time_unix_nano,
            p.time_unix_nano,
            PointValue::Summary {
                sum: p.sum,
                count: p.count,
            },
        );
    }
}
