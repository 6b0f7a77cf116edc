//! Arbitrary bytes as a StatsD datagram: the line parser never panics, every parsed line
//! satisfies the parser's invariants, every error has a fixed reason, and accumulating the
//! datagram and flushing it gives values the store accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monasca_sidecar::model::Value;
use monasca_sidecar::sources::statsd::{Accumulator, line, worker_key};
use monasca_sidecar::store::{Now, Scope, Store, StoreSettings};

/// The Prometheus metric (`colon`) or label name grammar.
fn is_name(s: &str, colon: bool) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (colon && b == b':');
    s.bytes()
        .next()
        .is_some_and(|b| !b.is_ascii_digit() && ok(b))
        && s.bytes().all(ok)
}

fuzz_target!(|data: &[u8]| {
    for raw in line::lines(data) {
        match line::parse_line(raw) {
            Ok(l) => {
                assert!(!l.name.trim().is_empty());
                assert!(!l.samples.is_empty());
                for s in &l.samples {
                    assert!(s.value.is_finite());
                    assert!(s.rate > 0.0 && s.rate <= 1.0);
                }
            }
            Err(e) => {
                assert!(!e.reason().is_empty());
                assert!(!e.to_string().contains('\n'));
            }
        }
    }
    let mut acc = Accumulator::default();
    acc.ingest_datagram(data);
    let changes = acc.take_changes();
    let families: Vec<_> = changes.iter().map(|c| c.family()).collect();
    for f in &families {
        assert!(is_name(&f.name, true), "{}", f.name);
        for s in &f.series {
            for l in &s.labels {
                assert!(is_name(&l.name, false), "{}", l.name);
            }
            if let Value::Histogram(h) = &s.value {
                assert!(h.buckets.windows(2).all(|w| w[0] <= w[1]));
                assert_eq!(h.bounds.last(), Some(&f64::INFINITY));
            }
        }
    }
    let mut store = Store::new(StoreSettings::default());
    store
        .apply(&worker_key(), &families, Scope::Series, Now::now())
        .expect("the store accepts what the accumulator produces");
});
