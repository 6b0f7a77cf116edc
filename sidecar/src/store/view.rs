//! The read-only view the exposition renders from: families in name order, each with its
//! resolved gauge mode and its series' combined inputs, plus each worker's label text and
//! staleness at the render's time. Shared references only: rendering cannot change the store.

use super::{DistEntry, FamilyState, RetiredGauge, ScalarEntry, SeriesData, Store, resolve_mode};
use crate::model::MetricKind;
use monasca_config::GaugeMode;
use std::time::Instant;

/// The store as of one render (see [`Store::view`]).
pub(crate) struct View<'s> {
    store: &'s Store,
    stale_workers: Vec<bool>,
    worker_labels: Vec<&'s str>,
}

/// One family of a [`View`].
pub(crate) struct FamilyView<'s> {
    pub(crate) name: &'s str,
    pub(crate) kind: MetricKind,
    pub(crate) help: Option<&'s str>,
    pub(crate) unit: Option<&'s str>,
    /// The mode of gauge series that name none (the rules, else the default).
    pub(crate) mode: GaugeMode,
    state: &'s FamilyState,
}

/// What one series' output is combined from.
pub(crate) enum SeriesView<'s> {
    Scalar {
        /// The series' own mode, when it named one (gauges).
        mode: Option<GaugeMode>,
        entries: &'s [ScalarEntry],
        /// Counters: the sum of departed or reset workers' values.
        retired: f64,
        /// Gauges: departed workers' last values.
        retired_gauge: Option<&'s RetiredGauge>,
    },
    Dist {
        /// Histogram upper bounds (empty for summaries).
        bounds: &'s [f64],
        entries: &'s [DistEntry],
        /// Element-wise sum of departed or reset workers' values.
        retired: Option<&'s [f64]>,
    },
}

impl Store {
    /// The read-only view for a render at `now` (which decides who is stale).
    pub(crate) fn view(&self, now: Instant) -> View<'_> {
        let stale_workers = (0..self.workers.len())
            .map(|i| self.is_stale(i as u32, now))
            .collect();
        let worker_labels = self
            .workers
            .iter()
            .map(|w| w.as_ref().map_or("", |w| &*w.label_text))
            .collect();
        View {
            store: self,
            stale_workers,
            worker_labels,
        }
    }
}

impl<'s> View<'s> {
    /// Per worker index: true when its values are stale (or it is gone).
    pub(crate) fn stale_workers(&self) -> &[bool] {
        &self.stale_workers
    }

    /// The label text of the worker at `index` (empty for a free slot).
    pub(crate) fn worker_labels(&self, index: u32) -> &'s str {
        self.worker_labels
            .get(index as usize)
            .copied()
            .unwrap_or("")
    }

    /// Every family, sorted by name.
    pub(crate) fn families(&self) -> impl Iterator<Item = FamilyView<'s>> + '_ {
        let rules = self.store.rules();
        self.store
            .families
            .iter()
            .map(move |(name, family)| FamilyView {
                name,
                kind: family.kind,
                help: family.help.as_deref(),
                unit: family.unit.as_deref(),
                mode: resolve_mode(rules, name),
                state: family,
            })
    }
}

impl<'s> FamilyView<'s> {
    /// The family's series (canonical label text, inputs), in the store's order.
    pub(crate) fn series(&self) -> impl Iterator<Item = (&'s str, SeriesView<'s>)> {
        self.state.series.iter().map(|(labels, series)| {
            let view = match &series.data {
                SeriesData::Scalar {
                    mode,
                    entries,
                    retired,
                    retired_gauge,
                } => SeriesView::Scalar {
                    mode: *mode,
                    entries,
                    retired: *retired,
                    retired_gauge: retired_gauge.as_deref(),
                },
                SeriesData::Dist(d) => SeriesView::Dist {
                    bounds: &d.bounds,
                    entries: &d.entries,
                    retired: d.retired.as_deref(),
                },
            };
            (labels, view)
        })
    }
}
