//! Why the store refuses an update: one error enum with a fixed reason per variant (the
//! self-metric label) and, when it is about one, the family as data.

use super::AGGREGATE_LABEL;

/// Why an update was rejected. Nothing of a rejected update is applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("type conflict: {family} is a {existing}, not a {pushed}")]
    TypeConflict {
        family: String,
        existing: &'static str,
        pushed: &'static str,
    },
    #[error("family {0} appears twice in one update")]
    DuplicateFamily(String),
    #[error("duplicate series {0} (after removing worker labels)")]
    DuplicateSeries(SeriesName),
    #[error(
        "histogram {series} has bucket bounds {pushed} but this series is aggregated with {existing}"
    )]
    HistogramLayoutMismatch {
        series: SeriesName,
        existing: String,
        pushed: String,
    },
    #[error(
        "invalid {AGGREGATE_LABEL} value {0:?}: expected one of sum, min, max, mean, mostrecent, all or a live variant"
    )]
    InvalidAggregate(String),
    #[error("worker would hold {count} series, more than the limit of {limit}")]
    TooManySeries { count: usize, limit: usize },
    #[error("the label text of {family}'s series would pass 4 GiB")]
    FamilyTooLarge { family: String },
    #[error("metric name {0} uses the prefix reserved for the sidecar's own metrics")]
    ReservedName(String),
    #[error("label {label} of {series} is reserved: {why}")]
    ReservedLabel {
        series: SeriesName,
        label: String,
        why: &'static str,
    },
    #[error(
        "{family} ({kind}) would expose the name {name}, which {other} already uses; rename one of them"
    )]
    NameCollision {
        family: String,
        kind: &'static str,
        name: String,
        other: String,
    },
    #[error("{series}: {why}")]
    Invalid {
        series: SeriesName,
        why: &'static str,
    },
    #[error(
        "{series} has the non-finite value {value}; counters, buckets and counts must be finite"
    )]
    NonFinite { series: SeriesName, value: f64 },
    #[error("{series} is aggregated with {existing} (the first mode seen wins), not {pushed}")]
    ModeConflict {
        series: SeriesName,
        existing: &'static str,
        pushed: &'static str,
    },
}

impl StoreError {
    /// A fixed label for self-metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::TypeConflict { .. } => "type_conflict",
            StoreError::DuplicateFamily(_) => "duplicate_family",
            StoreError::DuplicateSeries(_) => "duplicate_series",
            StoreError::HistogramLayoutMismatch { .. } => "histogram_layout_mismatch",
            StoreError::InvalidAggregate(_) => "invalid_aggregate",
            StoreError::TooManySeries { .. } => "too_many_series",
            StoreError::FamilyTooLarge { .. } => "family_too_large",
            StoreError::ReservedName(_) => "reserved_name",
            StoreError::NonFinite { .. } => "non_finite",
            StoreError::ReservedLabel { .. } => "reserved_label",
            StoreError::NameCollision { .. } => "name_collision",
            StoreError::Invalid { .. } => "invalid_value",
            StoreError::ModeConflict { .. } => "mode_conflict",
        }
    }

    /// The family the error is about, when it is about one: lets a source leave out just that
    /// family and apply the rest (see [`Store::apply_resilient`](super::Store::apply_resilient)).
    pub fn family(&self) -> Option<&str> {
        match self {
            StoreError::TypeConflict { family, .. } => Some(family),
            StoreError::DuplicateFamily(name) | StoreError::ReservedName(name) => Some(name),
            StoreError::NameCollision { family, .. } | StoreError::FamilyTooLarge { family } => {
                Some(family)
            }
            StoreError::DuplicateSeries(series)
            | StoreError::HistogramLayoutMismatch { series, .. }
            | StoreError::NonFinite { series, .. }
            | StoreError::ReservedLabel { series, .. }
            | StoreError::Invalid { series, .. }
            | StoreError::ModeConflict { series, .. } => Some(&series.family),
            StoreError::InvalidAggregate(_) | StoreError::TooManySeries { .. } => None,
        }
    }
}

/// The series an error is about: its family as data (for [`StoreError::family`]) and its
/// canonical label text. Displays as `family{labels}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesName {
    pub family: String,
    pub labels: String,
}

impl SeriesName {
    pub fn new(family: &str, labels: &str) -> Self {
        SeriesName {
            family: family.to_string(),
            labels: labels.to_string(),
        }
    }
}

impl std::fmt::Display for SeriesName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{{{}}}", self.family, self.labels)
    }
}
