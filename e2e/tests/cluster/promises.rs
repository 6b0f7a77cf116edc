//! What the operator promises stays true: admitted pods work, status and events say what is, repairs are prompt, shutdown completes (issue 21).

#[allow(unused_imports)]
use super::*;

pub(super) const SCENARIOS: &[(&str, Scenario)] = &[];
