//! Self-metrics of the HTTP listeners and of the store.

use super::memory::BodyMemory;
use crate::app::App;
use crate::component::SelfMetrics;
use crate::self_metrics::{
    Counter, Registry, SecondsCounter, SecondsGauge, const_counter, const_gauge, register_listed,
};
use crate::store::START_TIME_JITTER_SECONDS;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::family::Family;
use std::sync::{Arc, Weak};

/// Counters of pushes, errors by fixed reason, and `/metrics` renders (`prometheus-client`
/// atomics, registered once); the store's figures are read at render time by the collector.
#[derive(Default)]
pub struct ServerStats {
    pushes_accepted: Counter,
    push_samples: Counter,
    /// By (api, reason); the pairs are `&'static` fixed reasons, created on first use.
    errors: Family<[(&'static str, &'static str); 2], Counter>,
    renders: Counter,
    /// Seconds of the last render, and the running total.
    last_render_seconds: SecondsGauge,
    render_seconds_total: SecondsCounter,
    /// The store's own figures are read at render time through this.
    app: Mutex<Option<Weak<App>>>,
    /// Request bodies in flight, for giving their memory back after a burst.
    pub(super) bodies: BodyMemory,
}

impl std::fmt::Debug for ServerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStats").finish_non_exhaustive()
    }
}

impl ServerStats {
    pub fn new(app: &std::sync::Arc<App>) -> std::sync::Arc<ServerStats> {
        let stats = std::sync::Arc::new(ServerStats::default());
        *stats.app.lock() = Some(std::sync::Arc::downgrade(app));
        stats
    }

    pub fn push_accepted(&self, samples: usize) {
        self.pushes_accepted.inc();
        self.push_samples.inc_by(samples as u64);
    }

    /// Counts a rejected request of an API by fixed reason.
    pub fn rejected(&self, api: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&[("api", api), ("reason", reason)])
            .inc();
    }

    pub fn rendered(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        self.renders.inc();
        self.last_render_seconds.set(seconds);
        self.render_seconds_total.inc_by(seconds);
    }
}

impl SelfMetrics for ServerStats {
    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.register(
            "pushes",
            "Pushgateway API pushes accepted",
            self.pushes_accepted.clone(),
        );
        registry.register(
            "push_samples",
            "Samples in accepted pushes",
            self.push_samples.clone(),
        );
        register_listed(
            registry,
            "ingest_errors",
            "Ingest requests rejected, by API and fixed reason",
            self.errors.clone(),
        );
        registry.register(
            "metrics_renders",
            "Renders of /metrics",
            self.renders.clone(),
        );
        registry.register(
            "metrics_render_seconds",
            "Time spent rendering /metrics",
            self.render_seconds_total.clone(),
        );
        registry.register(
            "metrics_render_last_seconds",
            "Duration of the previous /metrics render",
            self.last_render_seconds.clone(),
        );
        registry.register_collector(Box::new(self));
    }
}

/// Figures read at render time: the allocator's trims and the store's sizes and counts.
impl Collector for ServerStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        const_counter(
            &mut encoder,
            "allocator_trims",
            "Free heap memory handed back to the OS after a burst of large request bodies",
            self.bodies.trims() as f64,
        )?;
        let app = self.app.lock().as_ref().and_then(Weak::upgrade);
        let Some(app) = app else {
            return Ok(());
        };
        let store = app.store.read();
        const_gauge(
            &mut encoder,
            "workers",
            "Workers currently known",
            store.worker_count() as f64,
        )?;
        const_gauge(
            &mut encoder,
            "series",
            "Aggregated series held",
            store.series_count() as f64,
        )?;
        const_gauge(
            &mut encoder,
            "worker_series",
            "Per-worker values held (series times workers)",
            store.worker_series_count() as f64,
        )?;
        const_counter(
            &mut encoder,
            "counter_resets",
            "Counter-like values that went down (worker restarts) and were retired",
            store.resets as f64,
        )?;
        const_counter(
            &mut encoder,
            "worker_restarts",
            &format!(
                "Pushes that showed their worker restarted (a counter went down, or a process start time more than {START_TIME_JITTER_SECONDS} s later): all its counters were retired"
            ),
            store.worker_restarts as f64,
        )?;
        const_counter(
            &mut encoder,
            "worker_start_time_regressions",
            &format!(
                "Updates of a one-process worker whose process start time went more than {START_TIME_JITTER_SECONDS} s back: two processes under one worker id, or a clock step (not taken as a restart)"
            ),
            store.start_time_regressions as f64,
        )?;
        const_counter(
            &mut encoder,
            "histogram_layout_mismatches",
            "Histogram updates refused because their bucket bounds differ from the series'",
            store.layout_mismatches as f64,
        )
    }
}
