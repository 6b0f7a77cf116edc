//! One worker's entry of one series: setting it (a restart retires the old value), marking it
//! dropped, taking it out when the worker leaves, and the distribution arithmetic behind them.

use super::*;

/// Flattens a histogram or summary value: buckets, then sum, then count.
pub(super) fn dist_values(value: &Value) -> Box<[f64]> {
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
pub(super) fn dist_reset(old: &[f64], new: &[f64]) -> bool {
    let n = old.len();
    if n != new.len() || n < 2 {
        return true;
    }
    // Count (last) or any bucket (all but sum) went down. `_sum` may legitimately fall with
    // negative observations, so it alone does not signal a reset.
    new[n - 1] < old[n - 1] || old[..n - 2].iter().zip(&new[..n - 2]).any(|(o, n)| n < o)
}

pub(super) fn add_into(total: &mut Option<Box<[f64]>>, values: &[f64]) {
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
pub(super) const MIN_DROPPED_KEPT: usize = 1024;

/// How an update changed a worker's entries of one family.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Touched {
    /// Live entries set again.
    pub(super) updated: u32,
    /// New entries.
    pub(super) inserted: u32,
    /// Dropped entries reported again.
    pub(super) revived: u32,
}

/// What a sweep did to a worker's entries of one family.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Swept {
    /// Counter-like entries marked dropped.
    pub(super) dropped: usize,
    /// Gauge entries forgotten.
    pub(super) removed: usize,
}

impl Swept {
    /// Moves the swept entries out of a family's `live` count (counter-like ones stay held,
    /// as `dropped`). Returns how many left the live set.
    pub(super) fn settle(self, live: &mut u32, dropped: &mut u32) -> usize {
        let left = self.dropped + self.removed;
        *live -= left as u32;
        *dropped += self.dropped as u32;
        left
    }
}

/// Whether the worker held the series before an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Held {
    No,
    Live,
    Dropped,
}

/// What setting a worker's value did.
pub(super) struct Updated {
    pub(super) before: Held,
    /// A counter-like value went down: the old value was retired (a worker restart).
    pub(super) reset: bool,
    /// The counter-like value this one continued (it was at or above it), handed back
    /// instead of dropped: a restart seen later in the same update retires it
    /// ([`retire_continued`]).
    pub(super) continued: Option<Continued>,
}

/// A worker's counter-like value that an update replaced without retiring it.
#[derive(Debug)]
pub(super) enum Continued {
    Scalar(f64),
    Dist(Box<[f64]>),
}

/// Retires a value the worker's update had continued: the update turned out to come from a
/// restarted process, so the old value belongs to its previous life.
pub(super) fn retire_continued(series: &mut SeriesState, old: Continued) {
    match (&mut series.data, old) {
        (SeriesData::Scalar { retired, .. }, Continued::Scalar(v)) => *retired += v,
        (SeriesData::Dist(d), Continued::Dist(values)) => add_into(&mut d.retired, &values),
        // A series keeps its shape for its life.
        _ => {}
    }
}

/// No entry index known (see [`entry_index`]).
pub(super) const NO_HINT: u32 = u32::MAX;

/// The index of the worker's entry: `hint` if the entry is still there (entries move only
/// when one is removed), else found by a scan.
pub(super) fn entry_index<T>(
    entries: &[T],
    hint: u32,
    of_worker: impl Fn(&T) -> bool,
) -> Option<usize> {
    match entries.get(hint as usize) {
        Some(e) if of_worker(e) => Some(hint as usize),
        _ => entries.iter().position(of_worker),
    }
}

/// Sets the worker's value of one series. A value at or above the previous one continues it
/// (also when the series had been dropped or the worker had departed); a counter-like value
/// below it is a restart: the old value is retired. `hint`: where the worker's entry was
/// last seen ([`NO_HINT`] if unknown).
pub(super) fn update_entry(
    series: &mut SeriesState,
    kind: MetricKind,
    worker: u32,
    generation: u32,
    value: &Value,
    ts: f64,
    hint: u32,
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
        ) => match entry_index(entries, hint, |e| e.worker == worker).map(|i| &mut entries[i]) {
            Some(e) => {
                let before = held(e.generation);
                let counter = kind == MetricKind::Counter;
                let reset = counter && *v < e.value;
                if reset {
                    *retired += e.value;
                }
                let continued = (counter && !reset).then_some(Continued::Scalar(e.value));
                e.value = *v;
                e.ts = ts;
                e.generation = generation;
                Updated {
                    before,
                    reset,
                    continued,
                }
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
                    continued: None,
                }
            }
        },
        (SeriesData::Dist(dist), v) => {
            let DistSeries {
                entries, retired, ..
            } = &mut **dist;
            let values = dist_values(v);
            match entry_index(entries, hint, |e| e.worker == worker).map(|i| &mut entries[i]) {
                Some(e) => {
                    let before = held(e.generation);
                    let reset = dist_reset(&e.values, &values);
                    if reset {
                        add_into(retired, &e.values);
                    }
                    let old = std::mem::replace(&mut e.values, values);
                    e.generation = generation;
                    Updated {
                        before,
                        reset,
                        continued: (!reset).then_some(Continued::Dist(old)),
                    }
                }
                None => {
                    // A series' first worker is often its only one: no room for three more.
                    if entries.is_empty() {
                        entries.reserve_exact(1);
                    }
                    entries.push(DistEntry {
                        worker,
                        generation,
                        values,
                    });
                    Updated {
                        before: Held::No,
                        reset: false,
                        continued: None,
                    }
                }
            }
        }
        // Kinds are checked in `prepare`: a distribution never lands in a scalar series.
        (SeriesData::Scalar { .. }, _) => Updated {
            before: Held::Live,
            reset: false,
            continued: None,
        },
    }
}

/// Marks the worker's entry of a counter-like series as dropped (it keeps counting).
pub(super) fn set_dropped(s: &mut SeriesState, worker: u32) {
    match &mut s.data {
        SeriesData::Scalar { entries, .. } => {
            if let Some(e) = entries.iter_mut().find(|e| e.worker == worker) {
                e.generation |= DROPPED;
            }
        }
        SeriesData::Dist(d) => {
            if let Some(e) = d.entries.iter_mut().find(|e| e.worker == worker) {
                e.generation |= DROPPED;
            }
        }
    }
}

/// Why a worker's entry leaves a series.
#[derive(Clone, Copy)]
pub(super) enum Departure<'a> {
    /// A living worker stopped reporting the series: counters are retired, gauges forgotten.
    Dropped,
    /// The worker is gone (deleted, dead, expired): counters are retired and gauges kept for
    /// the non-live modes, under the worker's label text.
    Departed { labels: &'a str, mode: GaugeMode },
    /// The caller accounts for the values elsewhere: nothing is kept.
    Forgotten,
}

/// Takes the worker's entry out of the series.
pub(super) fn take_entry(
    s: &mut SeriesState,
    kind: MetricKind,
    worker: u32,
    departure: Departure<'_>,
) {
    let keep = !matches!(departure, Departure::Forgotten);
    match &mut s.data {
        SeriesData::Scalar {
            entries,
            retired,
            retired_gauge,
            ..
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
        SeriesData::Dist(d) => {
            let DistSeries {
                entries, retired, ..
            } = &mut **d;
            if let Some(pos) = entries.iter().position(|e| e.worker == worker) {
                let e = entries.swap_remove(pos);
                if keep {
                    add_into(retired, &e.values);
                }
            }
        }
    }
}
