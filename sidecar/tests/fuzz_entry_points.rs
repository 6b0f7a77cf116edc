//! Fuzz-style property tests on stable Rust, so they run in CI (the coverage-guided cargo-fuzz
//! targets in `fuzz/` need nightly): random bytes and structured near-valid input through the
//! JSON API body, Pushgateway path decoding, config and duration parsing, and StatsD mapping
//! rules. The invariants live in `fuzz_checks/`, shared with the cargo-fuzz targets.

mod fuzz_checks;

use base64::Engine as _;
use monasca_sidecar::sources::push::GroupingKey;
use proptest::prelude::*;

/// JSON that looks like an ingest body: families with names, types, values of every JSON kind
/// (numbers beyond f64, "NaN", "+Inf", strings, null), labels including `_id`/`le`/`quantile`.
fn json_like() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "a", "a_total", "h", "h_bucket", "h_sum", "h_count", "", "1x",
    ]);
    let kind = prop::sample::select(vec![
        "counter",
        "gauge",
        "histogram",
        "summary",
        "untyped",
        "info",
        "x",
    ]);
    let value = prop::sample::select(vec![
        "1", "-1", "0", "2.5", "1e308", "1e999", "\"NaN\"", "\"+Inf\"", "\"-Inf\"", "\"x\"",
        "null", "true", "[]",
    ]);
    let label = (
        prop::sample::select(vec![
            "_id",
            "le",
            "quantile",
            "job",
            "_aggregate",
            "__x",
            "a-b",
        ]),
        prop::sample::select(vec![
            "\"w1\"", "\"+Inf\"", "\"1\"", "\"0.5\"", "\"sum\"", "\"all\"", "1", "null",
        ]),
    );
    let sample =
        (name.clone(), prop::collection::vec(label, 0..3), value).prop_map(|(n, labels, v)| {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("\"{k}\": {v}"))
                .collect();
            format!(
                r#"{{"name": "{n}", "labels": {{{}}}, "value": {v}}}"#,
                labels.join(", ")
            )
        });
    let family = (name, kind, prop::collection::vec(sample, 0..5)).prop_map(|(n, k, s)| {
        format!(
            r#"{{"name": "{n}", "type": "{k}", "values": [{}]}}"#,
            s.join(", ")
        )
    });
    prop::collection::vec(family, 0..4).prop_map(|f| format!("[{}]", f.join(", ")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn json_body_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz_checks::json_body(&body);
    }

    #[test]
    fn json_body_structured(body in json_like()) {
        fuzz_checks::json_body(body.as_bytes());
    }

    #[test]
    fn push_path_arbitrary(path in "[a-z_@%0-9A-F/=+.-]{0,40}|\\PC{0,40}") {
        fuzz_checks::push_path(&path);
    }

    /// Any label set written the Pushgateway way (values base64url, as the Go client does for
    /// values with `/`) decodes back to itself.
    #[test]
    fn push_path_round_trips(
        job in "\\PC{1,12}",
        labels in prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9_]{0,8}", "\\PC{0,12}", 0..4),
    ) {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let mut path = format!("job@base64/{}", enc(&job));
        let labels: Vec<(String, String)> =
            labels.into_iter().filter(|(k, _)| k != "job").collect();
        for (k, v) in &labels {
            // An empty value is written `=` (base64 of nothing), as the Go client does.
            let e = enc(v);
            path.push_str(&format!("/{k}@base64/{}", if e.is_empty() { "=" } else { &e }));
        }
        let key = GroupingKey::from_path(&path).expect("valid path");
        let mut want = vec![("job".to_string(), job)];
        want.extend(labels);
        prop_assert_eq!(key.labels, want);
    }

    #[test]
    fn config_arbitrary_text(text in "\\PC{0,200}") {
        fuzz_checks::config_yaml(&text);
    }

    #[test]
    fn config_structured(
        key in prop::sample::select(vec![
            "staleAfter", "forgetAfter", "statsd", "listen", "scrape", "aggregation", "limits",
            "workerLabels", "multiprocessDir",
        ]),
        value in prop::sample::select(vec![
            "10s", "0s", "1h30m", "1.5s", "-1s", "1500us", "[]", "{}", "null", "x",
            "{expireAfter: 250ms, dialect: monasca}", "{buckets: [0.1, 1e6]}",
            "{metrics: '127.0.0.1:0'}", "{rules: [{match: '(', mode: sum}]}", "[pid, 'a-b']",
            "{targets: ['127.0.0.1:9-1']}", "{maxSeriesPerWorker: 0}",
        ]),
    ) {
        fuzz_checks::config_yaml(&format!("{key}: {value}\n"));
    }

    #[test]
    fn duration_arbitrary(text in "[0-9.]{0,6}(ns|us|µs|ms|s|m|h|d|w|y|x)?([0-9.]{0,4}(ms|s|m|h))?|\\PC{0,16}") {
        fuzz_checks::duration(&text);
    }

    #[test]
    fn statsd_mapping_arbitrary(data in prop::collection::vec(any::<u8>(), 0..128)) {
        fuzz_checks::statsd_mapping(&data);
    }

    #[test]
    fn statsd_mapping_structured(
        control in any::<u8>(),
        pattern in "[a-z.*]{0,12}|\\^?[a-z.()\\[\\]*+?|\\\\]{0,12}\\$?",
        name in "[a-z$_{}0-9.-]{0,12}",
        label in "[a-z_$0-9{}-]{0,6}=[a-z$0-9{}]{0,6}",
        names in prop::collection::vec("[a-z0-9.*_-]{0,16}|\\PC{0,8}", 0..4),
    ) {
        let data = format!("{}\n{pattern}\n{name}\n{label}\n{}", control as char, names.join("\n"));
        fuzz_checks::statsd_mapping(data.as_bytes());
    }
}
