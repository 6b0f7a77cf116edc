//! The original monasca-sidecar JSON API through the real `monasca-sidecar` binary:
//! `POST /v1/ingest` on the ingest listener, `/metrics` on the metrics listener, `POST
//! /v1/clear`, and `DECAY_SECONDS`.

mod common;

use common::{Sidecar, http, sample_value, wait_until};
use std::time::Duration;

/// The original README's example payload, with `_id` and `_aggregate: sum` in its labels.
fn documented(id: &str) -> String {
    format!(
        r#"[{{"name": "test", "type": "gauge", "help": "test description",
            "values": [{{"name": "test", "labels": {{"c": "d", "_id": "{id}", "_aggregate": "sum"}},
            "value": 12.34}}]}}]"#
    )
}

fn post(sidecar: &Sidecar, path: &str, body: &[u8]) -> common::Response {
    http(
        sidecar.ingest_addr(),
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body,
    )
}

#[test]
fn documented_payload_from_two_workers_is_one_summed_series() {
    let sidecar = Sidecar::start("");
    for id in ["a", "b"] {
        let r = post(&sidecar, "/v1/ingest", documented(id).as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let text = sidecar.metrics();
    assert!(text.contains("# HELP test test description\n"), "{text}");
    assert!(text.contains("# TYPE test gauge\n"), "{text}");
    assert_eq!(sample_value(&text, r#"test{c="d"}"#), Some(24.68), "{text}");
    assert!(
        !text.contains("_id") && !text.contains("_aggregate"),
        "{text}"
    );

    // A worker's new value replaces its old one.
    let r = post(
        &sidecar,
        "/v1/ingest",
        documented("b").replace("12.34", "1").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sidecar.value(r#"test{c="d"}"#), Some(13.34));

    sidecar.checked_metrics();

    // `POST /v1/clear` forgets everything.
    let r = post(&sidecar, "/v1/clear", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!sidecar.metrics().contains("test{"));
    // Every scenario leaves a valid exposition in both formats.
    sidecar.checked_metrics();
}

#[test]
fn bad_bodies_get_400_with_one_line() {
    let sidecar = Sidecar::start("");
    for body in [
        &b"{not json"[..],
        br#"{"name": "test"}"#,
        br#"[{"name": "x", "type": "stateset", "help": "h", "values": []}]"#,
        br#"[{"name": "x", "type": "gauge", "help": "h", "values": [{"name": "x", "labels": {"_aggregate": "median"}, "value": 1}]}]"#,
    ] {
        let r = post(&sidecar, "/v1/ingest", body);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        let text = r.text();
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    }
    // Nothing of a refused body was applied, and the sidecar still works.
    let r = post(&sidecar, "/v1/ingest", documented("a").as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(sidecar.value(r#"test{c="d"}"#), Some(12.34));
    // Every scenario leaves a valid exposition in both formats.
    sidecar.checked_metrics();
}

#[test]
fn decay_seconds_sets_stale_after() {
    let sidecar = Sidecar::start_with_env("", &[("DECAY_SECONDS", "1")]);
    let r = post(&sidecar, "/v1/ingest", documented("a").as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let stale = wait_until(Duration::from_secs(5), || {
        let r = http(sidecar.metrics_addr(), "GET", "/v1/workers", &[], b"");
        r.text().contains(r#""stale":true"#)
    });
    assert!(
        stale,
        "worker not stale after DECAY_SECONDS=1; log:\n{}",
        sidecar.log()
    );
    // Every scenario leaves a valid exposition in both formats.
    sidecar.checked_metrics();
}
