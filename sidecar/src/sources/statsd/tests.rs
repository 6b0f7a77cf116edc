//! Parser, dialect, mapping and accumulation tests, including every datagram of the real
//! client captures in `shared/fixtures/wire/`.

use super::accumulate::{Accumulator, DropReason};
use super::line::{LineError, SampleType, TagStyle, lines, parse_line, parse_str};
use super::mapping::{Mapper, sanitize_metric_name};
use super::{Shared, WORKER_ID, worker_key};
use crate::app::App;
use crate::expose::{Format, render};
use crate::model::Family;
use crate::store::{Now, Scope, Store, StoreSettings};
use monasca_config::{MappingAction, MatchType, SidecarConfig, StatsdMapping, StatsdMetricType};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------
// Fixtures

/// `shared/fixtures/wire` beside the repository (or inside it), overridable with
/// `MONASCA_WIRE_FIXTURES_DIR`.
fn wire_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MONASCA_WIRE_FIXTURES_DIR") {
        return PathBuf::from(dir);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        repo.join("../shared/fixtures/wire"),
        repo.join("shared/fixtures/wire"),
    ];
    for dir in &candidates {
        if dir.is_dir() {
            return dir.clone();
        }
    }
    panic!("wire fixtures not found: tried {candidates:?}");
}

/// The datagrams of a capture file, decoded from their `hex:` lines (length-checked).
fn datagrams(file: &str) -> Vec<Vec<u8>> {
    let path = wire_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut expected_len = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('#')
            && let Some((_, len)) = rest.split_once(" len=")
        {
            expected_len = len.trim().parse::<usize>().ok();
        } else if let Some(hex) = line.trim().strip_prefix("hex:") {
            let hex = hex.trim();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            assert_eq!(
                Some(bytes.len()),
                expected_len,
                "length of datagram #{}",
                out.len()
            );
            out.push(bytes);
        }
    }
    assert!(!out.is_empty(), "no datagrams in {file}");
    out
}

fn config() -> SidecarConfig {
    SidecarConfig::default()
}

fn mapping(pattern: &str, name: Option<&str>) -> StatsdMapping {
    StatsdMapping {
        pattern: pattern.into(),
        match_type: MatchType::Glob,
        name: name.map(Into::into),
        labels: BTreeMap::new(),
        metric_type: None,
        action: MappingAction::Map,
    }
}

/// Feeds datagrams to a fresh accumulator, applies the result to a store and renders it.
struct Harness {
    acc: Accumulator,
    store: Store,
    now: Now,
}

impl Harness {
    fn new(config: &SidecarConfig) -> Harness {
        Harness {
            acc: Accumulator::new(config).expect("mappings"),
            store: Store::new(StoreSettings::from_config(config)),
            now: Now::now(),
        }
    }

    fn feed(&mut self, datagram: &[u8]) -> &mut Self {
        self.acc.ingest_datagram(datagram);
        self
    }

    fn flush(&mut self) {
        let changes = self.acc.take_changes();
        let families: Vec<Family<'_>> = changes.iter().map(|c| c.family()).collect();
        self.store
            .apply(&worker_key(), &families, Scope::Series, self.now)
            .expect("store accepts the StatsD update");
    }

    fn render(&mut self) -> String {
        self.flush();
        let mut out = Vec::new();
        render(&self.store, Format::Text, self.now.mono, &[], &mut out);
        String::from_utf8(out).expect("utf-8")
    }
}

/// The value of the sample line starting with `series ` in a rendering.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[track_caller]
fn assert_value(text: &str, series: &str, expected: f64) {
    match value(text, series) {
        Some(v) => assert!(
            (v - expected).abs() < 1e-9,
            "{series} = {v}, expected {expected}\n{text}"
        ),
        None => panic!("{series} missing from\n{text}"),
    }
}

// ---------------------------------------------------------------------------------------
// Parser

#[test]
fn plain_line() {
    let l = parse_str("demo.requests:1|c").unwrap();
    assert_eq!(l.name, "demo.requests");
    assert_eq!(l.style, TagStyle::None);
    assert_eq!(l.samples.len(), 1);
    assert_eq!(l.samples[0].kind, SampleType::Counter);
    assert_eq!(l.samples[0].value, 1.0);
    assert_eq!(l.samples[0].rate, 1.0);
}

#[test]
fn every_type() {
    for (text, kind) in [
        ("a:1|c", SampleType::Counter),
        ("a:1|g", SampleType::Gauge),
        ("a:1|ms", SampleType::Timer),
        ("a:1|h", SampleType::Histogram),
        ("a:1|d", SampleType::Distribution),
    ] {
        assert_eq!(parse_str(text).unwrap().samples[0].kind, kind, "{text}");
    }
    assert_eq!(parse_str("a:x|s"), Err(LineError::UnsupportedSet));
    assert_eq!(parse_str("a:1|ms").unwrap().samples[0].observation(), 0.001);
}

#[test]
fn signs_and_rates() {
    let l = parse_str("g:+5|g").unwrap();
    assert!(l.samples[0].signed);
    assert_eq!(l.samples[0].value, 5.0);
    let l = parse_str("g:-5|g").unwrap();
    assert!(l.samples[0].signed);
    assert_eq!(l.samples[0].value, -5.0);
    assert!(!parse_str("g:5|g").unwrap().samples[0].signed);
    assert_eq!(parse_str("c:1|c|@0.25").unwrap().samples[0].rate, 0.25);
    assert_eq!(parse_str("c:1|c|@0"), Err(LineError::InvalidSampleRate));
    assert_eq!(parse_str("c:1|c|@1.5"), Err(LineError::InvalidSampleRate));
    assert_eq!(parse_str("c:1|c|@x"), Err(LineError::InvalidSampleRate));
}

#[test]
fn multi_value_lines() {
    let l = parse_str("a:1|c:2|c|@0.5:3|g").unwrap();
    assert_eq!(l.samples.len(), 3);
    assert_eq!(l.samples[1].rate, 0.5);
    assert_eq!(l.samples[2].kind, SampleType::Gauge);
    let l = parse_str("a:1|c:2|c|#k:v").unwrap();
    assert_eq!(l.samples.len(), 2);
    assert_eq!(l.tags.len(), 1);
}

#[test]
fn dogstatsd_tags_and_extensions() {
    let l = parse_str("a:1|c|@0.5|#env:prod,service:api|c:abc123|T1656581400").unwrap();
    assert_eq!(l.style, TagStyle::DogStatsd);
    let tags: Vec<(&str, &str)> = l.tags.iter().map(|t| (&*t.name, &*t.value)).collect();
    assert_eq!(tags, [("env", "prod"), ("service", "api")]);
    assert_eq!(l.samples[0].rate, 0.5);
    // A value may contain ':'; a tag without a value is skipped and counted.
    let l = parse_str("a:1|c|#url:http://x:80,production").unwrap();
    assert_eq!(&*l.tags[0].value, "http://x:80");
    assert_eq!(l.tags.len(), 1);
    assert_eq!(l.bad_tags, 1);
}

#[test]
fn influx_librato_signalfx_tags() {
    for (text, style, name) in [
        (
            "svc.req,env=prod,service=api:1|c",
            TagStyle::Influx,
            "svc.req",
        ),
        (
            "svc.req#env=prod,service=api:1|c",
            TagStyle::Librato,
            "svc.req",
        ),
        (
            "svc.req[env=prod,service=api]:1|c",
            TagStyle::SignalFx,
            "svc.req",
        ),
        (
            "[env=prod,service=api]svc.req:1|c",
            TagStyle::SignalFx,
            "svc.req",
        ),
    ] {
        let l = parse_str(text).unwrap();
        assert_eq!(l.style, style, "{text}");
        assert_eq!(l.name, name, "{text}");
        let tags: Vec<(&str, &str)> = l.tags.iter().map(|t| (&*t.name, &*t.value)).collect();
        assert_eq!(tags, [("env", "prod"), ("service", "api")], "{text}");
    }
    let l = parse_str("svc[env=prod].req:1|c").unwrap();
    assert_eq!(l.name, "svc.req");
}

#[test]
fn mixed_tag_styles_are_errors() {
    for text in [
        "a,env=prod:1|c|#service:api",
        "a#env=prod:1|c|#service:api",
        "a[env=prod]:1|c|#service:api",
        "a[env=prod]:1|c|#{'service': 'api'}",
        "a,x=y[env=prod]:1|c",
        "a,x=y#env=prod:1|c",
    ] {
        assert_eq!(parse_str(text), Err(LineError::MixedTagStyles), "{text}");
    }
    assert_eq!(
        parse_str("a:1|c|#k:v|#k2:v2"),
        Err(LineError::InvalidTags),
        "two tag sections"
    );
}

#[test]
fn monasca_python_dict_tags() {
    let l = parse_str(
        r#"a:1|c|#{'note': "it's", 'city': 'Zürich', 'code': 204, 'f': 1.5, 'b': True, 'n': None}"#,
    )
    .unwrap();
    assert_eq!(l.style, TagStyle::Monasca);
    let tags: Vec<(&str, &str)> = l.tags.iter().map(|t| (&*t.name, &*t.value)).collect();
    assert_eq!(
        tags,
        [
            ("note", "it's"),
            ("city", "Zürich"),
            ("code", "204"),
            ("f", "1.5"),
            ("b", "True"),
            ("n", "None")
        ]
    );
    // Escapes as Python's repr writes them.
    let l = parse_str(r#"a:1|c|#{'q': 'it\'s "x"', 'p': 'a\\b', 'c': '\x00\n', 'u': '\u20ac'}"#)
        .unwrap();
    let tags: Vec<(&str, &str)> = l.tags.iter().map(|t| (&*t.name, &*t.value)).collect();
    assert_eq!(
        tags,
        [
            ("q", "it's \"x\""),
            ("p", "a\\b"),
            ("c", "\0\n"),
            ("u", "€")
        ]
    );
    // Characters that delimit other dialects are just data inside the dict.
    let l = parse_str("a:1|c|#{'path': '/a|b,c:d}', 'e': ''}").unwrap();
    assert_eq!(&*l.tags[0].value, "/a|b,c:d}");
    assert_eq!(parse_str("a:1|c|#{}").unwrap().tags.len(), 0);
    // Never evaluated: anything but flat literals is refused.
    for text in [
        "a:1|c|#{'k': ['v']}",
        "a:1|c|#{'k': {'v': 1}}",
        "a:1|c|#{'k': 'v'",
        "a:1|c|#{'k' 'v'}",
        "a:1|c|#{'k': 'v}",
        "a:1|c|#{'k': __import__('os')}",
        "a:1|c|#{'k': datetime.date(2020, 1, 1)}",
        "a:1|c|#{'k': <object at 0x7f>}",
        "a:1|c|#{'k': 'v'} trailing",
        r"a:1|c|#{'k': '\x4'}",
    ] {
        let got = parse_str(text);
        assert!(
            matches!(
                got,
                Err(LineError::InvalidTags) | Err(LineError::InvalidLine)
            ),
            "{text}: {got:?}"
        );
    }
}

#[test]
fn malformed_lines_have_fixed_reasons() {
    for (text, err) in [
        ("nocolon", LineError::InvalidLine),
        ("a:1", LineError::InvalidLine),
        ("a:1|c|x", LineError::InvalidLine),
        ("a:1|c junk", LineError::InvalidType),
        (":1|c", LineError::InvalidName),
        ("#k=v:1|c", LineError::InvalidName),
        ("a:abc|c", LineError::InvalidValue),
        ("a:|c", LineError::InvalidValue),
        ("a:inf|g", LineError::NonFinite),
        ("a:NaN|g", LineError::NonFinite),
        ("a:1e309|c", LineError::NonFinite),
        ("a:1e308|c|@0.5", LineError::NonFinite),
        ("a:1e308|h|@0.1", LineError::NonFinite),
        ("a:1|c|@1e-320", LineError::NonFinite),
        ("a:1|zz", LineError::InvalidType),
        ("a:1|", LineError::InvalidType),
        ("a[k=v:1|c", LineError::InvalidLine),
        ("a]k:1|c", LineError::InvalidTags),
        ("_e{5,4}:title|text", LineError::UnsupportedEvent),
        ("_sc|check|0", LineError::UnsupportedEvent),
    ] {
        assert_eq!(parse_str(text), Err(err), "{text}");
    }
    assert_eq!(parse_line(b"a\xff:1|c"), Err(LineError::InvalidUtf8));
}

#[test]
fn datagram_lines_tolerate_crlf_and_trailing_newline() {
    let got: Vec<&[u8]> = lines(b"a:1|c\r\nb:2|c\n\n  \nc:3|c\n").collect();
    assert_eq!(got, [&b"a:1|c"[..], b"b:2|c", b"c:3|c"]);
}

// ---------------------------------------------------------------------------------------
// Real captures

#[test]
fn monasca_statsd_fixture_datagrams_parse() {
    let d = datagrams("monasca-statsd-datagrams.txt");
    assert_eq!(d.len(), 12);
    for (i, datagram) in d.iter().enumerate() {
        for line in lines(datagram) {
            let parsed = parse_line(line);
            assert!(parsed.is_ok(), "datagram #{i}: {parsed:?}");
        }
    }
    let l = parse_line(&d[3]).unwrap();
    assert_eq!(l.samples[0].value, -2.0);
    assert_eq!(l.samples[0].rate, 0.999999);
    assert_eq!(l.style, TagStyle::Monasca);
    let l = parse_line(&d[11]).unwrap();
    let tags: Vec<(&str, &str)> = l.tags.iter().map(|t| (&*t.name, &*t.value)).collect();
    assert_eq!(
        tags,
        [("note", "it's"), ("city", "Zürich"), ("code", "204")]
    );
    assert_eq!(lines(&d[10]).count(), 2);
}

#[test]
fn monasca_statsd_fixture_accumulates() {
    let mut h = Harness::new(&config());
    for datagram in datagrams("monasca-statsd-datagrams.txt") {
        h.feed(&datagram);
    }
    let counts = h.acc.take_counts();
    assert_eq!(counts.lines, 13);
    assert_eq!(counts.errors.iter().sum::<u64>(), 0);
    // `decrement()` sends negative deltas: dropped, a counter never goes backwards.
    assert_eq!(counts.drop_count(DropReason::NegativeCounter), 2);
    let text = h.render();
    let base = r#"endpoint="/v2.0/metrics",hostname="h1",service="monitoring""#;
    assert_value(&text, &format!("demo_requests_total{{{base}}}"), 2.0);
    assert_value(
        &text,
        &format!("demo_requests_total{{{base},status=\"204\"}}"),
        5.0,
    );
    assert_value(
        &text,
        r#"demo_queue_depth{hostname="h1",queue="a",service="monitoring"}"#,
        42.0,
    );
    assert_value(
        &text,
        r#"demo_queue_depth{hostname="h1",service="monitoring"}"#,
        7.0,
    );
    assert_value(
        &text,
        r#"demo_queue_temp{hostname="h1",service="monitoring"}"#,
        21.5,
    );
    // monasca timers arrive as `g` seconds and stay gauges without a mapping rule.
    assert!(
        text.contains("# TYPE demo_db_query_seconds gauge"),
        "{text}"
    );
    assert_value(
        &text,
        r#"demo_db_query_seconds{db="mysql",hostname="h1",service="monitoring"}"#,
        0.25,
    );
    assert_value(
        &text,
        r#"demo_block_seconds{hostname="h1",op="sleep",service="monitoring"}"#,
        0.050138235092163086,
    );
    assert_value(&text, "bare_counter_total", 1.0);
    assert_value(
        &text,
        r#"edge_counter_total{city="Zürich",code="204",note="it's"}"#,
        1.0,
    );
    assert!(
        text.contains("# TYPE demo_requests_total counter"),
        "{text}"
    );
}

#[test]
fn monasca_timers_become_histograms_with_a_mapping_rule() {
    let mut c = config();
    let mut rule = mapping("demo.*_seconds", Some("demo_${1}_seconds"));
    rule.metric_type = Some(StatsdMetricType::Histogram);
    c.statsd.mappings.push(rule);
    let mut h = Harness::new(&c);
    for datagram in datagrams("monasca-statsd-datagrams.txt") {
        h.feed(&datagram);
    }
    let text = h.render();
    assert!(
        text.contains("# TYPE demo_block_seconds histogram"),
        "{text}"
    );
    let labels = r#"hostname="h1",op="sleep",service="monitoring""#;
    assert_value(
        &text,
        &format!("demo_block_seconds_bucket{{{labels},le=\"0.05\"}}"),
        0.0,
    );
    assert_value(
        &text,
        &format!("demo_block_seconds_bucket{{{labels},le=\"0.1\"}}"),
        1.0,
    );
    assert_value(&text, &format!("demo_block_seconds_count{{{labels}}}"), 1.0);
    assert_value(
        &text,
        &format!("demo_block_seconds_sum{{{labels}}}"),
        0.050138235092163086,
    );
    // Every `demo.<x>_seconds` timer matches the glob, the decorator's too.
    assert!(text.contains("# TYPE demo_fn_seconds histogram"), "{text}");
}

#[test]
fn decrements_count_with_a_gauge_mapping() {
    let mut c = config();
    let mut rule = mapping("demo.requests", Some("demo_requests_in_flight"));
    rule.metric_type = Some(StatsdMetricType::Gauge);
    c.statsd.mappings.push(rule);
    let mut h = Harness::new(&c);
    for datagram in datagrams("monasca-statsd-datagrams.txt") {
        h.feed(&datagram);
    }
    let text = h.render();
    // +1 -1 -2/0.999999 +1 on the base series.
    let base = r#"endpoint="/v2.0/metrics",hostname="h1",service="monitoring""#;
    let v = value(&text, &format!("demo_requests_in_flight{{{base}}}")).expect("series");
    assert!((v - (1.0 - 1.0 - 2.0 / 0.999999 + 1.0)).abs() < 1e-9, "{v}");
}

#[test]
fn dialect_fixture_datagrams() {
    let d = datagrams("statsd-dialects-datagrams.txt");
    assert_eq!(d.len(), 7);
    let styles = [
        TagStyle::None,
        TagStyle::DogStatsd,
        TagStyle::Monasca,
        TagStyle::Influx,
        TagStyle::Librato,
        TagStyle::SignalFx,
    ];
    for (datagram, style) in d.iter().zip(styles) {
        let l = parse_line(datagram).unwrap();
        assert_eq!(l.style, style);
    }
    let mut h = Harness::new(&config());
    for datagram in &d {
        h.feed(datagram);
    }
    let counts = h.acc.take_counts();
    assert_eq!(counts.lines, 11);
    assert_eq!(counts.error(LineError::UnsupportedSet), 1, "users:alice|s");
    assert_eq!(counts.errors.iter().sum::<u64>(), 1);
    let text = h.render();
    let tags = r#"{env="prod",service="api"}"#;
    assert_value(&text, "dialects_plain_requests_total", 1.0);
    assert_value(&text, &format!("dialects_dog_requests_total{tags}"), 4.0);
    for dialect in ["monasca", "influx", "librato", "signalfx"] {
        assert_value(
            &text,
            &format!("dialects_{dialect}_requests_total{tags}"),
            1.0,
        );
    }
    // The multi-line datagram: the set is rejected, every other line applied.
    assert_value(&text, "dialects_multi_requests_total", 1.0);
    assert_value(&text, "dialects_multi_queue_depth", 42.0);
    assert_value(&text, r#"dialects_multi_latency_bucket{le="0.01"}"#, 0.0);
    assert_value(&text, r#"dialects_multi_latency_bucket{le="0.025"}"#, 1.0);
    assert_value(&text, "dialects_multi_latency_sum", 0.0125);
    assert_value(
        &text,
        r#"dialects_multi_latency_bucket{env="prod",le="5.0"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"dialects_multi_latency_bucket{env="prod",le="10.0"}"#,
        1.0,
    );
    assert_value(&text, r#"dialects_multi_latency_sum{env="prod"}"#, 7.0);
    assert!(!text.contains("users"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Accumulation

#[test]
fn malformed_lines_never_affect_the_rest_of_the_datagram() {
    let mut h = Harness::new(&config());
    h.feed(
        b"good:1|c\nbad\nalso:2|g\n:1|c\nx:abc|c\nx:1|zz\nx:1|c|@2\nx,a=b:1|c|#c:d\n\
          x:1|c|#{'k': \nx\xff:1|c\nok:3|c\n",
    );
    let counts = h.acc.take_counts();
    assert_eq!(counts.lines, 11);
    assert_eq!(counts.samples, 3);
    for (e, n) in [
        (LineError::InvalidLine, 1),
        (LineError::InvalidName, 1),
        (LineError::InvalidValue, 1),
        (LineError::InvalidType, 1),
        (LineError::InvalidSampleRate, 1),
        (LineError::MixedTagStyles, 1),
        (LineError::InvalidTags, 1),
        (LineError::InvalidUtf8, 1),
    ] {
        assert_eq!(counts.error(e), n, "{e:?}");
    }
    let text = h.render();
    assert_value(&text, "good_total", 1.0);
    assert_value(&text, "also", 2.0);
    assert_value(&text, "ok_total", 3.0);
}

#[test]
fn counters_add_with_sample_rates() {
    let mut h = Harness::new(&config());
    h.feed(b"hits:1|c|@0.1\nhits:2|c\nhits:1|c:1|c");
    let text = h.render();
    assert_value(&text, "hits_total", 14.0);
    // Cumulative across flushes: the store sees a growing value, never a reset.
    h.feed(b"hits:1|c");
    let text = h.render();
    assert_value(&text, "hits_total", 15.0);
    assert_eq!(h.store.resets, 0);
}

#[test]
fn relative_gauges() {
    let mut h = Harness::new(&config());
    h.feed(b"g:10|g\ng:+5|g\ng:-3|g");
    assert_value(&h.render(), "g", 12.0);
    h.feed(b"g:4|g");
    assert_value(&h.render(), "g", 4.0);
    h.feed(b"fresh:-2|g");
    assert_value(&h.render(), "fresh", -2.0);
}

#[test]
fn timers_fill_histogram_buckets_in_seconds() {
    let mut c = config();
    c.statsd.buckets = vec![0.01, 0.1, 1.0];
    let mut h = Harness::new(&c);
    h.feed(b"t:5|ms\nt:50|ms\nt:500|ms\nt:5000|ms\nt:100|ms|@0.5\nsize:3|h\nsize:30|d");
    let text = h.render();
    assert!(text.contains("# TYPE t histogram"), "{text}");
    assert_value(&text, r#"t_bucket{le="0.01"}"#, 1.0);
    assert_value(&text, r#"t_bucket{le="0.1"}"#, 4.0); // 0.05 and 0.1 (weight 2)
    assert_value(&text, r#"t_bucket{le="1.0"}"#, 5.0);
    assert_value(&text, r#"t_bucket{le="+Inf"}"#, 6.0);
    assert_value(&text, "t_count", 6.0);
    assert_value(&text, "t_sum", 0.005 + 0.05 + 0.5 + 5.0 + 0.2);
    assert_value(&text, r#"size_bucket{le="+Inf"}"#, 2.0);
    assert_value(&text, "size_sum", 33.0);
}

#[test]
fn names_are_sanitized_and_counters_get_total() {
    let mut out = String::new();
    sanitize_metric_name("demo-app.requests/sec ü", &mut out);
    assert_eq!(out, "demo_app_requests_sec__");
    out.clear();
    sanitize_metric_name("5xx.count", &mut out);
    assert_eq!(out, "_5xx_count");
    let mut h = Harness::new(&config());
    h.feed(b"demo.requests:1|c\nalready_total:2|c\nsvc.up:1|g|#bad-key:v,9k:w");
    let text = h.render();
    assert_value(&text, "demo_requests_total", 1.0);
    assert_value(&text, "already_total", 2.0);
    assert_value(&text, r#"svc_up{_9k="w",bad_key="v"}"#, 1.0);
}

#[test]
fn worker_and_reserved_labels_are_removed() {
    let mut h = Harness::new(&config());
    h.feed(b"r:1|c|#pid:1,env:a\nr:2|c|#pid:2,env:a\nt:1|ms|#le:5\ng:1|g|#_aggregate:max,__x:y");
    assert_eq!(h.acc.take_counts().tag_errors, 5);
    let text = h.render();
    assert_value(&text, r#"r_total{env="a"}"#, 3.0);
    assert_value(&text, r#"t_count"#, 1.0);
    assert_value(&text, "g", 1.0);
}

#[test]
fn type_conflicts_keep_the_first_type() {
    let mut h = Harness::new(&config());
    h.feed(b"x:1|g\nx:5|ms\nx:2|g");
    let counts = h.acc.take_counts();
    assert_eq!(counts.drop_count(DropReason::TypeConflict), 1);
    let text = h.render();
    assert!(text.contains("# TYPE x gauge"), "{text}");
    assert_value(&text, "x", 2.0);
}

#[test]
fn reserved_prefix_is_dropped() {
    let mut h = Harness::new(&config());
    h.feed(b"monasca_sidecar.lines:1|g\nok:1|g");
    assert_eq!(h.acc.take_counts().drop_count(DropReason::ReservedName), 1);
    assert_value(&h.render(), "ok", 1.0);
}

#[test]
fn series_limit_drops_new_series_only() {
    let mut c = config();
    c.limits.max_series_per_worker = 2;
    let mut h = Harness::new(&c);
    h.feed(b"a:1|c\nb:1|c\nc:1|c\na:1|c");
    let counts = h.acc.take_counts();
    assert_eq!(counts.drop_count(DropReason::SeriesLimit), 1);
    assert_eq!(h.acc.series_count(), 2);
    let text = h.render();
    assert_value(&text, "a_total", 2.0);
    assert!(!text.contains("c_total"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Mapping rules

#[test]
fn glob_mapping_with_captures_and_labels() {
    let mut c = config();
    let mut rule = mapping("api.*.*.requests", Some("api_requests"));
    rule.labels.insert("service".into(), "$1".into());
    rule.labels.insert("endpoint".into(), "${2}".into());
    c.statsd.mappings.push(rule);
    c.statsd.mappings.push(mapping("drop.*", None));
    c.statsd.mappings.last_mut().unwrap().action = MappingAction::Drop;
    let mut h = Harness::new(&c);
    h.feed(
        b"api.users.get-list.requests:1|c|#service:ignored,zone:a\napi.x.requests:1|c\ndrop.me:1|c",
    );
    let counts = h.acc.take_counts();
    assert_eq!(counts.drop_count(DropReason::Mapping), 1);
    let text = h.render();
    // The rule's labels win over tags of the same name.
    assert_value(
        &text,
        r#"api_requests_total{endpoint="get-list",service="users",zone="a"}"#,
        1.0,
    );
    // `*` matches one component only: api.x.requests does not match api.*.*.requests.
    assert_value(&text, "api_x_requests_total", 1.0);
    assert!(!text.contains("drop"), "{text}");
}

#[test]
fn regex_mapping_and_sanitized_captures() {
    let mut c = config();
    let mut rule = mapping(
        r"^(\w+)\.([\w-]+)\.latency$",
        Some("${1}_${2}_latency_seconds"),
    );
    rule.match_type = MatchType::Regex;
    rule.labels.insert("app".into(), "$1".into());
    c.statsd.mappings.push(rule);
    let mut h = Harness::new(&c);
    h.feed(b"web.get-user.latency:250|ms");
    let text = h.render();
    assert_value(
        &text,
        r#"web_get_user_latency_seconds_bucket{app="web",le="0.25"}"#,
        1.0,
    );
}

#[test]
fn mapping_type_overrides() {
    let mut c = config();
    for (pattern, kind) in [
        ("as_counter", StatsdMetricType::Counter),
        ("as_gauge", StatsdMetricType::Gauge),
        ("as_hist", StatsdMetricType::Histogram),
    ] {
        let mut rule = mapping(pattern, Some(pattern));
        rule.metric_type = Some(kind);
        c.statsd.mappings.push(rule);
    }
    let mut h = Harness::new(&c);
    h.feed(b"as_counter:5|g\nas_counter:2|ms\nas_gauge:3|c\nas_gauge:-1|c\nas_gauge:20|ms\nas_hist:0.2|g\nas_hist:3|c");
    let text = h.render();
    assert_value(&text, "as_counter_total", 5.002);
    assert_value(&text, "as_gauge", 0.02);
    assert_value(&text, "as_hist_count", 2.0);
    assert_value(&text, "as_hist_sum", 3.2);
}

#[test]
fn mapping_errors_and_first_match_wins() {
    let mut c = config();
    c.statsd.mappings.push(mapping("a.*", Some("first")));
    c.statsd.mappings.push(mapping("a.b", Some("second")));
    let m = Mapper::new(&c.statsd).unwrap();
    match m.map("a.b") {
        super::Mapped::Map(n) => assert_eq!(&*n.name, "first"),
        other => panic!("{other:?}"),
    }
    let mut bad = mapping("x", Some("y"));
    bad.labels.insert("bad-name".into(), "v".into());
    c.statsd.mappings.push(bad);
    assert!(Mapper::new(&c.statsd).is_err());
}

// ---------------------------------------------------------------------------------------
// Flushing into the store

#[test]
fn flush_drops_families_the_store_refuses_and_keeps_the_others() {
    let app = App::new(config());
    // Another source owns `shared_name` as a counter.
    let mut owner = Family::new("shared_name", crate::model::MetricKind::Counter);
    owner.series.push(crate::model::Series {
        labels: Default::default(),
        value: crate::model::Value::Scalar(1.0),
        timestamp: None,
    });
    let push = crate::store::WorkerKey::new(crate::store::Source::Push, "push:x", Vec::new());
    app.store
        .write()
        .apply(&push, &[owner], Scope::Worker, app.now())
        .unwrap();
    let shared = Shared::new(Accumulator::new(&config()).unwrap(), app.config());
    shared
        .acc
        .lock()
        .ingest_datagram(b"shared_name:3|g\nfine:1|c");
    shared.flush(&app);
    let mut out = Vec::new();
    render(
        &app.store.read(),
        Format::Text,
        app.now().mono,
        &[],
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert_value(&text, "fine_total", 1.0);
    assert_value(&text, "shared_name", 1.0);
    assert_eq!(
        shared
            .metrics
            .dropped
            .child(DropReason::StoreRejected.index())
            .get(),
        1
    );
}

#[test]
fn clear_restarts_accumulation_from_zero() {
    let app = App::new(config());
    let shared = Shared::new(Accumulator::new(&config()).unwrap(), app.config());
    shared.acc.lock().ingest_datagram(b"c:5|c");
    shared.flush(&app);
    assert!(app.store.read().has_worker(WORKER_ID));
    // The store alone forgets the worker (as a sweep would, without the clear hook).
    app.store.write().clear();
    shared.flush(&app); // notices, resets
    shared.acc.lock().ingest_datagram(b"c:1|c");
    shared.flush(&app);
    let mut out = Vec::new();
    render(
        &app.store.read(),
        Format::Text,
        app.now().mono,
        &[],
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert_value(&text, "c_total", 1.0);
}

/// The app's `/metrics` text: the store and the self-metrics.
fn render_with_self_metrics(app: &App) -> String {
    let mut out = Vec::new();
    render(
        &app.store.read(),
        Format::Text,
        app.now().mono,
        &app.self_families(),
        &mut out,
    );
    String::from_utf8(out).unwrap()
}

#[test]
fn self_metrics_name_every_reason() {
    let app = App::new(config());
    let shared = Arc::new(Shared::new(
        Accumulator::new(&config()).unwrap(),
        app.config(),
    ));
    app.register(shared.clone());
    {
        let mut acc = shared.acc.lock();
        acc.ingest_datagram(b"a:1|c\nbad\nb:-1|c");
        shared.absorb(&mut acc);
    }
    let text = render_with_self_metrics(&app);
    assert_value(&text, "monasca_sidecar_statsd_lines_total", 3.0);
    assert_value(&text, "monasca_sidecar_statsd_samples_total", 1.0);
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="invalid_line"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="unsupported_set"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_dropped_total{reason="negative_counter"}"#,
        1.0,
    );
    assert_value(&text, "monasca_sidecar_statsd_series", 1.0);
}

/// Datagrams the kernel drops while the receive thread is held up (here: by the accumulator's
/// lock) are counted, through a real UDP socket and the real receive loop: every line sent is
/// either received or counted as dropped, none is missing from both.
#[cfg(target_os = "linux")]
#[test]
fn datagrams_the_kernel_drops_are_counted() {
    use super::listener::{report_drops, udp_loop};
    use std::net::UdpSocket;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    // A small buffer (no SO_RCVBUFFORCE), so that a short burst overflows it.
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    report_drops(&socket);
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let socket: UdpSocket = socket.into();
    let target = socket.local_addr().unwrap();
    let buffer = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();

    let app = App::new(config());
    let shared = Arc::new(Shared::new(
        Accumulator::new(&config()).unwrap(),
        app.config(),
    ));
    app.register(shared.clone());
    let loop_shared = shared.clone();
    let receiver = std::thread::spawn(move || udp_loop(socket, buffer, loop_shared));

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let burst = 5_000u64;
    {
        // The receive thread blocks on this lock after its next batch; the socket fills.
        let _held = shared.acc.lock();
        for i in 0..burst {
            sender
                .send_to(format!("burst:{}|c", i % 7 + 1).as_bytes(), target)
                .unwrap();
        }
    }
    // The kernel reports drops with the next datagram it queues: send markers until one gets
    // through and the books balance.
    let (mut sent, deadline) = (burst, Instant::now() + Duration::from_secs(20));
    let (lines, dropped) = loop {
        sender.send_to(b"marker:1|c", target).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
        let m = &shared.metrics;
        let (lines, dropped) = (m.lines.get(), m.datagrams_dropped.get());
        if lines + dropped == sent || Instant::now() > deadline {
            break (lines, dropped);
        }
    };
    shared.stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();

    assert_eq!(
        lines + dropped,
        sent,
        "every datagram received or counted as dropped"
    );
    assert!(
        dropped > 0,
        "a {buffer}-byte buffer held all {burst} datagrams"
    );
    assert!(lines > 0);
    assert_eq!(shared.metrics.datagrams.get(), lines);
    let text = render_with_self_metrics(&app);
    assert_value(
        &text,
        "monasca_sidecar_statsd_datagrams_dropped_total",
        dropped as f64,
    );
}

// ---------------------------------------------------------------------------------------
// Properties (the fuzz target's invariants, run on stable with every `cargo test`)

mod properties {
    use super::*;
    use crate::model::Value;
    use proptest::prelude::*;

    fn check_datagram(data: &[u8]) {
        for raw in lines(data) {
            match parse_line(raw) {
                Ok(l) => {
                    assert!(!l.name.trim().is_empty());
                    assert!(!l.samples.is_empty());
                    for s in &l.samples {
                        assert!(s.value.is_finite());
                        assert!(s.rate > 0.0 && s.rate <= 1.0);
                    }
                }
                Err(e) => assert!(!e.to_string().contains('\n')),
            }
        }
        let mut acc = Accumulator::default();
        acc.ingest_datagram(data);
        let changes = acc.take_changes();
        let families: Vec<Family<'_>> = changes.iter().map(|c| c.family()).collect();
        for f in &families {
            assert!(monasca_config::is_metric_name(&f.name), "{}", f.name);
            for s in &f.series {
                for l in &s.labels {
                    assert!(monasca_config::is_label_name(&l.name), "{}", l.name);
                }
                if let Value::Histogram(h) = &s.value {
                    assert!(h.buckets.windows(2).all(|w| w[0] <= w[1]));
                }
            }
        }
        let mut store = Store::new(StoreSettings::default());
        store
            .apply(&worker_key(), &families, Scope::Series, Now::now())
            .expect("the store accepts what the accumulator produces");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            check_datagram(&data);
        }

        #[test]
        fn statsd_ish_text_never_panics(
            data in "([a-z.:|@#{}',=\\[\\] 0-9+-]{0,40}\n?){0,6}"
        ) {
            check_datagram(data.as_bytes());
        }

        #[test]
        fn well_formed_lines_always_parse(
            line in "[a-z][a-z_]{0,7}(\\.[a-z-]{1,8}){0,2}:[+-]?[0-9]{1,4}(\\.[0-9]{1,3})?\\|(c|g|ms|h|d)(\\|@0\\.[1-9])?(\\|#[a-z]{1,4}:[a-z0-9./]{0,4}(,[a-z_]{1,4}:[a-z]{0,3}){0,3}|\\|#\\{'[a-z]{1,4}': '[^'\\\\]{0,6}'(, '[a-z]{1,4}': [0-9]{1,3}){0,2}\\})?"
        ) {
            let parsed = parse_str(&line);
            prop_assert!(parsed.is_ok(), "{line}: {parsed:?}");
            check_datagram(line.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Issue 11: sample rates and gauges, the monasca dialect, non-finite values, expiry

#[test]
fn sample_rates_never_scale_gauges() {
    let mut h = Harness::new(&config());
    h.feed(b"g:10|g|@0.5\ng:+3|g|@0.5\ng:-1|g|@0.1");
    assert_value(&h.render(), "g", 12.0);
    // A gauge line forced into a counter or a histogram is not scaled either.
    let mut c = config();
    let mut rule = mapping("forced.*", Some("forced_$1"));
    rule.metric_type = Some(StatsdMetricType::Counter);
    c.statsd.mappings.push(rule);
    let mut h = Harness::new(&c);
    h.feed(b"forced.c:2|g|@0.5");
    assert_value(&h.render(), "forced_c_total", 2.0);
}

#[test]
fn monasca_dialect_gauges_are_absolute() {
    let mut h = Harness::new(&config());
    h.feed(b"m:10|g|#{'a': 'b'}\nm:-5|g|#{'a': 'b'}\np:10|g\np:-5|g");
    let text = h.render();
    assert_value(&text, "m{a=\"b\"}", -5.0);
    assert_value(&text, "p", 5.0);
    let mut c = config();
    c.statsd.dialect = monasca_config::StatsdDialect::Monasca;
    let mut h = Harness::new(&c);
    h.feed(b"p:10|g\np:-5|g\nq:+2|g");
    let text = h.render();
    assert_value(&text, "p", -5.0);
    assert_value(&text, "q", 2.0);
}

#[test]
fn accumulation_never_becomes_non_finite() {
    let mut h = Harness::new(&config());
    h.feed(b"c:1e308|c\ng:1e308|g\nh:1e308|h");
    h.render();
    h.feed(b"c:1e308|c\ng:+1e308|g\nh:1e308|h\nc:1|c");
    let counts = h.acc.take_counts();
    assert_eq!(counts.drop_count(DropReason::NonFinite), 3);
    let text = h.render();
    assert_value(&text, "c_total", 1e308);
    assert_value(&text, "g", 1e308);
    assert_value(&text, "h_sum", 1e308);
    assert_value(&text, "h_count", 1.0);
}

#[test]
fn expire_returns_the_remaining_series_of_touched_families() {
    let mut h = Harness::new(&config());
    let t0 = std::time::Instant::now();
    h.acc.set_clock(t0);
    h.feed(b"a:1|c|#k:1\na:1|c|#k:2\nb:1|g");
    h.flush();
    let t1 = t0 + std::time::Duration::from_secs(10);
    h.acc.set_clock(t1);
    h.feed(b"a:1|c|#k:2");
    h.flush();
    assert!(h.acc.expire(t0).is_empty(), "nothing older than t0");
    let expired = h.acc.expire(t1);
    assert_eq!(h.acc.series_count(), 1);
    let names: Vec<&str> = expired.iter().map(|c| &*c.name).collect();
    assert_eq!(names, ["a_total", "b"]);
    assert_eq!(expired[0].series.len(), 1, "a_total keeps k=2");
    assert!(expired[1].series.is_empty(), "b lost its only series");
    assert!(h.acc.take_changes().is_empty());
}

// ---------------------------------------------------------------------------------------
// The line-shape cache

/// Lines of every dialect and outcome, as templates: `{v}` is replaced by a value.
const SHAPES: &[&str] = &[
    "plain.count:{v}|c",
    "plain.count:{v}|c|@0.1",
    "plain.count:{v}|c|@0.0001",
    "plain.gauge:{v}|g",
    "plain.timer:{v}|ms|@0.5",
    "plain.hist:{v}|h",
    "plain.dist:{v}|d|#env:prod",
    "dog.req:{v}|c|#env:prod,service:api,endpoint:/v2.0/metrics",
    "dog.req:{v}|c|#service:api,env:prod,endpoint:/v2.0/metrics",
    "dog.req:{v}|c|#env:prod,env:dev,pid:7,le:1,__x:y,bad,:z,_aggregate:no",
    "dog.req:{v}|c|#env:prod|c:container1|T1700000000",
    "monasca.req:{v}|c|#{'service': 'monitoring', 'hostname': 'h1', 'code': 204}",
    "monasca.db_seconds:{v}|g|#{'service': 'monitoring'}",
    "influx.queue,env=prod,queue=q1:{v}|g",
    "librato.latency#env=prod,service=api:{v}|ms",
    "signalfx.db[env=prod,db=mysql].query:{v}|g",
    "signalfx.db[env=prod,db=mysql:1].query:{v}|g",
    "conflict.name:{v}|c",
    "conflict.name_total:{v}|g",
    "drop.me:{v}|c",
    "monasca_sidecar.reserved:{v}|c",
    "relabel.users.get:{v}|c|#service:ignored,zone:a",
    "forced.gauge:{v}|c",
    "multi:{v}|c:{v}|g",
    "limit.a:{v}|c",
    "limit.b:{v}|c",
    "limit.c:{v}|c",
    "bad.type:{v}|x",
    "bad.rate:{v}|c|@2",
    "  spaced.name  :{v}|c",
    "unicode.tags:{v}|c|#ré:été,名前:値",
];

/// Values, good and bad: signed, fractional, overflowing, not numbers, empty, spaced.
const VALUES: &[&str] = &[
    "1", "2.5", "-1", "+3", "0", "1e308", "-1e308", "nan", "inf", "abc", "", " 1", "1 ", "0x10",
    "1:2", "1e400", "\u{e9}",
];

fn shape_cache_config() -> SidecarConfig {
    let mut c = config();
    c.limits.max_series_per_worker = 24;
    c.statsd.buckets = vec![0.1, 1.0, 10.0];
    c.statsd.mappings.push(mapping("drop.*", None));
    c.statsd.mappings.last_mut().unwrap().action = MappingAction::Drop;
    let mut rule = mapping("relabel.*.*", Some("relabeled"));
    rule.labels.insert("service".into(), "$1".into());
    rule.labels
        .insert("pid".into(), "dropped-worker-label".into());
    c.statsd.mappings.push(rule);
    let mut forced = mapping("forced.*", Some("forced_gauge"));
    forced.metric_type = Some(StatsdMetricType::Gauge);
    c.statsd.mappings.push(forced);
    c
}

/// Every line through the cache lands exactly where the parser and resolver put it: the same
/// counts (lines, samples, every error and drop reason, tag errors) and the same accumulated
/// values, over every dialect, fuzz-style values (overflow, `nan`, not numbers, invalid
/// UTF-8), the series limit, type conflicts and mapping rules, with flushes between batches.
#[test]
fn shape_cache_changes_nothing() {
    let config = shape_cache_config();
    let mut cached = Accumulator::new(&config).expect("mappings");
    // A cache emptied every 5 shapes (as the full-size one is when it fills).
    let mut small = Accumulator::with_shape_limit(&config, 5).expect("mappings");
    let mut reference = Accumulator::with_shape_limit(&config, 0).expect("mappings");
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for shape in SHAPES {
        for value in VALUES {
            lines.push(shape.replace("{v}", value).into_bytes());
        }
        // Invalid UTF-8 in the value, and in the shape itself.
        lines.push(
            shape
                .replace("{v}", "1\u{0}")
                .replace('\u{0}', "\u{FFFD}")
                .into_bytes(),
        );
        let mut bad = shape.replace("{v}", "1").into_bytes();
        if let Some(colon) = bad.iter().position(|&b| b == b':') {
            bad.insert(colon + 1, 0xFF);
        }
        lines.push(bad);
        lines.push(shape.replace("{v}", "1").replacen("|", "", 1).into_bytes());
    }
    lines.extend(datagrams("monasca-statsd-datagrams.txt"));
    lines.extend(datagrams("statsd-dialects-datagrams.txt"));
    // A fixed pseudo-random order, fed four times over: most lines meet a cached shape
    // after their first pass, some first in a line of another value. Between the rounds
    // families and series are removed (a forgotten family, expiry, a reset), which moves the
    // others' positions: cached positions must not outlive that.
    let mut order: Vec<usize> = (0..lines.len()).collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let base = std::time::Instant::now();
    for round in 0..4u64 {
        for acc in [&mut cached, &mut small, &mut reference] {
            acc.set_clock(base + std::time::Duration::from_secs(round));
        }
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        for (n, &i) in order.iter().enumerate() {
            if round == 1 && i % 2 == 1 {
                // Round 1 leaves half the lines out: their series expire after it.
                continue;
            }
            cached.ingest_datagram(&lines[i]);
            small.ingest_datagram(&lines[i]);
            reference.ingest_datagram(&lines[i]);
            if n % 97 == 0 {
                let expected = changes(&mut reference);
                assert_eq!(changes(&mut cached), expected, "round {round}");
                assert_eq!(changes(&mut small), expected, "round {round}, small cache");
            }
        }
        let counts = reference.take_counts();
        assert_eq!(cached.take_counts(), counts, "round {round}");
        assert_eq!(small.take_counts(), counts, "round {round}, small cache");
        let expected = changes(&mut reference);
        assert_eq!(changes(&mut cached), expected, "round {round}");
        assert_eq!(changes(&mut small), expected, "round {round}, small cache");
        assert_eq!(cached.series_count(), reference.series_count());
        match round {
            0 => {
                let forgotten = reference.forget_family("plain_count_total");
                assert!(forgotten > 0);
                assert_eq!(cached.forget_family("plain_count_total"), forgotten);
                assert_eq!(small.forget_family("plain_count_total"), forgotten);
            }
            1 => {
                let cutoff = base + std::time::Duration::from_secs(1);
                let expired = by_labels(reference.expire(cutoff));
                assert!(!expired.is_empty(), "nothing expired");
                assert_eq!(by_labels(cached.expire(cutoff)), expired);
                assert_eq!(by_labels(small.expire(cutoff)), expired);
            }
            2 => {
                for acc in [&mut cached, &mut small, &mut reference] {
                    acc.reset();
                }
            }
            _ => {}
        }
        if round == 1 {
            continue;
        }
        // Not vacuous: every outcome was met.
        for reason in [
            DropReason::Mapping,
            DropReason::NegativeCounter,
            DropReason::TypeConflict,
            DropReason::SeriesLimit,
            DropReason::ReservedName,
            DropReason::NonFinite,
        ] {
            assert!(
                counts.drop_count(reason) > 0,
                "no {reason:?} in round {round}"
            );
        }
        for error in [
            LineError::InvalidUtf8,
            LineError::InvalidValue,
            LineError::NonFinite,
            LineError::InvalidType,
        ] {
            assert!(counts.error(error) > 0, "no {error:?} in round {round}");
        }
        assert!(counts.tag_errors > 0 && counts.samples > 0);
    }
    // Not vacuous: the lines reached series, errors, drops and tag errors.
    cached.mark_all_dirty();
    assert!(cached.take_changes().len() >= 10);
    assert_eq!(cached.series_count(), 24, "the series limit was reached");
}

/// The changed series, each family's in label order (a family's series come in hash order).
fn changes(acc: &mut Accumulator) -> Vec<super::accumulate::FamilyChange> {
    by_labels(acc.take_changes())
}

/// Each family's series in label order.
fn by_labels(
    mut families: Vec<super::accumulate::FamilyChange>,
) -> Vec<super::accumulate::FamilyChange> {
    for family in &mut families {
        family.series.sort_by(|a, b| a.0.cmp(&b.0));
    }
    families
}

/// A new configuration empties the cache: a line whose shape was cached follows the new
/// mapping rules at once.
#[test]
fn shape_cache_follows_reconfiguration() {
    let mut acc = Accumulator::new(&config()).expect("mappings");
    acc.ingest_datagram(b"api.calls:1|c");
    acc.ingest_datagram(b"api.calls:2|c");
    let mut c = config();
    c.statsd.mappings.push(mapping("api.*", Some("renamed")));
    acc.reconfigure(&c).expect("mappings");
    acc.ingest_datagram(b"api.calls:4|c");
    let changes = acc.take_changes();
    let totals: Vec<(&str, f64)> = changes
        .iter()
        .map(|f| match f.series[0].1 {
            crate::model::Value::Scalar(v) => (&*f.name, v),
            _ => panic!("a counter"),
        })
        .collect();
    assert_eq!(
        totals,
        vec![("api_calls_total", 3.0), ("renamed_total", 4.0)]
    );
}

/// A cached line reaches its series by position; every removal (expiry, a forgotten family, a
/// reset, a restored state) moves positions, and the lines that follow still land on their
/// own series, as they do without the cache.
#[test]
fn shape_cache_positions_follow_removals() {
    use crate::codec::{Dec, Enc};
    use std::time::Duration;
    let config = config();
    let mut cached = Accumulator::new(&config).expect("mappings");
    let mut reference = Accumulator::with_shape_limit(&config, 0).expect("mappings");
    let now = crate::store::Now::now();
    let t0 = now.mono;
    let t1 = t0 + Duration::from_secs(1);
    let both = |cached: &mut Accumulator, reference: &mut Accumulator, data: &[u8]| {
        cached.ingest_datagram(data);
        reference.ingest_datagram(data);
        let expected = changes(reference);
        assert_eq!(
            changes(cached),
            expected,
            "after {}",
            String::from_utf8_lossy(data)
        );
        assert_eq!(cached.take_counts(), reference.take_counts());
    };
    let all = b"a:1|c\nb:1|c\nc:1|c\nx:1|c|#k:a\nx:1|c|#k:b\nx:1|c|#k:c";
    for acc in [&mut cached, &mut reference] {
        acc.set_clock(t0);
    }
    both(&mut cached, &mut reference, all);
    both(&mut cached, &mut reference, all);
    // Expiry: `a` (the first family) and `x{k="a"}` (a family's first series) go, the
    // others move down.
    for acc in [&mut cached, &mut reference] {
        acc.set_clock(t1);
    }
    both(
        &mut cached,
        &mut reference,
        b"b:2|c\nc:3|c\nx:2|c|#k:b\nx:3|c|#k:c",
    );
    assert_eq!(cached.expire(t1).len(), reference.expire(t1).len());
    both(
        &mut cached,
        &mut reference,
        b"c:5|c\nb:7|c\nx:5|c|#k:c\nx:7|c|#k:b\na:1|c",
    );
    // A forgotten family: the last one takes its place.
    assert_eq!(
        cached.forget_family("b_total"),
        reference.forget_family("b_total")
    );
    both(
        &mut cached,
        &mut reference,
        b"c:1|c\nx:1|c|#k:c\na:1|c\nb:1|c",
    );
    // A restored state, in another order than the one the positions were found in.
    let mut other = Accumulator::new(&config).expect("mappings");
    other.set_clock(t1);
    other.ingest_datagram(b"x:10|c|#k:c\nc:10|c\nx:10|c|#k:b\nb:10|c");
    for acc in [&mut cached, &mut reference] {
        let mut e = Enc::default();
        other.encode_state(now, &mut e);
        let restored = Accumulator::decode_state(&mut Dec::new(&e.buf), now).expect("decodes");
        acc.restore(restored);
    }
    both(
        &mut cached,
        &mut reference,
        b"c:1|c\nb:2|c\nx:3|c|#k:b\nx:4|c|#k:c\na:5|c",
    );
    // A reset.
    cached.reset();
    reference.reset();
    both(&mut cached, &mut reference, b"x:1|c|#k:b\nc:2|c\na:3|c");
}
