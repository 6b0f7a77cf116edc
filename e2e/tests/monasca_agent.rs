//! The consumer Monasca really runs: monasca-agent 10.x (PyPI), its own `prometheus` check with a
//! static endpoint, scraping a real sidecar that several prometheus_client workers pushed to
//! while one of them was SIGKILLed and restarted. The measurements the check's real aggregator
//! produces (names, dimensions, values: what the agent's forwarder would post to the Monasca API)
//! must be the aggregated ones, with no per-worker dimension; the samples the agent cannot carry
//! are named with the reason the agent refuses them.
//!
//! monasca-agent lives in its own virtualenv (`bash ci/test.sh` creates it from
//! `e2e/py/requirements-monasca-agent.txt` under `~/.cache/monasca-sidecar/`), so that its
//! dependencies never change the system's prometheus_client.

use monasca_e2e::push_worker::PushWorker;
use monasca_e2e::sidecar::{Sidecar, http};
use std::path::PathBuf;
use std::process::Command;

const AGENT_CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/monasca_agent_check.py");

/// The python of the monasca-agent virtualenv (`MONASCA_AGENT_PYTHON` overrides).
fn agent_python() -> PathBuf {
    if let Ok(p) = std::env::var("MONASCA_AGENT_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("MONASCA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/monasca-sidecar")
        });
    let python = cache.join("monasca-agent-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: monasca-agent is installed in its own virtualenv by `bash ci/test.sh` \
         (from e2e/py/requirements-monasca-agent.txt)",
        python.display()
    );
    python
}

/// Runs the agent's check once; returns its JSON report.
fn run_agent_check(sidecar: &Sidecar) -> serde_json::Value {
    let endpoint = format!("http://{}/metrics", sidecar.metrics_addr());
    let out = Command::new(agent_python())
        .arg(AGENT_CHECK)
        .arg(&endpoint)
        .arg(r#"{"cluster": "e2e"}"#)
        .arg(r#"{"service": "monasca-api", "component": "api"}"#)
        .output()
        .expect("run monasca_agent_check.py");
    assert!(
        out.status.success(),
        "the monasca-agent check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad report ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The measurement `name` with exactly `dimensions`, or a panic listing what there is.
fn measurement<'a>(
    report: &'a serde_json::Value,
    name: &str,
    dimensions: &[(&str, &str)],
) -> &'a serde_json::Value {
    let all = report["measurements"].as_array().expect("measurements");
    let want: serde_json::Map<String, serde_json::Value> = dimensions
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    all.iter()
        .find(|m| m["name"] == name && m["dimensions"].as_object() == Some(&want))
        .unwrap_or_else(|| {
            let same_name: Vec<_> = all.iter().filter(|m| m["name"] == name).collect();
            panic!("no measurement {name} with dimensions {want:?}; with that name: {same_name:#?}")
        })
}

fn value(m: &serde_json::Value) -> f64 {
    m["value"].as_f64().expect("numeric value")
}

#[test]
fn monasca_agent_prometheus_check_reports_the_aggregate_of_all_workers() {
    let python = agent_python();
    let sidecar = Sidecar::start("");
    let gateway = sidecar.ingest_url();

    // Three workers push; w1 is SIGKILLed after a few pushes and comes back from zero.
    // w1 blocks after its 4th push, where it is killed: no push is in flight then.
    let mut workers: Vec<PushWorker> = (0..3)
        .map(|i| {
            let (pushes, pause_after) = if i == 1 { (1000, 4) } else { (12, 0) };
            PushWorker::start_pausing(&gateway, &format!("w{i}"), pushes, 0.1, pause_after)
        })
        .collect();
    let killed_last = workers.remove(1).kill_after(4);
    let restarted = PushWorker::start(&gateway, "w1", 5, 0.1);
    workers.push(restarted);
    let total = killed_last + workers.into_iter().map(PushWorker::finish).sum::<u64>();
    assert_eq!(total, 12 + 12 + killed_last + 5);
    println!("workers pushed {total} jobs in all (w1 killed at {killed_last}, then 5 more)");

    // Label names and values Monasca cannot carry, pushed by one more worker.
    let long = "x".repeat(300);
    let edge = format!(
        "# TYPE app_edge gauge\n\
         app_edge{{path=\"/v2.0/metrics?tenant=a\"}} 1\n\
         app_edge{{region=\"east,west\"}} 2\n\
         app_edge{{empty=\"\"}} 3\n\
         app_edge{{note=\"{long}\"}} 4\n\
         app_edge{{kind=\"inf\"}} +Inf\n\
         app_edge{{kind=\"nan\"}} NaN\n\
         app_edge{{kind=\"ok\", quoted=\"it's\"}} 7\n"
    );
    let r = http(
        sidecar.ingest_addr(),
        "PUT",
        "/metrics/job/edge/instance/e0",
        &[("Content-Type", "text/plain; version=0.0.4")],
        edge.as_bytes(),
    );
    assert!(
        r.status == 200 || r.status == 202,
        "edge push: {}",
        r.text()
    );

    let report = run_agent_check(&sidecar);
    println!(
        "monasca-agent {} ({}): {} samples parsed, {} measurements, {} refused, {} NaN skipped",
        report["agent"],
        python.display(),
        report["samples"],
        report["measurements"].as_array().map_or(0, Vec::len),
        report["rejected"].as_array().map_or(0, Vec::len),
        report["nan_skipped"].as_array().map_or(0, Vec::len),
    );
    assert_eq!(
        report["errors"],
        serde_json::json!([]),
        "the check logged errors"
    );
    assert!(
        report["agent"]
            .as_str()
            .is_some_and(|v| v.starts_with("10.")),
        "expected monasca-agent 10.x, got {}",
        report["agent"]
    );

    // The counter: one measurement, the sum over workers, the killed worker's work kept.
    let dims = [
        ("cluster", "e2e"),
        ("service", "monasca-api"),
        ("component", "api"),
        ("job", "pushapp"),
    ];
    let jobs = measurement(&report, "app_jobs_total", &dims);
    assert_eq!(value(jobs), total as f64, "app_jobs_total");
    // The histogram: every observation was 0.05 s, so each bucket holds all of them.
    for le in ["0.1", "1.0", "+Inf"] {
        let mut d = dims.to_vec();
        d.push(("le", le));
        let bucket = measurement(&report, "app_job_seconds_bucket", &d);
        assert_eq!(
            value(bucket),
            total as f64,
            "app_job_seconds_bucket le={le}"
        );
    }
    assert_eq!(
        value(measurement(&report, "app_job_seconds_count", &dims)),
        total as f64
    );
    let sum = value(measurement(&report, "app_job_seconds_sum", &dims));
    assert!(
        (sum - 0.05 * total as f64).abs() < 1e-9,
        "app_job_seconds_sum = {sum}"
    );
    // No per-worker dimension reached Monasca, and nothing was sent twice.
    let measurements = report["measurements"].as_array().expect("measurements");
    for m in measurements {
        for worker_label in ["instance", "pid", "worker", "_id"] {
            assert!(
                m["dimensions"].get(worker_label).is_none(),
                "per-worker dimension {worker_label} in {m}"
            );
        }
        assert!(
            m["dimensions"].get("hostname").is_none(),
            "the prometheus check suppresses hostname: {m}"
        );
    }
    let app: Vec<_> = measurements
        .iter()
        .filter(|m| {
            m["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("app_jobs") || n.starts_with("app_job_seconds"))
        })
        .collect();
    assert_eq!(
        app.len(),
        6,
        "app_jobs_total, 3 buckets, _count, _sum: {app:#?}"
    );
    // The sidecar's own metrics come along (it is one target).
    let workers_gauge = measurements
        .iter()
        .find(|m| m["name"] == "monasca_sidecar_workers")
        .expect("monasca_sidecar_workers measurement");
    assert!(
        value(workers_gauge) >= 3.0,
        "workers = {}",
        value(workers_gauge)
    );

    // What Monasca cannot carry. An empty label value is dropped by the check (the measurement
    // keeps its other dimensions); a ',' '=' or a value over 255 characters, or an infinite
    // value, makes monasca-common refuse the whole sample; NaN is skipped.
    let edge_dims = [
        ("cluster", "e2e"),
        ("service", "monasca-api"),
        ("component", "api"),
        ("job", "edge"),
    ];
    assert_eq!(value(measurement(&report, "app_edge", &edge_dims)), 3.0);
    let mut ok = edge_dims.to_vec();
    ok.extend([("kind", "ok"), ("quoted", "it's")]);
    assert_eq!(value(measurement(&report, "app_edge", &ok)), 7.0);
    let rejected = report["rejected"].as_array().expect("rejected");
    let reasons: Vec<(String, String)> = rejected
        .iter()
        .map(|r| {
            let labels = r["labels"].as_object().expect("labels");
            let label = labels
                .iter()
                .find(|(k, _)| k.as_str() != "job")
                .map(|(k, _)| k.clone())
                .unwrap_or_default();
            (label, r["error"].as_str().unwrap_or("?").to_string())
        })
        .collect();
    for r in rejected {
        println!(
            "refused by monasca-agent: {} {} = {} ({})",
            r["name"], r["labels"], r["value"], r["reason"]
        );
    }
    let expected = [
        ("path", "InvalidDimensionValue"),
        ("region", "InvalidDimensionValue"),
        ("note", "InvalidDimensionValue"),
        ("kind", "InvalidValue"),
    ];
    for (label, error) in expected {
        assert!(
            reasons.iter().any(|(l, e)| l == label && e == error),
            "expected the sample with label {label} refused with {error}; refused: {reasons:?}"
        );
    }
    assert_eq!(
        rejected.len(),
        expected.len(),
        "only the expected samples are refused: {reasons:?}"
    );
    assert!(
        rejected.iter().all(|r| r["name"] == "app_edge"),
        "{rejected:?}"
    );
    let nan = report["nan_skipped"].as_array().expect("nan_skipped");
    assert_eq!(nan.len(), 1, "{nan:?}");
    // Every sample the agent parsed is accounted for.
    assert_eq!(
        report["samples"].as_u64().expect("samples") as usize,
        measurements.len() + rejected.len() + nan.len(),
        "parsed samples = measurements + refused + NaN"
    );
}

/// A pod as the operator's webhook returns it: `monasca_operator::inject::inject` decides, its
/// JSON patch is applied, and the kubelet's view (a pod IP) is added.
fn injected_pod(native_sidecar: &str) -> serde_json::Value {
    use monasca_operator::inject::{Decision, NativeSidecars, PodRequest, Settings, inject};
    let sidecar: monasca_crds::MetricsSidecar = serde_json::from_value(serde_json::json!({
        "apiVersion": "monasca.openstack.org/v1alpha1",
        "kind": "MetricsSidecar",
        "metadata": {"name": "default", "namespace": "monasca"},
        "spec": {"multiprocess": true, "nativeSidecar": native_sidecar},
    }))
    .expect("MetricsSidecar");
    let mut pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("monasca-api-{native_sidecar}"),
            "namespace": "monasca",
            "labels": {"app": "monasca-api"},
            "annotations": {"monasca.openstack.org/inject": "true"},
        },
        "spec": {"containers": [{
            "name": "api",
            "image": "monasca-api:test",
            "ports": [{"name": "http", "containerPort": 8070}],
        }]},
    });
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod.clone()).expect("Pod");
    let settings = Settings {
        operator_namespace: "monasca-system".into(),
        sidecar_image: "monasca-sidecar:test".into(),
        native_sidecars: NativeSidecars::Available.into(),
        sidecar_checks: Default::default(),
    };
    let request = PodRequest {
        operation: &kube::core::admission::Operation::Create,
        namespace: "monasca",
        pod: &typed,
    };
    match inject(&request, None, &[std::sync::Arc::new(sidecar)], &settings) {
        Decision::Patch { patch, .. } => json_patch::patch(&mut pod, &patch).expect("apply patch"),
        other => panic!("not injected: {other:?}"),
    }
    pod["status"] = serde_json::json!({"podIP": "10.1.2.3", "phase": "Running"});
    pod
}

/// Runs the agent's pod autodetection over `pods`; returns the endpoints it derived.
fn agent_discovers(pods: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let dir = monasca_e2e::scratch_dir("kubelet");
    let file = dir.join("pods.json");
    std::fs::write(&file, serde_json::json!({"items": pods}).to_string()).expect("write pods");
    let out = Command::new(agent_python())
        .arg(AGENT_CHECK)
        .arg("--discover")
        .arg(&file)
        .output()
        .expect("run monasca_agent_check.py --discover");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "autodetection failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    report["endpoints"].as_array().expect("endpoints").clone()
}

#[test]
fn monasca_agent_pod_autodetection_finds_a_regular_sidecar_but_not_a_native_one() {
    // nativeSidecar: never -> the sidecar is a regular container with port 9102: the agent
    // follows the operator's prometheus.io annotations to it, with the pod's dimensions.
    let regular = injected_pod("never");
    let endpoints = agent_discovers(std::slice::from_ref(&regular));
    println!("regular sidecar: {endpoints:?}");
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    assert_eq!(endpoints[0]["url"], "http://10.1.2.3:9102/metrics");
    assert_eq!(endpoints[0]["dimensions"]["pod_name"], "monasca-api-never");
    assert_eq!(endpoints[0]["dimensions"]["namespace"], "monasca");
    assert_eq!(endpoints[0]["dimensions"]["app"], "monasca-api");

    // nativeSidecar: always (and `auto` for Jobs on Kubernetes >= 1.29) -> the sidecar is an init
    // container with restartPolicy: Always. monasca-agent 10.0.0 collects ports from
    // spec.containers only, so it does not see 9102; with one other port it falls back to that
    // one and scrapes the application instead. docs/monasca.md says to use nativeSidecar: never
    // (or static endpoints, or Prometheus) with the agent's pod autodetection.
    let native = injected_pod("always");
    let init = native["spec"]["initContainers"]
        .as_array()
        .expect("a native sidecar is an init container");
    assert!(
        init.iter().any(|c| c["name"] == "monasca-sidecar"),
        "{init:?}"
    );
    let endpoints = agent_discovers(std::slice::from_ref(&native));
    println!("native sidecar: {endpoints:?}");
    let urls: Vec<&str> = endpoints.iter().filter_map(|e| e["url"].as_str()).collect();
    assert_eq!(
        urls,
        ["http://10.1.2.3:8070/metrics"],
        "monasca-agent's handling of native sidecars changed: update docs/monasca.md"
    );
}
