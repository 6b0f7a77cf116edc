//! The admin listener (plain HTTP, `:8080`): `/metrics`, `/healthz`, `/readyz`. Separate from
//! the webhook so that probes and scrapes need no certificate and cannot starve admission.

use crate::Context;
use crate::server::{self, HttpResponse};
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
        move |request| {
            let ctx = ctx.clone();
            async move { handle(&request, &ctx) }
        },
        shutdown,
    )
    .await;
}

/// Routes one admin request.
pub fn handle(request: &Request<Incoming>, ctx: &Context) -> HttpResponse {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return server::text(StatusCode::NOT_FOUND, "not found");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return server::method_not_allowed("GET, HEAD");
    }
    match path {
        "/metrics" => server::response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            ctx.metrics.render(),
        ),
        "/healthz" => server::text(StatusCode::OK, "ok"),
        _ if ctx.is_ready() => server::text(StatusCode::OK, "ready"),
        _ => server::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the MetricsSidecar and Namespace caches",
        ),
    }
}
