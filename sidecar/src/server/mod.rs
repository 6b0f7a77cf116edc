//! The HTTP listeners (hyper 1, HTTP/1.1): the metrics listener (`/metrics`, `/healthz`,
//! `/readyz`, `/v1/workers`), the ingest listener (Pushgateway API, JSON API) and the OTLP/HTTP
//! listener (`POST /v1/metrics`).

mod routes;
mod stats;

pub use stats::ServerStats;

use crate::app::App;
use monasca_runtime::http;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Which routes a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Metrics,
    Ingest,
    /// OTLP/HTTP: `POST /v1/metrics`.
    Otlp,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Ingest => "ingest",
            Role::Otlp => "otlp",
        }
    }
}

/// Serves `listener` until `shutdown` flips to true, then drains in-flight requests for up to
/// `drain` before returning (the accept loop and timeouts are [`monasca_runtime::http`]'s).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    stats: Arc<ServerStats>,
    role: Role,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    http::serve(
        listener,
        stopped,
        drain,
        role.as_str(),
        move |tcp, _peer, watcher| {
            let app = app.clone();
            let stats = stats.clone();
            let handler = move |req| {
                let app = app.clone();
                let stats = stats.clone();
                async move { routes::handle(req, &app, &stats, role).await }
            };
            Some(http::serve_connection(tcp, watcher, handler))
        },
    )
    .await;
}
