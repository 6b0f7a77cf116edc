//! One family while its lines are read: its `# TYPE`, which sample names belong to it, and
//! its series assembled (histogram buckets grouped, `+Inf` required) into a model family.

use super::super::{ParseError, ParseErrorKind as K, Position, SeriesIndex, excerpt};
use crate::hashing::HashState;
use crate::model::{Family, HistogramValue, Label, Labels, MetricKind, Series, Value};
use std::borrow::Cow;

/// A `# TYPE` as written, before mapping to the model's [`MetricKind`]: `info` and `stateset`
/// name their samples differently from gauges but aggregate like them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TextKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
    Info,
    StateSet,
}

impl TextKind {
    pub(super) fn model(self) -> MetricKind {
        match self {
            TextKind::Counter => MetricKind::Counter,
            TextKind::Gauge | TextKind::Info | TextKind::StateSet => MetricKind::Gauge,
            TextKind::Histogram => MetricKind::Histogram,
            TextKind::Summary => MetricKind::Summary,
            TextKind::Untyped => MetricKind::Untyped,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            TextKind::Counter => "counter",
            TextKind::Gauge => "gauge",
            TextKind::Histogram => "histogram",
            TextKind::Summary => "summary",
            TextKind::Untyped => "untyped",
            TextKind::Info => "info",
            TextKind::StateSet => "stateset",
        }
    }
}

/// What a sample line contributes to its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// A counter, gauge or untyped value.
    Value,
    Bucket,
    Count,
    Sum,
    /// `_created` samples and summary quantiles: valid, but not aggregatable.
    Dropped,
}

/// Histogram/summary samples of one series, collected until the family ends.
pub(super) struct Partial {
    pub(super) buckets: Vec<(f64, f64)>,
    pub(super) count: Option<f64>,
    pub(super) sum: Option<f64>,
    /// First line of the series, for errors found when the family is complete.
    pub(super) line: usize,
}

/// The family being read.
pub(super) struct Current<'a> {
    /// The name in `# TYPE`/`# HELP`, or the sample name for a family without metadata.
    pub(super) name: &'a str,
    pub(super) kind: TextKind,
    /// The name of value samples (`foo_total` for an OpenMetrics counter `foo`), which is
    /// also the model family name for counters and infos.
    pub(super) value_name: Cow<'a, str>,
    pub(super) typed: bool,
    pub(super) has_samples: bool,
    pub(super) help: Option<Cow<'a, str>>,
    pub(super) unit: Option<Cow<'a, str>>,
    pub(super) series: Vec<Series<'a>>,
    /// Parallel to `series` for histograms and summaries; empty otherwise.
    pub(super) partial: Vec<Partial>,
    pub(super) index: SeriesIndex,
    pub(super) line: usize,
}

impl<'a> Current<'a> {
    pub(super) fn new(name: &'a str, line: usize) -> Self {
        Current {
            name,
            kind: TextKind::Untyped,
            value_name: Cow::Borrowed(name),
            typed: false,
            has_samples: false,
            help: None,
            unit: None,
            series: Vec::new(),
            partial: Vec::new(),
            index: SeriesIndex::new(),
            line,
        }
    }

    pub(super) fn set_kind(&mut self, kind: TextKind, openmetrics: bool) {
        self.kind = kind;
        self.value_name = match kind {
            // OpenMetrics names the family `foo` and the sample `foo_total`; tolerate
            // exposers that put `_total` in the OpenMetrics family name too.
            TextKind::Counter if openmetrics && !self.name.ends_with("_total") => {
                Cow::Owned(format!("{}_total", self.name))
            }
            TextKind::Info if !self.name.ends_with("_info") => {
                Cow::Owned(format!("{}_info", self.name))
            }
            _ => Cow::Borrowed(self.name),
        };
    }

    /// The role of a sample named `sample` in this family, or `None` if it belongs to
    /// another family.
    pub(super) fn role_of(&self, sample: &str) -> Option<Role> {
        match self.kind {
            TextKind::Gauge | TextKind::Untyped | TextKind::StateSet => {
                (sample == self.name).then_some(Role::Value)
            }
            TextKind::Info => (sample == self.value_name).then_some(Role::Value),
            TextKind::Counter => {
                if sample == self.value_name {
                    return Some(Role::Value);
                }
                let base = sample.strip_suffix("_created")?;
                let own = self.name.strip_suffix("_total").unwrap_or(self.name);
                (base == own || base == self.name).then_some(Role::Dropped)
            }
            TextKind::Histogram | TextKind::Summary => {
                let summary = self.kind == TextKind::Summary;
                if sample == self.name {
                    // Summary quantiles cannot be aggregated across workers.
                    return summary.then_some(Role::Dropped);
                }
                match sample.strip_prefix(self.name)? {
                    "_bucket" if !summary => Some(Role::Bucket),
                    "_count" => Some(Role::Count),
                    "_sum" => Some(Role::Sum),
                    "_created" => Some(Role::Dropped),
                    _ => None,
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        state: &HashState,
        role: Role,
        name: &str,
        mut labels: Labels<'a>,
        value: f64,
        timestamp: Option<f64>,
        line: usize,
    ) -> Result<(), ParseError> {
        self.has_samples = true;
        let at = Position::Line(line);
        match role {
            Role::Dropped => Ok(()),
            Role::Value => {
                let hash = SeriesIndex::hash(state, &labels, None);
                if self.index.find(hash, &labels, &self.series).is_some() {
                    return Err(ParseError::new(
                        K::DuplicateSeries,
                        at,
                        format!("duplicate series {}", describe(name, &labels)),
                    ));
                }
                self.index.push(hash);
                self.series.push(Series {
                    labels,
                    value: Value::Scalar(value),
                    timestamp,
                });
                Ok(())
            }
            Role::Bucket | Role::Count | Role::Sum => {
                let bound = if role == Role::Bucket {
                    Some(take_le(&mut labels, name, at)?)
                } else {
                    None
                };
                let hash = SeriesIndex::hash(state, &labels, None);
                let idx = match self.index.find(hash, &labels, &self.series) {
                    Some(idx) => idx,
                    None => {
                        self.index.push(hash);
                        self.series.push(Series {
                            labels,
                            value: Value::Scalar(0.0),
                            timestamp: None,
                        });
                        self.partial.push(Partial {
                            buckets: Vec::new(),
                            count: None,
                            sum: None,
                            line,
                        });
                        self.series.len() - 1
                    }
                };
                let (Some(series), Some(partial)) =
                    (self.series.get_mut(idx), self.partial.get_mut(idx))
                else {
                    return Ok(());
                };
                if series.timestamp.is_none() {
                    series.timestamp = timestamp;
                }
                let slot = match (role, bound) {
                    (Role::Bucket, Some(bound)) => {
                        partial.buckets.push((bound, value));
                        return Ok(());
                    }
                    (Role::Count, _) => &mut partial.count,
                    _ => &mut partial.sum,
                };
                if slot.replace(value).is_some() {
                    return Err(ParseError::new(
                        K::DuplicateSeries,
                        at,
                        format!("duplicate series {}", describe(name, &series.labels)),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Converts to the model: counter/info names normalised, histogram and summary values
    /// assembled (which is where a missing `+Inf` bucket is found).
    pub(super) fn into_family(self) -> Result<Family<'a>, ParseError> {
        let name = match self.kind {
            TextKind::Counter => super::super::counter_family_name(self.value_name),
            TextKind::Info => self.value_name,
            _ => Cow::Borrowed(self.name),
        };
        let mut series = self.series;
        match self.kind {
            TextKind::Histogram => {
                for (s, p) in series.iter_mut().zip(self.partial) {
                    s.value = Value::Histogram(p.histogram(&name, &s.labels)?);
                }
            }
            TextKind::Summary => {
                for (s, p) in series.iter_mut().zip(self.partial) {
                    s.value = Value::Summary {
                        sum: p.sum.unwrap_or(f64::NAN),
                        count: p.count.unwrap_or(0.0),
                    };
                }
            }
            _ => {}
        }
        Ok(Family {
            name,
            kind: self.kind.model(),
            help: self.help,
            unit: self.unit,
            mode: None,
            series,
        })
    }
}

impl Partial {
    pub(super) fn histogram(
        self,
        name: &str,
        labels: &[Label<'_>],
    ) -> Result<HistogramValue, ParseError> {
        let at = Position::Line(self.line);
        let mut pairs = self.buckets;
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(bound) = pairs.windows(2).find_map(|w| match w {
            [a, b] if a.0 == b.0 => Some(a.0),
            _ => None,
        }) {
            return Err(ParseError::new(
                K::DuplicateSeries,
                at,
                format!(
                    "duplicate bucket le={bound} in histogram {}",
                    describe(name, labels)
                ),
            ));
        }
        let inf_count = match pairs.last() {
            Some(&(bound, count)) if bound == f64::INFINITY => count,
            _ => {
                return Err(ParseError::new(
                    K::MissingInfBucket,
                    at,
                    format!("histogram {} has no +Inf bucket", describe(name, labels)),
                ));
            }
        };
        let (bounds, buckets) = pairs.into_iter().unzip();
        Ok(HistogramValue {
            bounds,
            buckets,
            sum: self.sum.unwrap_or(f64::NAN),
            count: self.count.unwrap_or(inf_count),
        })
    }
}

/// Removes `le` from a bucket sample's labels (the series is identified without it) and
/// parses it.
pub(super) fn take_le(
    labels: &mut Labels<'_>,
    name: &str,
    at: Position,
) -> Result<f64, ParseError> {
    let Some(i) = labels.iter().position(|l| l.name == "le") else {
        return Err(ParseError::new(
            K::InvalidBucket,
            at,
            format!("bucket sample {} has no le label", describe(name, labels)),
        ));
    };
    let le = labels.remove(i).value;
    match le.trim().parse::<f64>() {
        Ok(bound) if !bound.is_nan() => Ok(bound),
        _ => Err(ParseError::new(
            K::InvalidBucket,
            at,
            format!("invalid le {} for sample {name}", excerpt(&le)),
        )),
    }
}

/// `name{a="b",...}` for error details, escaped and shortened.
pub(super) fn describe(name: &str, labels: &[Label<'_>]) -> String {
    let mut s = String::from(name);
    if !labels.is_empty() {
        s.push('{');
        for (i, l) in labels.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            if s.len() > 120 {
                s.push_str("...");
                break;
            }
            s.push_str(&l.name);
            s.push('=');
            s.push_str(&excerpt(&l.value));
        }
        s.push('}');
    }
    s
}
