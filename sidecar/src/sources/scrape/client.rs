//! One scrape: a plain HTTP/1.1 GET over TCP or a unix socket with hyper's connection-level
//! client (the same HTTP stack as the server, no pool: one connection per scrape keeps a dead
//! worker from pinning a stale connection), the body bounded and gunzipped.

use super::targets::Target;
use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::io::Read as _;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// What the sidecar asks for: the text format monasca-agent and every client speak.
pub const ACCEPT_VALUE: &str = "text/plain;version=0.0.4";

/// Why a scrape failed. Fixed reasons, usable as self-metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum ScrapeError {
    #[error("cannot connect")]
    Connect,
    #[error("timed out")]
    Timeout,
    #[error("HTTP error")]
    Http,
    #[error("non-200 status")]
    Status,
    #[error("body larger than limits.maxBodyBytes")]
    TooLarge,
    #[error("cannot decompress the body")]
    Decode,
    #[error("body does not parse")]
    Parse,
    #[error("values rejected by the store")]
    Rejected,
}

impl ScrapeError {
    pub const ALL: [ScrapeError; 8] = [
        ScrapeError::Connect,
        ScrapeError::Timeout,
        ScrapeError::Http,
        ScrapeError::Status,
        ScrapeError::TooLarge,
        ScrapeError::Decode,
        ScrapeError::Parse,
        ScrapeError::Rejected,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            ScrapeError::Connect => "connect",
            ScrapeError::Timeout => "timeout",
            ScrapeError::Http => "http",
            ScrapeError::Status => "status",
            ScrapeError::TooLarge => "too_large",
            ScrapeError::Decode => "decode",
            ScrapeError::Parse => "parse",
            ScrapeError::Rejected => "rejected",
        }
    }
}

/// A scraped body, decompressed.
#[derive(Debug)]
pub struct Scraped {
    pub body: Vec<u8>,
    /// The target answered OpenMetrics (by Content-Type), although text was asked for.
    pub openmetrics: bool,
}

/// Scrapes `target` within `timeout`.
pub async fn fetch(
    target: &Target,
    path: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<Scraped, ScrapeError> {
    match tokio::time::timeout(timeout, fetch_inner(target, path, max_body)).await {
        Ok(r) => r,
        Err(_) => Err(ScrapeError::Timeout),
    }
}

async fn fetch_inner(target: &Target, path: &str, max_body: usize) -> Result<Scraped, ScrapeError> {
    match target {
        Target::Tcp { port, .. } => {
            let host = target.connect_host().unwrap_or("localhost");
            let stream = tokio::net::TcpStream::connect((host, *port))
                .await
                .map_err(|_| ScrapeError::Connect)?;
            let _ = stream.set_nodelay(true);
            get(stream, &target.id(), path, max_body).await
        }
        Target::Unix { path: socket } => {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|_| ScrapeError::Connect)?;
            get(stream, "localhost", path, max_body).await
        }
    }
}

async fn get<S>(stream: S, host: &str, path: &str, max_body: usize) -> Result<Scraped, ScrapeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ScrapeError::Http)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let request = http::Request::get(path)
            .header(HOST, host)
            .header(ACCEPT, ACCEPT_VALUE)
            .header(ACCEPT_ENCODING, "gzip")
            .header("User-Agent", "monasca-sidecar")
            .body(Empty::<Bytes>::new())
            .map_err(|_| ScrapeError::Http)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| ScrapeError::Http)?;
        if response.status() != http::StatusCode::OK {
            return Err(ScrapeError::Status);
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase()
        };
        let openmetrics = header(CONTENT_TYPE).starts_with("application/openmetrics-text");
        let gzip = header(CONTENT_ENCODING).contains("gzip");
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ScrapeError::TooLarge
                } else {
                    ScrapeError::Http
                }
            })?
            .to_bytes();
        let body = if gzip {
            gunzip(&body, max_body)?
        } else {
            body.to_vec()
        };
        Ok(Scraped { body, openmetrics })
    }
    .await;
    driver.abort();
    result
}

/// Decompresses at most `max` bytes; more is an error (a gzip bomb must not exhaust memory).
fn gunzip(data: &[u8], max: usize) -> Result<Vec<u8>, ScrapeError> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| ScrapeError::Decode)?;
    if out.len() > max {
        return Err(ScrapeError::TooLarge);
    }
    Ok(out)
}
