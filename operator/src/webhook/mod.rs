//! The mutating admission webhook: `POST /mutate` over TLS.
//!
//! Thin on purpose: read the body, [`review::review`] it, count it. Everything it needs is in
//! memory ([`Context`]), so a review costs microseconds and never waits on the API server.

pub mod review;
pub mod tls;

use crate::Context;
use crate::metrics::Outcome;
use crate::server::{self, HttpResponse};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use monasca_crds::WEBHOOK_PATH;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tls::CertResolver;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest accepted AdmissionReview. The apiserver caps objects at about 3 MiB and a review
/// carries at most two of them (object and oldObject).
pub const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

/// Serves the webhook on `listener` with certificates from `certs` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    certs: Arc<CertResolver>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> crate::Result<()> {
    let acceptor = TlsAcceptor::from(certs.server_config()?);
    server::serve(
        listener,
        Some(acceptor),
        move |request| {
            let ctx = ctx.clone();
            async move { handle(request, &ctx).await }
        },
        shutdown,
    )
    .await;
    Ok(())
}

/// Routes one request: `POST /mutate`, else 404 (other paths) or 405 (other methods).
pub async fn handle(request: Request<Incoming>, ctx: &Context) -> HttpResponse {
    if request.uri().path() != WEBHOOK_PATH {
        return server::text(StatusCode::NOT_FOUND, "not found");
    }
    if request.method() != Method::POST {
        return server::method_not_allowed("POST");
    }
    let body: Bytes = match Limited::new(request.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            ctx.metrics
                .review(Outcome::Invalid, None, std::time::Duration::ZERO);
            return server::text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            );
        }
    };
    let started = Instant::now();
    match review::review(&body, ctx) {
        Ok(reviewed) => {
            ctx.metrics
                .review(reviewed.outcome, reviewed.skip, started.elapsed());
            server::response(StatusCode::OK, "application/json", reviewed.body)
        }
        Err(invalid) => {
            ctx.metrics
                .review(Outcome::Invalid, None, started.elapsed());
            tracing::warn!(reason = %invalid, "unparseable AdmissionReview");
            server::text(StatusCode::BAD_REQUEST, invalid.to_string())
        }
    }
}
