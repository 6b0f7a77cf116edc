//! Aggregation across workers and exposition as Prometheus text 0.0.4 or OpenMetrics 1.0.
//!
//! Families come out sorted by name and never interleaved; each family's series are combined
//! from every worker's latest value plus what departed workers left (see [`crate::store`]).

mod aggregate;
mod format;
#[cfg(test)]
mod tests;

pub use format::{Format, negotiate};

use crate::model::MetricKind;
use crate::store::{SeriesView, Store};
use aggregate::{GaugeOutput, gauge_output};
use format::Writer;
use std::time::Instant;

/// One of the sidecar's own metric families (`monasca_sidecar_*`), as read from the
/// `prometheus-client` registry by [`crate::self_metrics::families`].
#[derive(Clone, Debug, PartialEq)]
pub struct SelfFamily {
    /// Full name; counters end in `_total`.
    pub name: String,
    pub kind: MetricKind,
    pub help: String,
    /// (canonical label text built by [`monasca_runtime::labels::push_label`], value).
    pub samples: Vec<(String, f64)>,
}

/// Renders every aggregated family of `store` plus `self_families` into `out`.
pub fn render(
    store: &Store,
    format: Format,
    now: Instant,
    self_families: &[SelfFamily],
    out: &mut Vec<u8>,
) {
    let view = store.view(now);
    let stale_workers = view.stale_workers();
    let mut w = Writer::new(format, out);
    let mut own = self_families.iter().peekable();
    for family in view.families() {
        let name = family.name;
        while let Some(s) = own.next_if(|s| *s.name < *name) {
            w.self_family(s);
        }
        w.family_header(name, family.kind, family.help, family.unit);
        for (labels, series) in family.series() {
            match series {
                SeriesView::Scalar {
                    mode,
                    entries,
                    retired,
                    retired_gauge,
                } => match family.kind {
                    MetricKind::Counter => {
                        let total = retired + entries.iter().map(|e| e.value).sum::<f64>();
                        w.sample(name, "", labels, "", total);
                    }
                    _ => {
                        let mode = mode.unwrap_or(family.mode);
                        match gauge_output(mode, entries, retired_gauge, stale_workers) {
                            GaugeOutput::None => {}
                            GaugeOutput::One(v) => w.sample(name, "", labels, "", v),
                            GaugeOutput::PerWorker(values) => {
                                let lines = values
                                    .into_iter()
                                    .map(|(worker, v, ts)| {
                                        let worker_text = match worker {
                                            aggregate::WorkerRef::Live(i) => view.worker_labels(i),
                                            aggregate::WorkerRef::Retired(text) => text,
                                        };
                                        (aggregate::per_worker_labels(labels, worker_text), v, ts)
                                    })
                                    .collect();
                                for (line_labels, v) in aggregate::distinct_lines(lines) {
                                    w.sample(name, "", &line_labels, "", v);
                                }
                            }
                        }
                    }
                },
                SeriesView::Dist {
                    bounds,
                    entries,
                    retired,
                } => {
                    let width = entries
                        .first()
                        .map(|e| e.values.len())
                        .or(retired.as_ref().map(|r| r.len()))
                        .unwrap_or(0);
                    let mut totals = vec![0.0; width];
                    if let Some(r) = retired {
                        add(&mut totals, r);
                    }
                    for e in entries {
                        add(&mut totals, &e.values);
                    }
                    if width < 2 {
                        continue;
                    }
                    let (sum, count) = (totals[width - 2], totals[width - 1]);
                    if family.kind == MetricKind::Histogram {
                        for (bound, value) in bounds.iter().zip(&totals) {
                            w.bucket(name, labels, *bound, *value);
                        }
                    }
                    // OpenMetrics: a sum is a counter, so it is left out when it may go down
                    // (negative buckets) or is negative or NaN; a histogram's `_count` goes
                    // with it (the `+Inf` bucket still has the count). Text 0.0.4 keeps both.
                    let negative_buckets = bounds.first().is_some_and(|b| *b < 0.0);
                    let sum_is_counter = !(negative_buckets || sum.is_nan() || sum < 0.0);
                    let om = format == Format::OpenMetrics;
                    if !om || sum_is_counter || family.kind == MetricKind::Summary {
                        w.sample(name, "_count", labels, "", count);
                    }
                    // A NaN sum is a sum no worker sent (or that cannot be known): not written.
                    if (!om || sum_is_counter) && !sum.is_nan() {
                        w.sample(name, "_sum", labels, "", sum);
                    }
                }
            }
        }
    }
    for s in own {
        w.self_family(s);
    }
    w.finish();
}

fn add(totals: &mut [f64], values: &[f64]) {
    for (t, v) in totals.iter_mut().zip(values) {
        *t += v;
    }
}
