//! A sidecar config document (`SidecarConfig::from_yaml`): an error, or a valid config
//! that survives a YAML round trip unchanged.
//! The invariants are shared with the stable proptest tests
//! (`sidecar/tests/fuzz_entry_points.rs`), which run in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../sidecar/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        fuzz_checks::config_yaml(text);
    }
});
