//! The operator under attack and failure: bounded admission, opt-in filtering by the apiserver, leadership, malformed objects, least privilege (issue 13).

#[allow(unused_imports)]
use super::*;

pub(super) const SCENARIOS: &[(&str, Scenario)] = &[];
