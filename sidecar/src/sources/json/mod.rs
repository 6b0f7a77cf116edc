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

mod wire;

use crate::model::{Family, HistogramValue, Label, Labels, MetricKind, Series, Value};
use crate::store::{Now, Scope, Source, Store, StoreError, WorkerKey};
use indexmap::IndexMap;
use monasca_config::{is_label_name, is_metric_name};
use std::borrow::Cow;
use wire::{JsonFamily, JsonLabels, JsonSample, parse};

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
                    crate::sources::parse::counter_family_name(Cow::Borrowed(
                        counter_name.unwrap_or(name),
                    ))
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
mod tests;
