//! The ingest model every source produces (push text/protobuf, JSON, StatsD, multiprocess
//! files, scrapes) and the store consumes: one worker's latest cumulative values, grouped by
//! family. Values borrow from the request body where they can.

use monasca_config::GaugeMode;
use smallvec::SmallVec;
use std::borrow::Cow;

/// The Prometheus metric type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    /// `untyped` (text 0.0.4) or `unknown` (OpenMetrics); aggregated like a gauge.
    Untyped,
}

impl MetricKind {
    /// Counters, histograms and summaries: cumulative values that never go backwards.
    pub fn is_counter_like(self) -> bool {
        matches!(
            self,
            MetricKind::Counter | MetricKind::Histogram | MetricKind::Summary
        )
    }

    /// The name in a text 0.0.4 `# TYPE` line.
    pub fn text_name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
            MetricKind::Untyped => "untyped",
        }
    }

    /// The name in an OpenMetrics `# TYPE` line.
    pub fn openmetrics_name(self) -> &'static str {
        match self {
            MetricKind::Untyped => "unknown",
            other => other.text_name(),
        }
    }
}

/// One label pair. Names and values are unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label<'a> {
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

impl<'a> Label<'a> {
    pub fn new(name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Labels of one series, in the order the source gave them.
pub type Labels<'a> = SmallVec<[Label<'a>; 6]>;

/// A classic histogram: cumulative bucket counts by upper bound, ending with `+Inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramValue {
    /// Upper bounds, strictly increasing, last is `+Inf`.
    pub bounds: Vec<f64>,
    /// Cumulative counts, one per bound.
    pub buckets: Vec<f64>,
    /// NaN when the source sent no `_sum` (legal in OpenMetrics): the aggregate then has no
    /// `_sum` line rather than an invented one.
    pub sum: f64,
    pub count: f64,
}

/// The latest cumulative value of one series.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Counter, gauge or untyped sample.
    Scalar(f64),
    Histogram(HistogramValue),
    /// Summary `_sum` (NaN when absent) and `_count` (quantiles cannot be aggregated and are
    /// not kept).
    Summary {
        sum: f64,
        count: f64,
    },
}

/// One series of one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Series<'a> {
    /// Labels as sent, including worker and control labels (the store strips those).
    pub labels: Labels<'a>,
    pub value: Value,
    /// Sample timestamp in seconds since the epoch, if the source gave one.
    pub timestamp: Option<f64>,
}

/// One metric family of one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Family<'a> {
    /// The family name: for counters always `<name>_total` (every source normalises it, so
    /// `jobs` and `jobs_total` are one family), for histograms and summaries the name without
    /// `_bucket`/`_sum`/`_count`.
    pub name: Cow<'a, str>,
    pub kind: MetricKind,
    pub help: Option<Cow<'a, str>>,
    pub unit: Option<Cow<'a, str>>,
    /// A gauge mode fixed by the source (a multiprocess file name); wins over `_aggregate`
    /// labels, config rules and the default.
    pub mode: Option<GaugeMode>,
    pub series: Vec<Series<'a>>,
}

impl<'a> Family<'a> {
    pub fn new(name: impl Into<Cow<'a, str>>, kind: MetricKind) -> Self {
        Family {
            name: name.into(),
            kind,
            help: None,
            unit: None,
            mode: None,
            series: Vec::new(),
        }
    }
}
