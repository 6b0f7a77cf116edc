//! What the store refuses, checked before anything is applied: names and labels that would
//! break an exposition, values that cannot be cumulative, layouts and modes that differ from
//! what the store holds. An update that fails here changes nothing.

use super::key::KeyPlan;
use super::series_map::MAX_KEY_TEXT;
use super::{
    DROPPED, SELF_PREFIX, Scope, SeriesData, SeriesName, Store, StoreError, WorkerKey, resolve_mode,
};
use crate::hashing::HashState;
use crate::model::{Family, MetricKind, Value};
use monasca_config::GaugeMode;
use std::collections::HashSet;

/// An update after validation: canonical keys computed, nothing applied yet.
pub(super) struct Prepared<'a> {
    pub(super) family_index: usize,
    pub(super) key: String,
    /// Where the family holds this series now, if it does: apply reaches it without hashing
    /// the key again (nothing is removed between `prepare` and apply, so it stays valid).
    pub(super) position: Option<u32>,
    pub(super) mode: Option<GaugeMode>,
    pub(super) value: &'a Value,
    pub(super) ts: Option<f64>,
}

impl Store {
    /// Validates an update and computes canonical keys.
    pub(super) fn prepare<'f>(
        &mut self,
        worker: &WorkerKey,
        existing_worker: Option<u32>,
        families: &'f [Family<'_>],
        scope: Scope,
    ) -> Result<Vec<Prepared<'f>>, StoreError> {
        let mut prepared = Vec::with_capacity(families.iter().map(|f| f.series.len()).sum());
        let mut seen_families: HashSet<&str, HashState> =
            HashSet::with_capacity_and_hasher(families.len(), HashState::default());
        let worker_state = existing_worker.and_then(|w| self.workers.get(w as usize)?.as_ref());
        // Series of one family nearly always have the same label names: work out once which
        // of them make the key, in which order.
        let mut key_plan = KeyPlan::default();
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
                    .build_planned(&series.labels, &worker.common_labels, &mut key_plan)
                    .map_err(StoreError::InvalidAggregate)?;
                let position = existing.and_then(|f| f.series.position(key.as_str()));
                let held = existing.zip(position).and_then(|(f, i)| f.series.at(i));
                if let (Some(held), Value::Histogram(h)) = (held, &series.value)
                    && let SeriesData::Dist(d) = &held.data
                    && !same_bounds(&d.bounds, &h.bounds)
                {
                    self.layout_mismatches += 1;
                    return Err(StoreError::HistogramLayoutMismatch {
                        series: SeriesName::new(&family.name, &key),
                        existing: format_bounds(&d.bounds),
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
                        .mode()
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
                    position,
                    mode,
                    value: &series.value,
                    ts: series.timestamp,
                });
            }
            // A series twice in one family: held keys compare by position (no second hash),
            // new keys by text.
            let mut held_positions: Vec<u32> = Vec::new();
            let all_new = if existing.is_none() {
                prepared.len() - first
            } else {
                0
            };
            let mut new_keys: HashSet<&str, HashState> =
                HashSet::with_capacity_and_hasher(all_new, HashState::default());
            // Key text the family would hold at most (new keys counted whether new or not).
            let mut key_text = existing.map_or(0, |f| f.series.key_text_len());
            for p in &prepared[first..] {
                let repeated = match p.position {
                    Some(i) => {
                        held_positions.push(i);
                        false
                    }
                    None => !new_keys.insert(p.key.as_str()),
                };
                if repeated {
                    return Err(duplicate_series(&family.name, &p.key));
                }
                key_text += p.key.len();
            }
            held_positions.sort_unstable();
            if let Some(twice) = held_positions.windows(2).find(|w| w[0] == w[1]) {
                let key = prepared[first..]
                    .iter()
                    .find(|p| p.position == Some(twice[0]))
                    .map_or("", |p| p.key.as_str());
                return Err(duplicate_series(&family.name, key));
            }
            if key_text > MAX_KEY_TEXT {
                return Err(StoreError::FamilyTooLarge {
                    family: family.name.to_string(),
                });
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
    pub(super) fn check_collision(
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
}

fn duplicate_series(family: &str, key: &str) -> StoreError {
    StoreError::DuplicateSeries(SeriesName::new(family, key))
}

pub(super) fn same_bounds(a: &[f64], b: &[f64]) -> bool {
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
pub(super) fn invalid_value(kind: MetricKind, value: &Value) -> Option<&'static str> {
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
pub(super) fn non_finite(kind: MetricKind, value: &Value) -> Option<f64> {
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
