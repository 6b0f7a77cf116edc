//! Self-metrics of the HTTP listeners and of the store.

use super::memory::BodyMemory;
use crate::app::App;
use crate::component::SelfMetrics;
use crate::expose::SelfFamily;
use crate::model::MetricKind;
use monasca_runtime::labels::push_label;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of pushes, errors by fixed reason, and `/metrics` renders.
#[derive(Default)]
pub struct ServerStats {
    pushes_accepted: AtomicU64,
    push_samples: AtomicU64,
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    renders: AtomicU64,
    /// Nanoseconds of the last render, and the running total.
    last_render_ns: AtomicU64,
    render_ns_total: AtomicU64,
    /// The store's own figures are read at render time through this.
    app: Mutex<Option<Weak<App>>>,
    /// Request bodies in flight, for giving their memory back after a burst.
    pub(super) bodies: BodyMemory,
}

impl ServerStats {
    pub fn new(app: &std::sync::Arc<App>) -> std::sync::Arc<ServerStats> {
        let stats = std::sync::Arc::new(ServerStats::default());
        *stats.app.lock() = Some(std::sync::Arc::downgrade(app));
        stats
    }

    pub fn push_accepted(&self, samples: usize) {
        self.pushes_accepted.fetch_add(1, Ordering::Relaxed);
        self.push_samples
            .fetch_add(samples as u64, Ordering::Relaxed);
    }

    /// Counts a rejected request of an API by fixed reason.
    pub fn rejected(&self, api: &'static str, reason: &'static str) {
        *self.errors.lock().entry((api, reason)).or_insert(0) += 1;
    }

    pub fn rendered(&self, elapsed: std::time::Duration) {
        let ns = elapsed.as_nanos() as u64;
        self.renders.fetch_add(1, Ordering::Relaxed);
        self.last_render_ns.store(ns, Ordering::Relaxed);
        self.render_ns_total.fetch_add(ns, Ordering::Relaxed);
    }
}

impl SelfMetrics for ServerStats {
    fn families(&self, out: &mut Vec<SelfFamily>) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        out.push(
            SelfFamily::new(
                "monasca_sidecar_pushes_total",
                MetricKind::Counter,
                "Pushgateway API pushes accepted.",
            )
            .value(load(&self.pushes_accepted)),
        );
        out.push(
            SelfFamily::new(
                "monasca_sidecar_push_samples_total",
                MetricKind::Counter,
                "Samples in accepted pushes.",
            )
            .value(load(&self.push_samples)),
        );
        let mut errors = SelfFamily::new(
            "monasca_sidecar_ingest_errors_total",
            MetricKind::Counter,
            "Ingest requests rejected, by API and fixed reason.",
        );
        for ((api, reason), n) in self.errors.lock().iter() {
            let mut labels = String::new();
            push_label(&mut labels, "api", api);
            push_label(&mut labels, "reason", reason);
            errors.samples.push((labels, *n as f64));
        }
        out.push(errors);
        out.push(
            SelfFamily::new(
                "monasca_sidecar_metrics_renders_total",
                MetricKind::Counter,
                "Renders of /metrics.",
            )
            .value(load(&self.renders)),
        );
        out.push(
            SelfFamily::new(
                "monasca_sidecar_metrics_render_seconds_total",
                MetricKind::Counter,
                "Time spent rendering /metrics.",
            )
            .value(load(&self.render_ns_total) / 1e9),
        );
        out.push(
            SelfFamily::new(
                "monasca_sidecar_metrics_render_last_seconds",
                MetricKind::Gauge,
                "Duration of the previous /metrics render.",
            )
            .value(load(&self.last_render_ns) / 1e9),
        );
        out.push(
            SelfFamily::new(
                "monasca_sidecar_allocator_trims_total",
                MetricKind::Counter,
                "Free heap memory handed back to the OS after a burst of large request bodies.",
            )
            .value(self.bodies.trims() as f64),
        );
        let app = self.app.lock().as_ref().and_then(Weak::upgrade);
        if let Some(app) = app {
            let store = app.store.read();
            out.push(
                SelfFamily::new(
                    "monasca_sidecar_workers",
                    MetricKind::Gauge,
                    "Workers currently known.",
                )
                .value(store.worker_count() as f64),
            );
            out.push(
                SelfFamily::new(
                    "monasca_sidecar_series",
                    MetricKind::Gauge,
                    "Aggregated series held.",
                )
                .value(store.series_count() as f64),
            );
            out.push(
                SelfFamily::new(
                    "monasca_sidecar_worker_series",
                    MetricKind::Gauge,
                    "Per-worker values held (series times workers).",
                )
                .value(store.worker_series_count() as f64),
            );
            out.push(
                SelfFamily::new(
                    "monasca_sidecar_counter_resets_total",
                    MetricKind::Counter,
                    "Counter-like values that went down (worker restarts) and were retired.",
                )
                .value(store.resets as f64),
            );
            out.push(
                SelfFamily::new(
                    "monasca_sidecar_histogram_layout_mismatches_total",
                    MetricKind::Counter,
                    "Histogram updates refused because their bucket bounds differ from the series'.",
                )
                .value(store.layout_mismatches as f64),
            );
        }
    }
}
