//! Model-based test of the aggregation contract (README "Aggregation semantics").
//!
//! A reference model, small enough to check by reading, says what `/metrics` must show after
//! any sequence of operations: PUT, POST and series-scope upserts from worker processes that
//! do work, restart (their values drop) and leave series out; DELETE; time passing (staleness
//! and `forgetAfter`, with a controlled clock); `clear`; `_aggregate` mode conflicts; histogram
//! layout mismatches; non-finite values; a sidecar restart on its `stateDir` (the store saved
//! and restored: the aggregate after the restore equals the one before). proptest drives the real [`Store`] and the model
//! through the same random sequence and compares every render with the model, and checks
//! that no counter, bucket or `_count` ever decreases (except across a clear) and that the
//! exposition is well formed (one `# TYPE` per family, no series twice, no label twice).
//!
//! `MODEL_CASES` (default 64) cases of 160–239 steps: at least 10,240 steps per run.

use monasca_config::{GaugeMode, SidecarConfig};
use monasca_sidecar::codec::{Dec, Enc};
use monasca_sidecar::expose::{Format, render};
use monasca_sidecar::model::{Family, HistogramValue, Label, Labels, MetricKind, Series, Value};
use monasca_sidecar::store::{Now, Scope, Source, Store, StoreSettings, WorkerKey};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const WORKERS: usize = 3;
const COUNTER_SERIES: usize = 3;
const GAUGE_SERIES: usize = 2;
const HIST_SERIES: usize = 2;
const STALE_AFTER_MS: u64 = 60_000;
const FORGET_AFTER_MS: u64 = 300_000;
const MODES: [GaugeMode; 9] = [
    GaugeMode::Sum,
    GaugeMode::Min,
    GaugeMode::Max,
    GaugeMode::Mean,
    GaugeMode::Mostrecent,
    GaugeMode::All,
    GaugeMode::Livesum,
    GaugeMode::Livemax,
    GaugeMode::Liveall,
];
const OBSERVATIONS: [f64; 3] = [0.5, 3.0, -2.0];

/// How a push is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    /// PUT: replaces everything the worker had.
    Put,
    /// POST: replaces the families in the body.
    Post,
    /// Series scope (the JSON API, StatsD): sets only the series in the body.
    Upsert,
}

#[derive(Clone, Debug)]
enum Op {
    /// The worker process counts / observes (nothing is sent).
    Work {
        w: usize,
        series: usize,
        amount: u8,
    },
    /// The worker process sets a gauge (nothing is sent).
    SetGauge {
        w: usize,
        series: usize,
        value: i8,
    },
    /// The worker process restarts: counters and histograms start from zero.
    Restart {
        w: usize,
    },
    /// The worker sends the masked series with the `_aggregate` modes chosen by `modes`.
    Push {
        w: usize,
        method: Method,
        counters: u8,
        gauges: u8,
        hists: u8,
        modes: [u8; GAUGE_SERIES],
    },
    /// A push the store must refuse whole: a non-finite counter, bucket or count, or another
    /// bucket layout.
    BadPush {
        w: usize,
        what: u8,
    },
    Delete {
        w: usize,
    },
    /// Time passes, then the store's sweeper runs.
    Advance {
        ms: u32,
    },
    Clear,
    /// The sidecar restarts on its `stateDir`: the store is saved and restored (nothing may
    /// change in what `/metrics` shows, and later steps continue from the restored store).
    SidecarRestart,
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WORKERS;
    prop_oneof![
        6 => (w.clone(), 0..COUNTER_SERIES + HIST_SERIES, 1..5u8)
            .prop_map(|(w, series, amount)| Op::Work { w, series, amount }),
        2 => (w.clone(), 0..GAUGE_SERIES, -3..9i8)
            .prop_map(|(w, series, value)| Op::SetGauge { w, series, value }),
        1 => w.clone().prop_map(|w| Op::Restart { w }),
        8 => (
            w.clone(),
            prop_oneof![Just(Method::Put), Just(Method::Post), Just(Method::Upsert)],
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            [any::<u8>(), any::<u8>()],
        )
            .prop_map(|(w, method, counters, gauges, hists, modes)| Op::Push {
                w,
                method,
                counters,
                gauges,
                hists,
                modes,
            }),
        1 => (w.clone(), 0..4u8).prop_map(|(w, what)| Op::BadPush { w, what }),
        1 => w.prop_map(|w| Op::Delete { w }),
        2 => prop_oneof![1..2_000u32, 50_000..200_000u32].prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Clear),
        1 => Just(Op::SidecarRestart),
    ]
}

// ---------------------------------------------------------------------------------------
// The worker processes: cumulative values as a client library holds them.

#[derive(Clone, Debug, Default)]
struct Process {
    counters: [f64; COUNTER_SERIES],
    /// Per histogram series: bucket le=1, +Inf bucket (= count), sum.
    hists: [[f64; 3]; HIST_SERIES],
    gauges: [f64; GAUGE_SERIES],
}

// ---------------------------------------------------------------------------------------
// The reference model.

/// A series id: (family index, series index). Families: 0 counter, 1 gauge, 2 histogram.
type Sid = (u8, usize);

/// One update: per series, its values and the `_aggregate` mode it carries.
type Update = Vec<(Sid, Vec<f64>, Option<GaugeMode>)>;

#[derive(Clone, Debug)]
struct Held {
    /// Counter: [v]; histogram: [b1, binf, sum]; gauge: [v].
    values: Vec<f64>,
    /// When a gauge was set (wall ms).
    ts: u64,
    /// A counter-like series the worker left out of a PUT (or a POST of its family): still
    /// counted, and continued if it comes back at or above its value, unless the worker
    /// restarts first.
    dropped: bool,
}

#[derive(Clone, Debug, Default)]
struct ModelWorker {
    departed: bool,
    last_seen: u64,
    held: BTreeMap<Sid, Held>,
}

#[derive(Clone, Debug, Default)]
struct ModelSeries {
    /// Counter-like: the retired total (None: nothing retired yet).
    retired: Option<Vec<f64>>,
    /// Gauges: the mode fixed when the series appeared (None: the default, `sum`).
    mode: Option<GaugeMode>,
    /// Gauges: values of forgotten workers (non-live modes): (worker index, value, ts).
    forgotten: Vec<(usize, f64, u64)>,
}

#[derive(Debug, Default)]
struct Model {
    workers: BTreeMap<usize, ModelWorker>,
    series: BTreeMap<Sid, ModelSeries>,
}

fn is_live(mode: GaugeMode) -> bool {
    mode.is_live()
}

impl Model {
    fn holders(&self, sid: Sid) -> impl Iterator<Item = (usize, &ModelWorker, &Held)> {
        self.workers
            .iter()
            .filter_map(move |(w, mw)| mw.held.get(&sid).map(|h| (*w, mw, h)))
    }

    /// A series exists in the store while it holds something that shows.
    fn exists(&self, sid: Sid) -> bool {
        let s = self.series.get(&sid);
        let held = self.holders(sid).next().is_some();
        match sid.0 {
            0 => held || s.is_some_and(|s| s.retired.as_ref().is_some_and(|r| r[0] != 0.0)),
            1 => held || s.is_some_and(|s| !s.forgotten.is_empty()),
            _ => held || s.is_some_and(|s| s.retired.is_some()),
        }
    }

    fn fixed_mode(&self, sid: Sid) -> GaugeMode {
        self.series
            .get(&sid)
            .and_then(|s| s.mode)
            .unwrap_or(GaugeMode::Sum)
    }

    /// Forgets series that no longer exist (their gauge mode with them).
    fn tidy(&mut self) {
        let gone: Vec<Sid> = self
            .series
            .keys()
            .copied()
            .filter(|sid| !self.exists(*sid))
            .collect();
        for sid in gone {
            self.series.remove(&sid);
        }
    }

    fn retire(&mut self, sid: Sid, values: &[f64]) {
        let s = self.series.entry(sid).or_default();
        match &mut s.retired {
            Some(r) => r.iter_mut().zip(values).for_each(|(r, v)| *r += v),
            None => s.retired = Some(values.to_vec()),
        }
    }

    /// Would the store accept this update? Mirrors the contract's validation.
    fn accepts(&self, update: &[(Sid, Vec<f64>, Option<GaugeMode>)]) -> bool {
        update.iter().all(|(sid, values, mode)| {
            let finite_ok = match sid.0 {
                0 => values[0].is_finite(),
                2 => values[0].is_finite() && values[1].is_finite(),
                _ => true,
            };
            let mode_ok = match (sid.0, mode) {
                (1, Some(m)) if self.exists(*sid) => *m == self.fixed_mode(*sid),
                _ => true,
            };
            finite_ok && mode_ok
        })
    }

    /// Applies an accepted update of worker `w`.
    fn apply(
        &mut self,
        w: usize,
        method: Method,
        update: &[(Sid, Vec<f64>, Option<GaugeMode>)],
        now: u64,
    ) {
        let held_before = |model: &Model, sid: &Sid| {
            model
                .workers
                .get(&w)
                .and_then(|mw| mw.held.get(sid))
                .map(|h| h.values.clone())
        };
        // One counter-like value that went down shows the pushing process restarted.
        let restarted = update.iter().any(|(sid, values, _)| {
            held_before(self, sid).is_some_and(|old| match sid.0 {
                0 => values[0] < old[0],
                // A bucket or the count went down; `_sum` alone may.
                2 => values[0] < old[0] || values[1] < old[1],
                _ => false,
            })
        });
        for (sid, values, mode) in update {
            if !self.exists(*sid) {
                let s = self.series.entry(*sid).or_default();
                s.mode = *mode;
            }
            // After a restart every counter-like value the worker held is its previous
            // life's, whether the new value is below it or not.
            if restarted
                && sid.0 != 1
                && let Some(old) = held_before(self, sid)
            {
                self.retire(*sid, &old);
            }
            let mw = self.workers.entry(w).or_default();
            mw.held.insert(
                *sid,
                Held {
                    values: values.clone(),
                    ts: now,
                    dropped: false,
                },
            );
        }
        let mw = self.workers.entry(w).or_default();
        mw.departed = false;
        mw.last_seen = now;
        // Series of the worker the update replaced but did not mention: counters and
        // histograms stay (dropped, still counted, may come back); gauges go.
        let in_update: BTreeSet<Sid> = update.iter().map(|(sid, _, _)| *sid).collect();
        let families: BTreeSet<u8> = update.iter().map(|(sid, _, _)| sid.0).collect();
        mw.held.retain(|sid, held| {
            let replaced = match method {
                Method::Put => true,
                Method::Post => families.contains(&sid.0),
                Method::Upsert => false,
            };
            let left_out = replaced && !in_update.contains(sid);
            if left_out && sid.0 != 1 {
                held.dropped = true;
            }
            !(left_out && sid.0 == 1)
        });
        // A reset means the worker restarted: what it left out (dropped, or not covered by
        // the method) belongs to its previous life and is retired, so a return counts anew.
        if restarted {
            let (gone, kept) = std::mem::take(&mut mw.held)
                .into_iter()
                .partition(|(sid, h)| h.dropped || (sid.0 != 1 && !in_update.contains(sid)));
            mw.held = kept;
            for (sid, held) in gone {
                self.retire(sid, &held.values);
            }
        }
        self.tidy();
    }

    fn delete(&mut self, w: usize) {
        if let Some(mw) = self.workers.get_mut(&w) {
            mw.departed = true;
        }
    }

    /// The sweeper: workers not seen for `forgetAfter` are retired for good.
    fn sweep(&mut self, now: u64) {
        let expired: Vec<usize> = self
            .workers
            .iter()
            .filter(|(_, mw)| now.saturating_sub(mw.last_seen) > FORGET_AFTER_MS)
            .map(|(w, _)| *w)
            .collect();
        for w in expired {
            let Some(mw) = self.workers.remove(&w) else {
                continue;
            };
            for (sid, held) in mw.held {
                match sid.0 {
                    1 => {
                        let mode = self.fixed_mode(sid);
                        if !is_live(mode) {
                            self.series.entry(sid).or_default().forgotten.push((
                                w,
                                held.values[0],
                                held.ts,
                            ));
                        }
                    }
                    _ => self.retire(sid, &held.values),
                }
            }
        }
        self.tidy();
    }

    /// What `/metrics` must show: `name{sorted labels}` -> value.
    fn expected(&self, now: u64) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for i in 0..COUNTER_SERIES {
            let sid = (0, i);
            if !self.exists(sid) {
                continue;
            }
            let retired = self
                .series
                .get(&sid)
                .and_then(|s| s.retired.as_ref())
                .map_or(0.0, |r| r[0]);
            let total = retired + self.holders(sid).map(|(_, _, h)| h.values[0]).sum::<f64>();
            out.insert(format!("c_total{{a=\"{i}\",job=\"j\"}}"), total);
        }
        for i in 0..HIST_SERIES {
            let sid = (2, i);
            if !self.exists(sid) {
                continue;
            }
            let mut t = self
                .series
                .get(&sid)
                .and_then(|s| s.retired.clone())
                .unwrap_or_else(|| vec![0.0; 3]);
            for (_, _, h) in self.holders(sid) {
                t.iter_mut().zip(&h.values).for_each(|(t, v)| *t += v);
            }
            let l = format!("a=\"{i}\",job=\"j\"");
            out.insert(format!("h_bucket{{{l},le=\"1.0\"}}"), t[0]);
            out.insert(format!("h_bucket{{{l},le=\"+Inf\"}}"), t[1]);
            out.insert(format!("h_count{{{l}}}"), t[1]);
            out.insert(format!("h_sum{{{l}}}"), t[2]);
        }
        for i in 0..GAUGE_SERIES {
            let sid = (1, i);
            if !self.exists(sid) {
                continue;
            }
            let mode = self.fixed_mode(sid);
            let live = is_live(mode);
            let current: Vec<(usize, f64, u64)> = self
                .holders(sid)
                .filter(|(_, mw, _)| {
                    !live || (!mw.departed && now.saturating_sub(mw.last_seen) <= STALE_AFTER_MS)
                })
                .map(|(w, _, h)| (w, h.values[0], h.ts))
                .collect();
            let forgotten: &[(usize, f64, u64)] = if live {
                &[]
            } else {
                &self.series[&sid].forgotten
            };
            let labels = format!("a=\"{i}\",job=\"j\"");
            if mode.base() == GaugeMode::All {
                // One line per worker label; a live value wins over a forgotten one, and a
                // later forgotten value of the same worker replaces an earlier one.
                let mut lines: BTreeMap<usize, f64> = BTreeMap::new();
                for (w, v, _) in forgotten {
                    lines.insert(*w, *v);
                }
                for (w, v, _) in &current {
                    lines.insert(*w, *v);
                }
                for (w, v) in lines {
                    out.insert(format!("g{{a=\"{i}\",instance=\"w{w}\",job=\"j\"}}"), v);
                }
                continue;
            }
            let all: Vec<(usize, f64, u64)> = current.iter().chain(forgotten).copied().collect();
            if all.is_empty() {
                continue;
            }
            let values = all.iter().map(|(_, v, _)| *v);
            let v = match mode.base() {
                GaugeMode::Min => values.fold(f64::INFINITY, f64::min),
                GaugeMode::Max => values.fold(f64::NEG_INFINITY, f64::max),
                GaugeMode::Mean => values.sum::<f64>() / all.len() as f64,
                GaugeMode::Mostrecent => {
                    all.iter().max_by_key(|(_, _, ts)| *ts).map_or(0.0, |e| e.1)
                }
                _ => values.sum(),
            };
            out.insert(format!("g{{{labels}}}"), v);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// The real store, fed the same way the Pushgateway API feeds it.

fn worker_key(w: usize) -> WorkerKey {
    WorkerKey {
        id: format!("push:instance=w{w},job=j"),
        source: Source::Push,
        labels: vec![("instance".into(), format!("w{w}"))],
        common_labels: vec![
            ("job".into(), "j".into()),
            ("instance".into(), format!("w{w}")),
        ],
        one_process: true,
    }
}

fn label(i: usize) -> Label<'static> {
    Label::new("a", i.to_string())
}

/// The families of an update, in the store's model, and the same update for the model.
fn families(update: &[(Sid, Vec<f64>, Option<GaugeMode>)], bounds: &[f64]) -> Vec<Family<'static>> {
    let mut c = Family::new("c_total", MetricKind::Counter);
    let mut g = Family::new("g", MetricKind::Gauge);
    let mut h = Family::new("h", MetricKind::Histogram);
    for (sid, values, mode) in update {
        let mut labels: Labels<'static> = Labels::new();
        labels.push(label(sid.1));
        if let Some(m) = mode {
            labels.push(Label::new("_aggregate", m.as_str()));
        }
        let value = match sid.0 {
            0 | 1 => Value::Scalar(values[0]),
            _ => Value::Histogram(HistogramValue {
                bounds: bounds.to_vec(),
                buckets: vec![values[0], values[1]],
                sum: values[2],
                count: values[1],
            }),
        };
        let series = Series {
            labels,
            value,
            timestamp: None,
        };
        match sid.0 {
            0 => c.series.push(series),
            1 => g.series.push(series),
            _ => h.series.push(series),
        }
    }
    [c, g, h]
        .into_iter()
        .filter(|f| !f.series.is_empty())
        .collect()
}

fn rendered(store: &Store, now: Now) -> BTreeMap<String, f64> {
    let mut out = Vec::new();
    render(store, Format::Text, now.mono, &[], &mut out);
    let text = String::from_utf8(out).expect("UTF-8");
    let mut samples = BTreeMap::new();
    let mut types = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default().to_string();
            assert!(types.insert(name), "family twice:\n{text}");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let key = normalise(series);
        let v: f64 = value.parse().expect("value");
        assert!(
            samples.insert(key, v).is_none(),
            "series twice: {series}\n{text}"
        );
    }
    samples
}

/// `name{labels}` with labels sorted, checking that none appears twice.
fn normalise(series: &str) -> String {
    let Some((name, rest)) = series.split_once('{') else {
        return series.to_string();
    };
    let inner = rest.strip_suffix('}').expect("closing brace");
    let mut pairs: Vec<&str> = inner
        .split("\",")
        .map(|p| p.trim_end_matches('"'))
        .collect();
    pairs.sort_unstable();
    let names: BTreeSet<&str> = pairs.iter().filter_map(|p| p.split('=').next()).collect();
    assert_eq!(names.len(), pairs.len(), "a label twice: {series}");
    let joined: Vec<String> = pairs.iter().map(|p| format!("{p}\"")).collect();
    format!("{name}{{{}}}", joined.join(","))
}

fn same(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb && (va == vb || (va - vb).abs() <= 1e-9 * va.abs().max(1.0))
        })
}

fn run(usual: [usize; GAUGE_SERIES], ops: &[Op]) -> Result<(), TestCaseError> {
    let config = SidecarConfig {
        stale_after: monasca_config::Duration::from_secs(STALE_AFTER_MS / 1000),
        forget_after: monasca_config::Duration::from_secs(FORGET_AFTER_MS / 1000),
        ..SidecarConfig::default()
    };
    let mut store = Store::new(StoreSettings::from_config(&config));
    let mut model = Model::default();
    let mut procs: Vec<Process> = vec![Process::default(); WORKERS];
    // A wall clock near 1e6 s, not today's ~1.8e9: its f64 resolution (~1e-10 s) keeps the
    // ages a restart recomputes from wall seconds exact to the nanosecond, so a worker exactly
    // at the stale or forget boundary is judged alike by model and store.
    let t0 = Now {
        wall: 1_000_000.0,
        ..Now::now()
    };
    let mut ms: u64 = 0;
    let mut previous: BTreeMap<String, f64> = BTreeMap::new();
    for (step, op) in ops.iter().enumerate() {
        ms += 1;
        let mut cleared = false;
        match op {
            Op::Work { w, series, amount } => {
                let p = &mut procs[*w];
                if *series < COUNTER_SERIES {
                    p.counters[*series] += f64::from(*amount);
                } else {
                    let h = &mut p.hists[*series - COUNTER_SERIES];
                    for k in 0..*amount {
                        let v = OBSERVATIONS[usize::from(k) % OBSERVATIONS.len()];
                        h[0] += f64::from(u8::from(v <= 1.0));
                        h[1] += 1.0;
                        h[2] += v;
                    }
                }
            }
            Op::SetGauge { w, series, value } => procs[*w].gauges[*series] = f64::from(*value),
            Op::Restart { w } => {
                let gauges = procs[*w].gauges;
                procs[*w] = Process {
                    gauges,
                    ..Process::default()
                };
            }
            Op::Push {
                w,
                method,
                counters,
                gauges,
                hists,
                modes,
            } => {
                let p = &procs[*w];
                let mut update = Vec::new();
                for i in 0..COUNTER_SERIES {
                    if counters & (1 << i) != 0 {
                        update.push(((0, i), vec![p.counters[i]], None));
                    }
                }
                for i in 0..GAUGE_SERIES {
                    if gauges & (1 << i) != 0 {
                        // Mostly one mode per series (the same label every time), sometimes
                        // another (a conflict) or none.
                        let choice = modes[i];
                        let mode = match choice % 8 {
                            0 => None,
                            1 => Some(MODES[usize::from(choice / 8) % MODES.len()]),
                            _ => Some(MODES[usual[i]]),
                        };
                        update.push(((1, i), vec![p.gauges[i]], mode));
                    }
                }
                for i in 0..HIST_SERIES {
                    if hists & (1 << i) != 0 {
                        update.push(((2, i), p.hists[i].to_vec(), None));
                    }
                }
                if update.is_empty() {
                    continue;
                }
                let scope = match method {
                    Method::Put => Scope::Worker,
                    Method::Post => Scope::Families,
                    Method::Upsert => Scope::Series,
                };
                let now = t0.after(Duration::from_millis(ms));
                let result = store.apply(
                    &worker_key(*w),
                    &families(&update, &[1.0, f64::INFINITY]),
                    scope,
                    now,
                );
                let accepted = model.accepts(&update);
                prop_assert_eq!(
                    result.is_ok(),
                    accepted,
                    "step {}: {:?}: store said {:?}",
                    step,
                    op,
                    result
                );
                if accepted {
                    model.apply(*w, *method, &update, ms);
                }
            }
            Op::BadPush { w, what } => {
                let p = &procs[*w];
                let (update, bounds): (Update, Vec<f64>) = match what {
                    0 => (
                        vec![((0, 0), vec![f64::NAN], None)],
                        vec![1.0, f64::INFINITY],
                    ),
                    1 => (
                        vec![((0, 1), vec![f64::INFINITY], None)],
                        vec![1.0, f64::INFINITY],
                    ),
                    2 => (
                        vec![((2, 0), vec![1.0, f64::INFINITY, 1.0], None)],
                        vec![1.0, f64::INFINITY],
                    ),
                    // Another bucket layout: refused once the series exists (a new series
                    // would take it: not sent, to keep one layout in the model).
                    _ if model.exists((2, 1)) => (
                        vec![((2, 1), p.hists[1].to_vec(), None)],
                        vec![2.0, f64::INFINITY],
                    ),
                    _ => continue,
                };
                let now = t0.after(Duration::from_millis(ms));
                let result = store.apply(
                    &worker_key(*w),
                    &families(&update, &bounds),
                    Scope::Series,
                    now,
                );
                prop_assert!(result.is_err(), "step {}: {:?} was accepted", step, op);
            }
            Op::Delete { w } => {
                store.remove_worker(&worker_key(*w).id);
                model.delete(*w);
            }
            Op::Advance { ms: d } => {
                ms += u64::from(*d);
                store.sweep(t0.after(Duration::from_millis(ms)));
                model.sweep(ms);
            }
            Op::Clear => {
                store.clear();
                model = Model::default();
                cleared = true;
            }
            Op::SidecarRestart => {
                let now = t0.after(Duration::from_millis(ms));
                let mut saved = Enc::default();
                store.encode_state(&mut saved);
                let restored = Store::decode_state(
                    StoreSettings::from_config(&config),
                    &mut Dec::new(&saved.buf),
                    now,
                );
                prop_assert!(
                    restored.is_ok(),
                    "step {}: restore failed: {:?}",
                    step,
                    restored.err()
                );
                store = restored.unwrap();
            }
        }
        let now = t0.after(Duration::from_millis(ms));
        let got = rendered(&store, now);
        let want = model.expected(ms);
        prop_assert!(
            same(&got, &want),
            "step {}: after {:?}\n store: {:?}\n model: {:?}",
            step,
            op,
            got,
            want
        );
        if !cleared {
            for (series, before) in &previous {
                let counter_like = series.starts_with("c_total")
                    || series.starts_with("h_bucket")
                    || series.starts_with("h_count");
                if !counter_like {
                    continue;
                }
                let after = got.get(series).copied().unwrap_or(0.0);
                prop_assert!(
                    after >= *before,
                    "step {}: {} went down from {} to {} after {:?}",
                    step,
                    series,
                    before,
                    after,
                    op
                );
            }
        }
        previous = got;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_reference_model(
        usual in [0..MODES.len(), 0..MODES.len()],
        ops in prop::collection::vec(op(), 160..240),
    ) {
        run(usual, &ops)?;
    }
}
