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
        "listen: {{metrics: \"127.0.0.1:{}\", ingest: \"127.0.0.1:{}\", statsd: \"127.0.0.1:{}\", otlp: \"127.0.0.1:0\"}}\n\
         stateDir: {}\nstateInterval: 200ms\nstatsd: {{tcp: true}}\n",
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
