//! The injected pod as Kubernetes runs it: shared process namespace, no readiness gate, conflicts skipped (issue 12).

#[allow(unused_imports)]
use super::*;

pub(super) const SCENARIOS: &[(&str, Scenario)] = &[];
