//! The HTTP listeners (hyper 1, HTTP/1.1): the metrics listener (`/metrics`, `/healthz`,
//! `/readyz`, `/v1/workers`), the ingest listener (Pushgateway API, JSON API) and the OTLP/HTTP
//! listener (`POST /v1/metrics`).

mod routes;
mod stats;

pub use stats::ServerStats;

use crate::app::App;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
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
/// `drain` before returning.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    stats: Arc<ServerStats>,
    role: Role,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = %role.as_str(), error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let stats = stats.clone();
                let service = service_fn(move |req| {
                    let app = app.clone();
                    let stats = stats.clone();
                    async move { Ok::<_, std::convert::Infallible>(routes::handle(req, &app, &stats, role).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => {
            tracing::warn!(listener = %role.as_str(), "connections still open after the drain period");
        }
    }
}
