//! Entry points fed arbitrary input, with the invariants each must keep. Shared by the
//! cargo-fuzz targets in `fuzz/` (nightly, coverage-guided; they include this file with
//! `#[path]`) and the stable proptest tests in `sidecar/tests/fuzz_entry_points.rs`, which run
//! in CI. Every function panics when an invariant breaks; errors are fine as long as they
//! are clear (one line, a fixed reason).
#![allow(dead_code)]

use monasca_config::{
    Duration, MappingAction, MatchType, SidecarConfig, Statsd, StatsdMapping, StatsdMetricType,
};
use monasca_sidecar::expose::{Format, render};
use monasca_sidecar::model::{MetricKind, Value};
use monasca_sidecar::sources::json;
use monasca_sidecar::sources::parse::text;
use monasca_sidecar::sources::push::GroupingKey;
use monasca_sidecar::sources::statsd::{Mapped, Mapper};
use monasca_sidecar::store::{Now, Store, StoreSettings};

/// The Prometheus metric (`colon`) or label name grammar.
pub fn is_name(s: &str, colon: bool) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (colon && b == b':');
    s.bytes()
        .next()
        .is_some_and(|b| !b.is_ascii_digit() && ok(b))
        && s.bytes().all(ok)
}

/// `POST /v1/ingest` with `body`: either a one-line error with a fixed reason and an
/// unchanged store, or a store whose renders (both formats) parse back with the sidecar's own
/// parser, in which every counter, bucket, `_sum` and `_count` is finite.
pub fn json_body(body: &[u8]) {
    let mut store = Store::new(StoreSettings::default());
    let now = Now::now();
    match json::ingest(&mut store, body, now) {
        Err(e) => {
            assert!(!e.reason().is_empty());
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg:?}");
            assert_eq!(store.series_count(), 0, "a refused body changed the store");
        }
        Ok(_) => {
            for (format, om) in [(Format::Text, false), (Format::OpenMetrics, true)] {
                let mut out = Vec::new();
                render(&store, format, now.mono, &[], &mut out);
                let families = text::parse_bytes(&out, om).unwrap_or_else(|e| {
                    panic!(
                        "render does not parse back: {e}\n{}",
                        String::from_utf8_lossy(&out)
                    )
                });
                for f in &families {
                    for s in &f.series {
                        let finite = match &s.value {
                            Value::Scalar(v) => f.kind != MetricKind::Counter || v.is_finite(),
                            Value::Histogram(h) => {
                                h.buckets.iter().all(|b| b.is_finite())
                                    && h.sum.is_finite()
                                    && h.count.is_finite()
                            }
                            Value::Summary { sum, count } => sum.is_finite() && count.is_finite(),
                        };
                        assert!(finite, "non-finite accumulated value in {}", f.name);
                    }
                }
            }
        }
    }
}

/// The part of a Pushgateway path after `/metrics/`: either a one-line error, or a grouping
/// key that starts with a non-empty `job` and holds valid, distinct label names.
pub fn push_path(path: &str) {
    match GroupingKey::from_path(path) {
        Err(e) => {
            assert!(!e.reason().is_empty());
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        Ok(key) => {
            let (first, value) = key.labels.first().expect("at least job");
            assert_eq!(first, "job");
            assert!(!value.is_empty());
            for (i, (name, _)) in key.labels.iter().enumerate() {
                assert!(is_name(name, false) && !name.starts_with("__"), "{name:?}");
                assert!(
                    key.labels.iter().skip(i + 1).all(|(n, _)| n != name),
                    "{name} twice"
                );
            }
        }
    }
}

/// A config document: either an error that names what is wrong on one line, or a config
/// that validates and survives a YAML round trip unchanged.
pub fn config_yaml(text: &str) {
    match SidecarConfig::from_yaml(text) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(c) => {
            c.validate().expect("from_yaml returns only valid configs");
            let yaml = c.to_yaml().expect("a valid config serializes");
            let back = SidecarConfig::from_yaml(&yaml)
                .unwrap_or_else(|e| panic!("round trip failed: {e}\n{yaml}"));
            assert_eq!(back, c, "{yaml}");
        }
    }
}

/// A duration string: either an error quoting it, or a duration whose own rendering parses
/// back to the same value.
pub fn duration(text: &str) {
    match Duration::parse(text) {
        Err(e) => assert!(e.to_string().contains("invalid duration")),
        Ok(d) => {
            let shown = d.to_string();
            assert_eq!(
                Duration::parse(&shown),
                Ok(d),
                "{text:?} shown as {shown:?}"
            );
        }
    }
}

/// A mapping rule built from fuzz input (pattern, name template, one label, type, action)
/// applied to StatsD names: building either fails with a one-line error naming the rule, or
/// every name maps to a valid metric name, valid label names and a `_total` counter name.
pub fn statsd_mapping(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let control = parts.next().unwrap_or_default().bytes().next().unwrap_or(0);
    let pattern = parts.next().unwrap_or_default().to_string();
    let name = parts.next().map(str::to_string);
    let label = parts.next().unwrap_or_default();
    let names: Vec<&str> = parts.collect();
    let mut labels = std::collections::BTreeMap::new();
    if let Some((k, v)) = label.split_once('=') {
        labels.insert(k.to_string(), v.to_string());
    }
    let rule = StatsdMapping {
        pattern,
        match_type: if control & 1 == 0 {
            MatchType::Glob
        } else {
            MatchType::Regex
        },
        name,
        labels,
        metric_type: match (control >> 1) & 3 {
            0 => None,
            1 => Some(StatsdMetricType::Counter),
            2 => Some(StatsdMetricType::Gauge),
            _ => Some(StatsdMetricType::Histogram),
        },
        action: if control & 8 == 0 {
            MappingAction::Map
        } else {
            MappingAction::Drop
        },
    };
    let config = Statsd {
        mappings: vec![rule],
        ..Statsd::default()
    };
    let mapper = match Mapper::new(&config) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("statsd.mappings[0]") && !msg.contains('\n'),
                "{msg}"
            );
            return;
        }
        Ok(m) => m,
    };
    for statsd_name in names {
        match mapper.map(statsd_name) {
            Mapped::Drop => {}
            Mapped::Map(m) => {
                assert!(is_name(&m.name, true), "{:?} -> {:?}", statsd_name, m.name);
                assert!(m.counter_name.ends_with("_total"));
                assert!(is_name(&m.counter_name, true));
                for (k, _) in &m.labels {
                    assert!(is_name(k, false), "label {k:?}");
                }
            }
        }
    }
}
