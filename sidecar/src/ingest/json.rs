//! The original monasca-sidecar JSON API (`POST /v1/ingest`, `POST /v1/clear`), pure part.
//!
//! The body is exactly what the original proof of concept accepted: a JSON list of families
//!
//! ```json
//! [{"name": "test", "type": "gauge", "help": "test description",
//!   "values": [{"name": "test", "labels": {"c": "d", "_id": "w1", "_aggregate": "sum"},
//!               "value": 12.34}]}]
//! ```
//!
//! - The `_id` label names the worker: values are split by `_id` into one store update per
//!   worker ([`Source::Json`], [`Scope::Series`]: each value replaces that worker's previous
//!   value of the same series, as the original's "latest value per (name, labels)"). Values
//!   without `_id` belong to one default worker. `_id` never reaches the series labels, even
//!   if `workerLabels` no longer lists it.
//! - `_aggregate` (`sum`, `mean`, `min`, `max`, or any other mode of the store) chooses how a
//!   gauge combines across workers; the store reads it and removes it from series identity.
//!   Counters are always summed and never go backwards (the store's retirement rule).
//! - The original printed `type` verbatim and each value under its own `name`, so besides
//!   `counter`, `gauge` and `untyped`, histograms (`<name>_bucket` with `le`, `<name>_sum`,
//!   `<name>_count`) and summaries (`<name>_sum`, `<name>_count`; quantile values are
//!   accepted and dropped because they cannot be aggregated) are assembled from their
//!   values. Other types are rejected.
//! - Unlike the original, names and label names are validated (an invalid name would break
//!   the exposition for every scraper) and a rejected body is answered with one line.
//! - The original's per-series decay (`DECAY_SECONDS`, default 60) maps to `staleAfter`:
//!   see [`decay_seconds_from_env`].
//!
//! A body with several `_id`s is applied worker by worker; if the store refuses one worker's
//! update (e.g. its series limit), the workers before it stay applied and the error names
//! the problem.

use crate::model::{Family, HistogramValue, Label, Labels, MetricKind, Series, Value};
use crate::store::{Now, Scope, Source, Store, StoreError, WorkerKey};
use indexmap::IndexMap;
use monasca_config::{is_label_name, is_metric_name};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The label that names a worker.
pub const ID_LABEL: &str = "_id";
/// The store worker id of values without `_id`.
pub const DEFAULT_WORKER_ID: &str = "json";
/// The original's environment variable for the decay time, in seconds.
pub const DECAY_SECONDS_ENV: &str = "DECAY_SECONDS";

/// Why a JSON body was refused (HTTP 400 with the one-line Display as the reason).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid metric name {0:?}")]
    InvalidName(String),
    #[error("family {family}: invalid label name {label:?}")]
    InvalidLabel { family: String, label: String },
    #[error(
        "family {family}: unsupported type {kind:?} (expected counter, gauge, untyped, histogram or summary)"
    )]
    UnsupportedType { family: String, kind: String },
    #[error("family {family} appears twice with different types")]
    TypeConflict { family: String },
    #[error("value {value:?} does not belong to {kind} family {family}")]
    ValueName {
        family: String,
        value: String,
        kind: &'static str,
    },
    #[error("{family}: {reason}")]
    InvalidDistribution { family: String, reason: String },
    /// A counter, bucket, `_sum` or `_count` value that is NaN or infinite: the store would
    /// carry it into retired totals forever. (Gauges may be NaN: nothing accumulates them.)
    #[error("value {value:?} of {family} is not a finite number ({kind} values must be)")]
    NonFinite {
        family: String,
        value: String,
        kind: &'static str,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl JsonError {
    /// A fixed label for self-metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            JsonError::Json(_) => "invalid_json",
            JsonError::InvalidName(_) => "invalid_name",
            JsonError::InvalidLabel { .. } => "invalid_label",
            JsonError::UnsupportedType { .. } => "unsupported_type",
            JsonError::TypeConflict { .. } => "type_conflict",
            JsonError::ValueName { .. } => "invalid_value_name",
            JsonError::InvalidDistribution { .. } => "invalid_distribution",
            JsonError::NonFinite { .. } => "non_finite",
            JsonError::Store(e) => e.reason(),
        }
    }
}

/// What an accepted body did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Families in the body (as listed, before merging repeated names).
    pub families: usize,
    /// Series applied (a histogram series counts once).
    pub samples: usize,
    /// Workers (distinct `_id`s, plus the default worker) updated.
    pub workers: usize,
    pub new_series: usize,
}

/// Applies a `POST /v1/ingest` body to the store.
pub fn ingest(store: &mut Store, body: &[u8], now: Now) -> Result<IngestStats, JsonError> {
    let families = parse(body)?;
    let updates = build(&families)?;
    let mut stats = IngestStats {
        families: families.len(),
        workers: updates.len(),
        ..IngestStats::default()
    };
    for (id, families) in &updates {
        let key = worker_key(id.as_deref());
        let applied = store.apply(&key, families, Scope::Series, now)?;
        stats.samples += applied.samples;
        stats.new_series += applied.new_series;
    }
    Ok(stats)
}

/// The store identity of a JSON worker.
pub fn worker_key(id: Option<&str>) -> WorkerKey {
    match id {
        None => WorkerKey::new(Source::Json, DEFAULT_WORKER_ID, Vec::new()),
        Some(id) => WorkerKey::new(
            Source::Json,
            format!("{DEFAULT_WORKER_ID}:{ID_LABEL}={id}"),
            vec![(ID_LABEL.to_string(), id.to_string())],
        ),
    }
}

/// `DECAY_SECONDS` from the environment, for `staleAfter` when the config file does not set
/// it. `None` when unset; an unusable value is logged and ignored.
pub fn decay_seconds_from_env() -> Option<monasca_config::Duration> {
    let text = std::env::var(DECAY_SECONDS_ENV).ok()?;
    match parse_decay_seconds(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(value = %text, error = %e, "ignoring {DECAY_SECONDS_ENV}");
            None
        }
    }
}

/// Parses a `DECAY_SECONDS` value: seconds as a positive number (the original read it with
/// Python's `float()`, so `60`, `90.5` and `1e2` are all accepted).
pub fn parse_decay_seconds(text: &str) -> Result<monasca_config::Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("{text:?} must be a positive number of seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs).into())
}

// ---------------------------------------------------------------------------------------
// Body model

#[derive(Deserialize)]
struct JsonFamily<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    help: Option<Cow<'a, str>>,
    #[serde(borrow)]
    values: Vec<JsonSample<'a>>,
}

#[derive(Deserialize)]
struct JsonSample<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    labels: JsonLabels<'a>,
    value: JsonNumber,
}

/// Labels in body order; non-string values are kept as their JSON text, `null` dropped.
#[derive(Default)]
struct JsonLabels<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

/// A label name or string value, borrowed from the body when it has no escapes.
struct JsonStr<'a>(Cow<'a, str>);

/// A label value: string, number, boolean or null.
struct LabelValue<'a>(Option<Cow<'a, str>>);

/// A sample value: a JSON number, or a string such as `"NaN"` or `"+Inf"` (JSON cannot
/// spell those as numbers).
struct JsonNumber(f64);

fn parse(body: &[u8]) -> Result<Vec<JsonFamily<'_>>, JsonError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        return Err(JsonError::Json(
            "expected a JSON list of metric families".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| JsonError::Json(one_line(&e.to_string())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl<'de> Deserialize<'de> for JsonStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for LabelValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean label value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LabelValue(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LabelValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(LabelValue(Some(Cow::Owned(v))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LabelValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(LabelValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(LabelValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(LabelValue(Some(Cow::Borrowed(if v {
                    "true"
                } else {
                    "false"
                }))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(LabelValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonLabels<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = JsonLabels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of labels")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonLabels::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut labels = Vec::with_capacity(map.size_hint().unwrap_or(4));
                let mut names = Vec::with_capacity(labels.capacity());
                while let Some((name, value)) = map.next_entry::<JsonStr<'de>, LabelValue<'de>>()? {
                    names.push(name.0.clone());
                    if let Some(value) = value.0 {
                        labels.push((name.0, value));
                    }
                }
                // JSON allows a key twice in one object; a label set does not (the render would
                // show the label twice, which no parser accepts). Sorted: O(n log n) however
                // many labels a hostile body sends.
                names.sort_unstable();
                if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
                    return Err(de::Error::custom(format_args!(
                        "label {:?} appears twice in one labels object",
                        pair[0]
                    )));
                }
                Ok(JsonLabels(labels))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for JsonNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number (or a string such as \"NaN\" or \"+Inf\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JsonNumber(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JsonNumber(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JsonNumber(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.trim()
                    .parse()
                    .map(JsonNumber)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// Building store updates

/// What a value is within its family.
enum Role {
    Scalar,
    Bucket(f64),
    Sum,
    Count,
    /// A summary quantile: accepted, not kept.
    Quantile,
}

/// A histogram or summary series being assembled from its values.
struct Dist<'a> {
    family: usize,
    labels: Labels<'a>,
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

/// One worker's update under construction: families by index in the merged body order.
#[derive(Default)]
struct WorkerUpdate<'a> {
    families: IndexMap<usize, Family<'a>>,
    /// Distribution series by (family index, canonical labels).
    dists: IndexMap<(usize, String), Dist<'a>>,
}

type Updates<'a> = IndexMap<Option<Cow<'a, str>>, Vec<Family<'a>>>;

fn kind_of(family: &str, kind: &str) -> Result<MetricKind, JsonError> {
    match kind.to_ascii_lowercase().as_str() {
        "counter" => Ok(MetricKind::Counter),
        "gauge" => Ok(MetricKind::Gauge),
        "untyped" | "unknown" => Ok(MetricKind::Untyped),
        "histogram" => Ok(MetricKind::Histogram),
        "summary" => Ok(MetricKind::Summary),
        _ => Err(JsonError::UnsupportedType {
            family: family.to_string(),
            kind: kind.to_string(),
        }),
    }
}

/// Splits the body into per-worker store updates.
fn build<'a>(body: &'a [JsonFamily<'a>]) -> Result<Updates<'a>, JsonError> {
    // Families of the same name are merged, as the original did.
    let mut merged: IndexMap<&str, (MetricKind, Option<&str>, Vec<&JsonSample<'a>>)> =
        IndexMap::new();
    for f in body {
        if !is_metric_name(&f.name) {
            return Err(JsonError::InvalidName(f.name.to_string()));
        }
        let kind = kind_of(&f.name, &f.kind)?;
        let entry = merged
            .entry(&*f.name)
            .or_insert_with(|| (kind, f.help.as_deref(), Vec::new()));
        if entry.0 != kind {
            return Err(JsonError::TypeConflict {
                family: f.name.to_string(),
            });
        }
        entry.2.extend(f.values.iter());
    }

    let mut workers: IndexMap<Option<Cow<'a, str>>, WorkerUpdate<'a>> = IndexMap::new();
    for (index, (name, (kind, help, values))) in merged.iter().enumerate() {
        let name: &'a str = name;
        // The store name of a counter is `<name>_total` whichever form the values use
        // (`x` or `x_total`), so it aggregates with the same counter from other sources.
        let mut counter_name: Option<&'a str> = None;
        for v in values {
            let value_name: &str = &v.name;
            let role = role_of(name, *kind, value_name, &v.labels)?;
            if *kind == MetricKind::Counter {
                let sample: &'a str = &v.name;
                match counter_name {
                    None => counter_name = Some(sample),
                    Some(c) if c != sample => {
                        return Err(JsonError::ValueName {
                            family: name.to_string(),
                            value: sample.to_string(),
                            kind: kind.text_name(),
                        });
                    }
                    Some(_) => {}
                }
            }
            let mut worker: Option<Cow<'a, str>> = None;
            let mut labels: Labels<'a> = Labels::new();
            for (label, value) in &v.labels.0 {
                if label == ID_LABEL {
                    worker = Some(borrow_cow(value));
                    continue;
                }
                if !is_label_name(label) || label.starts_with("__") {
                    return Err(JsonError::InvalidLabel {
                        family: name.to_string(),
                        label: label.to_string(),
                    });
                }
                let structural = match role {
                    Role::Bucket(_) => label == "le",
                    Role::Quantile => label == "quantile",
                    _ => false,
                };
                if !structural {
                    labels.push(Label::new(borrow_cow(label), borrow_cow(value)));
                }
            }
            let update = workers.entry(worker).or_default();
            let family = update.families.entry(index).or_insert_with(|| {
                let store_name = if *kind == MetricKind::Counter {
                    crate::parse::counter_family_name(Cow::Borrowed(counter_name.unwrap_or(name)))
                } else {
                    Cow::Borrowed(name)
                };
                let mut f = Family::new(store_name, *kind);
                f.help = help.map(Cow::Borrowed);
                f
            });
            let x = v.value.0;
            let accumulated = match role {
                Role::Scalar => *kind == MetricKind::Counter,
                Role::Bucket(_) | Role::Sum | Role::Count => true,
                Role::Quantile => false,
            };
            if accumulated && !x.is_finite() {
                return Err(JsonError::NonFinite {
                    family: name.to_string(),
                    value: v.name.to_string(),
                    kind: kind.text_name(),
                });
            }
            if let Role::Scalar = role {
                family.series.push(Series {
                    labels,
                    value: Value::Scalar(x),
                    timestamp: None,
                });
                continue;
            }
            let mut key = String::new();
            let mut sorted: Vec<&Label<'_>> = labels.iter().collect();
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
            for l in sorted {
                key.push_str(&l.name);
                key.push('\u{0}');
                key.push_str(&l.value);
                key.push('\u{0}');
            }
            let dist = update.dists.entry((index, key)).or_insert_with(|| Dist {
                family: index,
                labels,
                buckets: Vec::new(),
                sum: None,
                count: None,
            });
            match role {
                Role::Bucket(le) => dist.buckets.push((le, x)),
                Role::Sum => dist.sum = Some(x),
                Role::Count => dist.count = Some(x),
                Role::Quantile | Role::Scalar => {}
            }
        }
    }

    let mut out: Updates<'a> = IndexMap::with_capacity(workers.len());
    for (worker, mut update) in workers {
        for (_, dist) in std::mem::take(&mut update.dists) {
            let Some(family) = update.families.get_mut(&dist.family) else {
                continue;
            };
            let value = finish_dist(
                &family.name,
                family.kind,
                dist.buckets,
                dist.sum,
                dist.count,
            )?;
            family.series.push(Series {
                labels: dist.labels,
                value,
                timestamp: None,
            });
        }
        let families: Vec<Family<'a>> = update
            .families
            .into_values()
            .filter(|f| !f.series.is_empty())
            .collect();
        if !families.is_empty() {
            out.insert(worker, families);
        }
    }
    Ok(out)
}

/// Reborrows a body string for the body's lifetime (clones only escaped strings).
fn borrow_cow<'a>(c: &'a Cow<'a, str>) -> Cow<'a, str> {
    Cow::Borrowed(&**c)
}

/// The role of a value by its name and labels.
fn role_of(
    family: &str,
    kind: MetricKind,
    value: &str,
    labels: &JsonLabels<'_>,
) -> Result<Role, JsonError> {
    let bad = || JsonError::ValueName {
        family: family.to_string(),
        value: value.to_string(),
        kind: kind.text_name(),
    };
    let label = |n: &str| labels.0.iter().find(|(k, _)| k == n).map(|(_, v)| &**v);
    match kind {
        MetricKind::Counter => {
            if value == family || value.strip_suffix("_total") == Some(family) {
                Ok(Role::Scalar)
            } else {
                Err(bad())
            }
        }
        MetricKind::Gauge | MetricKind::Untyped => {
            if value == family {
                Ok(Role::Scalar)
            } else {
                Err(bad())
            }
        }
        MetricKind::Histogram | MetricKind::Summary => {
            let suffix = value.strip_prefix(family).ok_or_else(bad)?;
            match (kind, suffix) {
                (_, "_sum") => Ok(Role::Sum),
                (_, "_count") => Ok(Role::Count),
                (MetricKind::Histogram, "_bucket") => {
                    let le = label("le").ok_or_else(|| JsonError::InvalidDistribution {
                        family: family.to_string(),
                        reason: format!("{value} without an le label"),
                    })?;
                    let bound = parse_bound(le).ok_or_else(|| JsonError::InvalidDistribution {
                        family: family.to_string(),
                        reason: format!("le={le:?} is not a number"),
                    })?;
                    Ok(Role::Bucket(bound))
                }
                (MetricKind::Summary, "") if label("quantile").is_some() => Ok(Role::Quantile),
                _ => Err(bad()),
            }
        }
    }
}

fn parse_bound(text: &str) -> Option<f64> {
    match text.trim() {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        t => t.parse::<f64>().ok().filter(|b| !b.is_nan()),
    }
}

/// Assembles a histogram or summary value, checking what the exposition needs.
fn finish_dist(
    family: &str,
    kind: MetricKind,
    mut buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
) -> Result<Value, JsonError> {
    let err = |reason: &str| JsonError::InvalidDistribution {
        family: family.to_string(),
        reason: reason.to_string(),
    };
    let sum = sum.ok_or_else(|| err("no _sum value"))?;
    if kind == MetricKind::Summary {
        let count = count.ok_or_else(|| err("no _count value"))?;
        return Ok(Value::Summary { sum, count });
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(err("duplicate le bucket"));
    }
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return Err(err("no le=\"+Inf\" bucket"));
    }
    if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
        return Err(err("bucket counts are not cumulative"));
    }
    let inf = buckets.last().map_or(0.0, |b| b.1);
    Ok(Value::Histogram(HistogramValue {
        bounds: buckets.iter().map(|b| b.0).collect(),
        buckets: buckets.iter().map(|b| b.1).collect(),
        sum,
        count: count.unwrap_or(inf),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::{Format, render};
    use crate::store::StoreSettings;

    const DOCUMENTED: &str = r#"[{"name": "test", "type": "gauge", "help": "test description",
        "values": [{"name": "test", "labels": {"c": "d"}, "value": 12.34}]}]"#;

    fn store() -> Store {
        Store::new(StoreSettings::default())
    }

    fn text(store: &Store, now: Now) -> String {
        let mut out = Vec::new();
        render(store, Format::Text, now.mono, &[], &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    /// The documented payload with `_id` and `_aggregate` added to its labels.
    fn with_worker(id: &str, aggregate: &str, value: f64) -> String {
        format!(
            r#"[{{"name": "test", "type": "gauge", "help": "test description",
                "values": [{{"name": "test", "labels": {{"c": "d", "_id": "{id}",
                "_aggregate": "{aggregate}"}}, "value": {value}}}]}}]"#
        )
    }

    #[test]
    fn documented_payload_from_two_workers_sums() {
        let mut s = store();
        let now = Now::now();
        for id in ["a", "b"] {
            let stats = ingest(&mut s, with_worker(id, "sum", 12.34).as_bytes(), now).unwrap();
            assert_eq!(stats.workers, 1);
            assert_eq!(stats.samples, 1);
        }
        let out = text(&s, now);
        assert!(
            out.contains("# HELP test test description\n# TYPE test gauge\n"),
            "{out}"
        );
        assert!(out.contains("test{c=\"d\"} 24.68\n"), "{out}");
        assert!(!out.contains("_id") && !out.contains("_aggregate"), "{out}");
        assert_eq!(s.worker_count(), 2);
    }

    #[test]
    fn a_label_twice_in_one_labels_object_is_refused_whole() {
        let mut s = store();
        let now = Now::now();
        ingest(&mut s, with_worker("a", "sum", 1.0).as_bytes(), now).unwrap();
        let before = text(&s, now);
        // The proptest's find: a duplicate JSON key rendered as a label set with `le` twice.
        let body = br#"[{"name": "h_count", "type": "counter", "values": [
            {"name": "h_count", "labels": {"le": "w1", "le": "w1"}, "value": 0}]}]"#;
        match ingest(&mut s, body, now) {
            Err(e @ JsonError::Json(_)) => {
                assert!(e.to_string().contains("\"le\" appears twice"), "{e}")
            }
            other => panic!("accepted or wrong error: {other:?}"),
        }
        assert_eq!(text(&s, now), before, "nothing else changed");
    }

    #[test]
    fn aggregate_modes_and_latest_value_per_worker() {
        let mut s = store();
        let now = Now::now();
        for (id, v) in [("a", 1.0), ("b", 5.0), ("a", 3.0)] {
            ingest(&mut s, with_worker(id, "mean", v).as_bytes(), now).unwrap();
        }
        assert!(text(&s, now).contains("test{c=\"d\"} 4\n"));
        // The first mode seen for a series wins; another one is refused, and changes nothing.
        let err = ingest(&mut s, with_worker("b", "max", 7.0).as_bytes(), now).unwrap_err();
        assert!(err.to_string().contains("mean"), "{err}");
        assert!(text(&s, now).contains("test{c=\"d\"} 4\n"));
        ingest(&mut s, with_worker("b", "mean", 7.0).as_bytes(), now).unwrap();
        assert!(text(&s, now).contains("test{c=\"d\"} 5\n"));
    }

    #[test]
    fn values_without_id_belong_to_the_default_worker() {
        let mut s = store();
        let now = Now::now();
        ingest(&mut s, DOCUMENTED.as_bytes(), now).unwrap();
        ingest(&mut s, DOCUMENTED.replace("12.34", "1.5").as_bytes(), now).unwrap();
        assert!(text(&s, now).contains("test{c=\"d\"} 1.5\n"));
        assert!(s.has_worker(DEFAULT_WORKER_ID));
    }

    #[test]
    fn one_body_splits_into_workers() {
        let mut s = store();
        let now = Now::now();
        let body = r#"[{"name": "jobs_total", "type": "counter", "help": "jobs",
            "values": [
              {"name": "jobs_total", "labels": {"_id": "w1", "q": "x"}, "value": 3},
              {"name": "jobs_total", "labels": {"_id": "w2", "q": "x"}, "value": 4},
              {"name": "jobs_total", "labels": {"q": "x"}, "value": 1}]}]"#;
        let stats = ingest(&mut s, body.as_bytes(), now).unwrap();
        assert_eq!(stats.workers, 3);
        assert!(text(&s, now).contains("jobs_total{q=\"x\"} 8\n"));
        // A worker's counter going down is a restart: its old value is retired, not lost.
        let body = body.replace("\"value\": 3", "\"value\": 1");
        ingest(&mut s, body.as_bytes(), now).unwrap();
        assert!(text(&s, now).contains("jobs_total{q=\"x\"} 9\n"));
    }

    #[test]
    fn counter_sample_name_may_carry_total() {
        let mut s = store();
        let now = Now::now();
        let body = r#"[{"name": "req", "type": "counter", "help": "h",
            "values": [{"name": "req_total", "labels": {}, "value": 2}]}]"#;
        ingest(&mut s, body.as_bytes(), now).unwrap();
        assert!(text(&s, now).contains("# TYPE req_total counter\nreq_total 2\n"));
    }

    #[test]
    fn histograms_and_summaries_are_assembled() {
        let mut s = store();
        let now = Now::now();
        let body = r#"[
          {"name": "lat", "type": "histogram", "help": "latency", "values": [
            {"name": "lat_bucket", "labels": {"le": "0.1", "p": "/", "_id": "a"}, "value": 1},
            {"name": "lat_bucket", "labels": {"le": "+Inf", "p": "/", "_id": "a"}, "value": 3},
            {"name": "lat_sum", "labels": {"p": "/", "_id": "a"}, "value": 1.5},
            {"name": "lat_count", "labels": {"p": "/", "_id": "a"}, "value": 3},
            {"name": "lat_bucket", "labels": {"le": "0.1", "p": "/", "_id": "b"}, "value": 2},
            {"name": "lat_bucket", "labels": {"le": "+Inf", "p": "/", "_id": "b"}, "value": 2},
            {"name": "lat_sum", "labels": {"p": "/", "_id": "b"}, "value": 0.1}]},
          {"name": "rpc", "type": "summary", "help": "rpc", "values": [
            {"name": "rpc", "labels": {"quantile": "0.5"}, "value": 0.2},
            {"name": "rpc_sum", "labels": {}, "value": 4},
            {"name": "rpc_count", "labels": {}, "value": 10}]}]"#;
        ingest(&mut s, body.as_bytes(), now).unwrap();
        let out = text(&s, now);
        assert!(out.contains("lat_bucket{p=\"/\",le=\"0.1\"} 3\n"), "{out}");
        assert!(out.contains("lat_bucket{p=\"/\",le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("lat_count{p=\"/\"} 5\n"), "{out}");
        assert!(out.contains("lat_sum{p=\"/\"} 1.6\n"), "{out}");
        assert!(out.contains("rpc_count 10\nrpc_sum 4\n"), "{out}");
        assert!(!out.contains("quantile"), "{out}");
    }

    #[test]
    fn bad_bodies_are_refused_with_one_line_reasons() {
        let now = Now::now();
        for (body, reason) in [
            ("{", "invalid_json"),
            ("{\"name\": \"x\"}", "invalid_json"),
            ("", "invalid_json"),
            ("[{\"name\": \"x\"}]", "invalid_json"),
            (
                r#"[{"name": "x", "type": "gauge", "values": [{"name": "x", "value": "abc"}]}]"#,
                "invalid_json",
            ),
            (
                r#"[{"name": "x", "type": "gauge", "values": [{"name": "x", "labels": {"a": [1]}, "value": 1}]}]"#,
                "invalid_json",
            ),
            (
                r#"[{"name": "x-y", "type": "gauge", "values": []}]"#,
                "invalid_name",
            ),
            (
                r#"[{"name": "x", "type": "info", "values": []}]"#,
                "unsupported_type",
            ),
            (
                r#"[{"name": "x", "type": "gauge", "values": [{"name": "y", "value": 1}]}]"#,
                "invalid_value_name",
            ),
            (
                r#"[{"name": "x", "type": "gauge", "values": [{"name": "x", "labels": {"a-b": "1"}, "value": 1}]}]"#,
                "invalid_label",
            ),
            (
                r#"[{"name": "x", "type": "gauge", "values": []}, {"name": "x", "type": "counter", "values": []}]"#,
                "type_conflict",
            ),
            (
                r#"[{"name": "x", "type": "gauge", "values": [{"name": "x", "labels": {"_aggregate": "median"}, "value": 1}]}]"#,
                "invalid_aggregate",
            ),
            (
                r#"[{"name": "h", "type": "histogram", "values": [{"name": "h_bucket", "labels": {"le": "1"}, "value": 1}, {"name": "h_sum", "value": 1}]}]"#,
                "invalid_distribution",
            ),
            (
                r#"[{"name": "h", "type": "histogram", "values": [{"name": "h_bucket", "labels": {"le": "+Inf"}, "value": 1}]}]"#,
                "invalid_distribution",
            ),
            (
                r#"[{"name": "monasca_sidecar_x", "type": "gauge", "values": [{"name": "monasca_sidecar_x", "value": 1}]}]"#,
                "reserved_name",
            ),
        ] {
            let mut s = store();
            let err = ingest(&mut s, body.as_bytes(), now).expect_err(body);
            assert_eq!(err.reason(), reason, "{body}: {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
            assert_eq!(s.worker_count(), 0, "{body}");
        }
    }

    #[test]
    fn type_conflict_with_existing_family_is_refused() {
        let mut s = store();
        let now = Now::now();
        // A gauge `test_total`, then a counter `test` (stored as `test_total`).
        let gauge = DOCUMENTED.replace("\"test\"", "\"test_total\"");
        ingest(&mut s, gauge.as_bytes(), now).unwrap();
        let body = DOCUMENTED.replace("gauge", "counter");
        let err = ingest(&mut s, body.as_bytes(), now).unwrap_err();
        assert_eq!(err.reason(), "type_conflict");
        assert!(text(&s, now).contains("test_total{c=\"d\"} 12.34\n"));
    }

    #[test]
    fn counter_names_normalised_and_non_finite_refused() {
        let mut s = store();
        let now = Now::now();
        let body = |name: &str, value: &str| {
            format!(
                r#"[{{"name": "{name}", "type": "counter",
                    "values": [{{"name": "{name}", "labels": {{"_id": "{name}"}}, "value": {value}}}]}}]"#
            )
        };
        ingest(&mut s, body("jobs", "2").as_bytes(), now).unwrap();
        ingest(&mut s, body("jobs_total", "3").as_bytes(), now).unwrap();
        let out = text(&s, now);
        assert!(
            out.contains("# TYPE jobs_total counter\njobs_total 5\n"),
            "{out}"
        );
        for bad in ["\"NaN\"", "\"+Inf\"", "\"-Inf\""] {
            let err = ingest(&mut s, body("jobs", bad).as_bytes(), now).unwrap_err();
            assert_eq!(err.reason(), "non_finite", "{bad}: {err}");
        }
        assert!(text(&s, now).contains("jobs_total 5\n"));
    }

    #[test]
    fn label_values_of_other_json_types() {
        let mut s = store();
        let now = Now::now();
        let body = r#"[{"name": "x", "type": "untyped", "help": "h", "values": [
            {"name": "x", "labels": {"code": 204, "ok": true, "none": null, "e": "\u00e9"}, "value": "NaN"}]}]"#;
        ingest(&mut s, body.as_bytes(), now).unwrap();
        let out = text(&s, now);
        assert!(
            out.contains("x{code=\"204\",e=\"é\",ok=\"true\"} NaN\n"),
            "{out}"
        );
    }

    #[test]
    fn clear_forgets_everything() {
        let mut s = store();
        let now = Now::now();
        ingest(&mut s, with_worker("a", "sum", 1.0).as_bytes(), now).unwrap();
        s.clear();
        assert_eq!(s.worker_count(), 0);
        assert!(!text(&s, now).contains("test"));
    }

    #[test]
    fn decay_seconds() {
        assert_eq!(
            parse_decay_seconds("60").unwrap(),
            monasca_config::Duration::from_secs(60)
        );
        assert_eq!(
            parse_decay_seconds(" 1.5 ").unwrap(),
            monasca_config::Duration::from_millis(1500)
        );
        for bad in ["", "abc", "0", "-5", "inf", "nan"] {
            assert!(parse_decay_seconds(bad).is_err(), "{bad}");
        }
    }
}
