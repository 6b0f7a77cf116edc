//! A StatsD mapping rule (pattern, name template, label, type, action) from the input,
//! applied to the names that follow: a one-line error naming the rule, or valid names.
//! The invariants are shared with the stable proptest tests
//! (`sidecar/tests/fuzz_entry_points.rs`), which run in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../sidecar/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| {
    fuzz_checks::statsd_mapping(data);
});
