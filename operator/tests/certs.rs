//! Self-managed certificates over real TLS: two operator instances fed from ONE Secret share
//! one CA (a client trusting that CA alone reaches both, and the second instance never makes a
//! CA of its own), and the serving certificate rotates during continuous admissions to both
//! instances with zero failed requests. Rotation goes through `certs::apply_secret`, the code
//! path every replica's Secret watch runs.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use k8s_openapi::api::core::v1::Secret;
use monasca_operator::certs::{self, Bundle, Plan, WebhookClient};
use monasca_operator::tls::CertResolver;
use monasca_operator::webhook;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::net::TcpListener;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn names() -> Vec<String> {
    WebhookClient::Url("https://localhost:8443/mutate".into()).names()
}

/// A client that trusts only the CA in the Secret (what the apiserver gets as `caBundle`).
fn client_trusting(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    tls_client(roots)
}

async fn admit(sender: &mut SendRequest<Full<Bytes>>, body: &Bytes) -> bool {
    if sender.ready().await.is_err() {
        return false;
    }
    let request = Request::builder()
        .method(Method::POST)
        .uri("/mutate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .expect("request");
    let Ok(response) = sender.send_request(request).await else {
        return false;
    };
    let status = response.status();
    let Ok(collected) = response.into_body().collect().await else {
        return false;
    };
    status == StatusCode::OK && decode(&collected.to_bytes()).patch.is_some()
}

/// One operator replica: a resolver fed from the Secret and a webhook server.
struct Instance {
    addr: SocketAddr,
    certs: Arc<CertResolver>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<monasca_operator::Result<()>>,
}

async fn instance(secret: &Secret) -> Instance {
    let cluster = Cluster::fixtures();
    let certs = Arc::new(CertResolver::empty(Some(cluster.ctx.metrics.clone())));
    cluster.ctx.set_certs(certs.clone());
    assert!(
        !cluster.ctx.cert_loaded(),
        "not ready before the Secret is read"
    );
    assert!(certs::apply_secret(&certs, secret).expect("loads"));
    assert!(cluster.ctx.cert_loaded());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webhook::serve(
        listener,
        certs.clone(),
        cluster.ctx.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    Instance {
        addr,
        certs,
        stop,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_ca_and_rotation_fails_no_admission() {
    // The leader created the Secret; a second instance finds it and keeps it.
    let first = certs::execute(Plan::Create, None, &names(), now())
        .expect("generates")
        .expect("bundle");
    let mut secret = first.to_secret("monasca-system");
    let from_secret = Bundle::from_secret(&secret).expect("bundle in Secret");
    assert_eq!(
        certs::plan(Some(&from_secret), &names(), now()),
        Plan::Keep,
        "an instance that finds the Secret never generates its own CA"
    );
    assert_eq!(
        certs::execute(Plan::Keep, Some(&from_secret), &names(), now()).expect("no-op"),
        None
    );

    let a = instance(&secret).await;
    let b = instance(&secret).await;
    let config = client_trusting(&first.ca_cert);
    let body = Bytes::from(fixture_bytes("create-replicaset-pod-generatename.json"));

    // Both ends verify with the one CA bundle, and serve the same certificate.
    let (mut conn_a, peer_a) = connect(a.addr, config.clone()).await.expect("A");
    let (mut conn_b, peer_b) = connect(b.addr, config.clone()).await.expect("B");
    assert_eq!(peer_a, peer_b, "one serving certificate for all replicas");
    assert!(admit(&mut conn_a, &body).await);
    assert!(admit(&mut conn_b, &body).await);

    // Continuous admissions to both instances, on keep-alive and fresh connections.
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut traffic = Vec::new();
    for (addr, mut conn) in [(a.addr, conn_a), (b.addr, conn_b)] {
        let (failures, sent, running, body, config) = (
            failures.clone(),
            sent.clone(),
            running.clone(),
            body.clone(),
            config.clone(),
        );
        traffic.push(tokio::spawn(async move {
            let mut i = 0usize;
            while running.load(Ordering::Relaxed) && i < 20_000 {
                i += 1;
                let ok = if i.is_multiple_of(5) {
                    match connect(addr, config.clone()).await {
                        Ok((mut fresh, _)) => admit(&mut fresh, &body).await,
                        Err(_) => false,
                    }
                } else {
                    admit(&mut conn, &body).await
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Rotate the serving certificate several times, as the leader does at renewal time: new
    // Secret content, delivered to every replica through the watch's code path.
    let mut current = first.clone();
    let mut served = vec![peer_a];
    // Progress, not wall time, paces the rotations: each one waits until both traffic tasks
    // have sent more admissions, however slow this machine is today.
    let traffic_moves_on = |sent: Arc<AtomicUsize>| async move {
        let from = sent.load(Ordering::Relaxed);
        tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while sent.load(Ordering::Relaxed) < from + 12 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("admission traffic keeps flowing");
    };
    for round in 0..5 {
        traffic_moves_on(sent.clone()).await;
        let renewed = certs::execute(
            Plan::RenewServing(certs::RenewReason::Expiring),
            Some(&current),
            &names(),
            now(),
        )
        .expect("renews")
        .expect("bundle");
        assert_eq!(renewed.ca_cert, first.ca_cert, "round {round}: same CA");
        secret = renewed.to_secret("monasca-system");
        assert!(certs::apply_secret(&a.certs, &secret).expect("A reloads"));
        assert!(certs::apply_secret(&b.certs, &secret).expect("B reloads"));
        // Re-delivery of the same Secret (a resync) changes nothing.
        assert!(!certs::apply_secret(&a.certs, &secret).expect("A same"));
        let (_, peer) = connect(a.addr, config.clone())
            .await
            .expect("new handshake");
        assert!(
            !served.contains(&peer),
            "round {round}: a new certificate is served"
        );
        served.push(peer);
        current = renewed;
    }
    traffic_moves_on(sent.clone()).await;
    running.store(false, Ordering::Relaxed);
    for t in traffic {
        t.await.expect("traffic task");
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 50, "enough traffic during the rotations: {sent}");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed admissions out of {sent}"
    );

    // The latest certificate of both instances verifies with the original CA bundle.
    let (_, peer_a) = connect(a.addr, config.clone()).await.expect("A after");
    let (_, peer_b) = connect(b.addr, config).await.expect("B after");
    assert_eq!(peer_a, peer_b);

    for instance in [a, b] {
        let _ = instance.stop.send(());
        instance.server.await.expect("join").expect("server");
    }
}

/// `--tls-dir`: the webhook Secret mounted as a volume. Before the kubelet wrote it the replica
/// serves nothing (and is not ready), without failing to start; once the files appear it is
/// ready and serves them over real TLS without any apiserver; when the kubelet swaps in the
/// renewed pair (a rename, as Secret volumes do) new handshakes get the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_secret_is_served_as_it_appears_and_reloaded_when_it_changes() {
    let dir = std::env::temp_dir().join(format!("monasca-tls-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join(certs::KEY_TLS_CERT), dir.join(certs::KEY_TLS_KEY));
    let cluster = Cluster::fixtures();
    let resolver = Arc::new(CertResolver::from_mounted_secret(
        cert.clone(),
        key.clone(),
        Some(cluster.ctx.metrics.clone()),
    ));
    cluster.ctx.set_certs(resolver.clone());
    assert!(!cluster.ctx.cert_loaded(), "nothing mounted yet");

    // The kubelet writes the Secret: files appear (written aside, then renamed in).
    let write = |bundle: &Bundle| {
        for (path, pem) in [(&cert, &bundle.cert), (&key, &bundle.key)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, pem).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
    };
    let first = certs::execute(Plan::Create, None, &names(), now())
        .expect("generates")
        .expect("bundle");
    write(&first);
    assert!(cluster.ctx.cert_loaded(), "ready once the files are there");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webhook::serve(
        listener,
        resolver.clone(),
        cluster.ctx.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let body = Bytes::from(fixture_bytes("create-replicaset-pod-generatename.json"));
    let (mut sender, _) = connect(addr, client_trusting(&first.ca_cert))
        .await
        .expect("TLS with the mounted certificate");
    assert!(admit(&mut sender, &body).await, "admission answered");

    // A new CA (the Secret was replaced): the renamed files are served to new handshakes.
    let second = certs::execute(Plan::NewCa, Some(&first), &names(), now())
        .expect("generates")
        .expect("bundle");
    write(&second);
    let (mut sender, _) = connect(addr, client_trusting(&second.ca_cert))
        .await
        .expect("TLS with the reloaded certificate");
    assert!(admit(&mut sender, &body).await, "admission answered");
    assert!(
        connect(addr, client_trusting(&first.ca_cert))
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    let _ = std::fs::remove_dir_all(dir);
}
