//! The monasca operator: the mutating admission webhook that injects `monasca-sidecar` into
//! annotated pods, and (next issue) the controller that reconciles `MetricsSidecar`s.
//!
//! Layout, so that the controller slots in beside the webhook:
//! - [`inject`]: the pure injection decision and JSON patch (no I/O).
//! - [`webhook`]: the HTTPS server (`POST /mutate`) and its certificate reloading.
//! - [`admin`]: the plain-HTTP admin listener (`/metrics`, `/healthz`, `/readyz`).
//! - [`metrics`]: self-metrics with labels from fixed enums.
//! - [`context`]: the shared state (`Arc<Context>`): settings, reflector stores, metrics.

pub mod admin;
pub mod context;
pub mod inject;
pub mod metrics;
pub mod server;
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
        }
    }
}

/// `Result` with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
