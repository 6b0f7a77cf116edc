//! The monasca operator: the mutating admission webhook that injects `monasca-sidecar` into
//! annotated pods, and the controller that reconciles `MetricsSidecar`s.
//!
//! Layout:
//! - [`inject`]: the pure injection decision and JSON patch (no I/O).
//! - [`webhook`]: the HTTPS server (`POST /mutate`) and its certificate reloading.
//! - [`controller`]: ConfigMap, status, Events, rollouts, PodMonitors (writes gated by the
//!   Lease); its decisions are pure ([`controller::status`]).
//! - [`certs`]: the self-managed CA and serving certificate (one Secret for all replicas) and
//!   the `MutatingWebhookConfiguration`.
//! - [`features`]: native sidecar detection from the apiserver's feature gates.
//! - [`leader`]: who may write.
//! - [`discovery`]: Prometheus HTTP SD of every injected pod.
//! - [`admin`]: the plain-HTTP admin listener (`/metrics`, `/healthz`, `/readyz`,
//!   `/discovery/targets`).
//! - [`metrics`]: self-metrics with labels from fixed enums.
//! - [`pod_entry`]: the compact value the pod store keeps of each pod (pure).
//! - [`context`]: the shared state (`Arc<Context>`): settings, reflector stores, metrics.

pub mod admin;
pub mod certs;
pub mod conflicts;
pub mod context;
pub mod controller;
pub mod discovery;
pub mod features;
pub mod identity;
pub mod inject;
pub mod leader;
pub mod metrics;
pub mod pod_entry;
pub mod server;
pub mod tls;
pub mod watch;
pub mod webhook;

pub use context::Context;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors of the operator library. `main` wraps them in `anyhow` for reporting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    /// rustls refused a key, certificate or configuration.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The in-memory self-signed certificate could not be generated.
    #[error("generating a self-signed certificate: {0}")]
    CertGen(#[from] rcgen::Error),
    /// A listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The `MetricsSidecar` cannot be rendered (invalid sidecar configuration).
    #[error("{0}")]
    Config(#[from] monasca_crds::Error),
    /// A value could not be serialized.
    #[error("serialization: {0}")]
    Json(#[source] serde_json::Error),
    /// An object lacks a field the apiserver always sets.
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// A certificate validity time is out of range.
    #[error("certificate time: {0}")]
    CertTime(String),
    /// The lease duration flag is out of range.
    #[error("lease duration {0} s is outside 30-60 s")]
    LeaseDuration(u64),
    /// A Lease round did not finish in time.
    #[error("the Lease round timed out")]
    LeaseTimeout,
    /// This replica does not hold the Lease: it must not write.
    #[error("not the leader")]
    NotLeader,
}

impl Error {
    /// A fixed label for metrics and structured logs (never the message: unbounded cardinality).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadFile { .. } => "read_file",
            Error::Pem { .. } => "pem",
            Error::Tls(_) => "tls",
            Error::CertGen(_) => "cert_gen",
            Error::Bind { .. } => "bind",
            Error::Kube(_) => "kube",
            Error::Config(_) => "config",
            Error::Json(_) => "json",
            Error::MissingField(_) => "missing_field",
            Error::CertTime(_) => "cert_time",
            Error::NotLeader => "not_leader",
            Error::LeaseDuration(_) => "lease_duration",
            Error::LeaseTimeout => "lease_timeout",
        }
    }

    /// The reconcile error reason for metrics: API errors by status class, never by message.
    pub fn reconcile_reason(&self) -> metrics::ErrorReason {
        use metrics::ErrorReason;
        match self {
            Error::Kube(kube::Error::Api(status)) => match status.code {
                // A write into a namespace being deleted is refused with 403 too (cause
                // NamespaceTerminating, found against a real apiserver): not an RBAC problem.
                403 if namespace_terminating(status) => ErrorReason::Api,
                403 => ErrorReason::Forbidden,
                404 => ErrorReason::NotFound,
                409 => ErrorReason::Conflict,
                422 => ErrorReason::Invalid,
                _ => ErrorReason::Api,
            },
            Error::Kube(_) => ErrorReason::Transport,
            Error::Config(_) | Error::MissingField(_) => ErrorReason::Invalid,
            _ => ErrorReason::Other,
        }
    }
}

/// Whether a refusal is the NamespaceLifecycle admission plugin's "namespace is being
/// terminated" (a 403 with cause `NamespaceTerminating`), not an authorization denial.
fn namespace_terminating(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

/// `Result` with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The real AdmissionReviews captured from a kube-apiserver that unit tests read:
/// `../shared/fixtures/admission` beside the repository (override: `MONASCA_FIXTURES_DIR`, as in
/// the integration tests).
#[cfg(test)]
pub(crate) fn admission_fixtures_dir() -> std::path::PathBuf {
    std::env::var_os("MONASCA_FIXTURES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/admission")
        })
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    fn forbidden(causes: serde_json::Value) -> Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "forbidden", "details": {"causes": causes},
        }))
        .expect("status");
        Error::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn a_terminating_namespace_is_not_counted_as_an_rbac_denial() {
        let terminating = forbidden(serde_json::json!([{
            "reason": "NamespaceTerminating",
            "message": "namespace x is being terminated",
            "field": "metadata.namespace",
        }]));
        assert_eq!(terminating.reconcile_reason(), metrics::ErrorReason::Api);
        let denied = forbidden(serde_json::json!([]));
        assert_eq!(denied.reconcile_reason(), metrics::ErrorReason::Forbidden);
    }
}
