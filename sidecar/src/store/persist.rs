//! The store's part of the state file (see [`crate::state`]): every worker's last values, the
//! retired totals and departed gauges, departed/dropped bookkeeping and last-seen times.
//!
//! Workers of the multiprocess source are left out: their files and the reader's own
//! retired-totals files (`counter_retired.db`, ...) are the truth for them, and the reader
//! rebuilds them from the directory at start. Keeping them here as well would count a pid
//! that died while the sidecar was down twice (once here, once when the reader folds its file).

use super::{
    DROPPED, DistEntry, DistSeries, FamilyState, RetiredGauge, ScalarEntries, ScalarEntry,
    SeriesData, SeriesMap, SeriesState, Source, Store, StoreSettings, WorkerFamily, WorkerKey,
    WorkerState,
};
use crate::codec::{Dec, DecodeError, Enc};
use crate::model::MetricKind;
use monasca_config::GaugeMode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const KINDS: [MetricKind; 5] = [
    MetricKind::Counter,
    MetricKind::Gauge,
    MetricKind::Histogram,
    MetricKind::Summary,
    MetricKind::Untyped,
];
const SOURCES: [Source; 6] = [
    Source::Push,
    Source::Json,
    Source::Statsd,
    Source::Multiprocess,
    Source::Scrape,
    Source::Otlp,
];

pub(crate) fn kind_code(kind: MetricKind) -> u8 {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u8
}

pub(crate) fn kind_from(code: u8) -> Result<MetricKind, DecodeError> {
    KINDS
        .get(code as usize)
        .copied()
        .ok_or(DecodeError::Corrupt("unknown metric kind"))
}

fn source_code(source: Source) -> u8 {
    SOURCES.iter().position(|s| *s == source).unwrap_or(0) as u8
}

fn mode_code(mode: Option<GaugeMode>) -> u8 {
    mode.and_then(|m| GaugeMode::ALL.iter().position(|x| *x == m))
        .map_or(0, |i| i as u8 + 1)
}

fn mode_from(code: u8) -> Result<Option<GaugeMode>, DecodeError> {
    match code {
        0 => Ok(None),
        c => GaugeMode::ALL
            .get(c as usize - 1)
            .copied()
            .map(Some)
            .ok_or(DecodeError::Corrupt("unknown gauge mode")),
    }
}

/// A worker the state file keeps.
fn persisted(w: &WorkerState) -> bool {
    w.key.source != Source::Multiprocess
}

impl Store {
    /// A number that changes with every update of the values (never with [`Store::touch`]):
    /// the state writer compares it with what it last wrote.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Appends the store's part of the state file at once: [`Store::capture`] then
    /// [`StoreCapture::encode`], for callers that hold the store anyway (tests, the model).
    pub fn encode_state(&self, e: &mut Enc) {
        self.capture().encode(e);
    }

    /// Captures what the state file keeps of the store, as a consistent cut, in
    /// O(workers + families): families are shared (`Arc`), not copied, so the caller holds the
    /// store's lock only for this and encodes the capture after releasing it
    /// ([`StoreCapture::encode`]). An update of a family the capture still holds copies that
    /// family first (see `FamilyState`); the capture never sees it.
    pub fn capture(&self) -> StoreCapture {
        let mut keep = vec![false; self.workers.len()];
        let workers = self
            .workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let w = w.as_ref().filter(|w| persisted(w))?;
                keep[i] = true;
                Some(CapturedWorker {
                    index: i as u32,
                    key: w.key.clone(),
                    last_seen_wall: w.last_seen_wall,
                    departed: w.departed,
                    families: w.families.clone(),
                })
            })
            .collect();
        StoreCapture {
            generation: self.generation,
            version: self.version,
            workers,
            keep,
            families: self
                .families
                .iter()
                .map(|(name, f)| (name.clone(), f.clone()))
                .collect(),
        }
    }

    /// Builds a store from its part of a state file, for `settings`. Nothing is installed
    /// until all of it decoded: an error leaves no half-loaded store behind. Workers last seen
    /// longer than `forgetAfter` ago are retired at once, as the sweep would have done.
    pub fn decode_state(
        settings: StoreSettings,
        d: &mut Dec<'_>,
        now: super::Now,
    ) -> Result<Store, DecodeError> {
        let mut store = Store::new(settings);
        store.generation = d.u32()? & !DROPPED;
        let n = d.len(16)?;
        // Old worker index -> new index (workers are packed).
        let mut index: HashMap<u32, u32> = HashMap::with_capacity(n);
        let mut expired = Vec::new();
        for _ in 0..n {
            let old = d.u32()?;
            let id = d.str()?.to_string();
            let source = *SOURCES
                .get(d.u8()? as usize)
                .ok_or(DecodeError::Corrupt("unknown source"))?;
            let labels = d.pairs()?;
            let common_labels = d.pairs()?;
            let last_seen_wall = d.f64()?;
            let departed = d.u8()? != 0;
            let nf = d.len(12)?;
            let mut families = Vec::with_capacity(nf);
            for _ in 0..nf {
                families.push(WorkerFamily {
                    name: d.str()?.into(),
                    series: d.u32()?,
                    dropped: d.u32()?,
                });
            }
            if store.worker_index.contains_key(&id) || index.contains_key(&old) {
                return Err(DecodeError::Corrupt("a worker appears twice"));
            }
            let key = WorkerKey {
                id,
                source,
                labels,
                common_labels,
                // Only an update's key decides how a restart is read.
                one_process: false,
            };
            let new = store.add_worker(&key, now);
            let age = (now.wall - last_seen_wall).max(0.0);
            let age = Duration::try_from_secs_f64(age).unwrap_or(Duration::MAX);
            if let Some(Some(w)) = store.workers.get_mut(new as usize) {
                w.last_seen_wall = last_seen_wall;
                w.departed = departed;
                w.series = families.iter().map(|f| f.series as usize).sum();
                w.families = families;
                match now.mono.checked_sub(age) {
                    Some(t) if age <= store.settings.forget_after => w.last_seen = t,
                    _ => expired.push(key.id.clone()),
                }
            }
            index.insert(old, new);
        }
        let worker = |d: &mut Dec<'_>| -> Result<u32, DecodeError> {
            index
                .get(&d.u32()?)
                .copied()
                .ok_or(DecodeError::Corrupt("an entry names an unknown worker"))
        };
        let nfam = d.len(8)?;
        for _ in 0..nfam {
            let name: Box<str> = d.str()?.into();
            let kind = kind_from(d.u8()?)?;
            let help = d.opt_str()?.map(Into::into);
            let unit = d.opt_str()?.map(Into::into);
            let ns = d.len(8)?;
            let mut series = SeriesMap::new();
            for _ in 0..ns {
                let key: Box<str> = d.str()?.into();
                let mode = mode_from(d.u8()?)?;
                let data = match d.u8()? {
                    0 if !matches!(kind, MetricKind::Histogram | MetricKind::Summary) => {
                        let ne = d.len(24)?;
                        let mut entries = ScalarEntries::with_capacity(ne);
                        for _ in 0..ne {
                            let worker = worker(d)?;
                            let generation = d.u32()?;
                            let ts = d.f64()?;
                            let value = if kind == MetricKind::Counter {
                                d.finite()?
                            } else {
                                d.f64()?
                            };
                            entries.push(ScalarEntry {
                                worker,
                                generation,
                                ts,
                                value,
                            });
                        }
                        let retired = d.finite()?;
                        let retired_gauge = match d.u8()? {
                            0 => None,
                            _ => {
                                let count = d.u32()?;
                                let [sum, min, max, latest_ts, latest] =
                                    [d.f64()?, d.f64()?, d.f64()?, d.f64()?, d.f64()?];
                                let nb = d.len(12)?;
                                let mut by_worker = Vec::with_capacity(nb);
                                for _ in 0..nb {
                                    by_worker.push((d.str()?.into(), d.f64()?));
                                }
                                Some(Box::new(RetiredGauge {
                                    count,
                                    sum,
                                    min,
                                    max,
                                    latest_ts,
                                    latest,
                                    by_worker,
                                }))
                            }
                        };
                        SeriesData::Scalar {
                            mode,
                            entries,
                            retired,
                            retired_gauge,
                        }
                    }
                    1 if matches!(kind, MetricKind::Histogram | MetricKind::Summary) => {
                        let bounds: Arc<[f64]> = d.f64s()?.into();
                        // Buckets (one per bound), then sum, then count.
                        let width = bounds.len() + 2;
                        let ne = d.len(12)?;
                        let mut entries = Vec::with_capacity(ne);
                        for _ in 0..ne {
                            let worker = worker(d)?;
                            let generation = d.u32()?;
                            let values = d.f64s()?;
                            check_dist(&values, width)?;
                            entries.push(DistEntry {
                                worker,
                                generation,
                                values: values.into(),
                            });
                        }
                        let retired = match d.u8()? {
                            0 => None,
                            _ => {
                                let values = d.f64s()?;
                                check_dist(&values, width)?;
                                Some(values.into())
                            }
                        };
                        SeriesData::Dist(Box::new(DistSeries {
                            mode,
                            bounds,
                            entries,
                            retired,
                        }))
                    }
                    _ => return Err(DecodeError::Corrupt("series data does not fit its kind")),
                };
                let state = SeriesState { data };
                // Series held only by workers left out (multiprocess) are rebuilt by their
                // source, or not at all.
                if state.is_empty(kind) {
                    continue;
                }
                if series.insert_new(&key, state).is_err() {
                    return Err(DecodeError::Corrupt(
                        "a series appears twice, or a family's label text passes 4 GiB",
                    ));
                }
            }
            if series.is_empty() {
                continue;
            }
            let state = FamilyState {
                id: store.new_family_id(),
                kind,
                help,
                unit,
                series,
            };
            if store.families.insert(name, Arc::new(state)).is_some() {
                return Err(DecodeError::Corrupt("a family appears twice"));
            }
        }
        for id in expired {
            store.drop_worker(&id, true);
        }
        Ok(store)
    }
}

/// A worker as a [`StoreCapture`] holds it.
#[derive(Debug)]
struct CapturedWorker {
    index: u32,
    key: WorkerKey,
    last_seen_wall: f64,
    departed: bool,
    families: Vec<WorkerFamily>,
}

/// The store's part of a state file, captured by [`Store::capture`] and not yet encoded.
#[derive(Debug)]
pub struct StoreCapture {
    generation: u32,
    version: u64,
    /// The persisted workers (multiprocess ones are left out, see the module doc).
    workers: Vec<CapturedWorker>,
    /// By worker slot: true when the worker is persisted (its entries are written).
    keep: Vec<bool>,
    families: Vec<(Box<str>, Arc<FamilyState>)>,
}

impl StoreCapture {
    /// The store version captured (see [`Store::version`]).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Appends the store's part of the state file. Each family is released as soon as it is
    /// written, so an update racing the encoding copies only the families not written yet.
    /// Last-seen times are written as wall-clock seconds (what survives a restart).
    pub fn encode(self, e: &mut Enc) {
        e.u32(self.generation);
        e.len(self.workers.len());
        for w in &self.workers {
            e.u32(w.index);
            e.str(&w.key.id);
            e.u8(source_code(w.key.source));
            e.pairs(w.key.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            e.pairs(
                w.key
                    .common_labels
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str())),
            );
            e.f64(w.last_seen_wall);
            e.u8(u8::from(w.departed));
            e.len(w.families.len());
            for f in &w.families {
                e.str(&f.name);
                e.u32(f.series);
                e.u32(f.dropped);
            }
        }
        let keep = self.keep;
        let kept_worker = |w: u32| keep.get(w as usize).copied().unwrap_or(false);
        e.len(self.families.len());
        for (name, family) in self.families {
            encode_family(&name, &family, &kept_worker, e);
        }
    }
}

/// One family of a [`StoreCapture`]: its metadata and every series, with the entries of the
/// persisted workers only.
fn encode_family(name: &str, family: &FamilyState, kept_worker: &dyn Fn(u32) -> bool, e: &mut Enc) {
    e.str(name);
    e.u8(kind_code(family.kind));
    e.opt_str(family.help.as_deref());
    e.opt_str(family.unit.as_deref());
    e.len(family.series.len());
    for (key, s) in family.series.iter() {
        e.str(key);
        e.u8(mode_code(s.mode()));
        match &s.data {
            SeriesData::Scalar {
                entries,
                retired,
                retired_gauge,
                ..
            } => {
                e.u8(0);
                e.len(entries.iter().filter(|x| kept_worker(x.worker)).count());
                for x in entries.iter().filter(|x| kept_worker(x.worker)) {
                    e.u32(x.worker);
                    e.u32(x.generation);
                    e.f64(x.ts);
                    e.f64(x.value);
                }
                e.f64(*retired);
                match retired_gauge {
                    None => e.u8(0),
                    Some(g) => {
                        e.u8(1);
                        e.u32(g.count);
                        for v in [g.sum, g.min, g.max, g.latest_ts, g.latest] {
                            e.f64(v);
                        }
                        e.len(g.by_worker.len());
                        for (w, v) in &g.by_worker {
                            e.str(w);
                            e.f64(*v);
                        }
                    }
                }
            }
            SeriesData::Dist(d) => {
                let DistSeries {
                    bounds,
                    entries,
                    retired,
                    ..
                } = &**d;
                e.u8(1);
                e.f64s(bounds);
                e.len(entries.iter().filter(|x| kept_worker(x.worker)).count());
                for x in entries.iter().filter(|x| kept_worker(x.worker)) {
                    e.u32(x.worker);
                    e.u32(x.generation);
                    e.f64s(&x.values);
                }
                match retired {
                    None => e.u8(0),
                    Some(r) => {
                        e.u8(1);
                        e.f64s(r);
                    }
                }
            }
        }
    }
}

/// A histogram/summary value list of the right width whose counts are finite.
fn check_dist(values: &[f64], width: usize) -> Result<(), DecodeError> {
    if values.len() != width {
        return Err(DecodeError::Corrupt("a distribution has the wrong width"));
    }
    let n = values.len();
    if values[..n - 2]
        .iter()
        .chain([&values[n - 1]])
        .any(|v| !v.is_finite())
    {
        return Err(DecodeError::Corrupt("a cumulative value is not finite"));
    }
    Ok(())
}
