//! How gauges of several workers combine. Pure functions over the stored entries.

use crate::store::{RetiredGauge, ScalarEntry};
use monasca_config::GaugeMode;

/// Which worker a per-worker (`all`) value belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WorkerRef<'a> {
    /// Index of a known worker.
    Live(u32),
    /// Label text of a departed worker.
    Retired(&'a str),
}

/// The combined value(s) of one gauge series.
#[derive(Clone, Debug, PartialEq)]
pub enum GaugeOutput<'a> {
    /// Nothing to show (a live mode whose workers are all stale or gone).
    None,
    One(f64),
    /// `all`/`liveall`: one value per worker, labelled with the worker's labels, with the
    /// time it was set (departed workers' values: `-inf`).
    PerWorker(Vec<(WorkerRef<'a>, f64, f64)>),
}

/// Combines the gauge entries of one series. `stale[i]` tells whether worker `i` is stale; live
/// modes skip stale workers and departed ones, the others include both.
pub fn gauge_output<'a>(
    mode: GaugeMode,
    entries: &[ScalarEntry],
    retired: Option<&'a RetiredGauge>,
    stale: &[bool],
) -> GaugeOutput<'a> {
    let live = mode.is_live();
    let retired = if live { None } else { retired };
    let current = entries
        .iter()
        .filter(|e| !live || !stale.get(e.worker as usize).copied().unwrap_or(true));
    match mode.base() {
        GaugeMode::All => {
            let mut values: Vec<(WorkerRef<'a>, f64, f64)> = current
                .map(|e| (WorkerRef::Live(e.worker), e.value, e.ts))
                .collect();
            if let Some(r) = retired {
                values.extend(
                    r.by_worker
                        .iter()
                        .map(|(w, v)| (WorkerRef::Retired(w), *v, f64::NEG_INFINITY)),
                );
            }
            if values.is_empty() {
                GaugeOutput::None
            } else {
                GaugeOutput::PerWorker(values)
            }
        }
        base => {
            let mut acc = Acc::default();
            for e in current {
                acc.add(e.value, e.ts);
            }
            if let Some(r) = retired
                && r.count > 0
            {
                acc.n += u64::from(r.count);
                acc.sum += r.sum;
                acc.min = acc.min.min(r.min);
                acc.max = acc.max.max(r.max);
                if acc.n == u64::from(r.count) || r.latest_ts >= acc.latest_ts {
                    acc.latest_ts = r.latest_ts;
                    acc.latest = r.latest;
                }
            }
            let Acc {
                n,
                sum,
                min,
                max,
                latest,
                ..
            } = acc;
            if n == 0 {
                return GaugeOutput::None;
            }
            GaugeOutput::One(match base {
                GaugeMode::Min => min,
                GaugeMode::Max => max,
                GaugeMode::Mean => sum / n as f64,
                GaugeMode::Mostrecent => latest,
                _ => sum,
            })
        }
    }
}

/// Running sum, count, extremes and latest value of gauge values.
struct Acc {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
    latest_ts: f64,
    latest: f64,
}

impl Default for Acc {
    fn default() -> Self {
        Acc {
            n: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            latest_ts: f64::NEG_INFINITY,
            latest: f64::NAN,
        }
    }
}

impl Acc {
    fn add(&mut self, v: f64, ts: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if ts >= self.latest_ts {
            self.latest_ts = ts;
            self.latest = v;
        }
    }
}

/// The `name="value"` pairs of canonical label text (`a="1",b="x\\"y"`), as (name, the
/// pair's text).
fn label_pairs(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let eq = rest.find('=')?;
        // Skip `="value"`, honouring escapes.
        let bytes = rest.as_bytes();
        let mut j = eq + 2;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        let end = (j + 1).min(rest.len());
        let pair = (&rest[..eq], &rest[..end]);
        rest = rest.get(end + 1..).unwrap_or("");
        Some(pair)
    })
}

/// The label text of one `all`-mode line: the series labels, then the worker's labels whose
/// names the series does not already have (a label never appears twice on a line).
pub(crate) fn per_worker_labels(series: &str, worker: &str) -> String {
    let taken: Vec<&str> = label_pairs(series).map(|(name, _)| name).collect();
    let mut out = String::with_capacity(series.len() + worker.len() + 1);
    out.push_str(series);
    for (name, pair) in label_pairs(worker) {
        if taken.contains(&name) {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(pair);
    }
    out
}

/// One line per distinct label set: when two workers' values would print the same labels
/// (a worker label the series already carries, two sources with the same worker labels), the
/// most recent value is kept.
pub(crate) fn distinct_lines(mut lines: Vec<(String, f64, f64)>) -> Vec<(String, f64)> {
    lines.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.total_cmp(&b.2)));
    let mut out: Vec<(String, f64)> = Vec::with_capacity(lines.len());
    for (labels, value, _) in lines {
        match out.last_mut() {
            Some(last) if last.0 == labels => last.1 = value,
            _ => out.push((labels, value)),
        }
    }
    out
}
