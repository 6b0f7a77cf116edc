//! A config duration (`Duration::parse`): an error quoting it, or a duration whose
//! rendering parses back to the same value.
//! The invariants are shared with the stable proptest tests
//! (`sidecar/tests/fuzz_entry_points.rs`), which run in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../sidecar/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        fuzz_checks::duration(text);
    }
});
