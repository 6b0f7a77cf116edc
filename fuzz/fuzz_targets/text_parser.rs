//! Arbitrary bytes through the text 0.0.4 and OpenMetrics parsers: no panic, and every
//! success satisfies the model's invariants; every error is one short line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monasca_sidecar::model::{Family, Value};
use monasca_sidecar::sources::parse::text;

fuzz_target!(|data: &[u8]| {
    for openmetrics in [false, true] {
        match text::parse_bytes(data, openmetrics) {
            Ok(families) => check(&families),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
                assert!(msg.len() < 1024, "overlong error: {msg}");
            }
        }
    }
});

fn check(families: &[Family<'_>]) {
    for f in families {
        for s in &f.series {
            if let Value::Histogram(h) = &s.value {
                assert_eq!(h.bounds.len(), h.buckets.len());
                assert_eq!(h.bounds.last(), Some(&f64::INFINITY));
                assert!(h.bounds.windows(2).all(|w| w[0] < w[1]), "{:?}", h.bounds);
            }
        }
    }
}
