//! Issue 11, the ingest edges, through the real binary over real sockets: counter family names
//! normalised at ingest (`jobs` and `jobs_total` are one family), non-finite values refused
//! before anything is accumulated (JSON 400, StatsD counted and dropped), StatsD sample rates
//! and the monasca-statsd dialect, `statsd.expireAfter`, and `le` label values written as
//! client_python writes them. Every render is checked with promtool and client_python.

mod common;

use common::{Sidecar, http, run_python, sample_value, wait_until};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn push(s: &Sidecar, method: &str, path: &str, content_type: &str, body: &str) -> u16 {
    let r = http(
        s.ingest_addr(),
        method,
        path,
        &[("Content-Type", content_type)],
        body.as_bytes(),
    );
    assert!(
        r.status == 200 || r.status == 202 || r.status == 400,
        "{method} {path}: {} {}",
        r.status,
        r.text()
    );
    r.status
}

const TEXT: &str = "text/plain; version=0.0.4";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

fn json(s: &Sidecar, body: &str) -> common::Response {
    http(
        s.ingest_addr(),
        "POST",
        "/v1/ingest",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// Lines of `text` that start with `prefix`.
fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

// ---------------------------------------------------------------------------------------
// Item 4: one counter family whatever name form the worker used.

#[test]
fn counter_named_with_and_without_total_is_one_family() {
    let s = Sidecar::start("");
    // Worker 1: text 0.0.4 counter named `jobs` (client_golang and others allow it).
    let w1 = "# HELP jobs Jobs done.\n# TYPE jobs counter\njobs{queue=\"a\"} 3\n";
    assert_eq!(push(&s, "PUT", "/metrics/job/j/instance/w1", TEXT, w1), 200);
    // Worker 2: text 0.0.4 counter named `jobs_total`.
    let w2 = "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total{queue=\"a\"} 4\n";
    assert_eq!(push(&s, "PUT", "/metrics/job/j/instance/w2", TEXT, w2), 200);
    // Worker 3: OpenMetrics counter `jobs` with sample `jobs_total`.
    let w3 = "# TYPE jobs counter\njobs_total{queue=\"a\"} 1\n# EOF\n";
    assert_eq!(
        push(&s, "PUT", "/metrics/job/j/instance/w3", OPENMETRICS, w3),
        200
    );
    // Worker 4: the JSON API, counter `jobs` with value name `jobs`.
    let w4 = r#"[{"name": "jobs", "type": "counter", "help": "Jobs done.",
        "values": [{"name": "jobs", "labels": {"_id": "w4", "queue": "a", "job": "j"}, "value": 2}]}]"#;
    let r = json(&s, w4);
    assert_eq!(r.status, 200, "{}", r.text());

    let text = s.checked_metrics();
    assert_eq!(
        lines_with(&text, "# TYPE jobs"),
        vec!["# TYPE jobs_total counter"],
        "{text}"
    );
    assert_eq!(
        sample_value(&text, "jobs_total{job=\"j\",queue=\"a\"}"),
        Some(10.0),
        "{text}"
    );
    assert!(!text.contains("\njobs{"), "{text}");

    let om = s.openmetrics();
    assert_eq!(
        lines_with(&om, "# TYPE jobs"),
        vec!["# TYPE jobs counter"],
        "{om}"
    );
    assert_eq!(
        sample_value(&om, "jobs_total{job=\"j\",queue=\"a\"}"),
        Some(10.0),
        "{om}"
    );
}

// ---------------------------------------------------------------------------------------
// Item 8 at the edges: non-finite values refused before anything is accumulated.

#[test]
fn json_non_finite_counter_bucket_and_count_values_are_refused() {
    let s = Sidecar::start("");
    let good = r#"[{"name": "done_total", "type": "counter",
        "values": [{"name": "done_total", "labels": {"_id": "w1"}, "value": 5}]}]"#;
    let r = json(&s, good);
    assert_eq!(r.status, 200, "{}", r.text());

    for (what, body) in [
        (
            "NaN counter",
            r#"[{"name": "done_total", "type": "counter",
                "values": [{"name": "done_total", "labels": {"_id": "w1"}, "value": "NaN"}]}]"#,
        ),
        (
            "+Inf counter",
            r#"[{"name": "done_total", "type": "counter",
                "values": [{"name": "done_total", "labels": {"_id": "w2"}, "value": "+Inf"}]}]"#,
        ),
        (
            "overflowing counter",
            r#"[{"name": "done_total", "type": "counter",
                "values": [{"name": "done_total", "labels": {"_id": "w2"}, "value": 1e999}]}]"#,
        ),
        (
            "+Inf bucket",
            r#"[{"name": "lat", "type": "histogram", "values": [
                {"name": "lat_bucket", "labels": {"le": "1"}, "value": "+Inf"},
                {"name": "lat_bucket", "labels": {"le": "+Inf"}, "value": "+Inf"},
                {"name": "lat_sum", "labels": {}, "value": 1},
                {"name": "lat_count", "labels": {}, "value": 1}]}]"#,
        ),
        (
            "NaN count",
            r#"[{"name": "rpc", "type": "summary", "values": [
                {"name": "rpc_sum", "labels": {}, "value": 1},
                {"name": "rpc_count", "labels": {}, "value": "NaN"}]}]"#,
        ),
        (
            "NaN sum",
            r#"[{"name": "rpc", "type": "summary", "values": [
                {"name": "rpc_sum", "labels": {}, "value": "NaN"},
                {"name": "rpc_count", "labels": {}, "value": 1}]}]"#,
        ),
    ] {
        let r = json(&s, body);
        assert_eq!(r.status, 400, "{what}: {} {}", r.status, r.text());
        let reason = r.text();
        // serde_json refuses a literal beyond f64 itself ("number out of range").
        let expected = if what.starts_with("overflowing") {
            "out of range"
        } else {
            "is not a finite number"
        };
        assert!(
            reason.contains(expected) && !reason.trim_end().contains('\n'),
            "{what}: {reason:?}"
        );
    }
    // A NaN gauge is a legitimate value (no retired total to poison): still accepted.
    let r = json(
        &s,
        r#"[{"name": "temp", "type": "gauge",
            "values": [{"name": "temp", "labels": {}, "value": "NaN"}]}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let text = s.checked_metrics();
    assert_eq!(sample_value(&text, "done_total"), Some(5.0), "{text}");
    assert!(
        !text.contains("lat_bucket") && !text.contains("rpc_"),
        "{text}"
    );
}

fn statsd_addr(s: &Sidecar) -> SocketAddr {
    *s.addrs
        .get("statsd")
        .expect("the StatsD listener announced itself")
}

fn send_statsd(s: &Sidecar, datagram: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    socket
        .send_to(datagram.as_bytes(), statsd_addr(s))
        .expect("send");
}

/// Waits until `/metrics` satisfies `ready` (StatsD is flushed every 100 ms); returns it.
#[track_caller]
fn metrics_when(s: &Sidecar, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let ok = wait_until(Duration::from_secs(15), || {
        text = s.metrics();
        ready(&text)
    });
    assert!(ok, "{what} not reached; last /metrics:\n{text}");
    text
}

#[test]
fn statsd_non_finite_values_are_counted_and_dropped() {
    let s = Sidecar::start("");
    send_statsd(&s, "x:5|c\nh:1|h\ng:2|g");
    metrics_when(&s, "first values", |t| {
        sample_value(t, "x_total") == Some(5.0) && sample_value(t, "g") == Some(2.0)
    });
    // Each of these lines would make a counter, histogram or gauge non-finite.
    let bad = [
        "x:1e308|c|@0.5",
        "x:nan|c",
        "x:inf|c",
        "x:1e309|c",
        "h:1e308|h|@0.5",
        "h:-inf|ms",
        "g:NaN|g",
        "g:+inf|g",
    ];
    send_statsd(&s, &bad.join("\n"));
    send_statsd(&s, "x:1|c");
    let text = metrics_when(&s, "the valid line after the bad ones", |t| {
        sample_value(t, "x_total") == Some(6.0)
    });
    assert_eq!(
        sample_value(
            &text,
            "monasca_sidecar_statsd_errors_total{reason=\"non_finite\"}"
        ),
        Some(bad.len() as f64),
        "{text}"
    );
    assert_eq!(sample_value(&text, "h_sum"), Some(1.0), "{text}");
    assert_eq!(sample_value(&text, "h_count"), Some(1.0), "{text}");
    assert_eq!(sample_value(&text, "g"), Some(2.0), "{text}");

    // Accumulation itself overflowing is refused too: two 1e308 deltas would sum to +Inf.
    send_statsd(&s, "big:1e308|c");
    metrics_when(&s, "big_total", |t| {
        sample_value(t, "big_total") == Some(1e308)
    });
    send_statsd(&s, "big:1e308|c\nx:1|c");
    let text = metrics_when(&s, "the line after the overflow", |t| {
        sample_value(t, "x_total") == Some(7.0)
    });
    assert_eq!(sample_value(&text, "big_total"), Some(1e308), "{text}");
    assert_eq!(
        sample_value(
            &text,
            "monasca_sidecar_statsd_dropped_total{reason=\"non_finite\"}"
        ),
        Some(1.0),
        "{text}"
    );
    s.checked_metrics();
}

// ---------------------------------------------------------------------------------------
// Item 10: StatsD gauges and sample rates, the monasca dialect, expiry.

#[test]
fn statsd_sample_rate_does_not_scale_gauges() {
    let s = Sidecar::start("");
    send_statsd(&s, "g:10|g");
    metrics_when(&s, "g = 10", |t| sample_value(t, "g") == Some(10.0));
    // statsd_exporter and etsy statsd ignore the rate for gauges, relative or absolute.
    send_statsd(&s, "g:+3|g|@0.5\nc:1|c|@0.5");
    let text = metrics_when(&s, "the rated lines", |t| {
        sample_value(t, "c_total") == Some(2.0)
    });
    assert_eq!(sample_value(&text, "g"), Some(13.0), "{text}");
    send_statsd(&s, "g:-4|g|@0.25\nc:1|c|@0.5");
    let text = metrics_when(&s, "the second rated lines", |t| {
        sample_value(t, "c_total") == Some(4.0)
    });
    assert_eq!(sample_value(&text, "g"), Some(9.0), "{text}");
    s.checked_metrics();
}

/// The real monasca-statsd client: `gauge.send(name, -5)` means the value -5 (monasca-agent's
/// statsd server sets gauges, it never adjusts them), and its timers are gauges of seconds.
#[test]
fn monasca_statsd_negative_gauges_and_timers_are_absolute() {
    let s = Sidecar::start("");
    let script = r#"
import sys
import monascastatsd as mstatsd
port = int(sys.argv[1])
c = mstatsd.Client(name="demo", host="127.0.0.1", port=port, dimensions={"service": "x"})
g = c.get_gauge("queue")
g.send("depth", 10)
g.send("depth", -5)
g.send("delta", 3)
g.send("delta", +2)
t = c.get_timer()
t.timing("db_seconds", 0.5)
t.timing("db_seconds", -0.25)
print("sent")
"#;
    let port = statsd_addr(&s).port().to_string();
    assert!(run_python(&["monascastatsd"], script, &[&port]).contains("sent"));
    // Lines are counted when received and values reach the store at the next flush: wait for
    // the last value of each series itself (seen in CI: a flush between the two timings showed
    // 0.5 with all 6 lines counted). An etsy-style reading would time out here.
    let text = metrics_when(&s, "the last monasca values", |t| {
        sample_value(t, "monasca_sidecar_statsd_lines_total") == Some(6.0)
            && sample_value(t, "demo_queue_depth{service=\"x\"}") == Some(-5.0)
            && sample_value(t, "demo_queue_delta{service=\"x\"}") == Some(2.0)
            && sample_value(t, "demo_db_seconds{service=\"x\"}") == Some(-0.25)
    });
    assert_eq!(
        sample_value(&text, "demo_queue_depth{service=\"x\"}"),
        Some(-5.0),
        "{text}"
    );
    assert_eq!(
        sample_value(&text, "demo_queue_delta{service=\"x\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample_value(&text, "demo_db_seconds{service=\"x\"}"),
        Some(-0.25),
        "{text}"
    );
    s.checked_metrics();
}

/// A monasca-statsd client without dimensions sends no `|#{...}`: nothing in the line says
/// which dialect it is, so `statsd.dialect: monasca` says it for the whole listener.
#[test]
fn statsd_dialect_monasca_makes_every_gauge_absolute() {
    let s = Sidecar::start("statsd: {dialect: monasca}\n");
    let script = r#"
import sys
import monascastatsd as mstatsd
c = mstatsd.Client(host="127.0.0.1", port=int(sys.argv[1]))
g = c.get_gauge("bare")
g.send("level", 4)
g.send("level", -1)
print("sent")
"#;
    let port = statsd_addr(&s).port().to_string();
    assert!(run_python(&["monascastatsd"], script, &[&port]).contains("sent"));
    // Lines are counted when received and values reach the store at the next flush: wait for
    // the second value itself (an etsy-style adjustment would show 3 here until the timeout).
    let text = metrics_when(&s, "bare_level -1 after both lines", |t| {
        sample_value(t, "monasca_sidecar_statsd_lines_total") == Some(2.0)
            && sample_value(t, "bare_level") == Some(-1.0)
    });
    assert_eq!(sample_value(&text, "bare_level"), Some(-1.0), "{text}");

    // The default dialect (`auto`) keeps the etsy rule for plain lines: `-1|g` adjusts.
    let plain = Sidecar::start("");
    send_statsd(&plain, "level:4|g");
    metrics_when(&plain, "level 4", |t| sample_value(t, "level") == Some(4.0));
    send_statsd(&plain, "level:-1|g");
    metrics_when(&plain, "level 3", |t| sample_value(t, "level") == Some(3.0));

    // An unknown dialect is a configuration error, not a silent default.
    let dir = common::scratch_dir("dialect");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "statsd: {dialect: graphite}\n").expect("write config");
    let mut child = std::process::Command::new(monasca_e2e::workspace_binary(
        "monasca-sidecar",
        "monasca-sidecar",
    ))
    .arg("--config")
    .arg(&path)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("run monasca-sidecar");
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("sidecar output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited && !out.status.success(), "{stderr}");
    assert!(stderr.contains("dialect"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn statsd_expire_after_drops_idle_series_and_counters_never_go_back() {
    let s = Sidecar::start("statsd: {expireAfter: 3s}\n");
    send_statsd(&s, "idle:5|c\nidle_gauge:3|g\nidle_h:1|h\nbusy:1|c");
    metrics_when(&s, "the first values", |t| {
        sample_value(t, "idle_total") == Some(5.0)
            && sample_value(t, "idle_gauge") == Some(3.0)
            && sample_value(t, "monasca_sidecar_statsd_series") == Some(4.0)
    });
    // Keep `busy` updated while the others go idle, until they expire.
    let text = metrics_when(&s, "the idle series expired", |t| {
        send_statsd(&s, "busy:1|c");
        sample_value(t, "monasca_sidecar_statsd_series") == Some(1.0)
            && sample_value(t, "idle_gauge").is_none()
    });
    // The expired counter and histogram are retired: the output keeps their totals, they
    // never go backwards.
    assert_eq!(sample_value(&text, "idle_total"), Some(5.0), "{text}");
    assert_eq!(sample_value(&text, "idle_h_count"), Some(1.0), "{text}");
    assert!(sample_value(&text, "busy_total").is_some(), "{text}");
    s.checked_metrics();

    // It comes back from zero, on top of its retired total.
    send_statsd(&s, "idle:2|c");
    // Both series live again: `idle` back, `busy` kept alive by every poll (on a stalled
    // machine `busy` may expire between two polls; the next poll brings it back).
    metrics_when(&s, "the counter's return", |t| {
        send_statsd(&s, "busy:1|c");
        sample_value(t, "idle_total") == Some(7.0)
            && sample_value(t, "monasca_sidecar_statsd_series") == Some(2.0)
    });
    s.checked_metrics();

    // Off by default: nothing expires.
    let keep = Sidecar::start("");
    send_statsd(&keep, "kept:1|g");
    metrics_when(&keep, "kept", |t| sample_value(t, "kept") == Some(1.0));
    // Longer than the 3 s above.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(keep.value("kept"), Some(1.0));
}

// ---------------------------------------------------------------------------------------
// Item 11: `le` values as the client libraries write them.

/// Bucket bounds whose spelling differs between naive float formatting and client_python's
/// `floatToGoString` (Go's `%g` for positive values of 1e6 and up, Python's repr otherwise).
///
/// No negative bounds here: OpenMetrics forbids `_sum` on a histogram with negative buckets
/// and the exposition check enforces it (their spelling is covered by the unit test
/// `expose::format::bound_tests::client_python_spellings`).
const BOUNDS: &[f64] = &[
    -0.0,
    1e-7,
    1e-5,
    0.0001,
    0.000123,
    0.1,
    0.3,
    1.0,
    2.5,
    100.0,
    100000.0,
    999999.0,
    1e6,
    1234567.5,
    1.23456789e8,
    1e15,
    1e16,
    1.5e16,
    1e21,
    1.7976931348623157e308,
];

/// The `le` values client_python writes for [`BOUNDS`] (and `+Inf`), by running it.
fn client_python_le() -> Vec<String> {
    let list: Vec<String> = BOUNDS.iter().map(|b| format!("{b:e}")).collect();
    let script = r#"
import sys
from prometheus_client import CollectorRegistry, Histogram, generate_latest
bounds = [float(x) for x in sys.argv[1].split(",")]
r = CollectorRegistry()
Histogram("h", "h", buckets=bounds, registry=r).observe(1)
for line in generate_latest(r).decode().splitlines():
    if line.startswith("h_bucket{"):
        print(line.split('le="')[1].split('"')[0])
"#;
    run_python(&["prometheus_client"], script, &[&list.join(",")])
        .lines()
        .map(str::to_string)
        .collect()
}

fn le_values(exposition: &str, family: &str) -> Vec<String> {
    let prefix = format!("{family}_bucket{{");
    exposition
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| Some(l.split("le=\"").nth(1)?.split('"').next()?.to_string()))
        .collect()
}

#[test]
fn le_values_are_written_as_client_python_writes_them() {
    let expected = client_python_le();
    assert_eq!(expected.len(), BOUNDS.len() + 1, "{expected:?}");
    assert_eq!(expected.last().map(String::as_str), Some("+Inf"));

    let s = Sidecar::start(&format!(
        "statsd: {{buckets: [{}]}}\n",
        BOUNDS
            .iter()
            .map(|b| format!("{b:e}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    // The bounds pushed in Rust's own spelling (`1e6`, `1.5e16`): the sidecar parses them to
    // floats and writes them back the client_python way.
    let mut body = String::from("# TYPE pushed histogram\n");
    for (b, n) in BOUNDS.iter().enumerate() {
        body.push_str(&format!("pushed_bucket{{le=\"{n:e}\"}} {b}\n"));
    }
    body.push_str(&format!(
        "pushed_bucket{{le=\"+Inf\"}} {0}\npushed_sum 1\npushed_count {0}\n",
        BOUNDS.len()
    ));
    assert_eq!(
        push(&s, "PUT", "/metrics/job/j/instance/w1", TEXT, &body),
        200
    );
    // StatsD histograms use `statsd.buckets`.
    send_statsd(&s, "timed:1|h");

    let text = metrics_when(&s, "the StatsD histogram", |t| t.contains("timed_bucket"));
    assert_eq!(le_values(&text, "pushed"), expected, "{text}");
    assert_eq!(le_values(&text, "timed"), expected, "{text}");
    let om = s.openmetrics();
    assert_eq!(le_values(&om, "pushed"), expected, "{om}");
    assert_eq!(le_values(&om, "timed"), expected, "{om}");
    s.checked_metrics();
}
