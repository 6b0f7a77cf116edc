//! The store's workers: departures, retirement for good, the `forgetAfter` sweep, clearing,
//! and what `/v1/workers` shows.

use super::*;

impl Store {
    /// The worker left (DELETE, a dead process, a removed scrape target). Its values stay as
    /// they are until `forgetAfter` after it was last seen (counters counted, gauges shown by
    /// the non-live modes only), so that a return under the same id continues its counters and
    /// replaces its gauges; then [`Store::sweep`] retires them for good.
    /// Returns false when the worker was unknown.
    pub fn remove_worker(&mut self, id: &str) -> bool {
        let Some(&worker_id) = self.worker_index.get(id) else {
            return false;
        };
        match self.workers.get_mut(worker_id as usize) {
            Some(Some(w)) if !w.departed => {
                w.departed = true;
                self.version += 1;
                true
            }
            _ => false,
        }
    }

    /// Retires a worker for good now, without waiting for `forgetAfter`: a later worker with
    /// the same id counts as new (the multiprocess reader switching directories: the same pid
    /// in another directory is another process).
    pub fn retire_worker(&mut self, id: &str) -> bool {
        self.drop_worker(id, true)
    }

    /// Drops a worker *without* retiring its values: the caller has accounted for them
    /// elsewhere (the multiprocess reader moves a dead pid's values into its persisted totals).
    pub fn forget_worker(&mut self, id: &str) -> bool {
        self.drop_worker(id, false)
    }

    /// Retires a worker for good: counters, histograms and summaries into the per-series
    /// totals, gauges kept for the non-live modes; its memory is released.
    pub(super) fn drop_worker(&mut self, id: &str, retire: bool) -> bool {
        let Some(worker_id) = self.worker_index.remove(id) else {
            return false;
        };
        let Some(state) = self
            .workers
            .get_mut(worker_id as usize)
            .and_then(Option::take)
        else {
            return false;
        };
        self.version += 1;
        for wf in &state.families {
            let Some(family) = self.families.get_mut(&wf.name) else {
                continue;
            };
            let family = Arc::make_mut(family);
            let kind = family.kind;
            let family_mode = resolve_mode(&self.rules, &wf.name);
            family.series.retain(|_, s| {
                let departure = if retire {
                    Departure::Departed {
                        labels: &state.label_text,
                        mode: s.mode().unwrap_or(family_mode),
                    }
                } else {
                    Departure::Forgotten
                };
                take_entry(s, kind, worker_id, departure);
                !s.is_empty(kind)
            });
            if family.series.is_empty() {
                self.families.remove(&wf.name);
            }
        }
        self.free_workers.push(worker_id);
        true
    }

    /// Retires, for good, workers not seen for `forgetAfter` (departed or silent). Returns
    /// their ids.
    pub fn sweep(&mut self, now: Now) -> Vec<String> {
        let forget_after = self.settings.forget_after;
        let expired: Vec<String> = self
            .worker_states()
            .filter(|w| now.mono.saturating_duration_since(w.last_seen) > forget_after)
            .map(|w| w.key.id.clone())
            .collect();
        for id in &expired {
            self.drop_worker(id, true);
        }
        expired
    }

    /// Removes every worker and every retired value (the JSON API's `POST /v1/clear`), and
    /// starts a new [`Store::epoch`] so that sources whose state lives outside the store (the
    /// multiprocess files) apply it in full again.
    pub fn clear(&mut self) {
        self.families.clear();
        self.workers.clear();
        self.worker_index.clear();
        self.free_workers.clear();
        self.epoch += 1;
        self.keys_epoch += 1;
        self.version += 1;
    }

    /// Changes on every [`Store::clear`]: a source that applies only what changed must apply
    /// everything again when the epoch is not the one it last applied in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A snapshot of one worker for `/v1/workers`.
    pub fn workers_info(&self, now: Now) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let w = w.as_ref().filter(|w| !w.departed)?;
                Some(WorkerInfo {
                    id: w.key.id.clone(),
                    source: w.key.source.as_str(),
                    labels: w.key.labels.iter().cloned().collect(),
                    last_seen: w.last_seen_wall,
                    age_seconds: now
                        .mono
                        .saturating_duration_since(w.last_seen)
                        .as_secs_f64(),
                    stale: self.is_stale(i as u32, now.mono),
                    series: w.series,
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// A worker as `/v1/workers` shows it.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct WorkerInfo {
    pub id: String,
    pub source: &'static str,
    pub labels: BTreeMap<String, String>,
    /// Unix time of the last update, in seconds.
    pub last_seen: f64,
    pub age_seconds: f64,
    pub stale: bool,
    pub series: usize,
}
