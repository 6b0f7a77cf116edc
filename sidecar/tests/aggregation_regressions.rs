//! Sequences that once gave a wrong aggregate or invalid exposition (issue 11), each driven
//! through the release binary's public interfaces: the Pushgateway API over real HTTP, and
//! real prometheus_client processes writing a multiprocess directory.

mod common;
mod multiprocess_support;

use common::{Sidecar, http, wait_until};
use multiprocess_support::{PyProcess, db_files, scratch};
use std::time::Duration;

fn put_ok(s: &Sidecar, path: &str, body: &str) {
    let r = s.push_text("PUT", path, body);
    assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
}

/// The lines of `/metrics` (text 0.0.4) for one metric name.
fn lines_of(s: &Sidecar, name: &str) -> Vec<String> {
    s.metrics()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .map(str::to_string)
        .collect()
}

fn self_metric(s: &Sidecar, series: &str) -> f64 {
    s.value(series).unwrap_or(0.0)
}

// 1. A gauge of a worker that left and came back under the same id replaces its departed
//    value instead of being added to it.
#[test]
fn gauge_of_a_returning_worker_replaces_its_departed_value() {
    let s = Sidecar::start("");
    let gauge = |v: u32| format!("# TYPE g gauge\ng {v}\n");
    put_ok(&s, "/metrics/job/j/instance/w1", &gauge(5));
    assert_eq!(
        s.push_text("DELETE", "/metrics/job/j/instance/w1", "")
            .status,
        202
    );
    assert_eq!(s.value("g{job=\"j\"}"), Some(5.0), "non-live modes keep it");
    put_ok(&s, "/metrics/job/j/instance/w1", &gauge(5));
    assert_eq!(s.value("g{job=\"j\"}"), Some(5.0));
    put_ok(&s, "/metrics/job/j/instance/w1", &gauge(7));
    assert_eq!(s.value("g{job=\"j\"}"), Some(7.0));

    // `all` keeps one line per worker: the returning worker's line, once.
    let all = |v: u32| format!("# TYPE h gauge\nh{{_aggregate=\"all\"}} {v}\n");
    put_ok(&s, "/metrics/job/k/instance/w1", &all(1));
    s.push_text("DELETE", "/metrics/job/k/instance/w1", "");
    put_ok(&s, "/metrics/job/k/instance/w1", &all(2));
    assert_eq!(lines_of(&s, "h"), ["h{job=\"k\",instance=\"w1\"} 2"]);
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}

// 2. No label ever appears twice on a line.
#[test]
fn all_mode_never_repeats_a_grouping_key_label() {
    let s = Sidecar::start("");
    put_ok(
        &s,
        "/metrics/job/api",
        "# TYPE h gauge\nh{_aggregate=\"all\"} 1\n",
    );
    assert_eq!(lines_of(&s, "h"), ["h{job=\"api\"} 1"]);
    // Every render valid, in both formats: promtool, client_python, and no label, series or
    // family twice.
    s.checked_metrics();
}

// 3. A series left out of one PUT and pushed again at the same value continues; below it,
//    the worker restarted, and all its counters count anew.
#[test]
fn series_left_out_of_a_put_continues_when_it_comes_back() {
    let s = Sidecar::start("");
    let path = "/metrics/job/j/instance/w1";
    let body = |pairs: &[(&str, u32)]| {
        let mut b = String::from("# TYPE c_total counter\n");
        for (a, v) in pairs {
            b.push_str(&format!("c_total{{a=\"{a}\"}} {v}\n"));
        }
        b
    };
    put_ok(&s, path, &body(&[("1", 10), ("2", 1)]));
    put_ok(&s, path, &body(&[("2", 1)]));
    assert_eq!(s.value("c_total{a=\"1\",job=\"j\"}"), Some(10.0));
    put_ok(&s, path, &body(&[("1", 10), ("2", 1)]));
    assert_eq!(s.value("c_total{a=\"1\",job=\"j\"}"), Some(10.0));
    put_ok(&s, path, &body(&[("1", 12), ("2", 1)]));
    assert_eq!(s.value("c_total{a=\"1\",job=\"j\"}"), Some(12.0));
    // Left out, then back below its last value: the worker restarted. Its other counter,
    // back at its old value, is the new process's count: it adds to the previous life's.
    put_ok(&s, path, &body(&[("2", 1)]));
    put_ok(&s, path, &body(&[("1", 3), ("2", 1)]));
    assert_eq!(s.value("c_total{a=\"1\",job=\"j\"}"), Some(15.0));
    assert_eq!(s.value("c_total{a=\"2\",job=\"j\"}"), Some(2.0));
    // The same across DELETE: a worker that returns continuing its counters is not counted
    // twice.
    s.push_text("DELETE", path, "");
    put_ok(&s, path, &body(&[("1", 4), ("2", 1)]));
    assert_eq!(s.value("c_total{a=\"1\",job=\"j\"}"), Some(16.0));
    assert_eq!(s.value("c_total{a=\"2\",job=\"j\"}"), Some(2.0));
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}

fn mp_config(dir: &std::path::Path) -> String {
    format!(
        "multiprocessDir: {:?}\nstaleAfter: 60s\n",
        dir.display().to_string()
    )
}

// 5. Negative observations make a histogram's `_sum` go down: that is no reset, and nothing
//    else of the worker is counted twice.
#[test]
fn multiprocess_histogram_sum_going_down_is_not_a_reset() {
    let dir = scratch("neg-sum");
    let s = Sidecar::start(&mp_config(&dir));
    let mut w = PyProcess::start("mp_driver.py", &dir, &[]);
    w.command("observe lat 0.2");
    w.command("observe other 3");
    w.command("inc jobs 4");
    assert!(wait_until(Duration::from_secs(20), || {
        s.value("lat_count") == Some(1.0) && s.value("other_count") == Some(1.0)
    }));
    w.command("observe lat -5");
    assert!(wait_until(Duration::from_secs(20), || s.value("lat_count")
        == Some(2.0)));
    let m = s.metrics();
    assert_eq!(common::sample_value(&m, "lat_sum"), Some(-4.8), "{m}");
    assert_eq!(
        common::sample_value(&m, "lat_bucket{le=\"+Inf\"}"),
        Some(2.0)
    );
    assert_eq!(common::sample_value(&m, "other_count"), Some(1.0), "{m}");
    assert_eq!(common::sample_value(&m, "other_sum"), Some(3.0), "{m}");
    assert_eq!(common::sample_value(&m, "jobs_total{w=\"x\"}"), Some(4.0));
    assert_eq!(
        self_metric(&s, "monasca_sidecar_counter_resets_total"),
        0.0,
        "{m}"
    );
    w.finish();
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

// 6. `POST /v1/clear` with a multiprocess directory: the directory is the truth, so its whole
//    state (live workers and the retired totals of dead ones) is shown again at once.
#[test]
fn clear_reapplies_the_whole_multiprocess_directory() {
    let dir = scratch("clear");
    let s = Sidecar::start(&mp_config(&dir));
    let mut live = PyProcess::start("mp_driver.py", &dir, &[]);
    live.command("inc jobs 5");
    let mut dead = PyProcess::start("mp_driver.py", &dir, &[]);
    dead.command("inc jobs 3");
    let dead_pid = dead.pid();
    dead.kill();
    let series = "jobs_total{w=\"x\"}";
    assert!(wait_until(Duration::from_secs(30), || {
        s.value(series) == Some(8.0)
            && !db_files(&dir)
                .iter()
                .any(|f| f.ends_with(&format!("_{dead_pid}.db")))
    }));
    let r = http(s.ingest_addr(), "POST", "/v1/clear", &[], b"");
    assert!(r.status < 300, "clear: {}", r.text());
    assert_eq!(s.value(series), Some(8.0), "right after the clear");
    live.command("inc jobs 1");
    assert!(wait_until(Duration::from_secs(20), || s.value(series) == Some(9.0)));
    live.finish();
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

// 7. A worker whose files are named by a custom process identifier (not its pid) is alive
//    although `/proc/<identifier>` does not exist: its files must never be deleted.
#[test]
fn proc_liveness_keeps_files_of_a_custom_process_identifier() {
    let dir = scratch("custom-ident");
    // Above any pid_max: certainly no such process. The worker runs before the sidecar
    // starts, so the sidecar finds it in `/proc` (by its environment) at once and uses
    // `/proc` liveness.
    let ident = "4999999";
    let mut w = PyProcess::start("mp_driver.py", &dir, &[ident]);
    w.command("inc jobs 1");
    let s = Sidecar::start(&mp_config(&dir));
    let series = "jobs_total{w=\"x\"}";
    for i in 1..=5u32 {
        if i > 1 {
            w.command("inc jobs 1");
        }
        assert!(
            wait_until(Duration::from_secs(20), || s.value(series)
                == Some(f64::from(i))),
            "after {i} increments: {:?}\n{}",
            s.value(series),
            s.metrics()
        );
        // Let several scan rounds pass (the reader scans every second).
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            db_files(&dir).iter().any(|f| f.contains(ident)),
            "the live worker's file was deleted: {:?}",
            db_files(&dir)
        );
    }
    w.finish();
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

// 8. Non-finite counter, bucket and count values are refused: they would poison the retired
//    totals for good.
#[test]
fn non_finite_counters_and_buckets_are_refused() {
    let s = Sidecar::start("");
    let path = "/metrics/job/j/instance/w1";
    put_ok(&s, path, "# TYPE c_total counter\nc_total 5\n");
    for body in [
        "# TYPE c_total counter\nc_total NaN\n",
        "# TYPE c_total counter\nc_total +Inf\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} +Inf\nh_sum 1\nh_count +Inf\n",
        "# TYPE s summary\ns_sum 1\ns_count NaN\n",
    ] {
        let r = s.push_text("PUT", "/metrics/job/j/instance/w2", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains("non-finite"), "{}", r.text());
    }
    assert_eq!(s.value("c_total{job=\"j\"}"), Some(5.0));
    assert_eq!(
        self_metric(
            &s,
            "monasca_sidecar_ingest_errors_total{api=\"push\",reason=\"non_finite\"}"
        ),
        4.0,
        "{}",
        s.metrics()
    );
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}

// 9. The first `_aggregate` mode seen for a series wins; a conflicting one is refused and
//    counted, so the output does not flip with push order.
#[test]
fn conflicting_aggregate_modes_are_refused() {
    let s = Sidecar::start("");
    put_ok(
        &s,
        "/metrics/job/j/instance/w1",
        "# TYPE g gauge\ng{_aggregate=\"max\"} 1\n",
    );
    let r = s.push_text(
        "PUT",
        "/metrics/job/j/instance/w2",
        "# TYPE g gauge\ng{_aggregate=\"min\"} 5\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("max"), "{}", r.text());
    put_ok(
        &s,
        "/metrics/job/j/instance/w2",
        "# TYPE g gauge\ng{_aggregate=\"max\"} 5\n",
    );
    assert_eq!(s.value("g{job=\"j\"}"), Some(5.0));
    assert_eq!(
        self_metric(
            &s,
            "monasca_sidecar_ingest_errors_total{api=\"push\",reason=\"mode_conflict\"}"
        ),
        1.0,
        "{}",
        s.metrics()
    );
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}
