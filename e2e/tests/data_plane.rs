//! Data-plane end-to-end tests: real applications and clients feed a real sidecar, and a real
//! Prometheus server (Debian `prometheus`) scrapes it every second. Every check is PromQL
//! through Prometheus's HTTP API, printed with expected and actual values.

use monasca_e2e::prometheus::{Prometheus, unix_now};
use monasca_e2e::push_worker::PushWorker;
use monasca_e2e::sidecar::{Sidecar, python};
use std::process::{Child, Stdio};
use std::time::Duration;

#[test]
fn push_mode_totals_survive_a_killed_worker_in_prometheus() {
    let sidecar = Sidecar::start("");
    let prom = Prometheus::start(&[sidecar.metrics_addr()]);
    let gateway = sidecar.ingest_url();
    // w1 blocks after its 6th push, where the test kills it: it cannot be killed between a
    // push the sidecar took and the line that reports it, however loaded the machine.
    let mut workers: Vec<PushWorker> = (0..4)
        .map(|i| {
            let pause_after = if i == 1 { 6 } else { 0 };
            PushWorker::start_pausing(&gateway, &format!("w{i}"), 40, 0.3, pause_after)
        })
        .collect();
    // Every worker has pushed once; wait for Prometheus to see the series, then mark t0.
    for w in &mut workers {
        w.next_push().expect("first push");
    }
    prom.wait_for_scrapes(2);
    let series = "sum(app_jobs_total)";
    let t0 = unix_now();
    let at_t0 = prom.value_at(series, Some(t0)).expect("series scraped");
    println!("at t0 Prometheus has {series} = {at_t0}");
    // SIGKILL worker w1 where it blocks, right after its 6th push, and restart it: its counter
    // starts again at 0.
    let killed_total = workers.remove(1).kill_after(6);
    let restarted = PushWorker::start(&gateway, "w1", 25, 0.3);
    workers.push(restarted);
    let total: u64 = killed_total + workers.into_iter().map(PushWorker::finish).sum::<u64>();
    assert_eq!(total, 3 * 40 + killed_total + 25);

    prom.check(series, total as f64, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let t1 = unix_now();
    let window = (t1 - t0).ceil() as u64;
    let at = Some(t1);
    // The counter never went down, although a worker restarted from 0.
    prom.check(
        &format!("sum(resets(app_jobs_total[{window}s]))"),
        0.0,
        Duration::from_secs(1),
    );
    prom.check(
        &format!("sum(resets(app_job_seconds_count[{window}s]))"),
        0.0,
        Duration::from_secs(1),
    );
    // The work done in the window, exactly, from the samples Prometheus stored.
    let delta = prom.value_at(
        &format!("{series} - sum(app_jobs_total offset {window}s)"),
        at,
    );
    let expected_delta = total as f64
        - prom
            .value_at(series, Some(t1 - window as f64))
            .unwrap_or(at_t0);
    println!(
        "PromQL check: work in the last {window}s  expected={expected_delta}  actual={delta:?}"
    );
    assert_eq!(delta, Some(expected_delta));
    // The window starts before the kill, so it holds at least the restarted worker's 25 pushes.
    assert!(expected_delta >= 25.0, "window too short: {expected_delta}");
    // increase() over the same window: the same work, up to Prometheus's extrapolation to the
    // window edges (at most one scrape interval's worth of the window).
    let increase = prom
        .value_at(&format!("sum(increase(app_jobs_total[{window}s]))"), at)
        .unwrap();
    let tolerance = expected_delta * 1.5 / window as f64;
    println!(
        "PromQL check: sum(increase(app_jobs_total[{window}s]))  expected={expected_delta} (±{tolerance:.2} extrapolation)  actual={increase}"
    );
    assert!(
        (increase - expected_delta).abs() <= tolerance,
        "increase {increase} vs {expected_delta}"
    );
    // One series per label set, no worker label reached Prometheus.
    prom.check("count(app_jobs_total)", 1.0, Duration::from_secs(1));
    prom.check("count(app_job_seconds_bucket)", 3.0, Duration::from_secs(1));
    for s in prom.query("{__name__=~\"app_.+\"}") {
        let labels = s["metric"].as_object().unwrap();
        for worker_label in ["pid", "worker", "_id"] {
            assert!(!labels.contains_key(worker_label), "{s}");
        }
        assert_eq!(
            labels["instance"],
            sidecar.metrics_addr().to_string(),
            "{s}"
        );
    }
    prom.check(
        &format!(
            "app_job_seconds_count{{instance=\"{}\"}}",
            sidecar.metrics_addr()
        ),
        total as f64,
        Duration::from_secs(1),
    );
}

#[test]
fn monasca_statsd_counts_reach_prometheus_exactly() {
    let sidecar = Sidecar::start("");
    let statsd_port = sidecar.addrs["statsd"].port().to_string();
    let prom = Prometheus::start(&[sidecar.metrics_addr()]);
    let sender = concat!(env!("CARGO_MANIFEST_DIR"), "/py/monasca_statsd_sender.py");
    let mut total = 0;
    for batch in [300, 200] {
        let out = python(&["monascastatsd"])
            .arg(sender)
            .args([statsd_port.as_str(), &batch.to_string()])
            .output()
            .expect("run monasca-statsd sender");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        total += batch;
        let selector = "monasca_requests_total{service=\"monitoring\",component=\"api\",endpoint=\"/v2.0/metrics\"}";
        prom.check(
            &format!("sum({selector})"),
            f64::from(total),
            Duration::from_secs(20),
        );
        prom.check(&format!("count({selector})"), 2.0, Duration::from_secs(1));
    }
    prom.check(
        "sum(monasca_requests_total{status=\"201\"})",
        f64::from(total / 2),
        Duration::from_secs(1),
    );
    // The last gauge sent: i = 199 of the second batch.
    prom.check(
        "monasca_queue_depth",
        f64::from(199 % 7),
        Duration::from_secs(5),
    );
    prom.check(
        "sum(monasca_sidecar_statsd_errors_total)",
        0.0,
        Duration::from_secs(1),
    );
    // No per-worker series: absent() is 1 when nothing carries a worker label.
    prom.check(
        "absent(monasca_requests_total{worker!=\"\"})",
        1.0,
        Duration::from_secs(1),
    );
}

/// A gunicorn app (4 workers, prometheus_client multiprocess mode) behind the sidecar: totals
/// equal the requests served, a SIGKILLed worker causes no reset, and no `pid` label reaches
/// Prometheus.
#[test]
fn gunicorn_multiprocess_app_through_prometheus() {
    let work = monasca_e2e::scratch_dir("gunicorn");
    let dir = work.join("multiproc");
    std::fs::create_dir_all(&dir).unwrap();
    let sidecar = Sidecar::start(&format!("multiprocessDir: {}\n", dir.display()));
    let port = monasca_e2e::free_port();
    let app_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sidecar/tests/py");
    let mut gunicorn = python(&["prometheus_client", "gunicorn"])
        .args(["-m", "gunicorn", "--workers", "4", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "--chdir",
            app_dir,
            "--log-level",
            "warning",
            "gunicorn_app:app",
        ])
        .env("PROMETHEUS_MULTIPROC_DIR", &dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("start gunicorn");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut gunicorn);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get = |path: &str| monasca_e2e::http::request(addr, "GET", path, &[], b"");
    assert!(
        monasca_e2e::prometheus::wait(Duration::from_secs(30), || get("/pid").is_ok()),
        "gunicorn did not start"
    );
    let prom = Prometheus::start(&[sidecar.metrics_addr()]);
    let serve = |n: u32| {
        for _ in 0..n {
            assert_eq!(get("/hello").expect("request").status, 200);
        }
    };
    serve(150);
    prom.wait_for_scrapes(2);
    let series = "sum(app_requests_total{path=\"/hello\"})";
    prom.check(series, 150.0, Duration::from_secs(20));
    // A few scrapes of the steady value, so the window below starts on stored samples.
    std::thread::sleep(Duration::from_secs(4));
    let t0 = unix_now() - 3.0;
    // SIGKILL the worker that answers; gunicorn starts a new one.
    let victim = get("/pid").unwrap().text();
    let status = std::process::Command::new("kill")
        .args(["-KILL", victim.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    serve(100);
    prom.check(series, 250.0, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let t1 = unix_now();
    let window = (t1 - t0).ceil() as u64;
    prom.check(
        &format!("sum(resets(app_requests_total[{window}s]))"),
        0.0,
        Duration::from_secs(1),
    );
    prom.check(
        &format!("sum(resets(app_request_seconds_count[{window}s]))"),
        0.0,
        Duration::from_secs(1),
    );
    let delta = prom.value_at(
        &format!("{series} - sum(app_requests_total{{path=\"/hello\"}} offset {window}s)"),
        Some(t1),
    );
    println!(
        "PromQL check: requests in the last {window}s (kill inside)  expected=100  actual={delta:?}"
    );
    assert_eq!(delta, Some(100.0));
    let increase = prom
        .value_at(
            &format!("sum(increase(app_requests_total[{window}s]))"),
            Some(t1),
        )
        .unwrap();
    let tolerance = 100.0 * 1.5 / window as f64;
    println!(
        "PromQL check: sum(increase(app_requests_total[{window}s]))  expected=100 (±{tolerance:.2} extrapolation)  actual={increase}"
    );
    assert!((increase - 100.0).abs() <= tolerance, "increase {increase}");
    prom.check("count(app_requests_total)", 1.0, Duration::from_secs(1));
    prom.check(
        "absent(app_requests_total{pid!=\"\"})",
        1.0,
        Duration::from_secs(1),
    );
    prom.check(
        "sum(app_request_seconds_count)",
        250.0,
        Duration::from_secs(1),
    );
    let _ = std::fs::remove_dir_all(&work);
}
