//! The admin listener (plain HTTP, `:8080`): `/metrics`, `/healthz`, `/readyz` and
//! `/discovery/targets`. Separate from the webhook so that probes and scrapes need no
//! certificate and cannot starve admission.

use crate::metrics::Gauges;
use crate::server::{self, HttpResponse};
use crate::webhook::review::annotation_without_label;
use crate::{Context, discovery};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    server::serve(
        listener,
        None,
        {
            let ctx = ctx.clone();
            move |request| {
                let ctx = ctx.clone();
                async move { handle(&request, &ctx) }
            }
        },
        shutdown,
        server::Limits::ADMIN,
        ctx.metrics.clone(),
    )
    .await;
}

/// Routes one admin request.
pub fn handle(request: &Request<Incoming>, ctx: &Context) -> HttpResponse {
    let path = request.uri().path();
    if !matches!(
        path,
        "/metrics" | "/healthz" | "/readyz" | "/discovery/targets"
    ) {
        return server::text(StatusCode::NOT_FOUND, "not found");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return server::method_not_allowed("GET, HEAD");
    }
    match path {
        "/metrics" => server::response(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            ctx.metrics.render_with(Some(Gauges {
                injected_pods: ctx.injected_pod_count(),
                leader: ctx.leadership.is_leader(),
                cert_loaded: ctx.cert_loaded(),
                cert_expiry: ctx.cert_expiry(),
                namespaces_annotation_without_label: ctx
                    .namespaces
                    .state()
                    .iter()
                    .filter(|ns| annotation_without_label(&ns.metadata).is_some())
                    .count(),
            })),
        ),
        "/discovery/targets" => server::response(
            StatusCode::OK,
            "application/json",
            discovery::render(&ctx.injected_pods(), &ctx.sidecars.state()),
        ),
        "/healthz" => server::text(StatusCode::OK, "ok"),
        _ if ctx.is_ready() => server::text(StatusCode::OK, "ready"),
        _ if ctx.is_draining() => server::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        _ if !ctx.cert_loaded() => server::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the webhook serving certificate",
        ),
        _ => server::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the MetricsSidecar and Namespace caches",
        ),
    }
}
