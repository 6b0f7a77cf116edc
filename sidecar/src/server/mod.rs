//! The HTTP listeners (hyper 1, HTTP/1.1): the metrics listener (`/metrics`, `/healthz`,
//! `/readyz`, `/v1/workers`), the ingest listener (Pushgateway API, JSON API) and the OTLP/HTTP
//! listener (`POST /v1/metrics`).

mod memory;
mod routes;
mod stats;

pub use stats::ServerStats;

use crate::app::App;
use crate::lifecycle::Handle;
use crate::sources::SourceContext;
use monasca_config::SidecarConfig;
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

/// Binds the HTTP listeners the config asks for (metrics, ingest and, when enabled, OTLP) and
/// logs each address. An error names the address and the listener.
pub async fn bind(config: &SidecarConfig) -> std::io::Result<Vec<(Role, TcpListener)>> {
    let mut roles = vec![
        (Role::Metrics, &config.listen.metrics),
        (Role::Ingest, &config.listen.ingest),
    ];
    if config.otlp.enabled {
        roles.push((Role::Otlp, &config.listen.otlp));
    }
    let mut listeners = Vec::new();
    for (role, addr) in roles {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} ({} listener): {e}", role.as_str()),
            )
        })?;
        tracing::info!(listener = %role.as_str(), addr = %listener.local_addr()?, "listening");
        listeners.push((role, listener));
    }
    Ok(listeners)
}

/// Starts one [`serve`] task per listener as one component of `ctx`: cancelling its token
/// (or the root) stops accepting and drains in-flight requests for up to `drain`;
/// [`Handle::stop`] returns once every listener has drained.
pub fn spawn(
    ctx: &SourceContext,
    stats: &Arc<ServerStats>,
    listeners: Vec<(Role, TcpListener)>,
    drain: Duration,
) -> Handle {
    let mut handle = Handle::new("http", ctx.child_token());
    let (stop_tx, stop_rx) = watch::channel(false);
    let token = handle.token().clone();
    handle.spawn_until_done(async move {
        token.cancelled().await;
        let _ = stop_tx.send(true);
    });
    for (role, listener) in listeners {
        handle.spawn_until_done(serve(
            listener,
            ctx.app().clone(),
            stats.clone(),
            role,
            stop_rx.clone(),
            drain,
        ));
    }
    handle
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
