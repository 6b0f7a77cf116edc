//! Scrape mode: workers that each expose `/metrics` on their own port or unix socket
//! (`scrape.targets`). Every target is one worker (`instance` label), replaced as a whole by
//! each successful scrape (`Scope::Worker`), so the store's usual semantics apply: a worker
//! that restarts (values drop) has its old counters retired, per series or, with
//! `scrape.oneProcessPerTarget`, all of them (`WorkerKey::one_process`); a target that fails
//! keeps its last values and goes stale after `staleAfter` (its live gauges disappear), then
//! is forgotten after `forgetAfter` with its counters retired, never dropped.
//!
//! Targets are scraped concurrently, each within `scrape.timeout`; the target list (ranges
//! and unix-socket globs) is expanded again every `scrape.interval`, and the config is re-read
//! every round so reloads apply.

pub mod client;
pub mod targets;

use crate::app::App;
use crate::component::SelfMetrics;
use crate::lifecycle::Handle;
use crate::self_metrics::{MetricType, Registry, const_counter, const_family, const_gauge};
use crate::sources::SourceContext;
use crate::sources::parse::text;
use crate::store::{Source, WorkerKey};
use client::ScrapeError;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use targets::Target;
use tokio::task::JoinSet;

/// At most this many scrapes run at once (a 1,024-port range must not open 1,024 sockets).
const MAX_CONCURRENT: usize = 64;
/// How often to look at the config again while scraping is off.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The store id of a target's worker.
pub fn worker_id(target: &str) -> String {
    format!("scrape:{target}")
}

/// Starts scraping on the current tokio runtime and registers the self-metrics with the
/// context's app. Idle while `scrape.targets` is empty; the config is re-read every round.
/// Dropping (or stopping) the handle stops it.
pub fn spawn(ctx: &SourceContext) -> Handle {
    let app = ctx.app();
    let shared = Arc::new(Shared::default());
    app.register(shared.clone());
    let mut handle = Handle::new("scrape", ctx.child_token());
    handle.spawn(run(Arc::downgrade(app), shared));
    handle
}

#[derive(Default, Debug)]
struct Shared {
    stats: Mutex<Stats>,
}

#[derive(Debug, Default)]
struct Stats {
    targets: BTreeMap<String, TargetStats>,
    errors: BTreeMap<ScrapeError, u64>,
    scrapes: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct TargetStats {
    up: bool,
    duration: f64,
    samples: usize,
    /// Why the last scrape failed (logged once per failure streak).
    failing: Option<ScrapeError>,
}

async fn run(app: Weak<App>, shared: Arc<Shared>) {
    loop {
        let Some(strong) = app.upgrade() else { return };
        let config = strong.config();
        drop(strong);
        if config.scrape.targets.is_empty() {
            shared.stats.lock().targets.clear();
            tokio::time::sleep(IDLE_CHECK).await;
            continue;
        }
        let round = Instant::now();
        let targets = targets::expand(&config.scrape.targets);
        {
            // Self-metrics follow the target list; workers of vanished targets go stale in
            // the store as any silent worker does.
            let mut stats = shared.stats.lock();
            stats
                .targets
                .retain(|id, _| targets.iter().any(|t| t.id() == *id));
        }
        let path: Arc<str> = config.scrape.path.as_str().into();
        let timeout = config.scrape.timeout.as_std();
        let max_body = usize::try_from(config.limits.max_body_bytes).unwrap_or(usize::MAX);
        let one_process = config.scrape.one_process_per_target;
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
        let mut set = JoinSet::new();
        for target in targets {
            let (app, shared, path, permits) =
                (app.clone(), shared.clone(), path.clone(), permits.clone());
            set.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                scrape_one(
                    &app,
                    &shared,
                    &target,
                    &path,
                    timeout,
                    max_body,
                    one_process,
                )
                .await;
            });
        }
        while set.join_next().await.is_some() {}
        let interval = config.scrape.interval.as_std();
        tokio::time::sleep(interval.saturating_sub(round.elapsed())).await;
    }
}

/// Scrapes one target and applies what it returned.
async fn scrape_one(
    app: &Weak<App>,
    shared: &Shared,
    target: &Target,
    path: &str,
    timeout: Duration,
    max_body: usize,
    one_process: bool,
) {
    let id = target.id();
    let started = Instant::now();
    let fetched = client::fetch(target, path, timeout, max_body).await;
    let Some(app) = app.upgrade() else { return };
    let result = fetched.and_then(|scraped| apply(&app, &id, one_process, &scraped));
    let duration = started.elapsed().as_secs_f64();
    let mut stats = shared.stats.lock();
    stats.scrapes += 1;
    let previous = stats.targets.get(&id).copied().unwrap_or_default();
    let entry = match result {
        Ok(samples) => {
            if let Some(e) = previous.failing {
                tracing::info!(target = %id, after = e.reason(), "scrape target is back");
            }
            TargetStats {
                up: true,
                duration,
                samples,
                failing: None,
            }
        }
        Err(e) => {
            *stats.errors.entry(e).or_default() += 1;
            if previous.failing != Some(e) {
                tracing::warn!(target = %id, error = %e, "scrape failed; keeping the target's last values until it goes stale");
            }
            TargetStats {
                up: false,
                duration,
                samples: previous.samples,
                failing: Some(e),
            }
        }
    };
    stats.targets.insert(id, entry);
}

/// Parses a scraped body and replaces the target's values. Returns the number of series.
fn apply(
    app: &App,
    id: &str,
    one_process: bool,
    scraped: &client::Scraped,
) -> Result<usize, ScrapeError> {
    let families = text::parse_bytes(&scraped.body, scraped.openmetrics).map_err(|e| {
        tracing::debug!(target = %id, error = %e, "scraped body does not parse");
        ScrapeError::Parse
    })?;
    let series = families.iter().map(|f| f.series.len()).sum();
    let worker = WorkerKey::new(
        Source::Scrape,
        worker_id(id),
        vec![("instance".to_string(), id.to_string())],
    )
    .with_one_process(one_process);
    let now = app.now();
    let mut store = app.store.write();
    let mut rejected = false;
    let applied = store.apply_resilient(&worker, &families, now, false, &mut |e| {
        rejected = true;
        tracing::debug!(target = %id, error = %e, "scraped family rejected by the store");
    });
    if !applied {
        return Err(ScrapeError::Rejected);
    }
    if rejected {
        tracing::debug!(target = %id, "some scraped families were left out");
    }
    Ok(series)
}

impl SelfMetrics for Shared {
    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

/// The targets' figures, read at render time (targets come and go with the config).
impl Collector for Shared {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.stats.lock();
        let per_target = |f: fn(&TargetStats) -> f64| {
            stats.targets.iter().map(move |(id, t)| (id.as_str(), f(t)))
        };
        let e = &mut encoder;
        const_family(
            e,
            "scrape_up",
            "1 when the last scrape of the target succeeded",
            MetricType::Gauge,
            "target",
            per_target(|t| if t.up { 1.0 } else { 0.0 }),
        )?;
        const_family(
            e,
            "scrape_duration_seconds",
            "Duration of the last scrape of the target",
            MetricType::Gauge,
            "target",
            per_target(|t| t.duration),
        )?;
        const_family(
            e,
            "scrape_series",
            "Series the target returned in its last successful scrape",
            MetricType::Gauge,
            "target",
            per_target(|t| t.samples as f64),
        )?;
        const_gauge(
            e,
            "scrape_targets",
            "Scrape targets after expanding ranges and globs",
            stats.targets.len() as f64,
        )?;
        const_counter(
            e,
            "scrape_attempts",
            "Scrapes attempted",
            stats.scrapes as f64,
        )?;
        let errors = ScrapeError::ALL.map(|r| {
            let n = stats.errors.get(&r).copied().unwrap_or(0);
            (r.reason(), n as f64)
        });
        const_family(
            e,
            "scrape_errors",
            "Failed scrapes, by reason",
            MetricType::Counter,
            "reason",
            errors,
        )
    }
}
