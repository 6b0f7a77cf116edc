//! What goes in must come out valid (issue 20): inputs that would make the exposition
//! invalid are refused with 400 and a reason, in every ingest path, without touching other
//! workers' data; valid inputs are taken whole. Through the release binary over real HTTP.

mod common;

use common::{Sidecar, http, sample_value};

/// A sidecar holding one good counter from worker `good`.
fn with_good_data() -> Sidecar {
    let s = Sidecar::start("");
    let r = s.push_text(
        "PUT",
        "/metrics/job/j/instance/good",
        "# TYPE ok_total counter\nok_total 7\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    s
}

fn assert_refused(s: &Sidecar, path: &str, body: &str, needle: &str) {
    let r = s.push_text("PUT", path, body);
    assert_eq!(r.status, 400, "{path} {body:?} was accepted: {}", r.text());
    let reason = r.text();
    assert!(
        reason.contains(needle),
        "{body:?}: reason {reason:?} lacks {needle:?}"
    );
    assert_eq!(
        reason.trim().lines().count(),
        1,
        "one-line reason: {reason:?}"
    );
    assert_eq!(
        s.value("ok_total{job=\"j\"}"),
        Some(7.0),
        "other data intact"
    );
}

#[test]
fn reserved_and_structural_labels_are_refused() {
    let s = with_good_data();
    let w = "/metrics/job/j/instance/w2";
    assert_refused(&s, w, "x{__name__=\"y\"} 1\n", "__name__");
    assert_refused(&s, w, "x{__meta_a=\"y\"} 1\n", "reserved");
    // `le` from the grouping key on a histogram; `quantile` on a summary.
    assert_refused(
        &s,
        "/metrics/job/j/instance/w2/le/5",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "le",
    );
    assert_refused(
        &s,
        "/metrics/job/j/instance/w2/quantile/0.5",
        "# TYPE s summary\ns_sum 1\ns_count 1\n",
        "quantile",
    );
    // `le` is an ordinary label on a gauge.
    let r = s.push_text(
        "PUT",
        "/metrics/job/j/instance/w3/le/5",
        "# TYPE g gauge\ng 1\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}

#[test]
fn sample_name_collisions_across_families_are_refused() {
    let s = with_good_data();
    let r = s.push_text(
        "PUT",
        "/metrics/job/j/instance/w1",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Another worker's gauge named like the histogram's count.
    assert_refused(
        &s,
        "/metrics/job/j/instance/w2",
        "# TYPE h_count gauge\nh_count 5\n",
        "h_count",
    );
    // A gauge named like a counter's OpenMetrics family name.
    assert_refused(
        &s,
        "/metrics/job/j/instance/w2",
        "# TYPE ok gauge\nok 1\n",
        "ok",
    );
    // Within one body.
    assert_refused(
        &s,
        "/metrics/job/j/instance/w3",
        "# TYPE q summary\nq_sum 1\nq_count 1\n# TYPE q_sum gauge\nq_sum 4\n",
        "q_sum",
    );
    assert_eq!(s.value("h_count{job=\"j\"}"), Some(2.0));
    let om = http(
        s.metrics_addr(),
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        b"",
    )
    .text();
    let types: Vec<&str> = om.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut names: Vec<&str> = types.iter().filter_map(|l| l.split(' ').nth(2)).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(n, names.len(), "a family twice:\n{om}");
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}

#[test]
fn counter_and_histogram_invariants_are_checked() {
    let s = with_good_data();
    let w = "/metrics/job/j/instance/w2";
    assert_refused(&s, w, "# TYPE c_total counter\nc_total -1\n", "negative");
    assert_refused(
        &s,
        w,
        "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
        "decrease",
    );
    assert_refused(
        &s,
        w,
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "+Inf",
    );
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}

#[test]
fn multi_member_gzip_bodies_are_taken_whole() {
    use std::io::Write as _;
    let s = Sidecar::start("");
    let gz = |text: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).expect("gzip");
        e.finish().expect("gzip")
    };
    // Two gzip members, concatenated: one valid gzip stream (RFC 1952 section 2.2).
    let mut body = gz("# TYPE a_total counter\na_total 1\n");
    body.extend(gz("# TYPE b_total counter\nb_total 2\n"));
    let r = http(
        s.ingest_addr(),
        "PUT",
        "/metrics/job/j",
        &[("Content-Encoding", "gzip")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.value("a_total{job=\"j\"}"), Some(1.0));
    assert_eq!(
        s.value("b_total{job=\"j\"}"),
        Some(2.0),
        "second member lost"
    );
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}

#[test]
fn head_works_on_every_get_endpoint() {
    let s = Sidecar::start("");
    for path in ["/metrics", "/healthz", "/readyz", "/v1/workers"] {
        let get = http(s.metrics_addr(), "GET", path, &[], b"");
        let head = http(s.metrics_addr(), "HEAD", path, &[], b"");
        assert_eq!(get.status, 200, "GET {path}");
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} sent a body");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "HEAD {path}"
        );
    }
    let head = http(s.ingest_addr(), "HEAD", "/metrics", &[], b"");
    assert_eq!(head.status, 200);
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}

#[test]
fn negative_buckets_give_valid_openmetrics() {
    let s = Sidecar::start("");
    let r = s.push_text(
        "PUT",
        "/metrics/job/j/instance/w1",
        "# TYPE t histogram\nt_bucket{le=\"-5\"} 1\nt_bucket{le=\"0\"} 2\nt_bucket{le=\"+Inf\"} 3\nt_sum -2\nt_count 3\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = s.metrics();
    common::assert_valid_exposition(text.as_bytes(), false);
    assert_eq!(common::sample_value(&text, "t_sum{job=\"j\"}"), Some(-2.0));
    let om = s.openmetrics();
    common::assert_valid_exposition(om.as_bytes(), true);
    assert!(
        !om.contains("t_sum") && !om.contains("t_count"),
        "OpenMetrics forbids _sum with negative buckets, and _count without _sum:\n{om}"
    );
    assert!(om.contains("t_bucket{job=\"j\",le=\"+Inf\"} 3"), "{om}");
    // Every render valid, in both formats (promtool and client_python).
    s.checked_metrics();
}

#[test]
fn a_histogram_without_sum_gets_no_invented_sum() {
    let s = Sidecar::start("");
    let r = http(
        s.ingest_addr(),
        "PUT",
        "/metrics/job/j/instance/w1",
        &[(
            "Content-Type",
            "application/openmetrics-text; version=1.0.0",
        )],
        b"# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n# EOF\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = s.checked_metrics();
    assert_eq!(common::sample_value(&text, "h_count{job=\"j\"}"), Some(2.0));
    assert!(
        !text.contains("h_sum"),
        "no _sum was sent, none is invented:\n{text}"
    );
}

/// Every self-metric family of a running sidecar (with `stateDir`, so all components report),
/// with its type: the names, types and label names dashboards, rules and tests use. Every
/// family is listed from the start, also those by reasons created on first use.
const SELF_FAMILIES: [(&str, &str); 60] = [
    ("allocator_trims_total", "counter"),
    ("config_last_reload_successful", "gauge"),
    ("config_reload_errors_total", "counter"),
    ("config_reloads_total", "counter"),
    ("counter_resets_total", "counter"),
    ("histogram_layout_mismatches_total", "counter"),
    ("ingest_errors_total", "counter"),
    ("metrics_render_last_seconds", "gauge"),
    ("metrics_render_seconds_total", "counter"),
    ("metrics_renders_total", "counter"),
    ("multiprocess_corrupt_files_total", "counter"),
    ("multiprocess_deleted_files_total", "counter"),
    ("multiprocess_enabled", "gauge"),
    ("multiprocess_errors_total", "counter"),
    ("multiprocess_file_reads_total", "counter"),
    ("multiprocess_files", "gauge"),
    ("multiprocess_folded_workers_total", "counter"),
    ("multiprocess_liveness", "gauge"),
    ("multiprocess_mapped_read_faults_total", "counter"),
    ("multiprocess_not_compacting", "gauge"),
    ("multiprocess_rejected_total", "counter"),
    ("multiprocess_released_files", "gauge"),
    ("multiprocess_retired_series", "gauge"),
    ("multiprocess_scan_duration_seconds", "gauge"),
    ("multiprocess_scans_total", "counter"),
    ("multiprocess_skipped_files", "gauge"),
    ("multiprocess_workers", "gauge"),
    ("otlp_points_total", "counter"),
    ("otlp_rejected_points_total", "counter"),
    ("otlp_requests_total", "counter"),
    ("push_samples_total", "counter"),
    ("pushes_total", "counter"),
    ("scrape_attempts_total", "counter"),
    ("scrape_duration_seconds", "gauge"),
    ("scrape_errors_total", "counter"),
    ("scrape_series", "gauge"),
    ("scrape_targets", "gauge"),
    ("scrape_up", "gauge"),
    ("series", "gauge"),
    ("state_bytes", "gauge"),
    ("state_last_write_timestamp_seconds", "gauge"),
    ("state_loads_total", "counter"),
    ("state_snapshot_lock_last_seconds", "gauge"),
    ("state_write_errors_total", "counter"),
    ("state_write_last_seconds", "gauge"),
    ("state_writes_total", "counter"),
    ("statsd_datagrams_dropped_total", "counter"),
    ("statsd_datagrams_total", "counter"),
    ("statsd_dropped_total", "counter"),
    ("statsd_errors_total", "counter"),
    ("statsd_lines_total", "counter"),
    ("statsd_receive_buffer_bytes", "gauge"),
    ("statsd_samples_total", "counter"),
    ("statsd_series", "gauge"),
    ("statsd_tag_errors_total", "counter"),
    ("statsd_tcp_connections_total", "counter"),
    ("worker_restarts_total", "counter"),
    ("worker_series", "gauge"),
    ("worker_start_time_regressions_total", "counter"),
    ("workers", "gauge"),
];

/// `(family, type)` of every `# TYPE monasca_sidecar_*` line, in order.
fn self_types(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE monasca_sidecar_"))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The self-metrics (`prometheus-client` registry, read into the sidecar's renderer) come out
/// of the real `/metrics` in both formats: valid for promtool and client_python's parsers,
/// each family once, sorted among the aggregated ones, with the names, types and label
/// values of before, counted from real traffic.
#[test]
fn self_metrics_render_in_both_formats() {
    let state = common::scratch_dir("self-metrics-state");
    let s = Sidecar::start(&format!("stateDir: {}\n", state.display()));
    let r = s.push_text(
        "PUT",
        "/metrics/job/j/instance/w1",
        "# TYPE ok_total counter\nok_total 7\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = s.push_text("PUT", "/metrics/job/j/instance/w1", "x{__name__=\"y\"} 1\n");
    assert_eq!(refused.status, 400, "{}", refused.text());

    let text = s.checked_metrics();
    let om = s.openmetrics();
    let expected: Vec<(String, String)> = SELF_FAMILIES
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    assert_eq!(self_types(&text), expected, "text 0.0.4:\n{text}");
    // OpenMetrics names a counter family without `_total`; its samples keep it.
    let om_expected: Vec<(String, String)> = SELF_FAMILIES
        .iter()
        .map(|(n, t)| {
            (
                n.strip_suffix("_total").unwrap_or(n).to_string(),
                t.to_string(),
            )
        })
        .collect();
    assert_eq!(self_types(&om), om_expected, "OpenMetrics:\n{om}");
    for exposition in [&text, &om] {
        assert_eq!(
            sample_value(exposition, "monasca_sidecar_pushes_total"),
            Some(1.0)
        );
        assert_eq!(
            sample_value(exposition, "monasca_sidecar_push_samples_total"),
            Some(1.0)
        );
        let refusals = exposition
            .lines()
            .filter(|l| l.starts_with("monasca_sidecar_ingest_errors_total{api=\"push\",reason="))
            .count();
        assert_eq!(refusals, 1, "one refusal by fixed reason:\n{exposition}");
        assert_eq!(
            sample_value(exposition, "monasca_sidecar_workers"),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                exposition,
                "monasca_sidecar_statsd_errors_total{reason=\"unsupported_set\"}"
            ),
            Some(0.0),
            "every fixed reason from the start"
        );
        assert_eq!(
            sample_value(
                exposition,
                "monasca_sidecar_state_loads_total{outcome=\"missing\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                exposition,
                "monasca_sidecar_multiprocess_workers{state=\"live\"}"
            ),
            Some(0.0)
        );
        assert_eq!(sample_value(exposition, "ok_total{job=\"j\"}"), Some(7.0));
    }
    // Renders are counted by the library's counter: two renders before the last one.
    assert!(sample_value(&om, "monasca_sidecar_metrics_renders_total") >= Some(2.0));
    drop(s);
    let _ = std::fs::remove_dir_all(&state);
}
