//! Arbitrary bytes through the prometheus_client multiprocess file reader: no panic, no read
//! past `used`, keys re-encode to themselves, merged histograms are valid, and the sidecar's
//! own retired-file decoder survives anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monasca_sidecar::model::Value;
use monasca_sidecar::sources::multiprocess::format::{self, FileKind};
use monasca_sidecar::sources::multiprocess::merge::{MergeIssues, Parsed, build_families};
use monasca_sidecar::sources::multiprocess::retired::Table;

/// Counter, histogram, summary, and a gauge in `all` and in `mostrecent` mode.
const KINDS: [FileKind; 5] = [
    FileKind::Counter,
    FileKind::Histogram,
    FileKind::Summary,
    FileKind::Gauge(format::PYTHON_GAUGE_MODES[0]),
    FileKind::Gauge(format::PYTHON_GAUGE_MODES[8]),
];

type OwnedKey = (String, String, Vec<(String, String)>, String);

/// A key without borrows (keys are invariant in their lifetime, so two parses of different
/// buffers compare this way).
fn owned(k: &format::Key<'_>) -> OwnedKey {
    (
        k.metric.to_string(),
        k.sample.to_string(),
        k.labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        k.help.to_string(),
    )
}

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some(n) = format::parse_file_name(name) {
            assert_eq!(n.kind.file_name(n.pid), name);
        }
    }
    let Ok(entries) = format::entries(data) else {
        return;
    };
    let used = entries.used();
    assert!(used <= data.len().max(format::HEADER_LEN));
    let mut keys = Vec::new();
    for entry in entries {
        let Ok(entry) = entry else { break };
        assert!(entry.value_offset + 16 <= used, "value past used");
        assert_eq!(entry.value_offset % 8, 0, "values are 8-byte aligned");
        if let Ok(key) = format::parse_key(entry.key) {
            let labels: Vec<(&str, &str)> = key
                .labels
                .iter()
                .map(|(n, v)| (n.as_ref(), v.as_ref()))
                .collect();
            let again = format::encode_key(&key.metric, &key.sample, &labels, &key.help);
            let reparsed = format::parse_key(&again).map(|k| owned(&k));
            assert_eq!(reparsed, Ok(owned(&key)), "re-encoding changed the key");
            keys.push((key, entry.value, entry.timestamp));
        }
    }
    for kind in KINDS {
        let parsed: Vec<Parsed<'_>> = keys
            .iter()
            .map(|(key, value, timestamp)| Parsed {
                kind,
                key: key.clone(),
                value: *value,
                timestamp: *timestamp,
            })
            .collect();
        let mut issues = MergeIssues::default();
        for family in build_families(&parsed, &mut issues) {
            for s in &family.series {
                if let Value::Histogram(h) = &s.value {
                    assert_eq!(h.bounds.len(), h.buckets.len());
                    assert_eq!(h.bounds.last(), Some(&f64::INFINITY));
                    assert!(h.bounds.windows(2).all(|w| w[0] < w[1]), "{:?}", h.bounds);
                }
            }
        }
        if kind.folds() {
            if let Ok(decoded) = Table::decode(kind, data) {
                let _ = decoded.table.encode();
            }
        }
    }
});
