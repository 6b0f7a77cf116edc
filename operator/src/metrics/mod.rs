//! Self-metrics through `prometheus-client`: one [`Registry`] built at start-up, encoded in
//! the Prometheus text format 0.0.4 on each scrape (the library writes the text, escapes label
//! values and HELP, and appends `_total` to counters).
//!
//! Every label value comes from a fixed enum ([`Outcome`], [`SkipReason`], [`ReloadResult`],
//! ...), so cardinality is bounded whatever the requests contain. Each enum's counters are
//! created up front in an array indexed by the enum ([`ByLabel`]) instead of the library's
//! `Family` (a map behind a lock): admission is on the pod-creation path and must not contend on
//! a lock to count itself. The histograms are atomics too ([`AtomicHistogram`]); the library's
//! own `Histogram` takes a mutex per observation.

use crate::inject::SkipReason;
use prometheus_client::encoding::{
    EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render_with`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How one AdmissionReview ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted with a patch.
    Injected,
    /// Admitted unchanged (see the skip reason).
    Skipped,
    /// Not an AdmissionReview: answered HTTP 400.
    Invalid,
    /// A body over the size cap (HTTP 413), or a pod too large to parse safely (admitted
    /// unchanged with a warning).
    TooLarge,
    /// The body did not arrive, or was not answered, within the request deadline.
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Injected,
        Outcome::Skipped,
        Outcome::Invalid,
        Outcome::TooLarge,
        Outcome::Timeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Invalid => "invalid",
            Outcome::TooLarge => "too_large",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Why a connection or request was turned away before being handled (load shedding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// The connection cap was reached: the new connection was closed at once.
    Connections,
    /// The in-flight cap was reached: HTTP 503 at once.
    InFlight,
}

impl Shed {
    pub const ALL: [Shed; 2] = [Shed::Connections, Shed::InFlight];

    pub fn label(self) -> &'static str {
        match self {
            Shed::Connections => "connections",
            Shed::InFlight => "in_flight",
        }
    }
}

/// Which listener (for the in-flight gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Webhook,
    Admin,
}

impl Listener {
    pub const ALL: [Listener; 2] = [Listener::Webhook, Listener::Admin];

    pub fn label(self) -> &'static str {
        match self {
            Listener::Webhook => "webhook",
            Listener::Admin => "admin",
        }
    }
}

/// Why a TLS handshake on the webhook listener failed (fixed labels, never the error text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client did not finish the handshake within the handshake timeout.
    Timeout,
    /// The client rejected our certificate (unknown CA, bad or expired certificate): what a
    /// `caBundle` that does not trust the served certificate looks like.
    CertificateRejected,
    /// No serving certificate is loaded yet.
    NoCertificate,
    /// The client closed the connection during the handshake.
    Closed,
    /// Anything else (protocol errors, not TLS at all).
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 5] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::CertificateRejected,
        HandshakeFailure::NoCertificate,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::CertificateRejected => "certificate_rejected",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    /// Classifies the error of a failed server handshake.
    pub fn of(error: &std::io::Error) -> HandshakeFailure {
        use rustls::AlertDescription as Alert;
        if error.kind() == std::io::ErrorKind::UnexpectedEof
            || error.kind() == std::io::ErrorKind::ConnectionReset
        {
            return HandshakeFailure::Closed;
        }
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::AlertReceived(
                Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::DecryptError,
            )) => HandshakeFailure::CertificateRejected,
            Some(rustls::Error::General(_)) => HandshakeFailure::NoCertificate,
            _ => HandshakeFailure::Other,
        }
    }
}

/// How a serving-certificate reload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    Loaded,
    Failed,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 2] = [ReloadResult::Loaded, ReloadResult::Failed];

    pub fn label(self) -> &'static str {
        match self {
            ReloadResult::Loaded => "loaded",
            ReloadResult::Failed => "failed",
        }
    }
}

/// How one reconcile ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    Ok,
    Error,
}

impl ReconcileResult {
    pub const ALL: [ReconcileResult; 2] = [ReconcileResult::Ok, ReconcileResult::Error];

    pub fn label(self) -> &'static str {
        match self {
            ReconcileResult::Ok => "ok",
            ReconcileResult::Error => "error",
        }
    }
}

/// Why a reconcile failed, by class (never the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    /// HTTP 403: RBAC is missing a rule.
    Forbidden,
    /// HTTP 404.
    NotFound,
    /// HTTP 409: another writer changed the object.
    Conflict,
    /// HTTP 422 or an object the controller cannot render.
    Invalid,
    /// Another API error status.
    Api,
    /// The API server could not be reached or answered garbage.
    Transport,
    /// Anything else.
    Other,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 7] = [
        ErrorReason::Forbidden,
        ErrorReason::NotFound,
        ErrorReason::Conflict,
        ErrorReason::Invalid,
        ErrorReason::Api,
        ErrorReason::Transport,
        ErrorReason::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorReason::Forbidden => "forbidden",
            ErrorReason::NotFound => "not_found",
            ErrorReason::Conflict => "conflict",
            ErrorReason::Invalid => "invalid",
            ErrorReason::Api => "api",
            ErrorReason::Transport => "transport",
            ErrorReason::Other => "other",
        }
    }
}

/// A metric label whose values are the variants of a fixed enum.
pub trait FixedLabel: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The label name.
    const NAME: &'static str;
    /// Every value, in exposition order.
    fn all() -> &'static [Self];
    /// Position in [`FixedLabel::all`].
    fn index(self) -> usize;
    /// The label value.
    fn value(self) -> &'static str;
}

/// Implements [`FixedLabel`] from an enum's `ALL` and `label()`.
macro_rules! fixed_label {
    ($($label:ty => $name:literal),* $(,)?) => {$(
        impl FixedLabel for $label {
            const NAME: &'static str = $name;
            fn all() -> &'static [Self] {
                &<$label>::ALL
            }
            fn index(self) -> usize {
                self as usize
            }
            fn value(self) -> &'static str {
                self.label()
            }
        }
    )*};
}

fixed_label! {
    Outcome => "outcome",
    SkipReason => "reason",
    Shed => "reason",
    Listener => "listener",
    HandshakeFailure => "reason",
    ReloadResult => "result",
    ReconcileResult => "result",
    ErrorReason => "reason",
}

/// A label value as the encoder sees it: written through the library's escaping writer, the
/// one place label text is escaped.
struct LabelValue<L>(L);

impl<L: FixedLabel> EncodeLabelValue for LabelValue<L> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.0.value())
    }
}

/// One metric per value of the label `L`, created up front and indexed by the enum: looking
/// one up takes no lock (unlike `Family`). Clones share the metrics.
#[derive(Debug)]
pub struct ByLabel<L, M> {
    metrics: Arc<[M]>,
    label: PhantomData<L>,
}

impl<L, M> Clone for ByLabel<L, M> {
    fn clone(&self) -> Self {
        ByLabel {
            metrics: self.metrics.clone(),
            label: PhantomData,
        }
    }
}

impl<L: FixedLabel, M: Default> Default for ByLabel<L, M> {
    fn default() -> Self {
        ByLabel {
            metrics: L::all().iter().map(|_| M::default()).collect(),
            label: PhantomData,
        }
    }
}

impl<L: FixedLabel, M> ByLabel<L, M> {
    /// The metric of `label`.
    pub fn get(&self, label: L) -> &M {
        &self.metrics[label.index()]
    }
}

impl<L, M> EncodeMetric for ByLabel<L, M>
where
    L: FixedLabel,
    M: EncodeMetric + TypedMetric,
{
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        for &label in L::all() {
            let labels = [(L::NAME, LabelValue(label))];
            self.get(label).encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// Upper bounds (seconds) of the reconcile duration histogram: a reconcile is a few API calls.
const RECONCILE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Upper bounds (seconds) of the review latency histogram: admission budgets are in
/// milliseconds, so the buckets are too.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A fixed-bucket histogram over atomics (the library's takes a mutex per observation);
/// encoded by the library. Clones share the counts.
#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: Arc<[AtomicU64]>,
    sum_nanos: Arc<AtomicU64>,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: Arc::default(),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The operator's self-metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reviews: ByLabel<Outcome, Counter>,
    skips: ByLabel<SkipReason, Counter>,
    latency: AtomicHistogram,
    cert_reloads: ByLabel<ReloadResult, Counter>,
    reconciles: ByLabel<ReconcileResult, Counter>,
    reconcile_errors: ByLabel<ErrorReason, Counter>,
    reconcile_duration: AtomicHistogram,
    /// `namespace/name` of the MetricsSidecars that do not parse (a set, so the gauge is exact).
    malformed_keys: Mutex<BTreeSet<String>>,
    malformed: Gauge,
    shed: ByLabel<Shed, Counter>,
    handshake_failures: ByLabel<HandshakeFailure, Counter>,
    in_flight: ByLabel<Listener, Gauge<u64, AtomicU64>>,
    /// 1 while the webhook configuration is absent (pods are admitted without the sidecar).
    webhook_configuration_missing: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::default(),
            reviews: ByLabel::default(),
            skips: ByLabel::default(),
            latency: AtomicHistogram::new(&LATENCY_BUCKETS),
            cert_reloads: ByLabel::default(),
            reconciles: ByLabel::default(),
            reconcile_errors: ByLabel::default(),
            reconcile_duration: AtomicHistogram::new(&RECONCILE_BUCKETS),
            malformed_keys: Mutex::default(),
            malformed: Gauge::default(),
            shed: ByLabel::default(),
            handshake_failures: ByLabel::default(),
            in_flight: ByLabel::default(),
            webhook_configuration_missing: Gauge::default(),
        };
        metrics.register();
        metrics
    }
}

impl Metrics {
    /// Registers every metric once. Counters are named without `_total` and help texts without
    /// the final `.`: the library adds both.
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "monasca_operator_admission_reviews",
            "AdmissionReviews answered, by outcome",
            self.reviews.clone(),
        );
        r.register(
            "monasca_operator_admission_skips",
            "Pods admitted unchanged, by reason",
            self.skips.clone(),
        );
        r.register(
            "monasca_operator_admission_duration_seconds",
            "Time to answer one AdmissionReview (parse, decide, serialize)",
            self.latency.clone(),
        );
        r.register(
            "monasca_operator_tls_reloads",
            "Serving certificate reloads after the files changed, by result",
            self.cert_reloads.clone(),
        );
        r.register(
            "monasca_operator_reconciles",
            "MetricsSidecar reconciles, by result",
            self.reconciles.clone(),
        );
        r.register(
            "monasca_operator_reconcile_errors",
            "Failed reconciles, by reason",
            self.reconcile_errors.clone(),
        );
        r.register(
            "monasca_operator_reconcile_duration_seconds",
            "Time to reconcile one MetricsSidecar",
            self.reconcile_duration.clone(),
        );
        r.sub_registry_with_label(("kind".into(), "MetricsSidecar".into()))
            .register(
                "monasca_operator_malformed_objects",
                "MetricsSidecars stored in the cluster that the operator cannot read (reported in their status and Events)",
                self.malformed.clone(),
            );
        r.register(
            "monasca_operator_webhook_configuration_missing",
            "1 while the MutatingWebhookConfiguration monasca-sidecar-injector does not exist: pods are admitted without the sidecar",
            self.webhook_configuration_missing.clone(),
        );
        r.register(
            "monasca_operator_admission_shed",
            "Webhook connections closed or requests refused (503) at once because a cap was reached, by cap",
            self.shed.clone(),
        );
        r.register(
            "monasca_operator_tls_handshake_failures",
            "Failed TLS handshakes on the webhook listener, by reason",
            self.handshake_failures.clone(),
        );
        r.register(
            "monasca_operator_requests_in_flight",
            "Requests being handled now, by listener",
            self.in_flight.clone(),
        );
    }
}

/// Values read from the stores at scrape time (gauges).
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Pods carrying a sidecar, cluster-wide.
    pub injected_pods: usize,
    /// Whether this replica holds the Lease.
    pub leader: bool,
    /// Whether a serving certificate is loaded.
    pub cert_loaded: bool,
    /// When the served certificate expires (Unix seconds), if one is loaded.
    pub cert_expiry: Option<i64>,
    /// Namespaces opted in by the `inject` annotation alone (no label): their pods no longer
    /// reach the webhook (see `webhook::review::annotation_without_label`).
    pub namespaces_annotation_without_label: usize,
}

impl Gauges {
    /// A registry of these values, built per scrape: they are read from the stores then, and
    /// the certificate expiry is absent while no certificate is loaded.
    fn registry(self) -> Registry {
        let mut r = Registry::default();
        if let Some(expiry) = self.cert_expiry {
            r.register(
                "monasca_operator_certificate_expiry_timestamp_seconds",
                "When the served webhook certificate expires (Unix time)",
                ConstGauge::new(expiry),
            );
        }
        for (name, help, value) in [
            (
                "monasca_operator_injected_pods",
                "Pods carrying a monasca-sidecar, cluster-wide",
                self.injected_pods as u64,
            ),
            (
                "monasca_operator_leader",
                "1 when this replica holds the Lease and writes",
                u64::from(self.leader),
            ),
            (
                "monasca_operator_tls_certificate_loaded",
                "1 when a webhook serving certificate is loaded",
                u64::from(self.cert_loaded),
            ),
            (
                "monasca_operator_namespaces_annotation_without_label",
                "Namespaces with the monasca.openstack.org/inject annotation but not the label: the apiserver no longer sends their pods to the webhook (add the label)",
                self.namespaces_annotation_without_label as u64,
            ),
        ] {
            r.register(name, help, ConstGauge::new(value));
        }
        r
    }
}

impl Metrics {
    /// Counts one review and its handling time.
    pub fn review(&self, outcome: Outcome, skip: Option<SkipReason>, elapsed: Duration) {
        self.reviews.get(outcome).inc();
        if let Some(reason) = skip {
            self.skips.get(reason).inc();
        }
        self.latency.observe(elapsed);
    }

    /// Counts one serving-certificate reload attempt.
    pub fn cert_reload(&self, result: ReloadResult) {
        self.cert_reloads.get(result).inc();
    }

    /// Counts one connection or request turned away by a cap.
    pub fn shed(&self, reason: Shed) {
        self.shed.get(reason).inc();
    }

    /// Connections or requests turned away for `reason` so far.
    pub fn sheds(&self, reason: Shed) -> u64 {
        self.shed.get(reason).get()
    }

    /// A request on `listener` started (`true`) or ended (`false`) being handled.
    pub fn in_flight_change(&self, listener: Listener, started: bool) {
        let gauge = self.in_flight.get(listener);
        if started {
            gauge.inc();
        } else {
            gauge.dec();
        }
    }

    /// Requests being handled on `listener` now.
    pub fn in_flight(&self, listener: Listener) -> u64 {
        self.in_flight.get(listener).get()
    }

    /// Counts one failed TLS handshake.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failures.get(reason).inc();
    }

    /// TLS handshakes failed for `reason` so far.
    pub fn handshake_failures(&self, reason: HandshakeFailure) -> u64 {
        self.handshake_failures.get(reason).get()
    }

    /// Counts one reconcile and its duration.
    pub fn reconciled(&self, result: ReconcileResult, elapsed: Duration) {
        self.reconciles.get(result).inc();
        self.reconcile_duration.observe(elapsed);
    }

    /// Counts the reason of one failed reconcile.
    pub fn reconcile_error(&self, reason: ErrorReason) {
        self.reconcile_errors.get(reason).inc();
    }

    /// Records whether the MetricsSidecar `key` (`namespace/name`) is malformed (does not parse).
    pub fn set_malformed(&self, key: String, malformed: bool) {
        let mut set = self
            .malformed_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if malformed {
            set.insert(key);
        } else {
            set.remove(&key);
        }
        self.malformed
            .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
    }

    /// How many MetricsSidecars do not parse now.
    pub fn malformed(&self) -> usize {
        self.malformed_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Records whether the webhook configuration exists.
    pub fn set_webhook_configuration_missing(&self, missing: bool) {
        self.webhook_configuration_missing.set(i64::from(missing));
    }

    /// Whether the webhook configuration is missing as last seen.
    pub fn webhook_configuration_missing(&self) -> bool {
        self.webhook_configuration_missing.get() != 0
    }

    /// Reconciles counted with `result` so far.
    pub fn reconciles(&self, result: ReconcileResult) -> u64 {
        self.reconciles.get(result).get()
    }

    /// Reviews counted with `outcome` so far.
    pub fn reviews(&self, outcome: Outcome) -> u64 {
        self.reviews.get(outcome).get()
    }

    /// Skips counted with `reason` so far.
    pub fn skips(&self, reason: SkipReason) -> u64 {
        self.skips.get(reason).get()
    }

    /// The exposition ([`CONTENT_TYPE`]) without the store gauges.
    pub fn render(&self) -> String {
        self.render_with(None)
    }

    /// The exposition ([`CONTENT_TYPE`]), with the store gauges when given.
    pub fn render_with(&self, gauges: Option<Gauges>) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail, and no metric here fails to encode: the results are
        // ignored on purpose. Text 0.0.4 has no end marker, so two registries concatenate.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        if let Some(gauges) = gauges {
            let _ = prometheus_text::encode(&mut out, &gauges.registry());
        }
        out
    }
}

#[cfg(test)]
mod tests;
