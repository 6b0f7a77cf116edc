//! Self-metrics, rendered by hand in the Prometheus text format 0.0.4.
//!
//! Every label value comes from a fixed enum ([`Outcome`], [`SkipReason`], [`ReloadResult`]), so
//! cardinality is bounded whatever the requests contain. Counters are plain atomics: admission
//! is on the pod-creation path and must not contend on a lock to count itself.

use crate::inject::SkipReason;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// Upper bounds (seconds) of the reconcile duration histogram: a reconcile is a few API calls.
const RECONCILE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Upper bounds (seconds) of the review latency histogram: admission budgets are in
/// milliseconds, so the buckets are too.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A fixed-bucket histogram over atomics.
struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
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

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0u64;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// The operator's self-metrics.
pub struct Metrics {
    reviews: [AtomicU64; Outcome::ALL.len()],
    skips: [AtomicU64; SkipReason::ALL.len()],
    latency: Histogram,
    cert_reloads: [AtomicU64; ReloadResult::ALL.len()],
    reconciles: [AtomicU64; ReconcileResult::ALL.len()],
    reconcile_errors: [AtomicU64; ErrorReason::ALL.len()],
    reconcile_duration: Histogram,
    /// `namespace/name` of the MetricsSidecars that do not parse (a set, so the gauge is exact).
    malformed: std::sync::Mutex<std::collections::BTreeSet<String>>,
    shed: [AtomicU64; Shed::ALL.len()],
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    in_flight: [AtomicU64; Listener::ALL.len()],
    /// Whether the webhook configuration is absent (pods are admitted without the sidecar).
    webhook_configuration_missing: std::sync::atomic::AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reviews: std::array::from_fn(|_| AtomicU64::new(0)),
            skips: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Histogram::new(&LATENCY_BUCKETS),
            cert_reloads: std::array::from_fn(|_| AtomicU64::new(0)),
            reconciles: std::array::from_fn(|_| AtomicU64::new(0)),
            reconcile_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            reconcile_duration: Histogram::new(&RECONCILE_BUCKETS),
            malformed: std::sync::Mutex::default(),
            shed: std::array::from_fn(|_| AtomicU64::new(0)),
            handshake_failures: std::array::from_fn(|_| AtomicU64::new(0)),
            in_flight: std::array::from_fn(|_| AtomicU64::new(0)),
            webhook_configuration_missing: std::sync::atomic::AtomicBool::new(false),
        }
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

impl Metrics {
    /// Counts one review and its handling time.
    pub fn review(&self, outcome: Outcome, skip: Option<SkipReason>, elapsed: Duration) {
        self.reviews[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(reason) = skip {
            self.skips[reason.index()].fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(elapsed);
    }

    /// Counts one serving-certificate reload attempt.
    pub fn cert_reload(&self, result: ReloadResult) {
        self.cert_reloads[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connection or request turned away by a cap.
    pub fn shed(&self, reason: Shed) {
        self.shed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections or requests turned away for `reason` so far.
    pub fn sheds(&self, reason: Shed) -> u64 {
        self.shed[reason as usize].load(Ordering::Relaxed)
    }

    /// A request on `listener` started (`true`) or ended (`false`) being handled.
    pub fn in_flight_change(&self, listener: Listener, started: bool) {
        let gauge = &self.in_flight[listener as usize];
        if started {
            gauge.fetch_add(1, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Requests being handled on `listener` now.
    pub fn in_flight(&self, listener: Listener) -> u64 {
        self.in_flight[listener as usize].load(Ordering::Relaxed)
    }

    /// Counts one failed TLS handshake.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failures[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// TLS handshakes failed for `reason` so far.
    pub fn handshake_failures(&self, reason: HandshakeFailure) -> u64 {
        self.handshake_failures[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts one reconcile and its duration.
    pub fn reconciled(&self, result: ReconcileResult, elapsed: Duration) {
        self.reconciles[result as usize].fetch_add(1, Ordering::Relaxed);
        self.reconcile_duration.observe(elapsed);
    }

    /// Counts the reason of one failed reconcile.
    pub fn reconcile_error(&self, reason: ErrorReason) {
        self.reconcile_errors[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records whether the MetricsSidecar `key` (`namespace/name`) is malformed (does not parse).
    pub fn set_malformed(&self, key: String, malformed: bool) {
        let mut set = self
            .malformed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if malformed {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// How many MetricsSidecars do not parse now.
    pub fn malformed(&self) -> usize {
        self.malformed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Records whether the webhook configuration exists.
    pub fn set_webhook_configuration_missing(&self, missing: bool) {
        self.webhook_configuration_missing
            .store(missing, Ordering::Relaxed);
    }

    /// Whether the webhook configuration is missing as last seen.
    pub fn webhook_configuration_missing(&self) -> bool {
        self.webhook_configuration_missing.load(Ordering::Relaxed)
    }

    /// Reconciles counted with `result` so far.
    pub fn reconciles(&self, result: ReconcileResult) -> u64 {
        self.reconciles[result as usize].load(Ordering::Relaxed)
    }

    /// Reviews counted with `outcome` so far.
    pub fn reviews(&self, outcome: Outcome) -> u64 {
        self.reviews[outcome as usize].load(Ordering::Relaxed)
    }

    /// Skips counted with `reason` so far.
    pub fn skips(&self, reason: SkipReason) -> u64 {
        self.skips[reason.index()].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4) without the store gauges.
    pub fn render(&self) -> String {
        self.render_with(None)
    }

    /// The Prometheus text exposition (format 0.0.4), with the store gauges when given.
    pub fn render_with(&self, gauges: Option<Gauges>) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(
            out,
            "# HELP monasca_operator_admission_reviews_total AdmissionReviews answered, by outcome."
        );
        let _ = writeln!(
            out,
            "# TYPE monasca_operator_admission_reviews_total counter"
        );
        for outcome in Outcome::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_admission_reviews_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                self.reviews(outcome)
            );
        }
        let _ = writeln!(
            out,
            "# HELP monasca_operator_admission_skips_total Pods admitted unchanged, by reason."
        );
        let _ = writeln!(out, "# TYPE monasca_operator_admission_skips_total counter");
        for reason in SkipReason::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_admission_skips_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.skips(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP monasca_operator_admission_duration_seconds Time to answer one AdmissionReview (parse, decide, serialize)."
        );
        let _ = writeln!(
            out,
            "# TYPE monasca_operator_admission_duration_seconds histogram"
        );
        self.latency
            .render(&mut out, "monasca_operator_admission_duration_seconds");
        let _ = writeln!(
            out,
            "# HELP monasca_operator_tls_reloads_total Serving certificate reloads after the files changed, by result."
        );
        let _ = writeln!(out, "# TYPE monasca_operator_tls_reloads_total counter");
        for result in ReloadResult::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_tls_reloads_total{{result=\"{}\"}} {}",
                result.label(),
                self.cert_reloads[result as usize].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP monasca_operator_reconciles_total MetricsSidecar reconciles, by result."
        );
        let _ = writeln!(out, "# TYPE monasca_operator_reconciles_total counter");
        for result in ReconcileResult::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_reconciles_total{{result=\"{}\"}} {}",
                result.label(),
                self.reconciles(result)
            );
        }
        let _ = writeln!(
            out,
            "# HELP monasca_operator_reconcile_errors_total Failed reconciles, by reason."
        );
        let _ = writeln!(
            out,
            "# TYPE monasca_operator_reconcile_errors_total counter"
        );
        for reason in ErrorReason::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_reconcile_errors_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.reconcile_errors[reason as usize].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP monasca_operator_reconcile_duration_seconds Time to reconcile one MetricsSidecar."
        );
        let _ = writeln!(
            out,
            "# TYPE monasca_operator_reconcile_duration_seconds histogram"
        );
        self.reconcile_duration
            .render(&mut out, "monasca_operator_reconcile_duration_seconds");
        let _ = writeln!(
            out,
            "# HELP monasca_operator_malformed_objects MetricsSidecars stored in the cluster that the operator cannot read (reported in their status and Events)."
        );
        let _ = writeln!(out, "# TYPE monasca_operator_malformed_objects gauge");
        let _ = writeln!(
            out,
            "monasca_operator_malformed_objects{{kind=\"MetricsSidecar\"}} {}",
            self.malformed()
        );
        let _ = writeln!(
            out,
            "# HELP monasca_operator_webhook_configuration_missing 1 while the MutatingWebhookConfiguration monasca-sidecar-injector does not exist: pods are admitted without the sidecar."
        );
        let _ = writeln!(
            out,
            "# TYPE monasca_operator_webhook_configuration_missing gauge"
        );
        let _ = writeln!(
            out,
            "monasca_operator_webhook_configuration_missing {}",
            u8::from(self.webhook_configuration_missing())
        );
        let _ = writeln!(
            out,
            "# HELP monasca_operator_admission_shed_total Webhook connections closed or requests refused (503) at once because a cap was reached, by cap."
        );
        let _ = writeln!(out, "# TYPE monasca_operator_admission_shed_total counter");
        for reason in Shed::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_admission_shed_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.sheds(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP monasca_operator_tls_handshake_failures_total Failed TLS handshakes on the webhook listener, by reason."
        );
        let _ = writeln!(
            out,
            "# TYPE monasca_operator_tls_handshake_failures_total counter"
        );
        for reason in HandshakeFailure::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_tls_handshake_failures_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.handshake_failures(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP monasca_operator_requests_in_flight Requests being handled now, by listener."
        );
        let _ = writeln!(out, "# TYPE monasca_operator_requests_in_flight gauge");
        for listener in Listener::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_requests_in_flight{{listener=\"{}\"}} {}",
                listener.label(),
                self.in_flight(listener)
            );
        }
        if let Some(g) = gauges {
            if let Some(expiry) = g.cert_expiry {
                let name = "monasca_operator_certificate_expiry_timestamp_seconds";
                let _ = writeln!(
                    out,
                    "# HELP {name} When the served webhook certificate expires (Unix time)."
                );
                let _ = writeln!(out, "# TYPE {name} gauge");
                let _ = writeln!(out, "{name} {expiry}");
            }
            for (name, help, value) in [
                (
                    "monasca_operator_injected_pods",
                    "Pods carrying a monasca-sidecar, cluster-wide.",
                    g.injected_pods as u64,
                ),
                (
                    "monasca_operator_leader",
                    "1 when this replica holds the Lease and writes.",
                    u64::from(g.leader),
                ),
                (
                    "monasca_operator_tls_certificate_loaded",
                    "1 when a webhook serving certificate is loaded.",
                    u64::from(g.cert_loaded),
                ),
                (
                    "monasca_operator_namespaces_annotation_without_label",
                    "Namespaces with the monasca.openstack.org/inject annotation but not the label: the apiserver no longer sends their pods to the webhook (add the label).",
                    g.namespaces_annotation_without_label as u64,
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                let _ = writeln!(out, "{name} {value}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lists_every_fixed_label_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.review(Outcome::Injected, None, Duration::from_micros(300));
        m.review(
            Outcome::Skipped,
            Some(SkipReason::NotRequested),
            Duration::from_millis(3),
        );
        m.review(Outcome::Invalid, None, Duration::from_secs(5));
        let text = m.render();
        assert!(text.contains("monasca_operator_admission_reviews_total{outcome=\"injected\"} 1"));
        assert!(
            text.contains("monasca_operator_admission_skips_total{reason=\"not_requested\"} 1")
        );
        assert!(text.contains("monasca_operator_admission_skips_total{reason=\"host_network\"} 0"));
        assert!(
            text.contains("monasca_operator_admission_duration_seconds_bucket{le=\"0.0005\"} 1")
        );
        assert!(
            text.contains("monasca_operator_admission_duration_seconds_bucket{le=\"0.005\"} 2")
        );
        assert!(text.contains("monasca_operator_admission_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("monasca_operator_admission_duration_seconds_count 3"));
        m.reconciled(ReconcileResult::Ok, Duration::from_millis(30));
        m.reconcile_error(ErrorReason::Conflict);
        let text = m.render_with(Some(Gauges {
            injected_pods: 3,
            leader: true,
            cert_loaded: true,
            cert_expiry: Some(1_900_000_000),
            namespaces_annotation_without_label: 2,
        }));
        assert!(text.contains("monasca_operator_reconciles_total{result=\"ok\"} 1"));
        assert!(text.contains("monasca_operator_reconcile_errors_total{reason=\"conflict\"} 1"));
        assert!(text.contains("monasca_operator_reconcile_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("monasca_operator_injected_pods 3"));
        assert!(text.contains("monasca_operator_leader 1"));
        assert!(text.contains("monasca_operator_namespaces_annotation_without_label 2"));
        assert!(text.contains("monasca_operator_certificate_expiry_timestamp_seconds 1900000000"));
        assert!(text.contains("monasca_operator_admission_shed_total{reason=\"in_flight\"} 0"));
        assert!(
            text.contains("monasca_operator_tls_handshake_failures_total{reason=\"timeout\"} 0")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
