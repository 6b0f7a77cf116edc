//! Mapping rules (`statsd.mappings`, like statsd_exporter's) and Prometheus name
//! sanitization.
//!
//! A rule matches the StatsD name (after tag syntax is removed) with a glob (`*` matches one
//! dot-separated component, or part of one: `api.*.count`, `app_*.x`) or an unanchored regex,
//! and gives the Prometheus name and extra labels, where `$1`/`${1}`/`${name}` refer to
//! captures (as in the `regex` crate: write `${1}_x`, since `$1_x` names a group `1_x`). The
//! first matching rule wins; `action: drop` discards the line; `metricType` overrides the
//! StatsD type. Without a matching rule the name is only sanitized: `demo.requests` ->
//! `demo_requests`.
//!
//! Whatever a rule produces is sanitized too (captures may contain dashes), so every family
//! name is a valid Prometheus name.

use monasca_config::{MappingAction, MatchType, StatsdMetricType, is_label_name};
use regex::Regex;

/// Why the mapping rules could not be built (the config validation normally catches these).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("statsd.mappings[{index}].match: {reason}")]
    Match { index: usize, reason: String },
    #[error("statsd.mappings[{index}].labels: {name:?} is not a valid label name")]
    LabelName { index: usize, name: String },
    #[error("statsd.mappings[{index}].name: required unless action is drop")]
    MissingName { index: usize },
}

/// One compiled rule.
#[derive(Clone, Debug)]
struct Rule {
    regex: Regex,
    /// `None` for drop rules.
    name: Option<String>,
    labels: Vec<(String, String)>,
    kind: Option<StatsdMetricType>,
}

/// The compiled `statsd.mappings`.
#[derive(Clone, Debug, Default)]
pub struct Mapper {
    rules: Vec<Rule>,
}

/// What the rules say about one StatsD name.
#[derive(Clone, Debug, PartialEq)]
pub enum Mapped {
    /// A rule with `action: drop` matched.
    Drop,
    /// The name maps into the family `name`.
    Map(MappedName),
}

/// A mapped name: what the accumulator needs, computed once per distinct StatsD name.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedName {
    /// The sanitized Prometheus family name for gauges and histograms.
    pub name: Box<str>,
    /// The family name for counters: `name` with `_total` appended unless already there.
    pub counter_name: Box<str>,
    /// Labels from the rule (captures expanded), in rule order.
    pub labels: Vec<(Box<str>, Box<str>)>,
    /// A type forced by the rule.
    pub kind: Option<StatsdMetricType>,
    /// The name uses the prefix reserved for the sidecar's own metrics.
    pub reserved: bool,
}

impl Mapper {
    /// Compiles the rules of a StatsD config.
    pub fn new(config: &monasca_config::Statsd) -> Result<Mapper, MappingError> {
        let mut rules = Vec::with_capacity(config.mappings.len());
        for (index, m) in config.mappings.iter().enumerate() {
            let pattern = match m.match_type {
                MatchType::Glob => glob_to_regex(&m.pattern),
                MatchType::Regex => m.pattern.clone(),
            };
            let regex = Regex::new(&pattern).map_err(|e| MappingError::Match {
                index,
                reason: e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            })?;
            for name in m.labels.keys() {
                if !is_label_name(name) || name.starts_with("__") {
                    return Err(MappingError::LabelName {
                        index,
                        name: name.clone(),
                    });
                }
            }
            let name = match m.action {
                MappingAction::Drop => None,
                MappingAction::Map => {
                    Some(m.name.clone().ok_or(MappingError::MissingName { index })?)
                }
            };
            rules.push(Rule {
                regex,
                name,
                labels: m
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                kind: m.metric_type,
            });
        }
        Ok(Mapper { rules })
    }

    /// Maps one StatsD name (uncached; the accumulator caches the result per name).
    pub fn map(&self, statsd_name: &str) -> Mapped {
        for rule in &self.rules {
            let Some(caps) = rule.regex.captures(statsd_name) else {
                continue;
            };
            let Some(template) = &rule.name else {
                return Mapped::Drop;
            };
            let mut expanded = String::new();
            caps.expand(template, &mut expanded);
            let labels = rule
                .labels
                .iter()
                .map(|(k, v)| {
                    let mut value = String::new();
                    caps.expand(v, &mut value);
                    (Box::from(k.as_str()), value.into_boxed_str())
                })
                .collect();
            return Mapped::Map(MappedName::new(&expanded, labels, rule.kind));
        }
        Mapped::Map(MappedName::new(statsd_name, Vec::new(), None))
    }
}

impl MappedName {
    fn new(
        raw: &str,
        labels: Vec<(Box<str>, Box<str>)>,
        kind: Option<StatsdMetricType>,
    ) -> MappedName {
        let mut name = String::with_capacity(raw.len() + 6);
        sanitize_metric_name(raw, &mut name);
        let counter_name = if name.ends_with("_total") {
            name.clone()
        } else {
            format!("{name}_total")
        };
        MappedName {
            reserved: name.starts_with(crate::store::SELF_PREFIX),
            name: name.into_boxed_str(),
            counter_name: counter_name.into_boxed_str(),
            labels,
            kind,
        }
    }
}

/// A glob as an anchored regex: `*` matches any run of characters except `.`.
fn glob_to_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 16);
    out.push('^');
    for (i, part) in glob.split('*').enumerate() {
        if i > 0 {
            out.push_str("([^.]*)");
        }
        out.push_str(&regex::escape(part));
    }
    out.push('$');
    out
}

/// Appends `raw` as a valid Prometheus metric name: every character outside
/// `[a-zA-Z0-9_:]` (dots, dashes, spaces, non-ASCII) becomes `_`, and a leading digit gets a
/// `_` prefix. An empty input gives `_`.
pub fn sanitize_metric_name(raw: &str, out: &mut String) {
    sanitize(raw, true, out);
}

/// Appends `raw` as a valid Prometheus label name (like [`sanitize_metric_name`] without `:`).
pub fn sanitize_label_name(raw: &str, out: &mut String) {
    sanitize(raw, false, out);
}

fn sanitize(raw: &str, colon_ok: bool, out: &mut String) {
    if raw.starts_with(|c: char| c.is_ascii_digit()) || raw.is_empty() {
        out.push('_');
    }
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || (colon_ok && c == ':') {
            out.push(c);
        } else {
            out.push('_');
        }
    }
}
