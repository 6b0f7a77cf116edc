//! Exposition-format parsers: Prometheus text 0.0.4 / OpenMetrics 1.0 ([`text`]) and
//! varint-delimited `io.prometheus.client.MetricFamily` protobuf ([`protobuf`]).
//!
//! Both produce the ingest model ([`crate::model::Family`]) for ONE worker's body and reject
//! anything that could make the store's view of that worker wrong (interleaved families,
//! duplicate series, histograms without `+Inf`): a rejected body is answered with HTTP 400 and
//! the worker's previous values stay as they were, which is safer than half-applying it.
//!
//! Errors carry a fixed [`ParseErrorKind`] (usable as a self-metric label: bounded
//! cardinality) and a short, one-line human detail (usable as an HTTP 400 reason).

use crate::hashing::HashState;
use crate::model::{Label, Series};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use smallvec::SmallVec;

pub mod protobuf;
pub mod text;

#[cfg(test)]
mod tests;

/// Why a body was rejected. The set is fixed so that it can label a self-metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The text body is not UTF-8.
    InvalidUtf8,
    /// A metric or label name has characters outside the Prometheus name grammar.
    InvalidName,
    /// A label set is malformed (missing `=`, missing quote, stray character).
    InvalidLabel,
    /// The same label name appears twice in one label set.
    DuplicateLabel,
    /// A quoted label value or a label set is not closed before the end of the line.
    Unterminated,
    /// A backslash escape other than `\\`, `\"` or `\n` in a label value.
    InvalidEscape,
    /// A sample value is not a float.
    InvalidValue,
    /// A sample timestamp is not an integer (0.0.4) or a finite float (OpenMetrics).
    InvalidTimestamp,
    /// A sample line is malformed (no value, text after the value or timestamp).
    InvalidSample,
    /// An OpenMetrics exemplar (`# {..} value [ts]`) is malformed.
    InvalidExemplar,
    /// A `# HELP`, `# TYPE` or `# UNIT` line is malformed.
    InvalidMetadata,
    /// A `# TYPE` names no known metric type.
    InvalidType,
    /// A known type the sidecar cannot aggregate (`gaugehistogram`, native histograms).
    UnsupportedType,
    /// A second `# TYPE`, a `# TYPE` after samples, a sample that does not fit its family's
    /// type, or two families exposing the same name.
    TypeConflict,
    /// A second `# HELP` or `# UNIT` for one family.
    DuplicateMetadata,
    /// A family appears again after another family started.
    InterleavedFamily,
    /// The same series (name and label set) appears twice in one family.
    DuplicateSeries,
    /// A histogram bucket without `le`, with an unparsable or NaN `le`, or a repeated bound.
    InvalidBucket,
    /// A histogram series has no `+Inf` bucket.
    MissingInfBucket,
    /// An OpenMetrics body does not end with `# EOF`.
    MissingEof,
    /// Something follows `# EOF`.
    ContentAfterEof,
    /// A protobuf body ends in the middle of a length prefix or message.
    Truncated,
    /// A protobuf message's length prefix exceeds [`protobuf::MAX_MESSAGE_BYTES`].
    TooLarge,
    /// A protobuf message does not decode as `MetricFamily` or lacks required fields.
    InvalidProtobuf,
}

impl ParseErrorKind {
    /// Every kind, for pre-registering self-metric label values.
    pub const ALL: &'static [ParseErrorKind] = &[
        ParseErrorKind::InvalidUtf8,
        ParseErrorKind::InvalidName,
        ParseErrorKind::InvalidLabel,
        ParseErrorKind::DuplicateLabel,
        ParseErrorKind::Unterminated,
        ParseErrorKind::InvalidEscape,
        ParseErrorKind::InvalidValue,
        ParseErrorKind::InvalidTimestamp,
        ParseErrorKind::InvalidSample,
        ParseErrorKind::InvalidExemplar,
        ParseErrorKind::InvalidMetadata,
        ParseErrorKind::InvalidType,
        ParseErrorKind::UnsupportedType,
        ParseErrorKind::TypeConflict,
        ParseErrorKind::DuplicateMetadata,
        ParseErrorKind::InterleavedFamily,
        ParseErrorKind::DuplicateSeries,
        ParseErrorKind::InvalidBucket,
        ParseErrorKind::MissingInfBucket,
        ParseErrorKind::MissingEof,
        ParseErrorKind::ContentAfterEof,
        ParseErrorKind::Truncated,
        ParseErrorKind::TooLarge,
        ParseErrorKind::InvalidProtobuf,
    ];

    /// The snake_case name used as a self-metric label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            ParseErrorKind::InvalidUtf8 => "invalid_utf8",
            ParseErrorKind::InvalidName => "invalid_name",
            ParseErrorKind::InvalidLabel => "invalid_label",
            ParseErrorKind::DuplicateLabel => "duplicate_label",
            ParseErrorKind::Unterminated => "unterminated",
            ParseErrorKind::InvalidEscape => "invalid_escape",
            ParseErrorKind::InvalidValue => "invalid_value",
            ParseErrorKind::InvalidTimestamp => "invalid_timestamp",
            ParseErrorKind::InvalidSample => "invalid_sample",
            ParseErrorKind::InvalidExemplar => "invalid_exemplar",
            ParseErrorKind::InvalidMetadata => "invalid_metadata",
            ParseErrorKind::InvalidType => "invalid_type",
            ParseErrorKind::UnsupportedType => "unsupported_type",
            ParseErrorKind::TypeConflict => "type_conflict",
            ParseErrorKind::DuplicateMetadata => "duplicate_metadata",
            ParseErrorKind::InterleavedFamily => "interleaved_family",
            ParseErrorKind::DuplicateSeries => "duplicate_series",
            ParseErrorKind::InvalidBucket => "invalid_bucket",
            ParseErrorKind::MissingInfBucket => "missing_inf_bucket",
            ParseErrorKind::MissingEof => "missing_eof",
            ParseErrorKind::ContentAfterEof => "content_after_eof",
            ParseErrorKind::Truncated => "truncated",
            ParseErrorKind::TooLarge => "too_large",
            ParseErrorKind::InvalidProtobuf => "invalid_protobuf",
        }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the body an error was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// 1-based line of a text body.
    Line(usize),
    /// 1-based index of a delimited protobuf message and the byte offset of its length prefix.
    Message { index: usize, offset: usize },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Message { index, offset } => write!(f, "message {index} at byte {offset}"),
        }
    }
}

/// A rejected body: what ([`ParseErrorKind`]), where ([`Position`]) and a short detail.
///
/// `Display` is a single line such as `line 3: invalid value "abc" for sample foo`; any text
/// quoted from the body is escaped and shortened, so it is safe as an HTTP reason or log field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {detail}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub at: Position,
    pub detail: String,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, at: Position, detail: impl Into<String>) -> Self {
        ParseError {
            kind,
            at,
            detail: detail.into(),
        }
    }

    /// The 1-based line number for text bodies (`None` for protobuf).
    pub fn line(&self) -> Option<usize> {
        match self.at {
            Position::Line(n) => Some(n),
            Position::Message { .. } => None,
        }
    }
}

/// Longest excerpt of input quoted in an error detail: errors end up in HTTP reasons and
/// logs, where a 1 MB garbage token would be a nuisance.
const EXCERPT_CHARS: usize = 48;

/// Quotes a piece of input for an error detail: escaped (so it stays on one line) and
/// shortened to [`EXCERPT_CHARS`].
pub(crate) fn excerpt(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(EXCERPT_CHARS) + 8);
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// The model name of a counter family: `<name>_total` whatever the source called it. A text
/// 0.0.4 counter `jobs` (sample `jobs`), a 0.0.4 counter `jobs_total`, an OpenMetrics counter
/// `jobs` (sample `jobs_total`) and a protobuf or JSON counter of either name are the same
/// counter to a reader of the aggregate: one family, summed. Without this, two workers naming
/// it differently would give two families that OpenMetrics exposes under one name (invalid).
pub fn counter_family_name(name: Cow<'_, str>) -> Cow<'_, str> {
    if name.ends_with("_total") {
        name
    } else {
        Cow::Owned(format!("{name}_total"))
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, the classic metric-name grammar (0.0.4 and OpenMetrics 1.0
/// cannot express other names, and our exposition renders those formats).
pub(crate) fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if is_name_start(b) || b == b':')
        && bytes.all(|b| is_name_continue(b) || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if is_name_start(b)) && bytes.all(is_name_continue)
}

#[inline]
pub(crate) fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

#[inline]
pub(crate) fn is_name_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Label sets compare as sets: the same labels in another order are the same series.
/// Assumes neither side repeats a label name (the parsers reject that first).
pub(crate) fn same_label_set(a: &[Label<'_>], b: &[Label<'_>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| y.name == x.name && y.value == x.value))
}

/// The first label name that appears twice, if any. Quadratic for small sets (the common
/// case, no allocation), sort-based for large ones so a hostile 1 MB label set stays cheap.
pub(crate) fn repeated_label<'l>(labels: &'l [Label<'_>]) -> Option<&'l str> {
    if labels.len() <= 16 {
        for (i, l) in labels.iter().enumerate() {
            if labels.iter().skip(i + 1).any(|o| o.name == l.name) {
                return Some(&l.name);
            }
        }
        return None;
    }
    let mut names: Vec<&str> = labels.iter().map(|l| &*l.name).collect();
    names.sort_unstable();
    names.windows(2).find_map(|w| match w {
        [a, b] if a == b => Some(*a),
        _ => None,
    })
}

/// A `Hasher` for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Below this many series a family is searched linearly (by hash first): most families have
/// a handful of series and a map would cost more than it saves.
const LINEAR_SERIES: usize = 16;

/// Finds the series of a family with a given label set in O(1), to detect duplicates and to
/// group histogram/summary samples. Hashes are order-independent (a wrapping sum of per-label
/// hashes) so that label order does not matter, and keyed ([`HashState`]) so that a hostile
/// body cannot force every series into one bucket.
pub(crate) struct SeriesIndex {
    hashes: Vec<u64>,
    map: Option<HashMap<u64, SmallVec<[u32; 1]>, BuildHasherDefault<IdHasher>>>,
}

impl SeriesIndex {
    pub(crate) fn new() -> Self {
        SeriesIndex {
            hashes: Vec::new(),
            map: None,
        }
    }

    /// The order-independent hash of `labels`, skipping a label named `skip` (`le` for
    /// histogram buckets).
    pub(crate) fn hash(state: &HashState, labels: &[Label<'_>], skip: Option<&str>) -> u64 {
        labels
            .iter()
            .filter(|l| Some(&*l.name) != skip)
            .fold(0u64, |acc, l| {
                acc.wrapping_add(state.hash_one((&*l.name, &*l.value)))
            })
    }

    /// The index in `series` of the series whose label set equals `labels`.
    pub(crate) fn find(
        &self,
        hash: u64,
        labels: &[Label<'_>],
        series: &[Series<'_>],
    ) -> Option<usize> {
        let matches = |i: usize| {
            series
                .get(i)
                .is_some_and(|s| same_label_set(&s.labels, labels))
        };
        match &self.map {
            None => self
                .hashes
                .iter()
                .enumerate()
                .filter(|(_, h)| **h == hash)
                .map(|(i, _)| i)
                .find(|&i| matches(i)),
            Some(map) => map
                .get(&hash)?
                .iter()
                .map(|&i| i as usize)
                .find(|&i| matches(i)),
        }
    }

    /// Records that the series at index `hashes.len()` has `hash`.
    pub(crate) fn push(&mut self, hash: u64) {
        let idx = self.hashes.len() as u32;
        self.hashes.push(hash);
        match &mut self.map {
            Some(map) => map.entry(hash).or_default().push(idx),
            None if self.hashes.len() > LINEAR_SERIES => {
                let mut map: HashMap<u64, SmallVec<[u32; 1]>, BuildHasherDefault<IdHasher>> =
                    HashMap::with_capacity_and_hasher(self.hashes.len() * 2, Default::default());
                for (i, h) in self.hashes.iter().enumerate() {
                    map.entry(*h).or_default().push(i as u32);
                }
                self.map = Some(map);
            }
            None => {}
        }
    }
}
