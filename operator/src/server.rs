//! The one HTTP stack of the binary: hyper 1 HTTP/1.1 connections over tokio, optionally behind
//! rustls. The webhook and the admin listener differ only in TLS, their handler and their
//! [`Limits`].
//!
//! Every resource a client can make the server hold is bounded: connections (a cap, beyond which
//! new connections are closed at once), requests being handled (a cap, beyond which the answer is
//! an immediate 503), the TLS handshake (a timeout) and each request (one deadline,
//! [`REQUEST_DEADLINE`], for its headers and again for its body and answer). Shedding is fast on
//! purpose: the apiserver then applies the webhook's `failurePolicy: Ignore` and admits the pod
//! at once instead of waiting for its timeout. Body size and the body deadline are the
//! handler's (see `webhook::handle`).

use crate::metrics::{HandshakeFailure, Listener, Metrics, Shed};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use monasca_runtime::http as runtime_http;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// A slow or silent client must not hold a task forever (slowloris): the TLS handshake must
/// complete within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// One timeout story for every request, shared with the sidecar ([`monasca_runtime::http`]):
/// the headers must arrive within [`REQUEST_DEADLINE`] (hyper's header timer), then the body
/// must arrive and the answer be written within it again (the handler's deadline,
/// `webhook::handle`), so no request holds a connection longer than twice this. hyper starts
/// the header timer as soon as a connection waits for a request, so it also closes keep-alive
/// connections idle that long: the apiserver's client notices the close and dials again (a
/// handshake per ten idle seconds, which the `HANDSHAKE_TIMEOUT` and connection cap already
/// account for).
pub use monasca_runtime::http::REQUEST_DEADLINE;

/// The caps of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Which listener these are (metric label).
    pub listener: Listener,
    /// Open connections (TLS handshakes included); one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Requests being handled at once; one more is answered 503 without being read.
    pub max_in_flight: usize,
}

impl Limits {
    /// The webhook: the apiserver keeps a few dozen connections per replica at most, and a
    /// review takes microseconds, so these caps are far above normal load and only bite under
    /// a flood. The in-flight cap also bounds memory: each request holds at most one body
    /// (`webhook::MAX_REVIEW_BYTES`) and one parse.
    pub const WEBHOOK: Limits = Limits {
        listener: Listener::Webhook,
        max_connections: 256,
        max_in_flight: 16,
    };
    /// The admin listener: probes and a few scrapers.
    pub const ADMIN: Limits = Limits {
        listener: Listener::Admin,
        max_connections: 64,
        max_in_flight: 16,
    };
}

/// The response type of every handler.
pub type HttpResponse = Response<Full<Bytes>>;

/// A response with a body and content type.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// A one-line plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    let mut body = body.into();
    body.push('\n');
    response(status, "text/plain; charset=utf-8", body)
}

/// The same response, closing the connection after it (hyper then stops reading the request
/// body instead of draining it): for refusals of bodies that are too large or too slow.
pub fn closing(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// 405 with the `Allow` header listing the accepted method.
pub fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

/// Accepts connections on `listener` until `shutdown` resolves, then lets open connections
/// finish (up to [`runtime_http::DRAIN_TIMEOUT`]). Connections and requests beyond `limits` are shed and counted in
/// `metrics`, as are failed TLS handshakes.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
    metrics: Arc<Metrics>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let handler = {
        let metrics = metrics.clone();
        move |request: Request<Incoming>| {
            let handler = handler.clone();
            let permit = in_flight.clone().try_acquire_owned();
            let metrics = metrics.clone();
            async move {
                match permit {
                    Ok(_permit) => {
                        let _counted = InFlight::start(&metrics, limits.listener);
                        handler(request).await
                    }
                    Err(_) => {
                        metrics.shed(Shed::InFlight);
                        text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "overloaded: too many requests in flight",
                        )
                    }
                }
            }
        }
    };
    runtime_http::serve(
        listener,
        shutdown,
        runtime_http::DRAIN_TIMEOUT,
        limits.listener.label(),
        move |tcp, peer, watcher| {
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                // Closed unread: the cheapest answer, and the client fails fast.
                metrics.shed(Shed::Connections);
                tracing::debug!(%peer, "connection cap reached; closing a new connection");
                return None;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            let metrics = metrics.clone();
            Some(async move {
                let _permit = permit;
                match tls {
                    None => runtime_http::serve_connection(tcp, watcher, handler).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => runtime_http::serve_connection(stream, watcher, handler).await,
                            Ok(Err(e)) => {
                                let reason = HandshakeFailure::of(&e);
                                metrics.handshake_failed(reason);
                                tracing::debug!(%peer, error = %e, reason = reason.label(), "TLS handshake failed");
                            }
                            Err(_) => {
                                metrics.handshake_failed(HandshakeFailure::Timeout);
                                tracing::debug!(%peer, "TLS handshake timed out");
                            }
                        }
                    }
                }
            })
        },
    )
    .await;
}

/// Counts a request in the in-flight gauge for as long as it lives (dropped on every path,
/// a cancelled handler included).
struct InFlight<'a> {
    metrics: &'a Metrics,
    listener: Listener,
}

impl<'a> InFlight<'a> {
    fn start(metrics: &'a Metrics, listener: Listener) -> InFlight<'a> {
        metrics.in_flight_change(listener, true);
        InFlight { metrics, listener }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight_change(self.listener, false);
    }
}
