//! Arbitrary bytes through the delimited protobuf decoder: no panic, and every success
//! satisfies the model's invariants; every error is one short line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monasca_sidecar::model::Value;
use monasca_sidecar::sources::parse::protobuf;

fuzz_target!(|data: &[u8]| {
    match protobuf::decode(data) {
        Ok(families) => {
            for f in &families {
                for s in &f.series {
                    if let Value::Histogram(h) = &s.value {
                        assert_eq!(h.bounds.len(), h.buckets.len());
                        assert_eq!(h.bounds.last(), Some(&f64::INFINITY));
                        assert!(h.bounds.windows(2).all(|w| w[0] < w[1]), "{:?}", h.bounds);
                    }
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
            assert!(msg.len() < 1024, "overlong error: {msg}");
        }
    }
});
