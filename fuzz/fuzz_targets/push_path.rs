//! The Pushgateway path after `/metrics/` (`GroupingKey::from_path`): a one-line error,
//! or a key starting with a non-empty `job` with valid, distinct label names.
//! The invariants are shared with the stable proptest tests
//! (`sidecar/tests/fuzz_entry_points.rs`), which run in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../sidecar/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        fuzz_checks::push_path(path);
    }
});
