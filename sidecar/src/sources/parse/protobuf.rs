//! Decoder for varint-length-delimited `io.prometheus.client.MetricFamily` messages, the body
//! the Go and Java clients push (`Content-Type: application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited`).
//!
//! The message types in [`proto`] are written by hand with `prost` derives instead of being
//! generated from `metrics.proto`: the build needs no `protoc`, and fields the sidecar cannot
//! use (exemplars, created timestamps, native-histogram deltas) are left out, so `prost`
//! skips them as unknown fields without allocating.

use super::{
    ParseError, ParseErrorKind as K, Position, SeriesIndex, is_label_name, is_metric_name,
    repeated_label,
};
use crate::hashing::HashState;
use crate::model::{Family, HistogramValue, Label, Labels, MetricKind, Series, Value};
use prost::Message;
use std::borrow::Cow;
use std::collections::HashSet;

/// The largest single message accepted. The ingest layer caps the whole body far below this;
/// the cap is a second line of defence for callers that do not.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// `io.prometheus.client` messages (metrics.proto, proto2), as far as the sidecar reads them.
/// Public so that tests, benchmarks and fuzzers can encode bodies with `prost`.
pub mod proto {
    /// `io.prometheus.client.MetricType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Counter = 0,
        Gauge = 1,
        Summary = 2,
        Untyped = 3,
        Histogram = 4,
        GaugeHistogram = 5,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }

    /// Tags 2 (exemplar) and 3 (created timestamp) are skipped.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Counter {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Quantile {
        #[prost(double, optional, tag = "1")]
        pub quantile: Option<f64>,
        #[prost(double, optional, tag = "2")]
        pub value: Option<f64>,
    }

    /// Tag 4 (created timestamp) is skipped.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        #[prost(message, repeated, tag = "3")]
        pub quantile: Vec<Quantile>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Untyped {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }

    /// A classic histogram. Of the native-histogram fields only those that tell a native
    /// histogram apart (schema, zero threshold, spans) are declared; deltas, counts (10, 11,
    /// 13, 14), created timestamp (15) and exemplars (16) are skipped.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        /// Overrides `sample_count` if > 0 (float histograms).
        #[prost(double, optional, tag = "4")]
        pub sample_count_float: Option<f64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        /// Increasing upper bounds; the `+Inf` bucket is optional (Go omits it).
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        #[prost(sint32, optional, tag = "5")]
        pub schema: Option<i32>,
        #[prost(double, optional, tag = "6")]
        pub zero_threshold: Option<f64>,
        #[prost(message, repeated, tag = "9")]
        pub negative_span: Vec<BucketSpan>,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
    }

    /// Tag 3 (exemplar) is skipped.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, optional, tag = "1")]
        pub cumulative_count: Option<u64>,
        /// Overrides `cumulative_count` if > 0.
        #[prost(double, optional, tag = "4")]
        pub cumulative_count_float: Option<f64>,
        #[prost(double, optional, tag = "2")]
        pub upper_bound: Option<f64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, optional, tag = "1")]
        pub offset: Option<i32>,
        #[prost(uint32, optional, tag = "2")]
        pub length: Option<u32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Gauge>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Counter>,
        #[prost(message, optional, tag = "4")]
        pub summary: Option<Summary>,
        #[prost(message, optional, tag = "5")]
        pub untyped: Option<Untyped>,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
        #[prost(int64, optional, tag = "6")]
        pub timestamp_ms: Option<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub help: Option<String>,
        #[prost(enumeration = "MetricType", optional, tag = "3")]
        pub r#type: Option<i32>,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
        #[prost(string, optional, tag = "5")]
        pub unit: Option<String>,
    }
}

/// Decodes a delimited protobuf body into families (owned: the strings come out of the
/// decoded messages, nothing borrows the body, so the lifetime is the caller's choice,
/// `'static` included; it is generic because `Family` is invariant in its lifetime, and a
/// `Family<'static>` could not be returned where a `Family<'body>` is expected).
///
/// Rejects with [`ParseErrorKind::Truncated`](super::ParseErrorKind::Truncated) a body that
/// ends inside a length prefix or message, `TooLarge` a prefix above [`MAX_MESSAGE_BYTES`],
/// `InvalidProtobuf` a message that does not decode or has no name, and applies the same
/// family rules as the text parser (valid names, no duplicate labels, series or families,
/// `+Inf` bucket present).
pub fn decode<'a>(body: &[u8]) -> Result<Vec<Family<'a>>, ParseError> {
    let state = HashState::default();
    let mut families = Vec::new();
    let mut names = HashSet::new();
    let mut rest = body;
    let mut offset = 0usize;
    let mut index = 0usize;
    while !rest.is_empty() {
        index += 1;
        let at = Position::Message { index, offset };
        let (len, prefix) = read_varint(rest).map_err(|kind| {
            let detail = match kind {
                K::Truncated => "body ends inside a length prefix",
                _ => "invalid varint length prefix",
            };
            ParseError::new(kind, at, detail)
        })?;
        let after = rest.get(prefix..).unwrap_or_default();
        if len > MAX_MESSAGE_BYTES as u64 {
            return Err(ParseError::new(
                K::TooLarge,
                at,
                format!("message length {len} exceeds the limit of {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        let len = len as usize;
        let Some((msg, next)) = after.split_at_checked(len) else {
            return Err(ParseError::new(
                K::Truncated,
                at,
                format!("message claims {len} bytes but only {} remain", after.len()),
            ));
        };
        let mf = proto::MetricFamily::decode(msg).map_err(|e| {
            ParseError::new(
                K::InvalidProtobuf,
                at,
                format!("not a MetricFamily: {}", one_line(&e.to_string())),
            )
        })?;
        let family = convert(mf, &state, at)?;
        if !names.insert(family.name.clone()) {
            return Err(ParseError::new(
                K::InterleavedFamily,
                at,
                format!("family {} appears twice", family.name),
            ));
        }
        families.push(family);
        offset += prefix + len;
        rest = next;
    }
    Ok(families)
}

/// Reads a base-128 varint; `Err(Truncated)` if the input ends inside it, `Err(InvalidProtobuf)`
/// if it is longer than 10 bytes or overflows 64 bits.
fn read_varint(buf: &[u8]) -> Result<(u64, usize), K> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(K::InvalidProtobuf);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() < 10 {
        Err(K::Truncated)
    } else {
        Err(K::InvalidProtobuf)
    }
}

/// Keeps decoder messages on one line (they end up in HTTP reasons).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

fn convert<'a>(
    mf: proto::MetricFamily,
    state: &HashState,
    at: Position,
) -> Result<Family<'a>, ParseError> {
    let err = |kind, detail: String| ParseError::new(kind, at, detail);
    let name = match mf.name {
        Some(name) if !name.is_empty() => name,
        _ => {
            return Err(err(
                K::InvalidProtobuf,
                "MetricFamily without a name".to_owned(),
            ));
        }
    };
    if !is_metric_name(&name) {
        return Err(err(
            K::InvalidName,
            format!("invalid metric name {}", super::excerpt(&name)),
        ));
    }
    // proto2 default for the missing enum is its first value, COUNTER.
    let ty = match mf.r#type {
        None => proto::MetricType::Counter,
        Some(v) => proto::MetricType::try_from(v).map_err(|_| {
            err(
                K::InvalidProtobuf,
                format!("unknown metric type {v} for {name}"),
            )
        })?,
    };
    let kind = match ty {
        proto::MetricType::Counter => MetricKind::Counter,
        proto::MetricType::Gauge => MetricKind::Gauge,
        proto::MetricType::Summary => MetricKind::Summary,
        proto::MetricType::Untyped => MetricKind::Untyped,
        proto::MetricType::Histogram => MetricKind::Histogram,
        proto::MetricType::GaugeHistogram => {
            return Err(err(
                K::UnsupportedType,
                format!("unsupported metric type gaugehistogram for family {name}"),
            ));
        }
    };

    let mut series: Vec<Series<'a>> = Vec::with_capacity(mf.metric.len());
    let mut index = SeriesIndex::new();
    for (i, m) in mf.metric.into_iter().enumerate() {
        let mut labels = Labels::with_capacity(m.label.len());
        for lp in m.label {
            let lname = lp.name.unwrap_or_default();
            if !is_label_name(&lname) {
                return Err(err(
                    K::InvalidName,
                    format!(
                        "invalid label name {} in family {name}",
                        super::excerpt(&lname)
                    ),
                ));
            }
            labels.push(Label::new(lname, lp.value.unwrap_or_default()));
        }
        if let Some(dup) = repeated_label(&labels) {
            return Err(err(
                K::DuplicateLabel,
                format!("label {dup} appears twice in a metric of {name}"),
            ));
        }
        let missing = || {
            err(
                K::TypeConflict,
                format!(
                    "metric {} of {} family {name} has no {} value",
                    i + 1,
                    kind.text_name(),
                    kind.text_name()
                ),
            )
        };
        let value = match kind {
            MetricKind::Counter => {
                Value::Scalar(m.counter.ok_or_else(missing)?.value.unwrap_or(0.0))
            }
            MetricKind::Gauge => Value::Scalar(m.gauge.ok_or_else(missing)?.value.unwrap_or(0.0)),
            MetricKind::Untyped => {
                Value::Scalar(m.untyped.ok_or_else(missing)?.value.unwrap_or(0.0))
            }
            MetricKind::Summary => {
                let s = m.summary.ok_or_else(missing)?;
                Value::Summary {
                    sum: s.sample_sum.unwrap_or(0.0),
                    count: s.sample_count.unwrap_or(0) as f64,
                }
            }
            MetricKind::Histogram => {
                let h = m.histogram.ok_or_else(missing)?;
                Value::Histogram(histogram(h, &name).map_err(|(kind, d)| err(kind, d))?)
            }
        };
        let hash = SeriesIndex::hash(state, &labels, None);
        if index.find(hash, &labels, &series).is_some() {
            return Err(err(
                K::DuplicateSeries,
                format!("duplicate series in family {name} (metric {})", i + 1),
            ));
        }
        index.push(hash);
        series.push(Series {
            labels,
            value,
            timestamp: m.timestamp_ms.map(|ms| ms as f64 / 1000.0),
        });
    }

    let name = match kind {
        MetricKind::Counter => super::counter_family_name(Cow::Owned(name)),
        _ => Cow::Owned(name),
    };
    Ok(Family {
        name,
        kind,
        help: mf.help.filter(|h| !h.is_empty()).map(Cow::Owned),
        unit: mf.unit.filter(|u| !u.is_empty()).map(Cow::Owned),
        mode: None,
        series,
    })
}

/// A classic histogram in model form: buckets sorted by bound, `+Inf` appended from the
/// sample count when the client omitted it (Go always does).
fn histogram(h: proto::Histogram, name: &str) -> Result<HistogramValue, (K, String)> {
    let count = match h.sample_count_float {
        Some(c) if c > 0.0 => c,
        _ => h.sample_count.unwrap_or(0) as f64,
    };
    if h.bucket.is_empty()
        && (h.schema.is_some()
            || h.zero_threshold.is_some()
            || !h.positive_span.is_empty()
            || !h.negative_span.is_empty())
    {
        return Err((
            K::UnsupportedType,
            format!("native histogram {name} has no classic buckets"),
        ));
    }
    let mut pairs = Vec::with_capacity(h.bucket.len() + 1);
    for b in h.bucket {
        let bound = b.upper_bound.unwrap_or(0.0);
        if bound.is_nan() {
            return Err((
                K::InvalidBucket,
                format!("NaN bucket bound in histogram {name}"),
            ));
        }
        let cumulative = match b.cumulative_count_float {
            Some(c) if c > 0.0 => c,
            _ => b.cumulative_count.unwrap_or(0) as f64,
        };
        pairs.push((bound, cumulative));
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some(bound) = pairs.windows(2).find_map(|w| match w {
        [a, b] if a.0 == b.0 => Some(a.0),
        _ => None,
    }) {
        return Err((
            K::InvalidBucket,
            format!("bucket bound {bound} repeated in histogram {name}"),
        ));
    }
    if pairs
        .last()
        .is_none_or(|&(bound, _)| bound != f64::INFINITY)
    {
        pairs.push((f64::INFINITY, count));
    }
    let (bounds, buckets) = pairs.into_iter().unzip();
    Ok(HistogramValue {
        bounds,
        buckets,
        sum: h.sample_sum.unwrap_or(0.0),
        count,
    })
}
