//! The Pushgateway API and `/metrics`, through the real binary over real HTTP.

mod common;

use common::{Sidecar, fixtures, http, run_python, sample_value, wait_until};
use std::time::Duration;

fn push(s: &Sidecar, method: &str, path: &str, body: &str) -> common::Response {
    http(
        s.ingest_addr(),
        method,
        path,
        &[("Content-Type", "text/plain; version=0.0.4")],
        body.as_bytes(),
    )
}

const COUNTER: &str = "# TYPE requests_total counter\nrequests_total{path=\"/a\"} ";

#[test]
fn two_workers_counter_sum_survives_deletion_and_restart() {
    let s = Sidecar::start("");
    assert_eq!(
        push(
            &s,
            "PUT",
            "/metrics/job/api/instance/w1",
            &format!("{COUNTER}10\n")
        )
        .status,
        200
    );
    assert_eq!(
        push(
            &s,
            "PUT",
            "/metrics/job/api/instance/w2",
            &format!("{COUNTER}5\n")
        )
        .status,
        200
    );
    let series = "requests_total{job=\"api\",path=\"/a\"}";
    assert_eq!(s.value(series), Some(15.0));
    s.checked_metrics();
    assert!(
        !s.metrics().contains("instance="),
        "worker label leaked:\n{}",
        s.metrics()
    );
    assert_eq!(
        http(
            s.ingest_addr(),
            "DELETE",
            "/metrics/job/api/instance/w2",
            &[],
            b""
        )
        .status,
        202
    );
    assert_eq!(s.value(series), Some(15.0));
    // w1 restarts and pushes 3.
    push(
        &s,
        "PUT",
        "/metrics/job/api/instance/w1",
        &format!("{COUNTER}3\n"),
    );
    assert_eq!(s.value(series), Some(18.0));
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn stale_worker_keeps_counting_and_live_gauges_forget_it() {
    // 3 s: long enough that a stalled machine does not make w1 stale before the first read.
    let s = Sidecar::start("staleAfter: 3s\n");
    let body = |c: u32, g: u32| {
        format!("{COUNTER}{c}\n# TYPE inflight gauge\ninflight{{_aggregate=\"livesum\"}} {g}\n")
    };
    push(&s, "PUT", "/metrics/job/api/instance/w1", &body(10, 2));
    push(&s, "PUT", "/metrics/job/api/instance/w2", &body(5, 3));
    assert_eq!(s.value("inflight{job=\"api\"}"), Some(5.0));
    // Keep w1 fresh while w2 goes stale.
    let stale = wait_until(Duration::from_secs(20), || {
        push(&s, "PUT", "/metrics/job/api/instance/w1", &body(10, 2));
        s.value("inflight{job=\"api\"}") == Some(2.0)
    });
    assert!(stale, "w2 never went stale:\n{}", s.metrics());
    assert_eq!(
        s.value("requests_total{job=\"api\",path=\"/a\"}"),
        Some(15.0)
    );
    let workers = http(s.metrics_addr(), "GET", "/v1/workers", &[], b"").text();
    let json: serde_json::Value = serde_json::from_str(&workers).unwrap();
    let w2 = json["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["labels"]["instance"] == "w2")
        .unwrap();
    assert_eq!(w2["stale"], true);
    assert_eq!(w2["source"], "push");
    assert_eq!(w2["series"], 2);
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn histogram_merges_bucket_by_bucket_and_mismatch_is_refused() {
    let s = Sidecar::start("");
    let hist = |b1: u32, b2: u32, inf: u32, sum: f64| {
        format!(
            "# TYPE lat_seconds histogram\nlat_seconds_bucket{{le=\"0.1\"}} {b1}\nlat_seconds_bucket{{le=\"1\"}} {b2}\nlat_seconds_bucket{{le=\"+Inf\"}} {inf}\nlat_seconds_sum {sum}\nlat_seconds_count {inf}\n"
        )
    };
    push(&s, "PUT", "/metrics/job/j/instance/a", &hist(1, 3, 4, 2.5));
    push(&s, "PUT", "/metrics/job/j/instance/b", &hist(2, 2, 3, 4.0));
    let expected = [("0.1", 3.0), ("1.0", 5.0), ("+Inf", 7.0)];
    let check = |s: &Sidecar, extra: f64| {
        let m = s.metrics();
        for (le, v) in expected {
            assert_eq!(
                sample_value(&m, &format!("lat_seconds_bucket{{job=\"j\",le=\"{le}\"}}")),
                Some(v + extra),
                "{m}"
            );
        }
        assert_eq!(
            sample_value(&m, "lat_seconds_count{job=\"j\"}"),
            Some(7.0 + extra)
        );
    };
    check(&s, 0.0);
    let mismatched = "# TYPE lat_seconds histogram\nlat_seconds_bucket{le=\"0.5\"} 1\nlat_seconds_bucket{le=\"+Inf\"} 1\nlat_seconds_sum 1\nlat_seconds_count 1\n";
    let r = push(&s, "PUT", "/metrics/job/j/instance/c", mismatched);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("bucket bounds"), "{}", r.text());
    assert_eq!(r.text().lines().count(), 1);
    check(&s, 0.0);
    let m = s.metrics();
    assert_eq!(
        sample_value(&m, "monasca_sidecar_histogram_layout_mismatches_total"),
        Some(1.0)
    );
    assert_eq!(
        sample_value(
            &m,
            "monasca_sidecar_ingest_errors_total{api=\"push\",reason=\"histogram_layout_mismatch\"}"
        ),
        Some(1.0)
    );
    // b restarts with one observation: buckets never go down.
    push(&s, "PUT", "/metrics/job/j/instance/b", &hist(0, 1, 1, 0.5));
    let m = s.metrics();
    assert_eq!(
        sample_value(&m, "lat_seconds_bucket{job=\"j\",le=\"0.1\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample_value(&m, "lat_seconds_bucket{job=\"j\",le=\"+Inf\"}"),
        Some(8.0)
    );
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn each_gauge_mode_over_http() {
    let s = Sidecar::start("");
    for (i, v) in [4, 10, 1].iter().enumerate() {
        let mut body = String::from("# TYPE g gauge\n");
        for mode in [
            "sum",
            "min",
            "max",
            "mean",
            "mostrecent",
            "all",
            "livesum",
            "livemin",
            "livemax",
            "livemean",
            "livemostrecent",
            "liveall",
        ] {
            body.push_str(&format!("g{{m=\"{mode}\",_aggregate=\"{mode}\"}} {v}\n"));
        }
        let r = push(&s, "PUT", &format!("/metrics/job/j/instance/w{i}"), &body);
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = s.metrics();
    for (mode, expected) in [
        ("sum", 15.0),
        ("min", 1.0),
        ("max", 10.0),
        ("mean", 5.0),
        ("mostrecent", 1.0),
    ] {
        for prefix in ["", "live"] {
            let series = format!("g{{job=\"j\",m=\"{prefix}{mode}\"}}");
            assert_eq!(sample_value(&m, &series), Some(expected), "{series}\n{m}");
        }
    }
    for (i, v) in [4.0, 10.0, 1.0].iter().enumerate() {
        for mode in ["all", "liveall"] {
            let series = format!("g{{job=\"j\",m=\"{mode}\",instance=\"w{i}\"}}");
            assert_eq!(sample_value(&m, &series), Some(*v), "{series}\n{m}");
        }
    }
    // w1 (the max, 10) leaves: live variants forget it, the others keep it.
    http(
        s.ingest_addr(),
        "DELETE",
        "/metrics/job/j/instance/w1",
        &[],
        b"",
    );
    let m = s.metrics();
    for (series, expected) in [
        ("sum", 15.0),
        ("livesum", 5.0),
        ("max", 10.0),
        ("livemax", 4.0),
        ("mean", 5.0),
        ("livemean", 2.5),
    ] {
        assert_eq!(
            sample_value(&m, &format!("g{{job=\"j\",m=\"{series}\"}}")),
            Some(expected),
            "{series}\n{m}"
        );
    }
    assert!(!m.contains("m=\"liveall\",instance=\"w1\""));
    assert!(m.contains("m=\"all\",instance=\"w1\""));
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn post_replaces_only_families_in_the_body() {
    let s = Sidecar::start("");
    push(
        &s,
        "PUT",
        "/metrics/job/j/instance/a",
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\n",
    );
    push(
        &s,
        "POST",
        "/metrics/job/j/instance/a",
        "# TYPE a gauge\na 5\n",
    );
    let m = s.metrics();
    assert_eq!(sample_value(&m, "a{job=\"j\"}"), Some(5.0));
    assert_eq!(sample_value(&m, "b{job=\"j\"}"), Some(2.0));
    push(
        &s,
        "PUT",
        "/metrics/job/j/instance/a",
        "# TYPE a gauge\na 6\n",
    );
    let m = s.metrics();
    assert_eq!(sample_value(&m, "b{job=\"j\"}"), None, "{m}");
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn path_labels_override_body_labels_and_base64_works() {
    let s = Sidecar::start("");
    // job "a/b" in URL-safe base64 without padding; body tries to set job itself.
    let r = push(
        &s,
        "PUT",
        "/metrics/job@base64/YS9i/zone/eu",
        "x{job=\"body\",zone=\"us\",k=\"v\"} 1\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.value("x{job=\"a/b\",k=\"v\",zone=\"eu\"}"),
        Some(1.0),
        "{}",
        s.metrics()
    );
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn bad_pushes_get_one_line_reasons_and_change_nothing() {
    let s = Sidecar::start("limits: {maxBodyBytes: 4096, maxSeriesPerWorker: 3}\n");
    push(
        &s,
        "PUT",
        "/metrics/job/j/instance/good",
        &format!("{COUNTER}7\n"),
    );
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "PUT",
            "/metrics/job/j/instance/bad",
            "requests_total{path=\"/a\"} 1\nrequests_total{path=\"/a\"} 2\n".into(),
            400,
            "duplicate",
        ),
        (
            "PUT",
            "/metrics/job/j/instance/bad",
            "# TYPE requests_total gauge\nrequests_total{path=\"/a\"} 1\n".into(),
            400,
            "type conflict",
        ),
        (
            "PUT",
            "/metrics/job/j/instance/bad",
            "a 1 1700000000000\n".into(),
            400,
            "timestamp",
        ),
        (
            "PUT",
            "/metrics/job/j/instance/bad",
            "a{b=\"unterminated} 1\n".into(),
            400,
            "line 1",
        ),
        (
            "PUT",
            "/metrics/job/j/instance/bad",
            "x{k=\"1\"} 1\nx{k=\"2\"} 1\nx{k=\"3\"} 1\nx{k=\"4\"} 1\n".into(),
            400,
            "limit",
        ),
        (
            "PUT",
            "/metrics/job/j/instance/bad",
            format!("# {}\n", "x".repeat(5000)),
            413,
            "limit",
        ),
        ("PUT", "/metrics/instance/bad", "a 1\n".into(), 400, "job"),
        ("GET", "/metrics/job/j", String::new(), 405, "PUT"),
        (
            "PUT",
            "/metrics/job/j/instance/bad",
            "monasca_sidecar_workers 1\n".into(),
            400,
            "reserved",
        ),
        (
            "PUT",
            "/metrics/job/j/instance/bad",
            "g{_aggregate=\"median\"} 1\n".into(),
            400,
            "_aggregate",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let r = push(&s, method, path, &body);
        assert_eq!(r.status, status, "{method} {path} {body:?}: {}", r.text());
        let text = r.text();
        assert!(text.contains(needle), "{body:?}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    }
    assert_eq!(s.value("requests_total{job=\"j\",path=\"/a\"}"), Some(7.0));
    let workers = http(s.metrics_addr(), "GET", "/v1/workers", &[], b"").text();
    assert!(!workers.contains("bad"), "{workers}");
    // Random bytes never crash the sidecar or disturb the good worker.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for i in 0..200 {
        let len = (seed % 300) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let alphabet = b"a{}=\",\\\n #01e+.-_TYPEHLP\xff\x08\x12";
                alphabet[(seed % alphabet.len() as u64) as usize]
            })
            .collect();
        let ct = if i % 2 == 0 {
            "text/plain"
        } else {
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        };
        let r = http(
            s.ingest_addr(),
            "PUT",
            &format!("/metrics/job/fuzz/instance/f{i}"),
            &[("Content-Type", ct)],
            &body,
        );
        assert!(r.status == 200 || r.status == 400, "{}", r.status);
    }
    assert_eq!(s.value("requests_total{job=\"j\",path=\"/a\"}"), Some(7.0));
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn gzip_push_and_gzip_metrics() {
    use std::io::Write as _;
    let s = Sidecar::start("");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(format!("{COUNTER}42\n").as_bytes()).unwrap();
    let body = enc.finish().unwrap();
    let r = http(
        s.ingest_addr(),
        "PUT",
        "/metrics/job/z",
        &[("Content-Encoding", "gzip")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(
        s.metrics_addr(),
        "GET",
        "/metrics",
        &[("Accept-Encoding", "gzip")],
        b"",
    );
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut text)
        .unwrap();
    assert_eq!(
        sample_value(&text, "requests_total{job=\"z\",path=\"/a\"}"),
        Some(42.0)
    );
    let r = http(
        s.ingest_addr(),
        "PUT",
        "/metrics/job/z",
        &[("Content-Encoding", "gzip")],
        b"not gzip at all",
    );
    assert_eq!(r.status, 400);
    let r = http(
        s.ingest_addr(),
        "PUT",
        "/metrics/job/z",
        &[("Content-Encoding", "br")],
        b"x 1\n",
    );
    assert_eq!(r.status, 400);
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

/// A counter family of `n` series, about 60 bytes a line.
fn bulk_body(n: usize) -> String {
    let mut body = String::from("# TYPE bulk_total counter\n");
    for i in 0..n {
        body.push_str(&format!(
            "bulk_total{{endpoint=\"/v2.0/metrics/{i}\",status=\"{}\"}} {i}\n",
            200 + i % 5
        ));
    }
    body
}

#[test]
fn freed_body_memory_is_returned_after_a_burst_of_large_pushes() {
    let s = Sidecar::start("");
    let trims = |s: &Sidecar| {
        let text = s.metrics();
        sample_value(&text, "monasca_sidecar_allocator_trims_total")
    };
    assert_eq!(trims(&s), Some(0.0));
    // Below the threshold (4 MiB of bodies since the last trim): nothing to give back yet.
    let body = bulk_body(40_000);
    assert!(body.len() > 2 << 20 && body.len() < 4 << 20);
    assert_eq!(
        push(&s, "PUT", "/metrics/job/bulk/instance/a", &body).status,
        200
    );
    assert_eq!(trims(&s), Some(0.0));
    // The second large body ends a burst past the threshold: one trim, and no value is lost.
    assert_eq!(
        push(&s, "PUT", "/metrics/job/bulk/instance/b", &body).status,
        200
    );
    assert_eq!(trims(&s), Some(1.0));
    assert_eq!(
        push(&s, "PUT", "/metrics/job/small", &format!("{COUNTER}1\n")).status,
        200
    );
    assert_eq!(trims(&s), Some(1.0));
    let text = s.metrics();
    assert_eq!(
        sample_value(
            &text,
            "bulk_total{endpoint=\"/v2.0/metrics/39999\",job=\"bulk\",status=\"204\"}"
        ),
        Some(2.0 * 39_999.0)
    );
    assert_eq!(
        sample_value(&text, "monasca_sidecar_series"),
        Some(40_001.0)
    );
    s.checked_metrics();
}

#[test]
fn go_client_protobuf_push_fixture() {
    let s = Sidecar::start("");
    let body = std::fs::read(fixtures().join("wire/go-push-body.bin")).unwrap();
    let headers = std::fs::read_to_string(fixtures().join("wire/go-push-headers.txt")).unwrap();
    let ct = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap()
        .trim()
        .to_string();
    let r = http(
        s.ingest_addr(),
        "PUT",
        "/metrics/job/gojob/instance/w1",
        &[("Content-Type", &ct)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(
        s.ingest_addr(),
        "PUT",
        "/metrics/job/gojob/instance/w2",
        &[("Content-Type", &ct)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let m = s.metrics();
    assert_eq!(
        sample_value(&m, "go_jobs_processed_total{job=\"gojob\",queue=\"a\"}"),
        Some(20.0),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "go_job_seconds_bucket{job=\"gojob\",le=\"0.01\"}"),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "go_job_seconds_bucket{job=\"gojob\",le=\"+Inf\"}"),
        Some(20.0),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "go_job_seconds_count{job=\"gojob\"}"),
        Some(20.0),
        "{m}"
    );
    assert!(
        m.contains("# HELP go_job_seconds Job duration in seconds.\n"),
        "{m}"
    );
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn negotiates_openmetrics_for_prometheus_and_text_by_default() {
    let s = Sidecar::start("");
    push(
        &s,
        "PUT",
        "/metrics/job/j",
        "# HELP requests_total Requests \"quoted\" \\ done.\n# TYPE requests_total counter\nrequests_total{path=\"a\\\"b\\\\c\\nd,e{f}\"} 3\n",
    );
    let prometheus_accepts = [
        // Prometheus 2.x before scrape_protocols
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        // Prometheus 2.49+ (scrape_protocols defaults)
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        // Prometheus 3.x
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    ];
    for accept in prometheus_accepts {
        let r = http(
            s.metrics_addr(),
            "GET",
            "/metrics",
            &[("Accept", accept)],
            b"",
        );
        assert_eq!(
            r.header("Content-Type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        let text = r.text();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE requests counter\n"), "{text}");
        assert!(
            text.contains("# HELP requests Requests \\\"quoted\\\" \\\\ done.\n"),
            "{text}"
        );
        assert!(
            text.contains("requests_total{job=\"j\",path=\"a\\\"b\\\\c\\nd,e{f}\"} 3\n"),
            "{text}"
        );
    }
    for accept in [
        None,
        Some("text/plain;version=0.0.4"),
        Some("application/json"),
        Some("*/*"),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let r = http(s.metrics_addr(), "GET", "/metrics", &headers, b"");
        assert_eq!(
            r.header("Content-Type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = r.text();
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains("# HELP requests_total Requests \"quoted\" \\\\ done.\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE requests_total counter\n"), "{text}");
    }
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn families_are_sorted_and_never_interleaved() {
    let s = Sidecar::start("");
    push(
        &s,
        "PUT",
        "/metrics/job/j/instance/a",
        "zeta 1\nalpha{k=\"1\"} 1\nmid 1\n",
    );
    push(
        &s,
        "PUT",
        "/metrics/job/j/instance/b",
        "alpha{k=\"2\"} 1\nzeta 2\n",
    );
    let m = s.metrics();
    let names: Vec<&str> = m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let mut seen = std::collections::HashSet::new();
    let mut last = "";
    for l in m.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap();
        if name != last {
            assert!(seen.insert(name), "{name} interleaved:\n{m}");
            last = name;
        }
    }
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn real_python_clients_push_to_gateway() {
    let s = Sidecar::start("");
    let script = r#"
import sys
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, push_to_gateway
gateway, worker = sys.argv[1], int(sys.argv[2])
reg = CollectorRegistry()
c = Counter('app_requests', 'Requests.', ['method'], registry=reg)
g = Gauge('app_queue_depth', 'Queue depth.', registry=reg)
h = Histogram('app_latency_seconds', 'Latency.', buckets=(0.1, 1.0), registry=reg)
sm = Summary('app_payload_bytes', 'Payload.', registry=reg)
c.labels('GET').inc(10 * (worker + 1))
c.labels('POST').inc(worker)
g.set(worker + 1)
for i in range(worker + 1):
    h.observe(0.05)
    h.observe(0.5 * (i % 2))
    sm.observe(100)
push_to_gateway(gateway, job='api', registry=reg, grouping_key={'instance': 'worker-%d' % worker})
"#;
    let children: Vec<std::process::Child> = (0..4)
        .map(|w| {
            common::python(&["prometheus_client"])
                .arg("-c")
                .arg(script)
                .arg(s.ingest_url())
                .arg(w.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let m = s.metrics();
    // GET: 10+20+30+40, POST: 0+1+2+3
    assert_eq!(
        sample_value(&m, "app_requests_total{job=\"api\",method=\"GET\"}"),
        Some(100.0),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "app_requests_total{job=\"api\",method=\"POST\"}"),
        Some(6.0),
        "{m}"
    );
    assert_eq!(sample_value(&m, "app_queue_depth{job=\"api\"}"), Some(10.0));
    // observations: worker w makes w+1 of 0.05 and w+1 of 0.5*(i%2) -> 20 in total
    assert_eq!(
        sample_value(&m, "app_latency_seconds_count{job=\"api\"}"),
        Some(20.0)
    );
    assert_eq!(
        sample_value(&m, "app_latency_seconds_bucket{job=\"api\",le=\"+Inf\"}"),
        Some(20.0)
    );
    // 0.05s: 10, zeros: (1+1+2+2)=6 -> le=0.1 has 16; 0.5s: 4 -> le=1.0 has 20
    assert_eq!(
        sample_value(&m, "app_latency_seconds_bucket{job=\"api\",le=\"0.1\"}"),
        Some(16.0),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "app_latency_seconds_bucket{job=\"api\",le=\"1.0\"}"),
        Some(20.0)
    );
    assert_eq!(
        sample_value(&m, "app_payload_bytes_count{job=\"api\"}"),
        Some(10.0)
    );
    assert_eq!(
        sample_value(&m, "app_payload_bytes_sum{job=\"api\"}"),
        Some(1000.0)
    );
    assert!(!m.contains("worker-"), "{m}");
    assert!(!m.contains("_created"), "{m}");
    let workers: serde_json::Value =
        serde_json::from_str(&http(s.metrics_addr(), "GET", "/v1/workers", &[], b"").text())
            .unwrap();
    assert_eq!(workers["workers"].as_array().unwrap().len(), 4);
    let _ = run_python;
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

/// Runs a prometheus_client script with the sidecar's push URL and `args`; it must succeed.
fn run_push_script(s: &Sidecar, script: &str, args: &[String]) {
    let status = common::python(&["prometheus_client"])
        .arg("-c")
        .arg(script)
        .arg(s.ingest_url())
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Each series has its value in the exposition `m`.
fn assert_samples(m: &str, expected: &[(&str, f64)]) {
    for (series, value) in expected {
        assert_eq!(sample_value(m, series), Some(*value), "{series}\n{m}");
    }
}

/// A pushing worker restarts under the same grouping key (real prometheus_client processes,
/// one per life). By its first push the new process has counted a rare outcome back up to
/// its old value, and observed as many latencies as before: only `outcome="ok"` went down.
/// Every count of both lives must show (the Java client's e2e test once lost one here).
#[test]
fn a_restarted_python_worker_counts_both_lives() {
    let s = Sidecar::start("");
    let script = r#"
import sys
from prometheus_client import CollectorRegistry, Counter, Histogram, push_to_gateway
gateway, ok, failed, observed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
reg = CollectorRegistry()
c = Counter('orders_processed', 'Orders.', ['outcome'], registry=reg)
h = Histogram('order_seconds', 'Latency.', buckets=(0.1, 1.0), registry=reg)
c.labels('ok').inc(ok)
c.labels('failed').inc(failed)
for _ in range(observed):
    h.observe(0.05)
push_to_gateway(gateway, job='orders', registry=reg, grouping_key={'instance': 'worker-1'})
"#;
    let life = |ok: u32, failed: u32, observed: u32| {
        run_push_script(&s, script, &[ok, failed, observed].map(|n| n.to_string()));
    };
    life(69, 1, 3);
    life(10, 1, 4);
    let m = s.metrics();
    assert_samples(
        &m,
        &[
            (
                "orders_processed_total{job=\"orders\",outcome=\"ok\"}",
                79.0,
            ),
            (
                "orders_processed_total{job=\"orders\",outcome=\"failed\"}",
                2.0,
            ),
            ("order_seconds_count{job=\"orders\"}", 7.0),
            ("order_seconds_bucket{job=\"orders\",le=\"0.1\"}", 7.0),
        ],
    );
    assert_eq!(
        sample_value(&m, "monasca_sidecar_worker_restarts_total"),
        Some(1.0),
        "{m}"
    );
    // The new life continues from there.
    life(11, 2, 4);
    let m = s.metrics();
    assert_eq!(
        sample_value(
            &m,
            "orders_processed_total{job=\"orders\",outcome=\"failed\"}"
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample_value(&m, "monasca_sidecar_worker_restarts_total"),
        Some(1.0),
        "{m}"
    );
    s.checked_metrics();
}

/// The same with the process collector in the registry (as the default registry has): a
/// restarted worker whose every counter is already back at or above its old value by its
/// first push is told by its new `process_start_time_seconds`.
#[test]
fn a_restarted_python_worker_with_a_process_collector_counts_both_lives() {
    let s = Sidecar::start("");
    let script = r#"
import sys, time
from prometheus_client import CollectorRegistry, Counter, ProcessCollector, push_to_gateway
gateway, ok, failed, cpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
# Work until the process has used `cpu` seconds of CPU: its process_cpu_seconds_total.
while time.process_time() < cpu:
    pass
reg = CollectorRegistry()
ProcessCollector(registry=reg)
c = Counter('orders_processed', 'Orders.', ['outcome'], registry=reg)
c.labels('ok').inc(ok)
c.labels('failed').inc(failed)
push_to_gateway(gateway, job='orders', registry=reg, grouping_key={'instance': 'worker-1'})
"#;
    let life = |ok: u32, failed: u32, cpu: f64| {
        run_push_script(
            &s,
            script,
            &[ok.to_string(), failed.to_string(), cpu.to_string()],
        );
    };
    life(5, 1, 0.0);
    let m = s.metrics();
    assert!(
        sample_value(&m, "process_start_time_seconds{job=\"orders\"}").is_some(),
        "the process collector pushed no start time:\n{m}"
    );
    // A start time within the sidecar's jitter allowance of the first is the same process
    // (Go's moves by a second in a live process): the first process started before it pushed,
    // so the second one, started after this pause, starts well past it.
    std::thread::sleep(Duration::from_secs_f64(
        monasca_sidecar::store::START_TIME_JITTER_SECONDS + 0.5,
    ));
    // The new process uses more CPU than the first before it pushes, so that no counter at
    // all goes down (process_cpu_seconds_total included): only the start time tells.
    let first_cpu = sample_value(&m, "process_cpu_seconds_total{job=\"orders\"}")
        .expect("process_cpu_seconds_total");
    life(6, 1, first_cpu + 0.3);
    assert_samples(
        &s.metrics(),
        &[
            (
                "orders_processed_total{job=\"orders\",outcome=\"ok\"}",
                11.0,
            ),
            (
                "orders_processed_total{job=\"orders\",outcome=\"failed\"}",
                2.0,
            ),
            ("monasca_sidecar_worker_restarts_total", 1.0),
            ("monasca_sidecar_counter_resets_total", 0.0),
        ],
    );
    s.checked_metrics();
}

/// Go's client re-reads the boot time at every collect, so a live process's start time moves
/// by a second now and then: its counters continue. Two processes pushing under one grouping
/// key show a start time that goes back: counted and named, not taken as a restart.
#[test]
fn a_start_time_that_jitters_is_one_process_and_one_that_goes_back_is_counted() {
    let s = Sidecar::start("");
    let body = |jobs: u32, start: f64| {
        format!(
            "{COUNTER}{jobs}\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start}\n"
        )
    };
    let path = "/metrics/job/api/instance/w1";
    for (jobs, start) in [(5, 1.7e9 + 0.25), (6, 1.7e9 + 1.25), (7, 1.7e9 + 0.25)] {
        assert_eq!(push(&s, "PUT", path, &body(jobs, start)).status, 200);
    }
    let m = s.metrics();
    for (name, value) in [
        ("requests_total{job=\"api\",path=\"/a\"}", 7.0),
        ("monasca_sidecar_worker_restarts_total", 0.0),
        ("monasca_sidecar_worker_start_time_regressions_total", 0.0),
    ] {
        assert_eq!(sample_value(&m, name), Some(value), "{name} in\n{m}");
    }
    // Another process under the same key, started an hour before the first.
    assert_eq!(
        push(&s, "PUT", path, &body(100, 1.7e9 - 3600.0)).status,
        200
    );
    let m = s.metrics();
    for (name, value) in [
        ("monasca_sidecar_worker_restarts_total", 0.0),
        ("monasca_sidecar_worker_start_time_regressions_total", 1.0),
    ] {
        assert_eq!(sample_value(&m, name), Some(value), "{name} in\n{m}");
    }
}

#[test]
fn health_endpoints_and_unknown_paths() {
    let s = Sidecar::start("");
    assert_eq!(
        http(s.metrics_addr(), "GET", "/healthz", &[], b"").status,
        200
    );
    assert_eq!(
        http(s.metrics_addr(), "GET", "/readyz", &[], b"").status,
        200
    );
    assert_eq!(http(s.metrics_addr(), "GET", "/nope", &[], b"").status, 404);
    assert_eq!(
        http(s.metrics_addr(), "POST", "/metrics", &[], b"").status,
        405
    );
    // The metrics listener does not accept pushes.
    assert_eq!(
        http(s.metrics_addr(), "PUT", "/metrics/job/x", &[], b"a 1\n").status,
        404
    );
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}

#[test]
fn sigterm_exits_cleanly() {
    let mut s = Sidecar::start("");
    let status = s.terminate();
    assert!(status.success(), "{status:?}\n{}", s.log());
}

#[test]
fn config_reload_applies_rules_and_survives_a_bad_file() {
    let s = Sidecar::start("");
    push(
        &s,
        "PUT",
        "/metrics/job/j/instance/a",
        "# TYPE inflight gauge\ninflight 3\n",
    );
    push(
        &s,
        "PUT",
        "/metrics/job/j/instance/b",
        "# TYPE inflight gauge\ninflight 5\n",
    );
    assert_eq!(s.value("inflight{job=\"j\"}"), Some(8.0));
    let listen = "listen: {metrics: \"127.0.0.1:0\", ingest: \"127.0.0.1:0\", statsd: \"127.0.0.1:0\", otlp: \"127.0.0.1:0\"}\n";
    std::fs::write(
        &s.config_path,
        format!("{listen}aggregation: {{rules: [{{match: '^inflight$', mode: max}}]}}\n"),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || s.value("inflight{job=\"j\"}")
            == Some(5.0)),
        "{}",
        s.metrics()
    );
    std::fs::write(
        &s.config_path,
        format!("{listen}aggregation: {{rules: [{{match: '(', mode: max}}]}}\n"),
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || s
        .value("monasca_sidecar_config_reload_errors_total")
        == Some(1.0)));
    assert_eq!(s.value("inflight{job=\"j\"}"), Some(5.0));
    assert!(
        s.log().contains("keeping the last good configuration"),
        "{}",
        s.log()
    );
    // Every scenario leaves a valid exposition in both formats.
    s.checked_metrics();
}
