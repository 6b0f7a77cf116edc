//! Which aggregation mode a gauge family gets when its series name none: the store owns the
//! rules (it fixes a series' mode when the series first arrives) and the exposition reads
//! them through the store's view.

use monasca_config::{Aggregation, GaugeMode};
use regex::Regex;

/// Gauge modes from config: rules by family name, then the default.
#[derive(Clone, Debug, Default)]
pub struct GaugeRules {
    default: GaugeMode,
    rules: Vec<(Regex, GaugeMode)>,
}

impl GaugeRules {
    /// Compiles the rules. Invalid patterns are rejected by config validation; any that slip
    /// through are skipped.
    pub fn from_config(aggregation: &Aggregation) -> Self {
        GaugeRules {
            default: aggregation.default_gauge_mode,
            rules: aggregation
                .rules
                .iter()
                .filter_map(|r| Some((Regex::new(&r.pattern).ok()?, r.mode)))
                .collect(),
        }
    }
}

/// The mode for a family with no per-series mode: the first matching rule, else the default.
pub fn resolve_mode(rules: &GaugeRules, family: &str) -> GaugeMode {
    rules
        .rules
        .iter()
        .find(|(re, _)| re.is_match(family))
        .map_or(rules.default, |(_, m)| *m)
}
