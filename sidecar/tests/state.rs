//! `stateDir`: the real `monasca-sidecar` binary is killed (SIGKILL) or stopped (SIGTERM) and
//! started again on the same state directory; counters, buckets and `_count`s never go
//! backwards and the totals equal what the workers had acknowledged. Bad state files (empty,
//! truncated, bit-flipped, garbage, a newer format, a directory) never stop it: it starts
//! empty, says so once, counts it, keeps the file aside and keeps serving.

mod common;

use common::{Sidecar, sample_value, scratch_dir};
use monasca_e2e::free_port;
use monasca_e2e::http::request;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STATE_FILE: &str = "monasca-sidecar.state";

/// A config with fixed ports (so clients find the sidecar again after a restart) and a
/// state directory.
fn config(state: &Path) -> String {
    format!(
        "listen: {{metrics: \"127.0.0.1:{}\", ingest: \"127.0.0.1:{}\", statsd: \"127.0.0.1:{}\", otlp: \"127.0.0.1:{}\"}}\n\
         stateDir: {}\nstateInterval: 200ms\nstatsd: {{tcp: true}}\n",
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        state.display()
    )
}

fn push(s: &Sidecar, method: &str, path: &str, body: &str) {
    let r = s.push_text(method, path, body);
    assert!(r.status == 200 || r.status == 202, "{}", r.text());
}

fn loads(metrics: &str, outcome: &str) -> Option<f64> {
    sample_value(
        metrics,
        &format!("monasca_sidecar_state_loads_total{{outcome=\"{outcome}\"}}"),
    )
}

#[test]
fn departed_worker_total_survives_sigkill_and_a_returning_worker_continues() {
    let state = scratch_dir("state");
    let s = Sidecar::start(&config(&state));
    push(
        &s,
        "PUT",
        "/metrics/job/api/instance/a",
        "# TYPE rq_total counter\nrq_total 10\n",
    );
    push(
        &s,
        "PUT",
        "/metrics/job/api/instance/b",
        "# TYPE rq_total counter\nrq_total 5\n",
    );
    push(&s, "DELETE", "/metrics/job/api/instance/b", "");
    assert_eq!(s.value(r#"rq_total{job="api"}"#), Some(15.0));
    // SIGKILL right after the scrape: what the scrape showed was persisted before it.
    let s = s.restart();
    let text = s.metrics();
    assert_eq!(loads(&text, "loaded"), Some(1.0), "{}", s.log());
    assert_eq!(
        sample_value(&text, r#"rq_total{job="api"}"#),
        Some(15.0),
        "{text}"
    );
    push(
        &s,
        "PUT",
        "/metrics/job/api/instance/a",
        "# TYPE rq_total counter\nrq_total 11\n",
    );
    assert_eq!(s.value(r#"rq_total{job="api"}"#), Some(16.0));
    // The departed worker is still departed: it is not listed, its value stays retired.
    let workers = common::http(s.metrics_addr(), "GET", "/v1/workers", &[], b"").text();
    assert!(
        workers.contains("instance=a") && !workers.contains("instance=b"),
        "{workers}"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn graceful_stop_writes_the_state_and_statsd_accumulators_continue() {
    let state = scratch_dir("state");
    let mut s = Sidecar::start(&config(&state));
    let statsd = s.addrs["statsd"];
    let mut tcp = TcpStream::connect(statsd).expect("statsd tcp");
    tcp.write_all(b"jobs:3|c\nlat:250|ms\ngauge.level:7|g\n")
        .unwrap();
    drop(tcp);
    assert!(common::wait_until(Duration::from_secs(10), || {
        s.value("jobs_total") == Some(3.0)
    }));
    assert!(s.terminate().success());
    assert!(s.log().contains("state written"), "{}", s.log());
    let s = s.restart();
    assert_eq!(s.value("jobs_total"), Some(3.0), "{}", s.log());
    assert_eq!(s.value("lat_count"), Some(1.0));
    assert_eq!(s.value("gauge_level"), Some(7.0));
    let mut tcp = TcpStream::connect(s.addrs["statsd"]).expect("statsd tcp");
    tcp.write_all(b"jobs:2|c\nlat:100|ms\ngauge.level:+1|g\n")
        .unwrap();
    drop(tcp);
    assert!(
        common::wait_until(Duration::from_secs(10), || s.value("jobs_total")
            == Some(5.0)),
        "{}",
        s.metrics()
    );
    assert!(common::wait_until(Duration::from_secs(10), || {
        s.value("lat_count") == Some(2.0) && s.value("gauge_level") == Some(8.0)
    }));
    let _ = std::fs::remove_dir_all(&state);
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("STATE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("STATE_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the load generators share with the test.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    /// Incremented by the test at every restart.
    restarts: std::sync::atomic::AtomicU64,
}

/// Sends cumulative values and retries on connection errors until acknowledged (2xx): the
/// last acknowledged value is what it sent. Returns (acknowledged value, acknowledged
/// histogram count, acknowledged requests after each restart count).
fn cumulative_worker(
    addr: SocketAddr,
    load: Arc<Load>,
    acks: Arc<Mutex<Vec<u64>>>,
    slot: usize,
    request_for: impl Fn(u64) -> (String, Vec<(&'static str, &'static str)>, String),
) -> u64 {
    let mut value = 0;
    let mut acked = 0;
    while !load.stop.load(Ordering::Acquire) {
        value += 1 + (value % 3);
        let (method_path, headers, body) = request_for(value);
        let (method, path) = method_path.split_once(' ').expect("method path");
        loop {
            match request(addr, method, path, &headers, body.as_bytes()) {
                Ok(r) if r.status / 100 == 2 => break,
                Ok(r) => panic!("{method} {path} refused: {} {}", r.status, r.text()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        acked = value;
        acks.lock().unwrap()[slot] += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    acked
}

/// The app's counter-like samples (`_total`, `_bucket`, `_count`) of one exposition.
fn monotone_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("lp_") || l.starts_with("lj_") || l.starts_with("ls_"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            (name.ends_with("_total") || name.ends_with("_bucket") || name.ends_with("_count"))
                .then(|| Some((series.to_string(), value.parse().ok()?)))?
        })
        .collect()
}

#[test]
fn sigkill_at_random_moments_under_push_json_and_statsd_load_never_goes_backwards() {
    let state = scratch_dir("state");
    let mut rng = Rng::seeded();
    let mut s = Sidecar::start(&config(&state));
    let (ingest, metrics, statsd) = (s.ingest_addr(), s.metrics_addr(), s.addrs["statsd"]);
    let load = Arc::new(Load::default());
    let acks = Arc::new(Mutex::new(vec![0u64; 5]));
    let mut workers = Vec::new();
    for i in 0..3 {
        let (load, acks) = (load.clone(), acks.clone());
        workers.push(std::thread::spawn(move || {
            cumulative_worker(ingest, load, acks, i, move |v| {
                // A histogram whose buckets and count grow with the counter.
                let body = format!(
                    "# TYPE lp_requests_total counter\nlp_requests_total {v}\n\
                     # TYPE lp_latency_seconds histogram\n\
                     lp_latency_seconds_bucket{{le=\"0.1\"}} {}\nlp_latency_seconds_bucket{{le=\"1\"}} {v}\n\
                     lp_latency_seconds_bucket{{le=\"+Inf\"}} {v}\nlp_latency_seconds_sum {}\nlp_latency_seconds_count {v}\n",
                    v / 2,
                    v as f64 * 0.25
                );
                (
                    format!("PUT /metrics/job/lp/instance/w{i}"),
                    vec![("Content-Type", "text/plain; version=0.0.4")],
                    body,
                )
            })
        }));
    }
    for i in 0..2 {
        let (load, acks) = (load.clone(), acks.clone());
        workers.push(std::thread::spawn(move || {
            cumulative_worker(ingest, load, acks, 3 + i, move |v| {
                let body = format!(
                    r#"[{{"name": "lj_events_total", "type": "counter", "values": [{{"name": "lj_events_total", "labels": {{"_id": "j{i}"}}, "value": {v}}}]}}]"#
                );
                (
                    "POST /v1/ingest".to_string(),
                    vec![("Content-Type", "application/json")],
                    body,
                )
            })
        }));
    }
    // StatsD has no acknowledgement: a batch counts as acknowledged once /metrics shows its
    // marker (a gauge set to the batch number, last line of the batch: one TCP connection is
    // read in order), which, with stateDir, means it is on disk. A batch in flight at a kill
    // may be lost whole or in part; it stays unconfirmed.
    const BATCH: u64 = 20;
    let statsd_thread = {
        let load = load.clone();
        std::thread::spawn(move || {
            let (mut sent, mut confirmed, mut unconfirmed_batches) = (0u64, 0u64, 0u64);
            let marker = || {
                request(metrics, "GET", "/metrics", &[], b"")
                    .ok()
                    .filter(|r| r.status == 200)
                    .and_then(|r| sample_value(&r.text(), "ls_marker"))
            };
            let mut seq = 0u64;
            while !load.stop.load(Ordering::Acquire) {
                let restarts = load.restarts.load(Ordering::Acquire);
                let Ok(mut tcp) = TcpStream::connect(statsd) else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                seq += 1;
                let mut batch = "ls.ops:1|c\nls.dur:5|ms\n".repeat(BATCH as usize);
                batch.push_str(&format!("ls.marker:{seq}|g\n"));
                let written = tcp.write_all(batch.as_bytes()).is_ok();
                drop(tcp);
                if written {
                    sent += BATCH;
                }
                loop {
                    if marker().is_some_and(|m| m >= seq as f64) {
                        confirmed += BATCH;
                        break;
                    }
                    if load.restarts.load(Ordering::Acquire) != restarts {
                        unconfirmed_batches += 1;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            (sent, confirmed, unconfirmed_batches)
        })
    };
    // Every scrape is compared with the previous one: nothing counter-like may go down.
    let scraper = {
        let load = load.clone();
        std::thread::spawn(move || {
            let mut last: BTreeMap<String, f64> = BTreeMap::new();
            let (mut scrapes, mut violations) = (0u64, Vec::new());
            while !load.stop.load(Ordering::Acquire) {
                if let Ok(r) = request(metrics, "GET", "/metrics", &[], b"")
                    && r.status == 200
                {
                    scrapes += 1;
                    for (series, v) in monotone_samples(&r.text()) {
                        if let Some(prev) = last.get(&series)
                            && v < *prev
                        {
                            violations.push(format!("{series}: {prev} -> {v}"));
                        }
                        last.insert(series, v);
                    }
                }
                std::thread::sleep(Duration::from_millis(15));
            }
            (scrapes, violations, last)
        })
    };

    let kills: u64 = 4;
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(300 + rng.below(900)));
        s = s.restart();
        load.restarts.fetch_add(1, Ordering::AcqRel);
    }
    // Every cumulative worker is acknowledged a few more times after the last restart.
    let after_last: Vec<u64> = acks.lock().unwrap().clone();
    assert!(common::wait_until(Duration::from_secs(30), || {
        acks.lock()
            .unwrap()
            .iter()
            .zip(&after_last)
            .all(|(a, b)| *a >= b + 3)
    }));
    load.stop.store(true, Ordering::Release);
    let acked: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let (sent, confirmed, unconfirmed) = statsd_thread.join().unwrap();
    let (scrapes, violations, _) = scraper.join().unwrap();

    let text = s.metrics();
    assert!(
        violations.is_empty(),
        "went backwards: {violations:?}\n{}",
        s.log()
    );
    assert!(scrapes > 20, "only {scrapes} scrapes");
    let push_total: u64 = acked[..3].iter().sum();
    let json_total: u64 = acked[3..].iter().sum();
    assert_eq!(
        sample_value(&text, r#"lp_requests_total{job="lp"}"#),
        Some(push_total as f64),
        "{text}"
    );
    assert_eq!(
        sample_value(&text, r#"lp_latency_seconds_count{job="lp"}"#),
        Some(push_total as f64)
    );
    assert_eq!(
        sample_value(&text, "lj_events_total"),
        Some(json_total as f64),
        "{text}"
    );
    // Every confirmed StatsD batch is counted; at most the unconfirmed ones (in flight at a
    // kill, at most two per kill) are missing; nothing is counted twice.
    assert!(
        unconfirmed <= 2 * kills,
        "{unconfirmed} unconfirmed batches"
    );
    for series in ["ls_ops_total", "ls_dur_count"] {
        let v = sample_value(&text, series).expect(series) as u64;
        assert!(
            v >= confirmed && v <= sent && sent - v <= unconfirmed * BATCH,
            "{series} {v}: sent {sent}, confirmed {confirmed}, unconfirmed batches {unconfirmed}"
        );
    }
    assert_eq!(loads(&text, "loaded"), Some(1.0), "{}", s.log());
    eprintln!(
        "{kills} SIGKILLs, {scrapes} scrapes; push {push_total}, json {json_total}, statsd {} of {sent} sent ({unconfirmed} batches in flight at a kill)",
        sample_value(&text, "ls_ops_total").unwrap_or(0.0)
    );
    let _ = std::fs::remove_dir_all(&state);
}

/// A state directory holding a valid state file with `rq_total 7`; returns its bytes.
fn valid_state(state: &Path) -> Vec<u8> {
    let mut s = Sidecar::start(&config(state));
    push(
        &s,
        "PUT",
        "/metrics/job/api/instance/a",
        "# TYPE rq_total counter\nrq_total 7\n",
    );
    assert!(s.terminate().success());
    let bytes = std::fs::read(state.join(STATE_FILE)).expect("state written at shutdown");
    // The file loads: this is the baseline the damaged copies are compared with.
    let s = s.restart();
    assert_eq!(s.value(r#"rq_total{job="api"}"#), Some(7.0), "{}", s.log());
    bytes
}

fn bad_files(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with("monasca-sidecar.state.bad-")
            })
        })
        .collect()
}

#[test]
fn bad_state_files_start_empty_with_one_line_a_metric_and_the_file_kept_aside() {
    let state = scratch_dir("state");
    let good = valid_state(&state);
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let mut future = good.clone();
    future[8..12].copy_from_slice(&99u32.to_le_bytes());
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        (
            "truncated",
            Some(good[..good.len() / 2].to_vec()),
            "truncated",
        ),
        ("truncated header", Some(good[..10].to_vec()), "truncated"),
        ("one bit flipped", Some(flipped), "corrupt"),
        ("future version", Some(future), "future_version"),
        ("garbage", Some(garbage), "corrupt"),
        ("empty", Some(Vec::new()), "empty"),
        ("a directory", None, "unreadable"),
    ];
    let mut s: Option<Sidecar> = None;
    for (n, (case, bytes, outcome)) in cases.into_iter().enumerate() {
        let path = state.join(STATE_FILE);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(&path);
        match bytes {
            Some(b) => std::fs::write(&path, b).unwrap(),
            None => {
                std::fs::create_dir(&path).unwrap();
                std::fs::write(path.join("inside"), b"x").unwrap();
            }
        }
        let started = match s.take() {
            Some(old) => old.restart(),
            None => Sidecar::start(&config(&state)),
        };
        let text = started.metrics();
        let log = started.log();
        assert_eq!(loads(&text, outcome), Some(1.0), "{case}: {text}\n{log}");
        assert_eq!(loads(&text, "loaded"), Some(0.0), "{case}");
        assert_eq!(
            sample_value(&text, r#"rq_total{job="api"}"#),
            None,
            "{case}: half-loaded"
        );
        let lines = log
            .lines()
            .filter(|l| l.contains("starting with empty state"))
            .count();
        assert_eq!(lines, 1, "{case}: {log}");
        // The bad file is kept aside (the last few), and a new state is written in its place.
        let aside = bad_files(&state);
        assert_eq!(aside.len(), (n + 1).min(3), "{case}: {aside:?}");
        push(
            &started,
            "PUT",
            "/metrics/job/api/instance/b",
            "# TYPE rq_total counter\nrq_total 3\n",
        );
        assert_eq!(started.value(r#"rq_total{job="api"}"#), Some(3.0), "{case}");
        assert!(
            state.join(STATE_FILE).is_file(),
            "{case}: no new state file"
        );
        s = Some(started);
    }
    // After all that, the state written last loads.
    let s = s.unwrap().restart();
    let text = s.metrics();
    assert_eq!(loads(&text, "loaded"), Some(1.0), "{}", s.log());
    assert_eq!(sample_value(&text, r#"rq_total{job="api"}"#), Some(3.0));
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn unwritable_state_dir_is_a_clear_error_and_a_metric_and_the_sidecar_keeps_serving() {
    let scratch = scratch_dir("state");
    // A path below a regular file can be neither created nor written, even by root.
    std::fs::write(scratch.join("file"), b"").unwrap();
    let state = scratch.join("file").join("state");
    let s = Sidecar::start(&config(&state));
    push(
        &s,
        "PUT",
        "/metrics/job/api/instance/a",
        "# TYPE rq_total counter\nrq_total 4\n",
    );
    let text = s.metrics();
    assert_eq!(sample_value(&text, r#"rq_total{job="api"}"#), Some(4.0));
    assert_eq!(loads(&text, "unreadable"), Some(1.0), "{text}");
    assert!(s.log().contains("cannot create stateDir"), "{}", s.log());
    // The scrape asked for a write, which failed: counted, logged once, /metrics answered.
    let text = s.metrics();
    let errors = sample_value(&text, "monasca_sidecar_state_write_errors_total").unwrap();
    assert!(errors >= 1.0, "{text}");
    push(
        &s,
        "PUT",
        "/metrics/job/api/instance/a",
        "# TYPE rq_total counter\nrq_total 5\n",
    );
    assert_eq!(s.value(r#"rq_total{job="api"}"#), Some(5.0));
    let failures = s
        .log()
        .lines()
        .filter(|l| l.contains("cannot write the state file"))
        .count();
    assert_eq!(failures, 1, "{}", s.log());
    let _ = std::fs::remove_dir_all(&scratch);
}

/// An OTLP/JSON request with one delta counter point from `worker.id` 1.
fn otlp_delta(value: u64) -> String {
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"api"}}}},{{"key":"worker.id","value":{{"stringValue":"1"}}}}]}},
        "scopeMetrics":[{{"metrics":[{{"name":"reqs","sum":{{"aggregationTemporality":1,"isMonotonic":true,
        "dataPoints":[{{"timeUnixNano":"6","asInt":"{value}"}}]}}}}]}}]}}]}}"#
    )
}

#[test]
fn otlp_delta_totals_continue_across_sigkill() {
    let state = scratch_dir("state");
    let s = Sidecar::start(&config(&state));
    let send = |s: &Sidecar, v: u64| {
        let r = common::http(
            s.addrs["otlp"],
            "POST",
            "/v1/metrics",
            &[("Content-Type", "application/json")],
            otlp_delta(v).as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    send(&s, 2);
    send(&s, 3);
    assert_eq!(
        s.value(r#"reqs_total{job="api"}"#),
        Some(5.0),
        "{}",
        s.metrics()
    );
    let s = s.restart();
    assert_eq!(s.value(r#"reqs_total{job="api"}"#), Some(5.0));
    // The running delta total was restored: 5 + 7, not a new total of 7.
    send(&s, 7);
    assert_eq!(
        s.value(r#"reqs_total{job="api"}"#),
        Some(12.0),
        "{}",
        s.metrics()
    );
    let _ = std::fs::remove_dir_all(&state);
}

/// An OTLP/JSON request with one cumulative counter point of `worker.id` `worker`, whose
/// stream started at `start` (a new start time is a restart of that worker's counter).
fn otlp_cumulative(worker: u32, start: u64, value: u64) -> String {
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"api"}}}},{{"key":"worker.id","value":{{"stringValue":"{worker}"}}}}]}},
        "scopeMetrics":[{{"metrics":[{{"name":"jobs","sum":{{"aggregationTemporality":2,"isMonotonic":true,
        "dataPoints":[{{"startTimeUnixNano":"{start}","timeUnixNano":"{}","asInt":"{value}"}}]}}}}]}}]}}]}}"#,
        start + 1
    )
}

#[test]
fn otlp_cumulative_workers_and_their_retired_restarts_continue_across_sigkill() {
    let state = scratch_dir("state");
    let s = Sidecar::start(&config(&state));
    let send = |s: &Sidecar, worker: u32, start: u64, v: u64| {
        let r = common::http(
            s.addrs["otlp"],
            "POST",
            "/v1/metrics",
            &[("Content-Type", "application/json")],
            otlp_cumulative(worker, start, v).as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let jobs = |s: &Sidecar| s.value(r#"jobs_total{job="api"}"#);
    send(&s, 1, 100, 10);
    send(&s, 2, 100, 5);
    // Worker 2 restarts (new start time, back at 2): its 5 is retired, not lost.
    send(&s, 2, 200, 2);
    assert_eq!(jobs(&s), Some(17.0), "{}", s.metrics());
    let s = s.restart();
    assert_eq!(jobs(&s), Some(17.0), "{}", s.log());
    // Both continue from their persisted values; the retired 5 stays: 12 + 5 + 3.
    send(&s, 1, 100, 12);
    send(&s, 2, 200, 3);
    assert_eq!(jobs(&s), Some(20.0), "{}", s.metrics());
    let _ = std::fs::remove_dir_all(&state);
}

/// A scrape target on loopback answering `GET /metrics` with whatever `body` holds.
fn scrape_target(body: Arc<Mutex<String>>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind scrape target");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match std::io::Read::read(&mut stream, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = body.lock().unwrap().clone();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    addr
}

#[test]
fn scrape_targets_and_their_retired_restarts_continue_across_sigkill() {
    let state = scratch_dir("state");
    let counter = |v: u64| format!("# TYPE scraped_total counter\nscraped_total {v}\n");
    let (a, b) = (
        Arc::new(Mutex::new(counter(10))),
        Arc::new(Mutex::new(counter(5))),
    );
    let (addr_a, addr_b) = (scrape_target(a.clone()), scrape_target(b.clone()));
    let config = format!(
        "{}scrape: {{targets: [\"{addr_a}\", \"{addr_b}\"], interval: 100ms, timeout: 2s}}\n",
        config(&state)
    );
    let s = Sidecar::start(&config);
    let total = |s: &Sidecar| s.value("scraped_total");
    assert!(
        common::wait_until(Duration::from_secs(15), || total(&s) == Some(15.0)),
        "{}",
        s.metrics()
    );
    // Target b restarts (its counter back at 2): its 5 is retired into the total.
    *b.lock().unwrap() = counter(2);
    assert!(
        common::wait_until(Duration::from_secs(15), || total(&s) == Some(17.0)),
        "{}",
        s.metrics()
    );
    let s = s.restart();
    // Right after the restart, before or after the first scrape: the same total (without the
    // state it would be 10 + 2 = 12).
    assert_eq!(total(&s), Some(17.0), "{}", s.log());
    *a.lock().unwrap() = counter(11);
    assert!(
        common::wait_until(Duration::from_secs(15), || total(&s) == Some(18.0)),
        "{}\n{}",
        s.metrics(),
        s.log()
    );
    let _ = std::fs::remove_dir_all(&state);
}
