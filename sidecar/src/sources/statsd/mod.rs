//! StatsD ingest: plain StatsD, DogStatsD, monasca-statsd, InfluxDB, Librato and SignalFX tag
//! dialects over UDP and TCP, turned into clean Prometheus families.
//!
//! Pipeline: the listener receives datagrams (batched `recvmmsg` on a dedicated thread) and
//! TCP lines; [`mod@line`] parses each line without allocating; [`mapping`] maps StatsD names to
//! Prometheus names and labels (`statsd.mappings`); [`accumulate`] turns the delta stream
//! into cumulative values (a line whose shape, everything but its value, was seen before
//! skips the mapping and the label work: see the accumulator's shape cache); every [`FLUSH_INTERVAL`] the changed series are applied to the
//! store as the single worker [`WORKER_ID`] with [`Scope::Series`]. The semantic choices
//! (negative counter deltas, monasca timers sent as gauges, sets, `_total`) are documented on
//! [`accumulate`]; sets (`|s`) are not supported and are counted as
//! `monasca_sidecar_statsd_errors_total{reason="unsupported_set"}`.
//!
//! Start it with [`spawn`]; keep the returned [`StatsdHandle`] alive (dropping it stops the
//! listener).

pub mod accumulate;
pub mod line;
mod listener;
pub mod mapping;
#[cfg(test)]
mod tests;

pub use accumulate::{Accumulator, Counts, DropReason, FamilyChange};
pub use line::{Line, LineError, Sample, SampleType, Tag, TagStyle, parse_line, parse_str};
pub use mapping::{Mapped, MappedName, Mapper, MappingError, sanitize_metric_name};

use crate::app::App;
use crate::component::SelfMetrics;
use crate::lifecycle::Handle;
use crate::model::Family;
use crate::self_metrics::{Counter, EnumCounters, Gauge, Registry};
use crate::sources::SourceContext;
use crate::store::{Scope, Source, WorkerKey};
use monasca_config::SidecarConfig;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The store worker id of all StatsD traffic.
pub const WORKER_ID: &str = "statsd";
/// How often accumulated changes are applied to the store.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How often (at most; a quarter of `staleAfter` if that is shorter) an idle StatsD worker is
/// marked as seen, so it never goes stale or expires: the sidecar itself holds the
/// accumulated values, they do not die with a sender. (Were it swept, counters would be
/// retired and gauges kept as departed values, then counted again on the next flush.)
const TOUCH_INTERVAL: Duration = Duration::from_secs(1);

/// The store identity of the StatsD stream (`worker="statsd"` for `all` gauges).
pub fn worker_key() -> WorkerKey {
    WorkerKey::new(
        Source::Statsd,
        WORKER_ID,
        vec![("worker".to_string(), WORKER_ID.to_string())],
    )
}

impl crate::component::StatePart for Shared {
    fn encode_state(&self, now: crate::store::Now, e: &mut crate::codec::Enc) {
        self.acc.lock().encode_state(now, e);
    }
}

/// Self-metrics (`prometheus-client` atomics), updated once per receive batch; the counters
/// by reason are created per enum variant up front, so an update takes no lock.
pub(crate) struct Metrics {
    datagrams: Counter,
    datagrams_dropped: Counter,
    tcp_connections: Counter,
    tcp_open: AtomicU64,
    lines: Counter,
    samples: Counter,
    errors: EnumCounters<{ LineError::ALL.len() }>,
    dropped: EnumCounters<{ DropReason::ALL.len() }>,
    tag_errors: Counter,
    series: Gauge,
    receive_buffer: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            datagrams: Counter::default(),
            datagrams_dropped: Counter::default(),
            tcp_connections: Counter::default(),
            tcp_open: AtomicU64::new(0),
            lines: Counter::default(),
            samples: Counter::default(),
            errors: EnumCounters::new("reason", LineError::ALL.map(LineError::reason)),
            dropped: EnumCounters::new("reason", DropReason::ALL.map(DropReason::reason)),
            tag_errors: Counter::default(),
            series: Gauge::default(),
            receive_buffer: Gauge::default(),
        }
    }
}

/// State shared by the receivers, the flush task and the self-metrics.
pub(crate) struct Shared {
    acc: Mutex<Accumulator>,
    metrics: Metrics,
    stop: AtomicBool,
    flush: Mutex<FlushState>,
    /// Incremented, under the accumulator's lock, by every `POST /v1/clear`.
    cleared: AtomicU64,
}

struct FlushState {
    /// Something was applied to the store since the last reset.
    applied: bool,
    last_touch: Instant,
    /// When `statsd.expireAfter` was last checked.
    last_expiry: Instant,
    config: Arc<SidecarConfig>,
    /// The [`Shared::cleared`] count the flushes are at.
    cleared_seen: u64,
    /// Families already reported as refused (logged once each).
    logged: HashSet<Box<str>>,
}

impl Shared {
    fn new(acc: Accumulator, config: Arc<SidecarConfig>) -> Shared {
        Shared {
            acc: Mutex::new(acc),
            metrics: Metrics::default(),
            stop: AtomicBool::new(false),
            flush: Mutex::new(FlushState {
                applied: false,
                last_touch: Instant::now(),
                last_expiry: Instant::now(),
                config,
                cleared_seen: 0,
                logged: HashSet::new(),
            }),
            cleared: AtomicU64::new(0),
        }
    }

    /// Moves the accumulator's counts into the self-metrics.
    fn absorb(&self, acc: &mut Accumulator) {
        let c = acc.take_counts();
        let m = &self.metrics;
        m.lines.inc_by(c.lines);
        m.samples.inc_by(c.samples);
        m.tag_errors.inc_by(c.tag_errors);
        for (i, v) in c.errors.into_iter().enumerate() {
            if v > 0 {
                m.errors.child(i).inc_by(v);
            }
        }
        for (i, v) in c.dropped.into_iter().enumerate() {
            if v > 0 {
                m.dropped.child(i).inc_by(v);
            }
        }
        m.series.set(acc.series_count() as i64);
    }

    /// Applies the changes accumulated since the last flush to the store, then expires idle
    /// series (`statsd.expireAfter`).
    fn flush(&self, app: &App) {
        let mut state = self.flush.lock();
        self.apply_changes(app, &mut state);
        self.expire(app, &mut state);
    }

    /// Drops series not updated for `statsd.expireAfter` from the accumulator, and from the
    /// store by applying the remaining series of their families with [`Scope::Families`]:
    /// the store's sweep retires the expired counters and histograms (so the output never
    /// goes backwards) and forgets the gauges. Checked at most every quarter of
    /// `expireAfter` (and at most once a second), so a large accumulator is not walked on
    /// every 100 ms flush.
    fn expire(&self, app: &App, state: &mut FlushState) {
        let Some(expire_after) = state.config.statsd.expire_after.map(|d| d.as_std()) else {
            return;
        };
        let now = app.now();
        let every = (expire_after / 4).min(TOUCH_INTERVAL);
        if now.mono.saturating_duration_since(state.last_expiry) < every {
            return;
        }
        state.last_expiry = now.mono;
        let Some(cutoff) = now.mono.checked_sub(expire_after) else {
            return;
        };
        let expired = {
            let mut acc = self.acc.lock();
            let before = acc.series_count();
            let expired = acc.expire(cutoff);
            if !expired.is_empty() {
                tracing::debug!(
                    series = before - acc.series_count(),
                    families = expired.len(),
                    "StatsD series expired"
                );
            }
            self.metrics.series.set(acc.series_count() as i64);
            expired
        };
        if expired.is_empty() || !state.applied {
            return;
        }
        let worker = worker_key();
        let mut store = app.store.write();
        for change in &expired {
            let family = change.family();
            if let Err(e) =
                store.apply(&worker, std::slice::from_ref(&family), Scope::Families, now)
            {
                // The family was accepted before; a refusal now (a reload changed limits)
                // leaves the expired series in the store, which is safe: nothing is counted
                // twice, they just stay until the StatsD worker is swept or cleared.
                tracing::warn!(family = %change.name, reason = e.reason(), error = %e,
                    "expired StatsD series not removed from the store");
            }
        }
    }

    /// Applies the changes accumulated since the last flush to the store.
    fn apply_changes(&self, app: &App, state: &mut FlushState) {
        self.reload(app, state);
        let now = app.now();
        let (changes, cleared) = {
            let mut acc = self.acc.lock();
            let changes = acc.take_changes();
            self.absorb(&mut acc);
            (changes, self.cleared.load(Ordering::Acquire))
        };
        let mut store = app.store.write();
        if cleared != self.cleared.load(Ordering::Acquire) {
            // A clear came in after these changes were taken: they are from before it.
            return;
        }
        if state.cleared_seen != cleared {
            // The clear reset the accumulator at once (see `Clear`); what was taken since is
            // what arrived after it.
            state.cleared_seen = cleared;
            state.applied = false;
        }
        if state.applied && !store.has_worker(WORKER_ID) {
            drop(store);
            // The store forgot the StatsD worker (`POST /v1/clear`, or a sweep): start from
            // zero, so values from before are not counted a second time.
            tracing::info!("StatsD worker removed from the store; accumulated StatsD values reset");
            let mut acc = self.acc.lock();
            acc.reset();
            self.absorb(&mut acc);
            state.applied = false;
            return;
        }
        if changes.is_empty() {
            let touch_every = TOUCH_INTERVAL.min(state.config.stale_after.as_std() / 4);
            if state.applied && now.mono.saturating_duration_since(state.last_touch) >= touch_every
            {
                store.touch(WORKER_ID, now);
                state.last_touch = now.mono;
            }
            return;
        }
        let worker = worker_key();
        let families: Vec<Family<'_>> = changes.iter().map(FamilyChange::family).collect();
        if store.apply(&worker, &families, Scope::Series, now).is_ok() {
            state.applied = true;
            state.last_touch = now.mono;
            return;
        }
        // One family spoils the batch (e.g. another source owns its name with another type):
        // apply family by family and drop the refused ones, so the others still land.
        let mut refused = Vec::new();
        for (change, family) in changes.iter().zip(&families) {
            match store.apply(&worker, std::slice::from_ref(family), Scope::Series, now) {
                Ok(_) => {
                    state.applied = true;
                    state.last_touch = now.mono;
                }
                Err(e) => refused.push((change.name.clone(), change.series.len(), e)),
            }
        }
        drop(store);
        let mut acc = self.acc.lock();
        for (name, series, e) in refused {
            acc.forget_family(&name);
            self.metrics
                .dropped
                .child(DropReason::StoreRejected.index())
                .inc_by(series as u64);
            if state.logged.len() < 1000 && state.logged.insert(name.clone()) {
                tracing::warn!(family = %name, reason = e.reason(), error = %e,
                    "StatsD family refused by the store; its values are dropped");
            }
        }
        self.metrics.series.set(acc.series_count() as i64);
    }

    /// Picks up a changed configuration (mapping rules, buckets, worker labels, limits).
    fn reload(&self, app: &App, state: &mut FlushState) {
        let config = app.config();
        if Arc::ptr_eq(&config, &state.config) {
            return;
        }
        let old = &state.config;
        if old.statsd != config.statsd
            || old.worker_labels != config.worker_labels
            || old.limits != config.limits
        {
            match self.acc.lock().reconfigure(&config) {
                Ok(()) => tracing::info!("StatsD mapping configuration reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "StatsD mappings not reloaded; keeping the previous ones")
                }
            }
        }
        if old.listen.statsd != config.listen.statsd
            || old.statsd.enabled != config.statsd.enabled
            || old.statsd.tcp != config.statsd.tcp
        {
            tracing::warn!("StatsD listener settings changed; they take effect after a restart");
        }
        state.config = config;
    }
}

/// `POST /v1/clear`: StatsD values live only in the sidecar, so the accumulator starts again
/// from zero right away (samples that arrive after the clear are kept, none from before).
impl crate::component::Clear for Shared {
    fn clear(&self) {
        let mut acc = self.acc.lock();
        acc.reset();
        self.absorb(&mut acc);
        self.cleared.fetch_add(1, Ordering::Release);
    }
}

impl SelfMetrics for Shared {
    fn register(self: Arc<Self>, registry: &mut Registry) {
        let m = &self.metrics;
        let counters = [
            (
                &m.datagrams,
                "statsd_datagrams",
                "StatsD UDP datagrams received",
            ),
            (
                &m.datagrams_dropped,
                "statsd_datagrams_dropped",
                "StatsD UDP datagrams the kernel dropped because the receive buffer was full",
            ),
            (
                &m.tcp_connections,
                "statsd_tcp_connections",
                "StatsD TCP connections accepted",
            ),
            (
                &m.lines,
                "statsd_lines",
                "StatsD lines received (including rejected ones)",
            ),
            (&m.samples, "statsd_samples", "StatsD samples accumulated"),
            (
                &m.tag_errors,
                "statsd_tag_errors",
                "StatsD tags skipped (no value, reserved or worker label name, duplicate)",
            ),
        ];
        for (counter, name, help) in counters {
            registry.register(name, help, counter.clone());
        }
        m.errors.register(
            registry,
            "statsd_errors",
            "StatsD lines rejected, by reason",
        );
        m.dropped.register(
            registry,
            "statsd_dropped",
            "Well-formed StatsD samples not applied, by reason",
        );
        registry.register(
            "statsd_series",
            "StatsD series accumulated",
            m.series.clone(),
        );
        registry.register(
            "statsd_receive_buffer_bytes",
            "Effective kernel receive buffer of the StatsD UDP socket",
            m.receive_buffer.clone(),
        );
    }
}

/// A running StatsD listener. Dropping it stops the receivers and the flush task.
#[must_use = "dropping the handle stops the StatsD listener"]
pub struct StatsdHandle {
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    inner: Option<(Arc<App>, Arc<Shared>)>,
    handle: Handle,
}

impl StatsdHandle {
    /// The bound UDP address (`None` when StatsD is disabled).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// The bound TCP address (`None` when StatsD or `statsd.tcp` is disabled).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Applies accumulated changes to the store now (tests, shutdown).
    pub fn flush(&self) {
        if let Some((app, shared)) = &self.inner {
            shared.flush(app);
        }
    }

    /// Lines received so far (`monasca_sidecar_statsd_lines_total`).
    pub fn lines_received(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |(_, s)| s.metrics.lines.get())
    }

    /// UDP datagrams received so far.
    pub fn datagrams_received(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |(_, s)| s.metrics.datagrams.get())
    }

    /// Applies what was accumulated, then stops the receivers and the flush task.
    pub async fn stop(self) {
        self.flush();
        let StatsdHandle { handle, .. } = self;
        handle.stop().await;
    }
}

/// Starts the StatsD listener per the context's config: UDP on `listen.statsd` and, when
/// `statsd.tcp`, TCP on the same address and port (with port 0, both get the same ephemeral
/// port). `restored` are the accumulators read from the state file ([`crate::state::load`]).
/// Registers the self-metrics. Returns a disabled handle when `statsd.enabled` is false.
/// Must run inside a Tokio runtime.
pub async fn spawn(
    ctx: &SourceContext,
    restored: Option<accumulate::Restored>,
) -> io::Result<StatsdHandle> {
    let app = ctx.app().clone();
    let mut handle = Handle::new("statsd", ctx.child_token());
    let config = app.config();
    if !config.statsd.enabled {
        return Ok(StatsdHandle {
            udp: None,
            tcp: None,
            inner: None,
            handle,
        });
    }
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let addr: SocketAddr = config
        .listen
        .statsd
        .parse()
        .map_err(|e| invalid(format!("listen.statsd {:?}: {e}", config.listen.statsd)))?;
    let mut acc = Accumulator::new(&config).map_err(|e| invalid(e.to_string()))?;
    let was_restored = restored.is_some();
    if let Some(r) = restored {
        acc.restore(r);
    }
    let (udp, receive_buffer, tcp) = bind(addr, config.statsd.tcp)?;
    let udp_addr = udp.local_addr()?;
    let tcp_addr = tcp.as_ref().map(|t| t.local_addr()).transpose()?;

    let shared = Arc::new(Shared::new(acc, config.clone()));
    shared.metrics.receive_buffer.set(receive_buffer as i64);
    app.register(shared.clone());
    app.register_clear(shared.clone());
    app.register_state_part(shared.clone());
    if was_restored {
        // The restored accumulators may be ahead of the restored store (lines received after
        // the store's part of the snapshot): hand them over now, before anything is served.
        shared.flush(&app);
    }

    // Everything fallible first, so an error leaves no thread or task running.
    let tcp = tcp.map(tokio::net::TcpListener::from_std).transpose()?;
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("statsd-udp".into())
        .spawn(move || listener::udp_loop(udp, receive_buffer, thread_shared))?;
    // The UDP thread polls `stop` between receives; it is not waited for.
    let stop_shared = shared.clone();
    handle.on_cancel(move || stop_shared.stop.store(true, Ordering::Relaxed));

    if let Some(tcp) = tcp {
        handle.spawn(listener::tcp_accept_loop(tcp, shared.clone()));
    }
    let (flush_app, flush_shared) = (app.clone(), shared.clone());
    handle.spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            flush_shared.flush(&flush_app);
        }
    });
    // Same shape as the HTTP listeners' announcement (tests read `listener=` and `addr=`).
    tracing::info!(listener = "statsd", addr = %udp_addr, tcp = ?tcp_addr, receive_buffer, "listening");
    Ok(StatsdHandle {
        udp: Some(udp_addr),
        tcp: tcp_addr,
        inner: Some((app, shared)),
        handle,
    })
}

/// Binds UDP and, if asked, TCP on the same port. With port 0 the UDP port is chosen first
/// and TCP takes the same number, retrying if that TCP port happens to be taken.
fn bind(
    addr: SocketAddr,
    with_tcp: bool,
) -> io::Result<(std::net::UdpSocket, usize, Option<std::net::TcpListener>)> {
    let mut attempts = 0;
    loop {
        let (udp, receive_buffer) = listener::bind_udp(addr)?;
        if !with_tcp {
            return Ok((udp, receive_buffer, None));
        }
        let mut tcp_addr = addr;
        tcp_addr.set_port(udp.local_addr()?.port());
        match listener::bind_tcp(tcp_addr) {
            Ok(tcp) => return Ok((udp, receive_buffer, Some(tcp))),
            Err(e) if addr.port() == 0 && attempts < 20 => {
                attempts += 1;
                tracing::debug!(error = %e, "StatsD TCP port taken; choosing another port");
            }
            Err(e) => return Err(e),
        }
    }
}
