//! Test harness shared with `e2e/`: the real `monasca-sidecar` binary on loopback ports, a
//! minimal HTTP client, and the real Python clients.
#![allow(unused_imports)]

pub use monasca_e2e::sidecar::*;
