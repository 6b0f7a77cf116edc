//! Request routing and handlers. Handlers are thin: parse, call the pure layer, answer.

use super::memory::BodyGuard;
use super::{Role, ServerStats};
use crate::app::App;
use crate::expose;
use crate::sources::push::{self, BodyFormat, GroupingKey, PushError};
use crate::store::Scope;
use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::io::Write as _;
use std::time::Instant;

type Resp = Response<Full<Bytes>>;

/// Dispatches one request.
pub(super) async fn handle(
    req: Request<Incoming>,
    app: &App,
    stats: &ServerStats,
    role: Role,
) -> Resp {
    let path = req.uri().path().to_string();
    match (role, req.method(), path.as_str()) {
        (Role::Otlp, &Method::POST, "/v1/metrics") => otlp_metrics(req, app, stats).await,
        (Role::Otlp, _, "/v1/metrics") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        (Role::Otlp, _, p) if p != "/healthz" && p != "/readyz" => text(
            StatusCode::NOT_FOUND,
            "not found (OTLP/HTTP serves POST /v1/metrics)\n",
        ),
        // HEAD is answered like GET on every GET endpoint (hyper sends the headers only).
        (_, &Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        // Ready once every listener is bound. Nothing else: readiness must not depend on the
        // workers (the sidecar never gates the app, and the injected pod has no readiness
        // probe; this endpoint is for tools and tests).
        (_, &Method::GET | &Method::HEAD, "/readyz") if app.is_listening() => {
            text(StatusCode::OK, "ready\n")
        }
        (_, &Method::GET | &Method::HEAD, "/readyz") => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: listeners still starting\n",
        ),
        // Refreshing multiprocess files and rendering are CPU work: keep the runtime's other
        // connections moving while they run.
        // With `stateDir`, the response waits until what it shows is persisted.
        (_, &Method::GET | &Method::HEAD, "/metrics") => {
            let (resp, version) = tokio::task::block_in_place(|| metrics(&req, app, stats));
            app.durable(version).await;
            resp
        }
        (Role::Metrics, &Method::GET | &Method::HEAD, "/v1/workers") => workers(app),
        (Role::Ingest, &Method::POST, "/v1/ingest") => json_ingest(req, app, stats).await,
        (Role::Ingest, &Method::POST, "/v1/clear") => json_clear(app),
        (Role::Ingest, _, "/v1/ingest" | "/v1/clear") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n")
        }
        (Role::Ingest, _, p) if p.starts_with("/metrics/") => {
            let rest = p.trim_start_matches("/metrics/").to_string();
            push_route(req, &rest, app, stats).await
        }
        (_, _, "/metrics" | "/healthz" | "/readyz" | "/v1/workers") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An error answer: the status and a one-line reason.
fn error(status: StatusCode, reason: &str) -> Resp {
    let mut line: String = reason.replace(['\n', '\r'], " ");
    line.push('\n');
    text(status, line)
}

fn header<B>(req: &Request<B>, name: http::header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// True when the client accepts gzip (`Accept-Encoding: gzip`, not with `q=0`).
fn accepts_gzip<B>(req: &Request<B>) -> bool {
    header(req, ACCEPT_ENCODING).is_some_and(|v| {
        v.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
    })
}

/// Renders `/metrics`; also returns the store version rendered (see [`App::durable`]).
fn metrics<B>(req: &Request<B>, app: &App, stats: &ServerStats) -> (Resp, u64) {
    let started = Instant::now();
    app.refresh();
    let format = expose::negotiate(header(req, ACCEPT));
    let own = app.self_families();
    let mut body = Vec::with_capacity(64 * 1024);
    let version = {
        let store = app.store.read();
        expose::render(&store, format, app.now().mono, &own, &mut body);
        store.version()
    };
    let gzip = accepts_gzip(req);
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        if enc.write_all(&body).is_ok()
            && let Ok(compressed) = enc.finish()
        {
            body = compressed;
        } else {
            return (
                error(StatusCode::INTERNAL_SERVER_ERROR, "gzip failed"),
                version,
            );
        }
    }
    stats.rendered(started.elapsed());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        VARY,
        http::HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzip {
        headers.insert(CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
    }
    (resp, version)
}

fn workers(app: &App) -> Resp {
    let info = app.store.read().workers_info(app.now());
    let body = serde_json::json!({ "workers": info });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Reads the body up to the configured limit, decompressing gzip, and counts it for giving
/// its memory back after a burst (see [`super::memory`]).
async fn read_body(
    req: Request<Incoming>,
    limit: u64,
    memory: &BodyGuard<'_>,
) -> Result<Bytes, PushError> {
    let gzip = match header(&req, CONTENT_ENCODING).map(str::trim) {
        None | Some("") | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(other) => return Err(PushError::Encoding(other.to_string())),
    };
    if let Some(len) =
        header(&req, http::header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok())
        && len > limit
    {
        return Err(PushError::TooLarge(limit));
    }
    let body = Limited::new(req.into_body(), limit as usize)
        .collect()
        .await
        .map_err(|_| PushError::TooLarge(limit))?
        .to_bytes();
    memory.read(body.len());
    if gzip {
        let plain = push::gunzip(&body, limit)?;
        memory.read(plain.len());
        Ok(Bytes::from(plain))
    } else {
        Ok(body)
    }
}

async fn push_route(req: Request<Incoming>, rest: &str, app: &App, stats: &ServerStats) -> Resp {
    let config = app.config();
    if !config.push.enabled {
        return error(
            StatusCode::NOT_FOUND,
            "the Pushgateway API is disabled (push.enabled)",
        );
    }
    let method = req.method().clone();
    let scope = match method {
        Method::PUT => Scope::Worker,
        Method::POST => Scope::Families,
        Method::DELETE => Scope::Worker,
        _ => return error(StatusCode::METHOD_NOT_ALLOWED, "use PUT, POST or DELETE"),
    };
    let key = match GroupingKey::from_path(rest) {
        Ok(k) => k,
        Err(e) => {
            stats.rejected("push", e.reason());
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let worker = key.worker(&config.worker_labels);
    if method == Method::DELETE {
        app.store.write().remove_worker(&worker.id);
        return text(StatusCode::ACCEPTED, "");
    }
    let format = BodyFormat::from_content_type(header(&req, CONTENT_TYPE));
    // Declared first so that it drops after the body and what is parsed from it.
    let body_memory = stats.bodies.begin();
    let body = match read_body(req, config.limits.max_body_bytes, &body_memory).await {
        Ok(b) => b,
        Err(e) => {
            stats.rejected("push", e.reason());
            let status = match e {
                PushError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, &e.to_string());
        }
    };
    let families = match push::parse_body(&body, format) {
        Ok(f) => f,
        Err(e) => {
            stats.rejected("push", e.reason());
            tracing::debug!(worker = %worker.id, error = %e, "push rejected");
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let now = app.now();
    let result = app.store.write().apply(&worker, &families, scope, now);
    match result {
        Ok(applied) => {
            stats.push_accepted(applied.samples);
            text(StatusCode::OK, "")
        }
        Err(e) => {
            stats.rejected("push", e.reason());
            tracing::info!(worker = %worker.id, error = %e, "push rejected");
            error(StatusCode::BAD_REQUEST, &e.to_string())
        }
    }
}

fn json_true() -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"true")));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `POST /v1/ingest`: the original monasca-sidecar JSON API.
async fn json_ingest(req: Request<Incoming>, app: &App, stats: &ServerStats) -> Resp {
    let config = app.config();
    if !config.push.json {
        return error(
            StatusCode::NOT_FOUND,
            "the JSON API is disabled (push.json)",
        );
    }
    // Declared first so that it drops after the body and what is parsed from it.
    let body_memory = stats.bodies.begin();
    let body = match read_body(req, config.limits.max_body_bytes, &body_memory).await {
        Ok(b) => b,
        Err(e) => {
            stats.rejected("json", e.reason());
            let status = match e {
                PushError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, &e.to_string());
        }
    };
    let now = app.now();
    let result = crate::sources::json::ingest(&mut app.store.write(), &body, now);
    match result {
        Ok(_) => json_true(),
        Err(e) => {
            stats.rejected("json", e.reason());
            error(StatusCode::BAD_REQUEST, &e.to_string())
        }
    }
}

/// `POST /v1/clear`: see [`App::clear`].
fn json_clear(app: &App) -> Resp {
    if !app.config().push.json {
        return error(
            StatusCode::NOT_FOUND,
            "the JSON API is disabled (push.json)",
        );
    }
    app.clear();
    json_true()
}

/// `POST /v1/metrics`: OTLP/HTTP metrics export. Answers as the OTLP specification says:
/// 200 with an `ExportMetricsServiceResponse` (with `partial_success` when points were
/// rejected), or 400/413/415 with a `google.rpc.Status`, in the encoding of the request.
async fn otlp_metrics(req: Request<Incoming>, app: &App, stats: &ServerStats) -> Resp {
    use crate::sources::otlp::decode::{
        self, CODE_INVALID_ARGUMENT, CODE_RESOURCE_EXHAUSTED, CODE_UNIMPLEMENTED,
    };
    use crate::sources::otlp::{Encoding, Settings};
    let config = app.config();
    let answer = |status: StatusCode, encoding: Encoding, body: Vec<u8>| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static(encoding.content_type()),
        );
        resp
    };
    let Some(encoding) = Encoding::from_content_type(header(&req, CONTENT_TYPE)) else {
        stats.rejected("otlp", "unsupported_media_type");
        let msg = "unsupported Content-Type: use application/x-protobuf or application/json";
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Encoding::Protobuf,
            decode::status(CODE_UNIMPLEMENTED, msg, Encoding::Protobuf),
        );
    };
    // Declared first so that it drops after the body and what is parsed from it.
    let body_memory = stats.bodies.begin();
    let body = match read_body(req, config.limits.max_body_bytes, &body_memory).await {
        Ok(b) => b,
        Err(e) => {
            stats.rejected("otlp", e.reason());
            let (status, code) = match e {
                PushError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, CODE_RESOURCE_EXHAUSTED),
                _ => (StatusCode::BAD_REQUEST, CODE_INVALID_ARGUMENT),
            };
            return answer(
                status,
                encoding,
                decode::status(code, &e.to_string(), encoding),
            );
        }
    };
    let request = match decode::decode(&body, encoding) {
        Ok(r) => r,
        Err(e) => {
            stats.rejected("otlp", e.reason());
            tracing::debug!(error = %e, "OTLP request rejected");
            return answer(
                StatusCode::BAD_REQUEST,
                encoding,
                decode::status(CODE_INVALID_ARGUMENT, &e.to_string(), encoding),
            );
        }
    };
    let settings = Settings::from_config(&config);
    let outcome = tokio::task::block_in_place(|| {
        app.otlp
            .ingest(&app.store, &request, &settings, encoding, app.now())
    });
    let message = outcome.rejected.message();
    if outcome.rejected.count > 0 {
        tracing::debug!(rejected = outcome.rejected.count, message = %message, "OTLP points rejected");
    }
    answer(
        StatusCode::OK,
        encoding,
        decode::response(outcome.rejected.count, &message, encoding),
    )
}
