//! The mutating admission webhook: `POST /mutate` over TLS.
//!
//! Thin on purpose: read the body, [`review::review`] it, count it. Everything it needs is in
//! memory ([`Context`]), so a review costs microseconds and never waits on the API server.
//!
//! Bounded against hostile or broken clients: the body is capped at [`MAX_REVIEW_BYTES`]
//! (refused from its `Content-Length` before reading when it says more), reading it and answering
//! must finish within [`REQUEST_DEADLINE`] (a body trickling in is cut off), and the parse of a
//! review larger than [`review::SMALL_REVIEW_BYTES`] runs on the blocking pool so that a large
//! review never stalls the runtime threads that accept connections and serve other reviews
//! (smaller ones, every real pod, are parsed in place, without the hand-off). The server's caps
//! ([`server::Limits::WEBHOOK`]) bound how many of these run at once.

pub mod events;
pub mod pod_review;
pub mod review;

use crate::Context;
use crate::metrics::Outcome;
use crate::server::{self, HttpResponse};
use crate::tls::CertResolver;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use monasca_crds::WEBHOOK_PATH;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest accepted AdmissionReview: the apiserver's own request body limit (3 MiB), plus room
/// for the review's envelope (user info, options). Pods are CREATEd, so a review carries one
/// object, which etcd limits to 1.5 MiB anyway.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024 + 256 * 1024;

/// Reading the body and answering must finish within this time from the end of the headers
/// (which themselves must arrive within it: see [`server::REQUEST_DEADLINE`], the one deadline of
/// the HTTP stack). The apiserver sends a review in one write and gives up after the webhook's
/// `timeoutSeconds` (3 s), so only a slow or hostile client ever reaches it; it is cut off
/// instead of holding a connection and a request slot.
pub const REQUEST_DEADLINE: Duration = server::REQUEST_DEADLINE;

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
        {
            let ctx = ctx.clone();
            move |request| {
                let ctx = ctx.clone();
                async move { handle(request, ctx).await }
            }
        },
        shutdown,
        server::Limits::WEBHOOK,
        ctx.metrics.clone(),
    )
    .await;
    Ok(())
}

/// Routes one request: `POST /mutate`, else 404 (other paths) or 405 (other methods), within
/// [`REQUEST_DEADLINE`] (408 after it).
pub async fn handle(request: Request<Incoming>, ctx: Arc<Context>) -> HttpResponse {
    let metrics = ctx.metrics.clone();
    match tokio::time::timeout(REQUEST_DEADLINE, handle_in_time(request, ctx)).await {
        Ok(response) => response,
        Err(_) => {
            metrics.review(Outcome::Timeout, None, REQUEST_DEADLINE);
            tracing::warn!(deadline = ?REQUEST_DEADLINE, "review not received and answered within the deadline; closing");
            // Unread body: hyper closes the connection after this response.
            server::closing(server::text(
                StatusCode::REQUEST_TIMEOUT,
                "request deadline exceeded",
            ))
        }
    }
}

async fn handle_in_time(request: Request<Incoming>, ctx: Arc<Context>) -> HttpResponse {
    if request.uri().path() != WEBHOOK_PATH {
        return server::text(StatusCode::NOT_FOUND, "not found");
    }
    if request.method() != Method::POST {
        return server::method_not_allowed("POST");
    }
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REVIEW_BYTES as u64) {
        return too_large(&ctx);
    }
    let body: Bytes = match Limited::new(request.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(&ctx),
        Err(e) => {
            ctx.metrics.review(Outcome::Invalid, None, Duration::ZERO);
            return server::text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            );
        }
    };
    let started = Instant::now();
    // A small review (every real pod) is parsed right here: handing it to the blocking pool
    // costs two thread wake-ups per review, and on a small node those context switches show
    // in the tail latency. Larger ones still go to the blocking pool.
    let reviewed = if review::is_small(&body) {
        Ok(review::review(&body, &ctx))
    } else {
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || review::review(&body, &ctx)).await
    };
    let Ok(reviewed) = reviewed else {
        ctx.metrics
            .review(Outcome::Invalid, None, started.elapsed());
        tracing::error!("the review task panicked");
        return server::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    match reviewed {
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

/// 413 for a body over [`MAX_REVIEW_BYTES`].
fn too_large(ctx: &Context) -> HttpResponse {
    ctx.metrics.review(Outcome::TooLarge, None, Duration::ZERO);
    tracing::warn!(
        limit = MAX_REVIEW_BYTES,
        "refusing an AdmissionReview over the size limit"
    );
    server::closing(server::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("AdmissionReview larger than {MAX_REVIEW_BYTES} bytes"),
    ))
}
