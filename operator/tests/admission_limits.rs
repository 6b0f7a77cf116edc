//! The webhook under hostile load, over real TLS sockets: an oversized body (413, refused from
//! its Content-Length or cut at the cap), a review of absurdly many tiny containers (admitted
//! unchanged without the typed parse), a body trickling in (cut off at the request deadline),
//! a request flood beyond the in-flight cap (503 at once) and a connection flood beyond the
//! connection cap (closed at once). After each, a normal review still gets its patch.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use monasca_operator::metrics::{Listener, Outcome, Shed};
use monasca_operator::server::Limits;
use monasca_operator::tls::CertResolver;
use monasca_operator::webhook::{self, MAX_REVIEW_BYTES};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Guards against a hang only (a broken cap would otherwise block the test forever); never an
/// assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(120);

struct Server {
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    ctx: Arc<monasca_operator::Context>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Server {
    let ca = TestCa::new();
    let leaf = ca.leaf();
    let chain = vec![CertificateDer::from(leaf.leaf_der.clone())];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let certs = Arc::new(CertResolver::fixed(chain, key).expect("certs"));
    let ctx = Cluster::fixtures().ctx;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(webhook::serve(listener, certs, ctx.clone(), async {
        let _ = stopped.await;
    }));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.ca_der)).expect("CA");
    Server {
        addr,
        client: tls_client(roots),
        ctx,
        _stop: stop,
    }
}

async fn post(sender: &mut SendRequest<Full<Bytes>>, body: Bytes) -> (StatusCode, Bytes) {
    send(sender, Method::POST, "/mutate", body).await
}

/// Streams `len` bytes as chunks (no Content-Length) and returns what the server answered.
async fn post_chunked(server: &Server, len: usize) -> String {
    let mut stream = raw_tls(server).await;
    let head = "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("write");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        // The server may answer and close before the last chunk: stop writing then.
        if stream.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let _ = stream.flush().await;
    read_to_close(&mut stream).await
}

/// A normal review on a new connection still gets its patch.
async fn still_injects(server: &Server) {
    let (mut sender, _) = connect(server.addr, server.client.clone())
        .await
        .expect("connect");
    let body = Bytes::from(fixture_bytes("create-replicaset-pod-generatename.json"));
    let (status, answer) = post(&mut sender, body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(decode(&answer).patch.is_some(), "a normal pod is injected");
}

/// A raw TLS stream, for writing requests by hand (partial bodies, no body at all).
async fn raw_tls(server: &Server) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    tokio_rustls::TlsConnector::from(server.client.clone())
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// Headers announcing a body of `length` bytes, and the first `sent` bytes of it.
async fn start_request(stream: &mut tokio_rustls::client::TlsStream<TcpStream>, length: usize) {
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.flush().await.expect("flush");
}

/// Everything the server sends until it closes the connection.
async fn read_to_close(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let mut out = Vec::new();
    // A reset or a missing close_notify also ends it: the server closed.
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A review of the recorded pod with `containers` empty containers added.
fn review_with_containers(containers: usize) -> Vec<u8> {
    let mut review = fixture("create-replicaset-pod-generatename.json");
    let list = review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers");
    list.extend((0..containers).map(|_| json!({})));
    serde_json::to_vec(&review).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_reviews_are_refused_with_413_and_absurd_pods_admitted_unparsed() {
    let server = start().await;
    tokio::time::timeout(HANG_GUARD, async {
        // Content-Length over the cap: refused before the body is read, one-line reason.
        let mut stream = raw_tls(&server).await;
        start_request(&mut stream, MAX_REVIEW_BYTES + 1).await;
        let answer = read_to_close(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
        let reason = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert_eq!(reason.trim_end().lines().count(), 1, "{reason:?}");
        // Streamed without a Content-Length: cut at the cap.
        let answer = post_chunked(&server, MAX_REVIEW_BYTES + 1).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

        // Under the cap but 200,000 empty containers (the typed parse would need gigabytes):
        // admitted unchanged with a warning, counted as too_large.
        let body = review_with_containers(200_000);
        assert!(body.len() < MAX_REVIEW_BYTES, "{} bytes", body.len());
        let (mut sender, _) = connect(server.addr, server.client.clone())
            .await
            .expect("connect");
        let (status, answer) = post(&mut sender, Bytes::from(body)).await;
        assert_eq!(status, StatusCode::OK);
        let answer = decode(&answer);
        assert_eq!(answer.response["allowed"], json!(true), "never denied");
        assert!(answer.patch.is_none(), "not injected");
        assert!(
            answer.warnings.iter().any(|w| w.contains("not injected")),
            "{:?}",
            answer.warnings
        );
        // A real pod with a few extra containers is still injected (the bound is far above
        // real pods).
        let (mut sender, _) = connect(server.addr, server.client.clone())
            .await
            .expect("connect");
        let (status, answer) = post(&mut sender, Bytes::from(review_with_containers(50))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            decode(&answer).patch.is_some(),
            "50 containers are injected"
        );
        assert_eq!(server.ctx.metrics.reviews(Outcome::TooLarge), 3);
        still_injects(&server).await;
    })
    .await
    .expect("hang guard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_slowly_is_cut_off_at_the_request_deadline() {
    let server = start().await;
    tokio::time::timeout(HANG_GUARD, async {
        let mut slow = raw_tls(&server).await;
        start_request(&mut slow, 100_000).await;
        // The rest never comes (as with one byte per 20 s): the server answers 408 and closes.
        let answer = read_to_close(&mut slow).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "408 or closed: {answer:?}"
        );
        assert_eq!(server.ctx.metrics.reviews(Outcome::Timeout), 1);
        still_injects(&server).await;
    })
    .await
    .expect("hang guard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_cap_get_503_at_once() {
    let server = start().await;
    tokio::time::timeout(HANG_GUARD, async {
        // Fill every in-flight slot with a request whose body does not come.
        let mut holders = Vec::new();
        for _ in 0..Limits::WEBHOOK.max_in_flight {
            let mut stream = raw_tls(&server).await;
            start_request(&mut stream, 1000).await;
            holders.push(stream);
        }
        // The slots are taken once the server has read those headers.
        while server.ctx.metrics.in_flight(Listener::Webhook) < holders.len() as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = Bytes::from(fixture_bytes("create-replicaset-pod-generatename.json"));
        let (mut sender, _) = connect(server.addr, server.client.clone())
            .await
            .expect("connect");
        let (status, reason) = post(&mut sender, body.clone()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(&reason).contains("overloaded"));
        assert_eq!(server.ctx.metrics.sheds(Shed::InFlight), 1);
        drop(holders);
        // Slots free again once those connections are gone.
        loop {
            let (mut sender, _) = connect(server.addr, server.client.clone())
                .await
                .expect("connect");
            if post(&mut sender, body.clone()).await.0 == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hang guard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let server = start().await;
    tokio::time::timeout(HANG_GUARD, async {
        // Idle TCP connections that never start TLS hold the connection slots.
        let mut idle = Vec::new();
        for _ in 0..Limits::WEBHOOK.max_connections {
            idle.push(TcpStream::connect(server.addr).await.expect("connect"));
        }
        // One more is accepted and closed unread: the client sees EOF, not a handshake.
        loop {
            let mut extra = TcpStream::connect(server.addr).await.expect("connect");
            let mut byte = [0u8; 1];
            if matches!(extra.read(&mut byte).await, Ok(0) | Err(_)) {
                break;
            }
        }
        assert!(server.ctx.metrics.sheds(Shed::Connections) >= 1);
        drop(idle);
        // Capacity comes back as the idle connections close.
        loop {
            if let Ok((mut sender, _)) = connect(server.addr, server.client.clone()).await
                && post(
                    &mut sender,
                    Bytes::from(fixture_bytes("create-replicaset-pod-generatename.json")),
                )
                .await
                .0 == StatusCode::OK
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hang guard");
}

/// Slowloris on the headers phase: headers trickled one byte every half second never complete.
/// The server closes the connection at the request deadline (the same
/// [`webhook::REQUEST_DEADLINE`] that bounds bodies), before the trickle would have ended,
/// without answering it; other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_slowly_are_cut_off_at_the_request_deadline() {
    let server = start().await;
    tokio::time::timeout(HANG_GUARD, async {
        let mut slow = raw_tls(&server).await;
        let head = b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nx-padding: ";
        // At this pace the trickle outlasts the deadline two and a half times (and hyper's old
        // default of 30 s would let it finish): a lower bound, so a slow machine only adds margin.
        let pace = Duration::from_millis(500);
        let bytes = (webhook::REQUEST_DEADLINE.as_millis() * 5 / 2 / pace.as_millis()) as usize;
        let trickle = head.iter().copied().chain(std::iter::repeat(b'a')).take(bytes);
        let mut closed_after = None;
        for (sent, byte) in trickle.enumerate() {
            if slow.write_all(&[byte]).await.is_err() || slow.flush().await.is_err() {
                closed_after = Some(sent);
                break;
            }
            // A read that returns means the server answered or closed: stop trickling.
            let mut buf = [0u8; 256];
            match tokio::time::timeout(pace, slow.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    closed_after = Some(sent);
                    break;
                }
                Ok(Ok(n)) => panic!(
                    "the server answered unfinished headers: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ),
                Err(_) => {}
            }
            if sent == 3 {
                // Mid-trickle, a normal client is served as usual.
                still_injects(&server).await;
            }
        }
        let sent = closed_after.expect("the server closed the slowloris connection");
        assert!(sent < bytes, "closed before the trickle ended ({sent} of {bytes} bytes)");
        // Never reached the handler: no review was counted for it.
        assert_eq!(server.ctx.metrics.reviews(Outcome::Timeout), 0);
        still_injects(&server).await;
    })
    .await
    .expect("hang guard");
}
