//! Admission benchmark: the review handler alone, and full reviews over TLS keep-alive
//! connections with the recorded ReplicaSet pod (the common case: a Deployment's pod).
//!
//! `cargo bench -p monasca-operator --bench admission` runs criterion, then prints a latency
//! table (p50/p99/max) and reviews/s with 1, 2 and 4 concurrent keep-alive connections. Client
//! and server share the machine's cores, as in a worst case on a small node. Loops are bounded
//! in count and time and only talk to 127.0.0.1.

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::{Cluster, TestCa, fixture_bytes};
use criterion::Criterion;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use monasca_operator::tls::CertResolver;
use monasca_operator::webhook;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;

const FIXTURE: &str = "create-replicaset-pod-generatename.json";

struct Server {
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn start_server(rt: &Runtime) -> Server {
    let ca = TestCa::new();
    let leaf = ca.leaf();
    let key = {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM")
    };
    let certs = Arc::new(
        CertResolver::fixed(vec![CertificateDer::from(leaf.leaf_der.clone())], key)
            .expect("certificate"),
    );
    let cluster = Cluster::fixtures();
    let ctx = cluster.ctx.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _keep = cluster;
            let _ = webhook::serve(listener, certs, ctx, async {
                let _ = stopped.await;
            })
            .await;
        });
        addr
    });
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.ca_der.clone()))
        .expect("CA");
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Server {
        addr,
        client: Arc::new(client),
        _stop: stop,
    }
}

async fn connect(server: &Server) -> SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let tls = TlsConnector::from(server.client.clone())
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP");
    tokio::spawn(connection);
    sender
}

async fn review(sender: &mut SendRequest<Full<Bytes>>, body: &Bytes) {
    sender.ready().await.expect("ready");
    let request = Request::post("/mutate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert!(bytes.len() > 100, "a patched review");
}

fn bench_handler(c: &mut Criterion) {
    let cluster = Cluster::fixtures();
    let body = fixture_bytes(FIXTURE);
    c.bench_function("review handler (ReplicaSet pod, no network)", |b| {
        b.iter(|| {
            monasca_operator::webhook::review::review(std::hint::black_box(&body), &cluster.ctx)
                .expect("review")
        })
    });
}

fn bench_tls(c: &mut Criterion, rt: &Runtime, server: &Server) {
    let body = Bytes::from(fixture_bytes(FIXTURE));
    let mut sender = rt.block_on(connect(server));
    c.bench_function("review over TLS keep-alive (ReplicaSet pod)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    review(&mut sender, &body).await;
                }
                started.elapsed()
            })
        })
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `connections` clients, each sending reviews back to back on its keep-alive connection for
/// `duration` (at most `max_per_connection` each). Returns sorted latencies and the wall time.
fn load(
    rt: &Runtime,
    server: &Server,
    connections: usize,
    duration: Duration,
    max_per_connection: usize,
) -> (Vec<Duration>, Duration) {
    load_paced(rt, server, connections, duration, max_per_connection, None)
}

/// Like [`load`], but when `period` is set each connection sends one review per period (an
/// offered load of `connections / period`, the way a rollout's pod creations arrive) instead of
/// back to back.
fn load_paced(
    rt: &Runtime,
    server: &Server,
    connections: usize,
    duration: Duration,
    max_per_connection: usize,
    period: Option<Duration>,
) -> (Vec<Duration>, Duration) {
    let body = Bytes::from(fixture_bytes(FIXTURE));
    rt.block_on(async {
        let mut senders = Vec::new();
        for _ in 0..connections {
            senders.push(connect(server).await);
        }
        // Warm up each connection.
        for sender in &mut senders {
            for _ in 0..200 {
                review(sender, &body).await;
            }
        }
        let started = Instant::now();
        let deadline = started + duration;
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|mut sender| {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(max_per_connection.min(1 << 20));
                    let mut ticks = period.map(|p| {
                        let mut interval = tokio::time::interval(p);
                        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                        interval
                    });
                    while Instant::now() < deadline && latencies.len() < max_per_connection {
                        if let Some(ticks) = ticks.as_mut() {
                            ticks.tick().await;
                        }
                        let t = Instant::now();
                        review(&mut sender, &body).await;
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("client task"));
        }
        let wall = started.elapsed();
        all.sort();
        (all, wall)
    })
}

/// User + system CPU time of the whole process (client and server), from /proc (Linux); zero
/// elsewhere. Divided by the reviews it gives the CPU cost of one review independent of what else
/// runs on the machine.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on every Linux ABI Rust targets.
    Duration::from_millis(ticks * 10)
}

/// One measured row: reviews/s, CPU per review (µs), p50, p99, p99.9 and max (ms).
type Row = [f64; 6];

fn measure(rt: &Runtime, server: &Server, connections: usize, paced: bool) -> Row {
    let cpu_before = process_cpu();
    let (latencies, wall) = if paced {
        // The target load: 5,000 reviews/s offered over 5 connections (1 ms apart on each).
        load_paced(
            rt,
            server,
            connections,
            Duration::from_secs(5),
            100_000,
            Some(Duration::from_millis(1)),
        )
    } else {
        load(rt, server, connections, Duration::from_secs(5), 200_000)
    };
    let cpu = process_cpu().saturating_sub(cpu_before);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    [
        latencies.len() as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() / latencies.len().max(1) as f64 * 1e6,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 99.9)),
        ms(latencies.last().copied().unwrap_or_default()),
    ]
}

/// Prints the latency table; each row is measured `runs` times and shows the median, with
/// min–max when `runs` > 1.
fn latency_table(rt: &Runtime, server: &Server, runs: usize) {
    println!();
    println!(
        "Admission over TLS keep-alive, ReplicaSet fixture ({} bytes), {} CPUs shared by client and server, median of {runs} run(s) of 5 s (min–max); each review is timed from when it went out (a paced review held back by a slow one before it does not count that wait: tokio's 1 ms timer cannot pace 1 ms periods finely enough to time from the due instant)",
        fixture_bytes(FIXTURE).len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "| connections | reviews/s | CPU per review (client+server) | p50 | p99 | p99.9 | max |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (label, connections, paced) in [
        ("1", 1, false),
        ("2", 2, false),
        ("4", 4, false),
        ("5, paced at 5,000/s offered", 5, true),
    ] {
        let rows: Vec<Row> = (0..runs.max(1))
            .map(|_| measure(rt, server, connections, paced))
            .collect();
        let cell = |i: usize, unit: &str, digits: usize| {
            let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            let median = v[v.len() / 2];
            if v.len() > 1 {
                format!(
                    "{median:.digits$}{unit} ({:.digits$}–{:.digits$})",
                    v[0],
                    v[v.len() - 1]
                )
            } else {
                format!("{median:.digits$}{unit}")
            }
        };
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            cell(0, "", 0),
            cell(1, " µs", 0),
            cell(2, " ms", 3),
            cell(3, " ms", 3),
            cell(4, " ms", 3),
            cell(5, " ms", 3),
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = start_server(&rt);
    // `-- --table-only`: only the latency table (bench/run.py), repeated ADMISSION_RUNS times.
    if std::env::args().any(|a| a == "--table-only") {
        let runs = std::env::var("ADMISSION_RUNS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        latency_table(&rt, &server, runs);
        return;
    }
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    bench_handler(&mut criterion);
    bench_tls(&mut criterion, &rt, &server);
    criterion.final_summary();
    // The table is a measurement, not a test: only under `cargo bench`.
    if std::env::args().any(|a| a == "--bench") {
        latency_table(&rt, &server, 1);
    }
}
