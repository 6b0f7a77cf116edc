//! The webhook over real TLS: a hyper client trusting a test CA posts a recorded review; then the
//! certificate files are replaced and new connections get the new certificate while requests on
//! the old connection and on new ones keep succeeding.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use monasca_operator::tls::CertResolver;
use monasca_operator::webhook;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "monasca-operator-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Replaces a file atomically (write aside, rename over), as Secret volumes and cert-manager do.
fn replace(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

fn client_config(ca_der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("CA");
    tls_client(roots)
}

async fn post_fixture(sender: &mut SendRequest<Full<Bytes>>, body: &Bytes) -> bool {
    let (status, response) = send(sender, Method::POST, "/mutate", body.clone()).await;
    status == StatusCode::OK && decode(&response).patch.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_serves_reviews_over_tls_and_rotates_its_certificate_without_dropping_requests() {
    let ca = TestCa::new();
    let first = ca.leaf();
    let dir = temp_dir("tls");
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, &first.leaf_pem).expect("cert");
    std::fs::write(&key_path, &first.key_pem).expect("key");

    let cluster = Cluster::fixtures();
    let ctx = cluster.ctx.clone();
    let certs = Arc::new(
        CertResolver::from_files(
            cert_path.clone(),
            key_path.clone(),
            Some(ctx.metrics.clone()),
        )
        .expect("certs"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webhook::serve(listener, certs, ctx.clone(), async {
        let _ = stopped.await;
    }));

    let config = client_config(&ca.ca_der);
    let body = Bytes::from(fixture_bytes("create-replicaset-pod-generatename.json"));

    // A review over TLS, and the routing rules, on one keep-alive connection.
    let (mut old_conn, peer) = connect(addr, config.clone()).await.expect("connect");
    assert_eq!(peer, first.leaf_der, "serves the first certificate");
    assert!(post_fixture(&mut old_conn, &body).await);
    assert_eq!(
        send(&mut old_conn, Method::POST, "/other", body.clone())
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&mut old_conn, Method::GET, "/mutate", Bytes::new())
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let (status, reason) = send(
        &mut old_conn,
        Method::POST,
        "/mutate",
        Bytes::from_static(b"{oops"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let reason = String::from_utf8_lossy(&reason);
    assert_eq!(
        reason.trim_end().lines().count(),
        1,
        "one-line reason: {reason:?}"
    );

    // Traffic during the rotation: the old connection and fresh connections, all must succeed.
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (failures, sent, running, body, config) = (
            failures.clone(),
            sent.clone(),
            running.clone(),
            body.clone(),
            config.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0usize;
            while running.load(Ordering::Relaxed) && i < 5_000 {
                i += 1;
                let ok = if i.is_multiple_of(10) {
                    let (mut fresh, _) = connect(addr, config.clone()).await.expect("connect");
                    post_fixture(&mut fresh, &body).await
                } else {
                    post_fixture(&mut old_conn, &body).await
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            old_conn
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let second = ca.leaf();
    replace(&key_path, &second.key_pem);
    replace(&cert_path, &second.leaf_pem);

    // New connections get the new certificate (the resolver checks the files per handshake).
    let (mut new_conn, peer) = connect(addr, config.clone()).await.expect("connect");
    assert_eq!(
        peer, second.leaf_der,
        "a new connection gets the rotated certificate"
    );
    assert!(post_fixture(&mut new_conn, &body).await);

    // A broken pair (key not matching) is not served: the previous certificate stays.
    replace(&key_path, &ca.leaf().key_pem);
    let (mut conn, peer) = connect(addr, config.clone()).await.expect("connect");
    assert_eq!(
        peer, second.leaf_der,
        "a mismatched pair is rejected, the last good one served"
    );
    assert!(post_fixture(&mut conn, &body).await);
    replace(&key_path, &second.key_pem);

    tokio::time::sleep(Duration::from_millis(100)).await;
    running.store(false, Ordering::Relaxed);
    let mut old_conn = traffic.await.expect("traffic task");
    // The connection opened before the rotation is still alive and still works.
    assert!(
        post_fixture(&mut old_conn, &body).await,
        "pre-rotation connection survives"
    );
    assert!(
        sent.load(Ordering::Relaxed) > 10,
        "traffic flowed during the rotation"
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no failed request");

    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains("monasca_operator_tls_reloads_total{result=\"loaded\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("monasca_operator_tls_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("monasca_operator_admission_reviews_total{outcome=\"invalid\"} 1"),
        "{metrics}"
    );

    let _ = stop.send(());
    server.await.expect("server task").expect("server result");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_serves_metrics_and_probes() {
    let cluster = Cluster::fixtures();
    let ctx = cluster.ctx.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(monasca_operator::admin::serve(listener, ctx, async {
        let _ = stopped.await;
    }));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let (status, body) = send(&mut sender, Method::GET, "/metrics", Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&body)
            .contains("# TYPE monasca_operator_admission_duration_seconds histogram")
    );
    assert_eq!(
        send(&mut sender, Method::GET, "/healthz", Bytes::new())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&mut sender, Method::GET, "/readyz", Bytes::new())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&mut sender, Method::GET, "/nope", Bytes::new())
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&mut sender, Method::POST, "/metrics", Bytes::new())
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    drop(sender);
    let _ = stop.send(());
    server.await.expect("server task");
}

#[test]
fn self_signed_certificate_is_usable() {
    let resolver = CertResolver::self_signed(vec!["localhost".into()]).expect("self-signed");
    assert_eq!(resolver.current().expect("loaded").cert.len(), 1);
}
