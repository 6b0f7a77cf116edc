//! Value-only updates of series a worker already holds, without building their keys again.
//!
//! A source that re-sends the same series with new values (the multiprocess reader: a worker
//! whose keys did not change) numbers its families and series once. [`Store::update_held`]
//! finds each series by its canonical key the first time and remembers its position in the
//! family's series map ([`HeldSlots`]); later updates go straight to it. A position is used
//! only while its family is the same one (its id) with the same layout (no series removed
//! since), with the same key settings, and only for a series the worker holds live: anything
//! else, and any value [`Store::apply`] would refuse, leaves the store unchanged and answers
//! [`NotHeld`], so the caller applies those values the validated way.

use super::validate::{invalid_value, non_finite, same_bounds};
use super::*;
use crate::model::Labels;

/// Where a caller's series were found in the store (see the module doc). Belongs to one
/// worker and one numbering of its series: start afresh when either changes.
#[derive(Debug, Default)]
pub struct HeldSlots {
    /// The store's key epoch the positions were found under.
    keys_epoch: u64,
    /// Per family of the caller: (family id, layout) its positions were found under.
    families: Vec<(u64, u64)>,
    /// Per series of the caller: where it was found ([`UNKNOWN`] position: not yet).
    positions: Vec<Found>,
}

/// Where one series was found: its family (the caller's number), its position there, and
/// the index of the worker's entry among the series' workers (a hint: entries move when a
/// worker leaves the series).
#[derive(Clone, Copy, Debug)]
struct Found {
    family: u32,
    position: u32,
    entry: u32,
}

const NOT_FOUND: Found = Found {
    family: 0,
    position: UNKNOWN,
    entry: NO_HINT,
};

const UNKNOWN: u32 = u32::MAX;

impl HeldSlots {
    /// Positions known (for tests and self-checks).
    pub fn known(&self) -> usize {
        self.positions
            .iter()
            .filter(|f| f.position != UNKNOWN)
            .count()
    }

    fn forget(&mut self) {
        self.families.clear();
        self.positions.clear();
    }
}

/// A new value of one series, in the caller's numbering.
#[derive(Clone, Debug)]
pub struct HeldValue {
    pub family: u32,
    pub series: u32,
    pub value: Value,
    pub timestamp: Option<f64>,
}

/// The caller's families and series, for finding a series the first time.
pub trait HeldSeries {
    fn family_name(&self, family: u32) -> &str;
    /// The series' labels, as [`Store::apply`] would get them.
    fn labels(&self, series: u32) -> Labels<'_>;
}

/// Why [`Store::update_held`] changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotHeld {
    /// The worker is unknown or departed.
    Worker,
    /// A series is not held live by the worker, or its value has another shape.
    Series,
    /// A value the store refuses (the validated apply names why).
    Value,
}

impl Store {
    /// Sets new values of series the worker holds live (as [`Store::apply`] with
    /// [`Scope::Series`] would, with the same counter reset rule), or changes nothing and
    /// says why. `values` name distinct series.
    pub fn update_held(
        &mut self,
        worker: &WorkerKey,
        values: &[HeldValue],
        series: &dyn HeldSeries,
        slots: &mut HeldSlots,
        now: Now,
    ) -> Result<ApplyStats, NotHeld> {
        let worker_id = *self.worker_index.get(&worker.id).ok_or(NotHeld::Worker)?;
        match self.workers.get(worker_id as usize) {
            Some(Some(w)) if !w.departed => {}
            _ => return Err(NotHeld::Worker),
        }
        if slots.keys_epoch != self.keys_epoch {
            slots.forget();
            slots.keys_epoch = self.keys_epoch;
        }
        // Find every series first: a miss must leave the store unchanged.
        let mut found: Vec<Found> = Vec::with_capacity(values.len());
        let mut current: Option<(u32, &FamilyState)> = None;
        for v in values {
            let family = match current {
                Some((f, state)) if f == v.family => state,
                _ => {
                    let state = self
                        .families
                        .get(series.family_name(v.family))
                        .ok_or(NotHeld::Series)?;
                    let stamp = (state.id, state.series.layout());
                    let f = v.family as usize;
                    if slots.families.len() <= f {
                        slots.families.resize(f + 1, (0, 0));
                    }
                    if slots.families[f] != stamp {
                        // Positions found under another layout may name other series now.
                        for f in &mut slots.positions {
                            if f.family == v.family {
                                *f = NOT_FOUND;
                            }
                        }
                        slots.families[f] = stamp;
                    }
                    current = Some((v.family, &**state));
                    &**state
                }
            };
            if non_finite(family.kind, &v.value).is_some()
                || invalid_value(family.kind, &v.value).is_some()
            {
                return Err(NotHeld::Value);
            }
            let s = v.series as usize;
            if slots.positions.len() <= s {
                slots.positions.resize(s + 1, NOT_FOUND);
            }
            let at = &mut slots.positions[s];
            if at.family != v.family || at.position == UNKNOWN {
                let (key, _) = self
                    .key_builder
                    .build(&series.labels(v.series), &worker.common_labels)
                    .map_err(|_| NotHeld::Series)?;
                let position = family.series.position(&key).ok_or(NotHeld::Series)?;
                *at = Found {
                    family: v.family,
                    position,
                    entry: NO_HINT,
                };
            }
            let state = family.series.at(at.position).ok_or(NotHeld::Series)?;
            at.entry = live_entry(state, worker_id, at.entry, &v.value).ok_or(NotHeld::Series)?;
            found.push(*at);
        }

        self.generation = self.generation.wrapping_add(1) & !DROPPED;
        let generation = self.generation;
        self.version += 1;
        let mut stats = ApplyStats {
            samples: values.len(),
            ..ApplyStats::default()
        };
        // Runs of values of one family: one family lookup per run.
        let mut start = 0;
        while start < values.len() {
            let family_index = values[start].family;
            let end = values[start..]
                .iter()
                .position(|v| v.family != family_index)
                .map_or(values.len(), |n| start + n);
            if let Some(family) = self.families.get_mut(series.family_name(family_index)) {
                let family = Arc::make_mut(family);
                let kind = family.kind;
                for (v, at) in values[start..end].iter().zip(&found[start..end]) {
                    if let Some(state) = family.series.at_mut(at.position) {
                        let ts = v.timestamp.unwrap_or(now.wall);
                        let value = &v.value;
                        if update_entry(state, kind, worker_id, generation, value, ts, at.entry)
                            .reset
                        {
                            stats.resets += 1;
                        }
                    }
                }
            }
            start = end;
        }
        self.resets += stats.resets as u64;
        let mut dropped = 0;
        if let Some(Some(w)) = self.workers.get_mut(worker_id as usize) {
            w.last_seen = now.mono;
            w.last_seen_wall = now.wall;
            dropped = w.families.iter().map(|f| f.dropped as usize).sum();
        }
        // The same rule as `apply`: a restart retires what the worker's previous life dropped.
        if stats.resets > 0 && dropped > 0 {
            self.retire_dropped(worker_id);
        }
        Ok(stats)
    }
}

/// The index of the worker's entry of the series (looked for at `hint` first), when the
/// worker holds it live and `value` has the series' shape (scalar, or a distribution with the
/// same bucket bounds).
fn live_entry(state: &SeriesState, worker: u32, hint: u32, value: &Value) -> Option<u32> {
    let (index, generation) = state.entry_at(worker, hint)?;
    let shape = match (&state.data, value) {
        (SeriesData::Scalar { .. }, Value::Scalar(_)) => true,
        (SeriesData::Dist(d), Value::Histogram(h)) => same_bounds(&d.bounds, &h.bounds),
        (SeriesData::Dist(d), Value::Summary { .. }) => d.bounds.is_empty(),
        _ => false,
    };
    (generation & DROPPED == 0 && shape).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::{Format, render};
    use crate::model::{Family, HistogramValue, Label, Series};
    use proptest::prelude::*;

    /// Three families numbered 0..3 and their series numbered 0..SERIES.
    const FAMILIES: [(&str, MetricKind); 3] = [
        ("req_total", MetricKind::Counter),
        ("temperature", MetricKind::Gauge),
        ("latency_seconds", MetricKind::Histogram),
    ];
    const SERIES: u32 = 10;

    fn family_of(series: u32) -> u32 {
        match series {
            0..5 => 0,
            5..8 => 1,
            _ => 2,
        }
    }

    struct Numbering;

    impl HeldSeries for Numbering {
        fn family_name(&self, family: u32) -> &str {
            FAMILIES[family as usize].0
        }
        fn labels(&self, series: u32) -> Labels<'_> {
            [Label::new("n", series.to_string())].into_iter().collect()
        }
    }

    /// The value of a series from a small number (counters go down sometimes: restarts).
    fn value(series: u32, n: u8) -> Value {
        let v = f64::from(n % 13);
        match family_of(series) {
            2 => Value::Histogram(HistogramValue {
                bounds: vec![0.5, f64::INFINITY],
                buckets: vec![v, v + 1.0],
                sum: v * 0.25,
                count: v + 1.0,
            }),
            // A counter that is not finite is refused by both paths.
            0 if n == 255 => Value::Scalar(f64::NAN),
            _ => Value::Scalar(v),
        }
    }

    fn values(mask: u16, seed: u8) -> Vec<HeldValue> {
        (0..SERIES)
            .filter(|s| mask & (1 << s) != 0)
            .map(|s| HeldValue {
                family: family_of(s),
                series: s,
                value: value(s, seed.wrapping_add(s as u8 * 7)),
                timestamp: None,
            })
            .collect()
    }

    /// The same values as families, for [`Store::apply`].
    fn families(values: &[HeldValue]) -> Vec<Family<'static>> {
        let mut out: Vec<Family<'static>> = Vec::new();
        for v in values {
            let (name, kind) = FAMILIES[v.family as usize];
            if out.last().is_none_or(|f| f.name != name) {
                out.push(Family::new(name, kind));
            }
            if let Some(f) = out.last_mut() {
                f.series.push(Series {
                    labels: [Label::new("n", v.series.to_string())]
                        .into_iter()
                        .collect(),
                    value: v.value.clone(),
                    timestamp: v.timestamp,
                });
            }
        }
        out
    }

    fn worker(w: u8) -> WorkerKey {
        WorkerKey::new(
            Source::Multiprocess,
            format!("multiprocess:pid={w}"),
            vec![("pid".to_string(), w.to_string())],
        )
    }

    fn text(store: &Store, now: Now) -> String {
        let mut out = Vec::new();
        render(store, Format::Text, now.mono, &[], &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    /// Held values, or the validated apply when they are not held (what a source does).
    fn update_or_apply(
        store: &mut Store,
        w: &WorkerKey,
        values: &[HeldValue],
        slots: &mut HeldSlots,
        now: Now,
    ) -> (bool, bool) {
        match store.update_held(w, values, &Numbering, slots, now) {
            Ok(_) => (true, true),
            Err(_) => {
                let ok = store
                    .apply(w, &families(values), Scope::Series, now)
                    .is_ok();
                (false, ok)
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Whole { w: u8, mask: u16, seed: u8 },
        Update { w: u8, mask: u16, seed: u8 },
        Remove(u8),
        Forget(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        let mask = 0u16..(1 << SERIES);
        prop_oneof![
            3 => (0u8..3, mask.clone(), any::<u8>()).prop_map(|(w, mask, seed)| Op::Whole { w, mask, seed }),
            8 => (0u8..3, mask, any::<u8>()).prop_map(|(w, mask, seed)| Op::Update { w, mask, seed }),
            1 => (0u8..3).prop_map(Op::Remove),
            1 => (0u8..3).prop_map(Op::Forget),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Any mix of whole updates, value updates (held, or applied when not held), removals
        /// and clears gives the store what the validated apply alone gives it, output for
        /// output: positions found earlier are never used for another series.
        #[test]
        fn held_updates_give_what_the_validated_apply_gives(ops in prop::collection::vec(op(), 1..60)) {
            let now = Now::now();
            let mut held = Store::new(StoreSettings::default());
            let mut plain = Store::new(StoreSettings::default());
            let mut slots: Vec<HeldSlots> = (0..3).map(|_| HeldSlots::default()).collect();
            for (step, op) in ops.into_iter().enumerate() {
                let now = now.after(std::time::Duration::from_millis(step as u64));
                match op {
                    Op::Whole { w, mask, seed } => {
                        let f = families(&values(mask, seed));
                        let a = held.apply(&worker(w), &f, Scope::Worker, now).is_ok();
                        let b = plain.apply(&worker(w), &f, Scope::Worker, now).is_ok();
                        prop_assert_eq!(a, b);
                    }
                    Op::Update { w, mask, seed } => {
                        let v = values(mask, seed);
                        let (_, a) = update_or_apply(&mut held, &worker(w), &v, &mut slots[w as usize], now);
                        let b = plain.apply(&worker(w), &families(&v), Scope::Series, now).is_ok();
                        prop_assert_eq!(a, b);
                    }
                    Op::Remove(w) => {
                        held.remove_worker(&worker(w).id);
                        plain.remove_worker(&worker(w).id);
                    }
                    Op::Forget(w) => {
                        held.forget_worker(&worker(w).id);
                        plain.forget_worker(&worker(w).id);
                    }
                    Op::Clear => {
                        held.clear();
                        plain.clear();
                    }
                }
                prop_assert_eq!(text(&held, now), text(&plain, now), "after step {}", step);
                prop_assert_eq!(held.worker_series_count(), plain.worker_series_count());
                prop_assert_eq!(held.resets, plain.resets);
            }
        }
    }

    /// The second update of the same series goes straight to them; a series the worker does
    /// not hold, a departed worker and a value the store refuses change nothing.
    #[test]
    fn held_series_are_found_once_and_misses_change_nothing() {
        let now = Now::now();
        let mut store = Store::new(StoreSettings::default());
        let w = worker(1);
        let first = values(0b11_1111_1111, 3);
        store
            .apply(&w, &families(&first), Scope::Worker, now)
            .expect("whole update");
        let mut slots = HeldSlots::default();
        let some = values(0b10_0010_0001, 5);
        store
            .update_held(&w, &some, &Numbering, &mut slots, now)
            .expect("held");
        assert_eq!(slots.known(), 3);
        let again = values(0b10_0010_0001, 6);
        let stats = store
            .update_held(&w, &again, &Numbering, &mut slots, now)
            .expect("held again");
        assert_eq!(stats.samples, 3);
        assert!(text(&store, now).contains("req_total{n=\"0\"} 6"));

        let before = text(&store, now);
        let version = store.version();
        // Another worker's series, not held by this one.
        let mut other = values(0b1, 1);
        other[0].series = 11;
        assert_eq!(
            store.update_held(&w, &other, &Numbering, &mut slots, now),
            Err(NotHeld::Series)
        );
        let bad = vec![HeldValue {
            family: 0,
            series: 1,
            value: Value::Scalar(-1.0),
            timestamp: None,
        }];
        // A good value first, then one refused: neither is applied.
        let mixed = [values(0b1, 9), bad].concat();
        assert_eq!(
            store.update_held(&w, &mixed, &Numbering, &mut slots, now),
            Err(NotHeld::Value)
        );
        assert_eq!(
            store.update_held(&worker(2), &some, &Numbering, &mut slots, now),
            Err(NotHeld::Worker)
        );
        store.remove_worker(&w.id);
        let departed = text(&store, now);
        assert_eq!(
            store.update_held(&w, &some, &Numbering, &mut slots, now),
            Err(NotHeld::Worker)
        );
        assert_eq!(text(&store, now), departed);
        assert_eq!(
            store.version(),
            version + 1,
            "only the removal changed the store"
        );
        assert_eq!(before.lines().count(), departed.lines().count());
    }

    /// Series removed from a family move the others: positions found before are found again
    /// by key, so each value still lands on its own series.
    #[test]
    fn positions_are_found_again_after_a_removal_moves_them() {
        let now = Now::now();
        let mut store = Store::new(StoreSettings::default());
        let (a, b) = (worker(1), worker(2));
        // Worker 2 alone holds series 0 and 1, placed first in the family.
        store
            .apply(&b, &families(&values(0b11, 1)), Scope::Worker, now)
            .expect("b");
        store
            .apply(&a, &families(&values(0b1_1100, 1)), Scope::Worker, now)
            .expect("a");
        let mut slots = HeldSlots::default();
        store
            .update_held(&a, &values(0b1_1100, 2), &Numbering, &mut slots, now)
            .expect("held");
        // Worker 2 leaves for good: its series go, worker 1's move up.
        store.forget_worker(&b.id);
        store
            .update_held(&a, &values(0b1_1100, 4), &Numbering, &mut slots, now)
            .expect("held after the move");
        let out = text(&store, now);
        for n in 2..5u32 {
            let expected = f64::from((4 + n as u8 * 7) % 13);
            assert!(
                out.contains(&format!("req_total{{n=\"{n}\"}} {expected}")),
                "series {n} in {out}"
            );
        }
        assert!(!out.contains("n=\"0\""), "{out}");
    }
}
