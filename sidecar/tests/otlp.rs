//! OTLP metrics ingest through the real `monasca-sidecar` binary.
//!
//! - The real OpenTelemetry Python SDK (PyPI `opentelemetry-sdk` and
//!   `opentelemetry-exporter-otlp-proto-http`) in gunicorn with 4 workers, a MeterProvider per
//!   worker created in `post_fork`, one worker SIGKILLed: every request is counted exactly in
//!   one series without worker attributes, checked through a real Prometheus. Cumulative
//!   temporality with identical resources (start times tell the workers apart) and with
//!   worker attributes, and delta temporality.
//! - OTLP/JSON and protobuf bodies made by the real SDK; gzip; bad input answered as the OTLP
//!   specification says, the good points of a partly bad request kept.

mod common;

use common::{Sidecar, http, python, sample_value, wait_until};
use monasca_e2e::prometheus::Prometheus;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const PY_MODULES: &[&str] = &[
    "opentelemetry.sdk",
    "opentelemetry.exporter.otlp.proto.http",
    "gunicorn",
];
const WORKERS: usize = 4;
const N: usize = 120;
const M: usize = 80;

/// gunicorn runs are heavy and share gunicorn's control socket: one at a time.
static GUNICORN: Mutex<()> = Mutex::new(());

fn script_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

fn otlp_addr(sidecar: &Sidecar) -> SocketAddr {
    *sidecar
        .addrs
        .get("otlp")
        .unwrap_or_else(|| panic!("no otlp listener announced; log:\n{}", sidecar.log()))
}

/// gunicorn in its own process group; the whole group is killed on drop.
struct Gunicorn {
    child: Child,
    addr: SocketAddr,
}

impl Gunicorn {
    fn start(otlp: SocketAddr, env: &[(&str, &str)]) -> Gunicorn {
        let addr: SocketAddr = format!("127.0.0.1:{}", monasca_e2e::free_port())
            .parse()
            .expect("addr");
        let mut cmd = python(PY_MODULES);
        cmd.args(["-m", "gunicorn", "--workers", &WORKERS.to_string()])
            .args(["--bind", &addr.to_string(), "--chdir"])
            .arg(script_dir())
            .arg("-c")
            .arg(script_dir().join("otel_gunicorn_conf.py"))
            .args(["--graceful-timeout", "2", "--log-level", "warning"])
            .arg("otel_gunicorn_app:app")
            .env(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                format!("http://{otlp}/v1/metrics"),
            )
            .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start gunicorn");
        let mut g = Gunicorn { child, addr };
        let up = wait_until(Duration::from_secs(30), || {
            let exited = g.child.try_wait().ok().flatten();
            assert!(exited.is_none(), "gunicorn exited: {exited:?}");
            get(addr, "/pid").is_some()
        });
        assert!(up, "gunicorn did not answer on {addr}");
        g
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET over a fresh connection; None when it fails or is not 200.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let r = monasca_e2e::http::request(addr, "GET", path, &[], b"").ok()?;
    (r.status == 200).then(|| r.text())
}

/// Sum and number of the exposition's samples of `name` (any labels).
fn total(exposition: &str, name: &str) -> (f64, usize) {
    let prefix = format!("{name}{{");
    exposition
        .lines()
        .filter(|l| l.starts_with(&prefix) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .fold((0.0, 0), |(s, n), v| (s + v, n + 1))
}

/// The scenario: N requests, all exported; a worker SIGKILLed; M more; exact totals in one
/// series each, through Prometheus, never decreasing.
fn gunicorn_scenario(env: &[(&str, &str)], temporality: &str, identity: &str) {
    let _serial = GUNICORN.lock().unwrap_or_else(|e| e.into_inner());
    let sidecar = Sidecar::start("");
    let prom = Prometheus::start(&[sidecar.metrics_addr()]);
    let gunicorn = Gunicorn::start(otlp_addr(&sidecar), env);
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..N {
        let body = get(gunicorn.addr, "/hello").expect("GET /hello");
        let pid: u32 = body
            .trim()
            .strip_prefix("hello ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected body {body:?}"));
        served_by.insert(pid);
    }
    // Every worker exports every 500 ms: wait until all N are in the sidecar.
    let exported = wait_until(Duration::from_secs(30), || {
        total(&sidecar.metrics(), "app_requests_total") == (N as f64, 1)
    });
    assert!(
        exported,
        "after {N} requests: {:?}\n{}",
        total(&sidecar.metrics(), "app_requests_total"),
        sidecar.metrics()
    );
    prom.wait_for_scrapes(2);
    prom.check("app_requests_total", N as f64, Duration::from_secs(30));

    // The workers now (every thread of the master may fork them), before the kill.
    let master = gunicorn.child.id();
    let children = || -> Vec<u32> {
        let mut pids = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{master}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        pids
    };
    let before: Vec<u32> = children();
    // SIGKILL a worker that served requests (its counts were exported: all N are in);
    // gunicorn respawns it (a new MeterProvider).
    let victim = *served_by.iter().next_back().expect("a worker served");
    assert!(before.contains(&victim), "{victim} not among {before:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    // M more requests, and until the worker gunicorn respawned has served at least one.
    let (mut served, mut by_new) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while served < M || by_new == 0 {
        assert!(
            Instant::now() < deadline,
            "gunicorn stopped serving or never respawned (served {served}, by the new worker {by_new})"
        );
        if let Some(body) = get(gunicorn.addr, "/hello") {
            served += 1;
            let pid: u32 = body
                .trim()
                .trim_start_matches("hello ")
                .parse()
                .expect("pid");
            if !before.contains(&pid) {
                by_new += 1;
            }
        }
    }
    let all = (N + served) as f64;
    prom.check("app_requests_total", all, Duration::from_secs(60));
    prom.check(
        "app_request_duration_seconds_count",
        all,
        Duration::from_secs(30),
    );
    prom.check(
        "app_request_duration_seconds_bucket{le=\"+Inf\"}",
        all,
        Duration::from_secs(30),
    );
    // One series, no worker attribute or start time reached Prometheus.
    let series = prom.query("app_requests_total");
    assert_eq!(series.len(), 1, "{series:?}");
    let labels = series[0]["metric"].as_object().expect("labels").clone();
    for hidden in [
        "worker_id",
        "process_pid",
        "service_instance_id",
        "start",
        "instance_id",
    ] {
        assert!(!labels.contains_key(hidden), "{hidden} leaked: {labels:?}");
    }
    assert_eq!(labels["exported_job"], "otel-gunicorn", "{labels:?}");
    assert_eq!(labels["path"], "/hello", "{labels:?}");
    assert_eq!(labels["otel_scope_name"], "otel_gunicorn_app", "{labels:?}");
    // Never went backwards in any scrape Prometheus stored.
    prom.check(
        "resets(app_requests_total[10m])",
        0.0,
        Duration::from_secs(5),
    );
    // The up-down counter is a gauge summed over workers: nothing in flight.
    prom.check("app_active", 0.0, Duration::from_secs(5));
    // target_info: one series, the non-worker resource attributes.
    let info = prom.query("target_info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0]["metric"]["deployment_environment"], "test");
    assert!(info[0]["metric"].get("worker_id").is_none(), "{info:?}");
    // Every process (4, and the one gunicorn respawned) was a worker of its own, named by the
    // expected identity: a worker attribute or a stream start time.
    let workers = http(sidecar.metrics_addr(), "GET", "/v1/workers", &[], b"").text();
    let workers: serde_json::Value = serde_json::from_str(&workers).expect("workers JSON");
    let named: Vec<&serde_json::Value> = workers["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter(|w| w["source"] == "otlp" && w["labels"].get(identity).is_some())
        .collect();
    assert!(named.len() > 1, "{identity}: {workers}");
    if identity == "worker_id" {
        // The killed process is still a worker: its last values stay counted.
        let victim = victim.to_string();
        assert!(
            named
                .iter()
                .any(|w| w["labels"]["process_pid"] == victim.as_str()),
            "victim {victim} not among {workers}"
        );
    }
    // The SDK really sent what the scenario is about.
    let own = sidecar.metrics();
    let points = |t: &str| {
        sample_value(
            &own,
            &format!("monasca_sidecar_otlp_points_total{{temporality=\"{t}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let other = if temporality == "delta" {
        "cumulative"
    } else {
        "delta"
    };
    assert!(points(temporality) > 0.0, "no {temporality} points:\n{own}");
    // (Up-down counters stay cumulative under the SDK's delta preference.)
    if temporality == "cumulative" {
        assert_eq!(points(other), 0.0, "{own}");
    }
}

#[test]
fn gunicorn_cumulative_identical_resources_through_prometheus() {
    gunicorn_scenario(
        &[("OTEL_TEST_WORKER_ATTRIBUTES", "0")],
        "cumulative",
        "start",
    );
}

#[test]
fn gunicorn_cumulative_with_worker_attributes_through_prometheus() {
    gunicorn_scenario(
        &[("OTEL_TEST_WORKER_ATTRIBUTES", "1")],
        "cumulative",
        "worker_id",
    );
}

#[test]
fn gunicorn_delta_temporality_through_prometheus() {
    gunicorn_scenario(
        &[
            ("OTEL_TEST_WORKER_ATTRIBUTES", "1"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
        ],
        "delta",
        "worker_id",
    );
}

/// Bodies the real SDK encodes: (protobuf, OTLP/JSON).
fn sdk_bodies(count: usize) -> (Vec<u8>, String) {
    let out = python(&[
        "opentelemetry.sdk",
        "opentelemetry.exporter.otlp.proto.common",
    ])
    .arg(script_dir().join("otlp_bodies.py"))
    .arg(count.to_string())
    .output()
    .expect("run otlp_bodies.py");
    assert!(
        out.status.success(),
        "otlp_bodies.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = text.lines();
    let hex = lines.next().expect("hex line");
    let json = lines.next().expect("json line").to_string();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    (bytes, json)
}

fn post(addr: SocketAddr, ct: &str, body: &[u8], extra: &[(&str, &str)]) -> common::Response {
    let mut headers = vec![("Content-Type", ct)];
    headers.extend_from_slice(extra);
    http(addr, "POST", "/v1/metrics", &headers, body)
}

const JOBS: &str = "jobs_done_total{job=\"json-svc\",otel_scope_name=\"bodies\",otel_scope_version=\"2.0\",queue=\"a\"}";

#[test]
fn json_body_from_the_real_sdk() {
    let sidecar = Sidecar::start("");
    let otlp = otlp_addr(&sidecar);
    let (_, json) = sdk_bodies(5);
    let r = post(otlp, "application/json", json.as_bytes(), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Full success: an empty ExportMetricsServiceResponse.
    let resp: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON response");
    assert_eq!(resp, serde_json::json!({}), "{}", r.text());
    let text = sidecar.metrics();
    assert_eq!(sample_value(&text, JOBS), Some(5.0), "{text}");
    let hist = "job_duration_seconds_count{job=\"json-svc\",otel_scope_name=\"bodies\",otel_scope_version=\"2.0\",queue=\"a\"}";
    assert_eq!(sample_value(&text, hist), Some(5.0), "{text}");
    let depth = "queue_depth{job=\"json-svc\",otel_scope_name=\"bodies\",otel_scope_version=\"2.0\",queue=\"a\"}";
    assert_eq!(sample_value(&text, depth), Some(-3.0), "{text}");
    let temp = "temperature_celsius{job=\"json-svc\",otel_scope_name=\"bodies\",otel_scope_version=\"2.0\",room=\"1\"}";
    assert_eq!(sample_value(&text, temp), Some(7.0), "{text}");
    assert_eq!(
        sample_value(&text, "target_info{job=\"json-svc\",region=\"eu\"}"),
        Some(1.0),
        "worker.id must not be in target_info:\n{text}"
    );
    assert!(
        text.contains("monasca_sidecar_otlp_requests_total{encoding=\"json\"} 1"),
        "{text}"
    );
}

#[test]
fn protobuf_and_gzip_bodies_from_the_real_sdk() {
    use std::io::Write as _;
    let sidecar = Sidecar::start("");
    let otlp = otlp_addr(&sidecar);
    let (proto, _) = sdk_bodies(4);
    let r = post(otlp, "application/x-protobuf", &proto, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    let resp = ExportMetricsServiceResponse::decode(&r.body[..]).expect("protobuf response");
    assert_eq!(resp.partial_success, None);
    assert_eq!(sidecar.value(JOBS), Some(4.0));
    // The same worker exports a later cumulative value, gzipped.
    let (proto, _) = sdk_bodies(9);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&proto).expect("gzip");
    let gz = enc.finish().expect("gzip");
    let r = post(
        otlp,
        "application/x-protobuf",
        &gz,
        &[("Content-Encoding", "gzip")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A new start time under the same worker.id is a restart: 4 retired, then 9.
    assert_eq!(sidecar.value(JOBS), Some(13.0), "{}", sidecar.metrics());
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn sum_metric(name: &str, temporality: i32, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn point(value: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: 1_000,
        time_unix_nano: 2_000,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bad"), kv("worker.id", "1")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn bad_input_is_rejected_clearly_and_good_points_are_kept() {
    let sidecar = Sidecar::start("limits: {maxBodyBytes: 100000}\n");
    let otlp = otlp_addr(&sidecar);

    // Malformed protobuf: 400 with a google.rpc.Status.
    let r = post(
        otlp,
        "application/x-protobuf",
        b"\x0a\xff\xff\xff\xff\x0f",
        &[],
    );
    assert_eq!(r.status, 400);
    let status =
        monasca_sidecar::sources::otlp::decode::Status::decode(&r.body[..]).expect("Status");
    assert_eq!(status.code, 3);
    assert!(
        status.message.contains("malformed OTLP protobuf"),
        "{status:?}"
    );
    // Malformed JSON: 400 with a JSON Status.
    let r = post(otlp, "application/json", b"{\"resourceMetrics\": 5}", &[]);
    assert_eq!(r.status, 400);
    let status: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON status");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("malformed OTLP/JSON"),
        "{status}"
    );
    // Not an OTLP content type: 415.
    assert_eq!(post(otlp, "text/plain", b"x", &[]).status, 415);
    // Too large: 413.
    let r = post(otlp, "application/x-protobuf", &vec![0u8; 200_000], &[]);
    assert_eq!(r.status, 413);
    // Only POST.
    assert_eq!(http(otlp, "GET", "/v1/metrics", &[], b"").status, 405);

    let many: Vec<KeyValue> = (0..500).map(|i| kv(&format!("k{i}"), "v")).collect();
    let req = request(vec![
        sum_metric("good", 2, vec![point(5.0, vec![kv("a", "1")])]),
        sum_metric(
            "nan",
            2,
            vec![point(f64::NAN, vec![]), point(1.0, vec![kv("x", "ok")])],
        ),
        sum_metric("weird.temporality", 7, vec![point(1.0, vec![])]),
        sum_metric("wide", 2, vec![point(1.0, many)]),
        Metric {
            name: "hist".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    count: 3,
                    sum: Some(1.0),
                    bucket_counts: vec![1, 2],
                    explicit_bounds: vec![0.1, 0.5],
                    start_time_unix_nano: 1_000,
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        },
        Metric {
            name: "expo".into(),
            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint::default()],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        },
    ]);
    let r = post(otlp, "application/x-protobuf", &req.encode_to_vec(), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = ExportMetricsServiceResponse::decode(&r.body[..]).expect("response");
    let partial = resp.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_data_points, 5, "{partial:?}");
    let msg = &partial.error_message;
    for needle in [
        "not finite",
        "unknown aggregation temporality 7",
        "more than the limit of 128",
        "2 bucket counts for 2 bounds",
        "exponential histograms are not supported",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    let text = sidecar.metrics();
    assert_eq!(
        sample_value(&text, "good_total{a=\"1\",job=\"bad\"}"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample_value(&text, "nan_total{job=\"bad\",x=\"ok\"}"),
        Some(1.0),
        "{text}"
    );
    for (reason, n) in [
        ("non_finite", 1),
        ("invalid_temporality", 1),
        ("too_many_attributes", 1),
        ("bucket_count_mismatch", 1),
        ("exponential_histogram", 1),
    ] {
        let series = format!("monasca_sidecar_otlp_rejected_points_total{{reason=\"{reason}\"}}");
        assert_eq!(
            sample_value(&text, &series),
            Some(n as f64),
            "{series}\n{text}"
        );
    }
    assert!(!text.contains("wide_total"), "{text}");
    assert!(!text.contains("hist_bucket"), "{text}");
}
