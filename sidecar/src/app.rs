//! Shared state of a running sidecar: the store, the config in force, and the self-metrics of
//! every component. Components plug in through the traits of [`crate::component`]; `App`
//! names none of them but the OTLP receiver's stream state, which does not import `App`.

use crate::component::{Clear, Durable, Refresh, SelfMetrics, StatePart};
use crate::expose::SelfFamily;
use crate::store::{Now, Store, StoreSettings, sweeper::Swept};
use monasca_config::SidecarConfig;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Everything the listeners and background tasks share.
pub struct App {
    /// Every worker's values. Writers hold the lock only to apply a parsed update.
    pub store: RwLock<Store>,
    config: RwLock<Arc<SidecarConfig>>,
    /// Every component's self-metrics (`prometheus-client`; read once per render).
    registry: parking_lot::Mutex<crate::self_metrics::Registry>,
    refreshers: RwLock<Vec<Arc<dyn Refresh>>>,
    clearers: RwLock<Vec<Arc<dyn Clear>>>,
    /// The OTLP receiver's stream state (delta totals, start times) and self-metrics.
    pub otlp: Arc<crate::sources::otlp::Otlp>,
    /// The state writer, when `stateDir` is set (see [`crate::state`]).
    state: OnceLock<Arc<dyn Durable>>,
    state_parts: RwLock<Vec<Arc<dyn StatePart>>>,
    /// Every listener is bound (`/readyz`).
    listening: AtomicBool,
}

impl App {
    pub fn new(config: SidecarConfig) -> Arc<App> {
        Arc::new(App {
            store: RwLock::new(Store::new(StoreSettings::from_config(&config))),
            config: RwLock::new(Arc::new(config)),
            registry: parking_lot::Mutex::new(crate::self_metrics::registry()),
            refreshers: RwLock::new(Vec::new()),
            clearers: RwLock::new(Vec::new()),
            otlp: Arc::new(crate::sources::otlp::Otlp::new()),
            state: OnceLock::new(),
            listening: AtomicBool::new(false),
            state_parts: RwLock::new(Vec::new()),
        })
    }

    /// Installs the state writer (once, at start).
    pub fn set_persister(&self, persister: Arc<dyn Durable>) {
        let _ = self.state.set(persister);
    }

    /// Waits until the store at `version` is persisted (no-op without `stateDir`).
    pub async fn durable(&self, version: u64) {
        if let Some(p) = self.state.get() {
            p.durable(version).await;
        }
    }

    /// Registers a source whose own state goes into the state file.
    pub fn register_state_part(&self, part: Arc<dyn StatePart>) {
        self.state_parts.write().push(part);
    }

    /// The registered state parts.
    pub fn state_parts(&self) -> Vec<Arc<dyn StatePart>> {
        self.state_parts.read().clone()
    }

    /// Records that every listener is bound: from now on `/readyz` answers 200. Until then
    /// a worker told "ready" could still find its push or StatsD port closed.
    pub fn mark_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// Whether every listener is bound (see [`App::mark_listening`]).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<SidecarConfig> {
        self.config.read().clone()
    }

    /// Installs a new configuration (after validation by the caller).
    pub fn set_config(&self, config: SidecarConfig) {
        self.store
            .write()
            .set_settings(StoreSettings::from_config(&config));
        *self.config.write() = Arc::new(config);
    }

    /// Registers a component's self-metrics.
    pub fn register(&self, reporter: Arc<dyn SelfMetrics>) {
        reporter.register(&mut self.registry.lock());
    }

    /// Registers a source to refresh before each `/metrics` render.
    pub fn register_refresh(&self, refresher: Arc<dyn Refresh>) {
        self.refreshers.write().push(refresher);
    }

    /// Registers a source to reset on [`App::clear`].
    pub fn register_clear(&self, clearer: Arc<dyn Clear>) {
        self.clearers.write().push(clearer);
    }

    /// `POST /v1/clear`: forgets everything that lives only in the sidecar (pushed, JSON and
    /// StatsD values, with their retired totals), then re-applies at once what lives outside
    /// it (the multiprocess directory, whose files and retired totals are the truth; scrape
    /// targets re-apply whole on their next scrape).
    pub fn clear(&self) {
        let clearers: Vec<Arc<dyn Clear>> = self.clearers.read().clone();
        {
            let mut store = self.store.write();
            store.clear();
            for c in &clearers {
                c.clear();
            }
        }
        self.refresh();
    }

    /// Brings every refreshable source up to date.
    pub fn refresh(&self) {
        let refreshers: Vec<Arc<dyn Refresh>> = self.refreshers.read().clone();
        for r in refreshers {
            r.refresh();
        }
    }

    /// All self-metric families, sorted by name.
    pub fn self_families(&self) -> Vec<SelfFamily> {
        let mut out = crate::self_metrics::families(&self.registry.lock());
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The current time (one place, so tests and tasks agree).
    pub fn now(&self) -> Now {
        Now::now()
    }
}

impl Swept for App {
    fn sweep(&self) -> Vec<String> {
        let now = self.now();
        self.store.write().sweep(now)
    }
}
