//! A `POST /v1/ingest` body: refused with a one-line reason and nothing applied, or
//! applied with renders that parse back and hold only finite accumulated values.
//! The invariants are shared with the stable proptest tests
//! (`sidecar/tests/fuzz_entry_points.rs`), which run in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../sidecar/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| {
    fuzz_checks::json_body(data);
});
