use super::*;
use crate::expose::{Format, render};
use crate::store::StoreSettings;

const DOCUMENTED: &str = r#"[{"name": "test", "type": "gauge", "help": "test description",
    "values": [{"name": "test", "labels": {"c": "d"}, "value": 12.34}]}]"#;

fn store() -> Store {
    Store::new(StoreSettings::default())
}

fn text(store: &Store, now: Now) -> String {
    let mut out = Vec::new();
    render(store, Format::Text, now.mono, &[], &mut out);
    String::from_utf8(out).expect("utf-8")
}

/// The documented payload with `_id` and `_aggregate` added to its labels.
fn with_worker(id: &str, aggregate: &str, value: f64) -> String {
    format!(
        r#"[{{"name": "test", "type": "gauge", "help": "test description",
            "values": [{{"name": "test", "labels": {{"c": "d", "_id": "{id}",
            "_aggregate": "{aggregate}"}}, "value": {value}}}]}}]"#
    )
}

#[test]
fn documented_payload_from_two_workers_sums() {
    let mut s = store();
    let now = Now::now();
    for id in ["a", "b"] {
        let stats = ingest(&mut s, with_worker(id, "sum", 12.34).as_bytes(), now).unwrap();
        assert_eq!(stats.workers, 1);
        assert_eq!(stats.samples, 1);
    }
    let out = text(&s, now);
    assert!(
        out.contains("# HELP test test description\n# TYPE test gauge\n"),
        "{out}"
    );
    assert!(out.contains("test{c=\"d\"} 24.68\n"), "{out}");
    assert!(!out.contains("_id") && !out.contains("_aggregate"), "{out}");
    assert_eq!(s.worker_count(), 2);
}

#[test]
fn a_label_twice_in_one_labels_object_is_refused_whole() {
    let mut s = store();
    let now = Now::now();
    ingest(&mut s, with_worker("a", "sum", 1.0).as_bytes(), now).unwrap();
    let before = text(&s, now);
    // The proptest's find: a duplicate JSON key rendered as a label set with `le` twice.
    let body = br#"[{"name": "h_count", "type": "counter", "values": [
        {"name": "h_count", "labels": {"le": "w1", "le": "w1"}, "value": 0}]}]"#;
    match ingest(&mut s, body, now) {
        Err(e @ JsonError::Json(_)) => {
            assert!(e.to_string().contains("\"le\" appears twice"), "{e}")
        }
        other => panic!("accepted or wrong error: {other:?}"),
    }
    assert_eq!(text(&s, now), before, "nothing else changed");
}

#[test]
fn aggregate_modes_and_latest_value_per_worker() {
    let mut s = store();
    let now = Now::now();
    for (id, v) in [("a", 1.0), ("b", 5.0), ("a", 3.0)] {
        ingest(&mut s, with_worker(id, "mean", v).as_bytes(), now).unwrap();
    }
    assert!(text(&s, now).contains("test{c=\"d\"} 4\n"));
    // The first mode seen for a series wins; another one is refused, and changes nothing.
    let err = ingest(&mut s, with_worker("b", "max", 7.0).as_bytes(), now).unwrap_err();
    assert!(err.to_string().contains("mean"), "{err}");
    assert!(text(&s, now).contains("test{c=\"d\"} 4\n"));
    ingest(&mut s, with_worker("b", "mean", 7.0).as_bytes(), now).unwrap();
    assert!(text(&s, now).contains("test{c=\"d\"} 5\n"));
}

#[test]
fn values_without_id_belong_to_the_default_worker() {
    let mut s = store();
    let now = Now::now();
    ingest(&mut s, DOCUMENTED.as_bytes(), now).unwrap();
    ingest(&mut s, DOCUMENTED.replace("12.34", "1.5").as_bytes(), now).unwrap();
    assert!(text(&s, now).contains("test{c=\"d\"} 1.5\n"));
    assert!(s.has_worker(DEFAULT_WORKER_ID));
}

#[test]
fn one_body_splits_into_workers() {
    let mut s = store();
    let now = Now::now();
    let body = r#"[{"name": "jobs_total", "type": "counter", "help": "jobs",
        "values": [
          {"name": "jobs_total", "labels": {"_id": "w1", "q": "x"}, "value": 3},
          {"name": "jobs_total", "labels": {"_id": "w2", "q": "x"}, "value": 4},
          {"name": "jobs_total", "labels": {"q": "x"}, "value": 1}]}]"#;
    let stats = ingest(&mut s, body.as_bytes(), now).unwrap();
    assert_eq!(stats.workers, 3);
    assert!(text(&s, now).contains("jobs_total{q=\"x\"} 8\n"));
    // A worker's counter going down is a restart: its old value is retired, not lost.
    let body = body.replace("\"value\": 3", "\"value\": 1");
    ingest(&mut s, body.as_bytes(), now).unwrap();
    assert!(text(&s, now).contains("jobs_total{q=\"x\"} 9\n"));
}

#[test]
fn counter_sample_name_may_carry_total() {
    let mut s = store();
    let now = Now::now();
    let body = r#"[{"name": "req", "type": "counter", "help": "h",
        "values": [{"name": "req_total", "labels": {}, "value": 2}]}]"#;
    ingest(&mut s, body.as_bytes(), now).unwrap();
    assert!(text(&s, now).contains("# TYPE req_total counter\nreq_total 2\n"));
}

#[test]
fn histograms_and_summaries_are_assembled() {
    let mut s = store();
    let now = Now::now();
    let body = r#"[
      {"name": "lat", "type": "histogram", "help": "latency", "values": [
        {"name": "lat_bucket", "labels": {"le": "0.1", "p": "/", "_id": "a"}, "value": 1},
        {"name": "lat_bucket", "labels": {"le": "+Inf", "p": "/", "_id": "a"}, "value": 3},
        {"name": "lat_sum", "labels": {"p": "/", "_id": "a"}, "value": 1.5},
        {"name": "lat_count", "labels": {"p": "/", "_id": "a"}, "value": 3},
        {"name": "lat_bucket", "labels": {"le": "0.1", "p": "/", "_id": "b"}, "value": 2},
        {"name": "lat_bucket", "labels": {"le": "+Inf", "p": "/", "_id": "b"}, "value": 2},
        {"name": "lat_sum", "labels": {"p": "/", "_id": "b"}, "value": 0.1}]},
      {"name": "rpc", "type": "summary", "help": "rpc", "values": [
        {"name": "rpc", "labels": {"quantile": "0.5"}, "value": 0.2},
        {"name": "rpc_sum", "labels": {}, "value": 4},
        {"name": "rpc_count", "labels": {}, "value": 10}]}]"#;
    ingest(&mut s, body.as_bytes(), now).unwrap();
    let out = text(&s, now);
    assert!(out.contains("lat_bucket{p=\"/\",le=\"0.1\"} 3\n"), "{out}");
    assert!(out.contains("lat_bucket{p=\"/\",le=\"+Inf\"} 5\n"), "{out}");
    assert!(out.contains("lat_count{p=\"/\"} 5\n"), "{out}");
    assert!(out.contains("lat_sum{p=\"/\"} 1.6\n"), "{out}");
    assert!(out.contains("rpc_count 10\nrpc_sum 4\n"), "{out}");
    assert!(!out.contains("quantile"), "{out}");
}

#[test]
fn bad_bodies_are_refused_with_one_line_reasons() {
    let now = Now::now();
    for (body, reason) in [
        ("{", "invalid_json"),
        ("{\"name\": \"x\"}", "invalid_json"),
        ("", "invalid_json"),
        ("[{\"name\": \"x\"}]", "invalid_json"),
        (
            r#"[{"name": "x", "type": "gauge", "values": [{"name": "x", "value": "abc"}]}]"#,
            "invalid_json",
        ),
        (
            r#"[{"name": "x", "type": "gauge", "values": [{"name": "x", "labels": {"a": [1]}, "value": 1}]}]"#,
            "invalid_json",
        ),
        (
            r#"[{"name": "x-y", "type": "gauge", "values": []}]"#,
            "invalid_name",
        ),
        (
            r#"[{"name": "x", "type": "info", "values": []}]"#,
            "unsupported_type",
        ),
        (
            r#"[{"name": "x", "type": "gauge", "values": [{"name": "y", "value": 1}]}]"#,
            "invalid_value_name",
        ),
        (
            r#"[{"name": "x", "type": "gauge", "values": [{"name": "x", "labels": {"a-b": "1"}, "value": 1}]}]"#,
            "invalid_label",
        ),
        (
            r#"[{"name": "x", "type": "gauge", "values": []}, {"name": "x", "type": "counter", "values": []}]"#,
            "type_conflict",
        ),
        (
            r#"[{"name": "x", "type": "gauge", "values": [{"name": "x", "labels": {"_aggregate": "median"}, "value": 1}]}]"#,
            "invalid_aggregate",
        ),
        (
            r#"[{"name": "h", "type": "histogram", "values": [{"name": "h_bucket", "labels": {"le": "1"}, "value": 1}, {"name": "h_sum", "value": 1}]}]"#,
            "invalid_distribution",
        ),
        (
            r#"[{"name": "h", "type": "histogram", "values": [{"name": "h_bucket", "labels": {"le": "+Inf"}, "value": 1}]}]"#,
            "invalid_distribution",
        ),
        (
            r#"[{"name": "monasca_sidecar_x", "type": "gauge", "values": [{"name": "monasca_sidecar_x", "value": 1}]}]"#,
            "reserved_name",
        ),
    ] {
        let mut s = store();
        let err = ingest(&mut s, body.as_bytes(), now).expect_err(body);
        assert_eq!(err.reason(), reason, "{body}: {err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        assert_eq!(s.worker_count(), 0, "{body}");
    }
}

#[test]
fn type_conflict_with_existing_family_is_refused() {
    let mut s = store();
    let now = Now::now();
    // A gauge `test_total`, then a counter `test` (stored as `test_total`).
    let gauge = DOCUMENTED.replace("\"test\"", "\"test_total\"");
    ingest(&mut s, gauge.as_bytes(), now).unwrap();
    let body = DOCUMENTED.replace("gauge", "counter");
    let err = ingest(&mut s, body.as_bytes(), now).unwrap_err();
    assert_eq!(err.reason(), "type_conflict");
    assert!(text(&s, now).contains("test_total{c=\"d\"} 12.34\n"));
}

#[test]
fn counter_names_normalised_and_non_finite_refused() {
    let mut s = store();
    let now = Now::now();
    let body = |name: &str, value: &str| {
        format!(
            r#"[{{"name": "{name}", "type": "counter",
                "values": [{{"name": "{name}", "labels": {{"_id": "{name}"}}, "value": {value}}}]}}]"#
        )
    };
    ingest(&mut s, body("jobs", "2").as_bytes(), now).unwrap();
    ingest(&mut s, body("jobs_total", "3").as_bytes(), now).unwrap();
    let out = text(&s, now);
    assert!(
        out.contains("# TYPE jobs_total counter\njobs_total 5\n"),
        "{out}"
    );
    for bad in ["\"NaN\"", "\"+Inf\"", "\"-Inf\""] {
        let err = ingest(&mut s, body("jobs", bad).as_bytes(), now).unwrap_err();
        assert_eq!(err.reason(), "non_finite", "{bad}: {err}");
    }
    assert!(text(&s, now).contains("jobs_total 5\n"));
}

#[test]
fn label_values_of_other_json_types() {
    let mut s = store();
    let now = Now::now();
    let body = r#"[{"name": "x", "type": "untyped", "help": "h", "values": [
        {"name": "x", "labels": {"code": 204, "ok": true, "none": null, "e": "\u00e9"}, "value": "NaN"}]}]"#;
    ingest(&mut s, body.as_bytes(), now).unwrap();
    let out = text(&s, now);
    assert!(
        out.contains("x{code=\"204\",e=\"é\",ok=\"true\"} NaN\n"),
        "{out}"
    );
}

#[test]
fn clear_forgets_everything() {
    let mut s = store();
    let now = Now::now();
    ingest(&mut s, with_worker("a", "sum", 1.0).as_bytes(), now).unwrap();
    s.clear();
    assert_eq!(s.worker_count(), 0);
    assert!(!text(&s, now).contains("test"));
}

#[test]
fn decay_seconds() {
    assert_eq!(
        parse_decay_seconds("60").unwrap(),
        monasca_config::Duration::from_secs(60)
    );
    assert_eq!(
        parse_decay_seconds(" 1.5 ").unwrap(),
        monasca_config::Duration::from_millis(1500)
    );
    for bad in ["", "abc", "0", "-5", "inf", "nan"] {
        assert!(parse_decay_seconds(bad).is_err(), "{bad}");
    }
}
