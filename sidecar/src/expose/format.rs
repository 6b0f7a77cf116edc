//! Exposition formats: content negotiation and the text writer.

use super::SelfFamily;
use crate::model::MetricKind;
use std::io::Write as _;

/// The exposition format of a `/metrics` response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4: the default, and what monasca-agent parses.
    Text,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The Content-Type header of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Chooses the format from an `Accept` header: the acceptable media range with the highest
/// `q` wins (the earlier one on ties); anything unknown or absent gets text 0.0.4, so the
/// response always has a valid Content-Type.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut version: Option<String> = None;
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.parse().unwrap_or(0.0),
                    "version" => version = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        let format = match media.as_str() {
            "application/openmetrics-text" => match version.as_deref() {
                None | Some("1.0.0") | Some("0.0.1") => Format::OpenMetrics,
                Some(_) => continue,
            },
            "text/plain" | "text/*" | "*/*" => Format::Text,
            _ => continue,
        };
        if q <= 0.0 {
            continue;
        }
        if best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, format));
        }
    }
    best.map_or(Format::Text, |(_, f)| f)
}

/// Writes families in one format.
pub(crate) struct Writer<'a> {
    format: Format,
    out: &'a mut Vec<u8>,
    kind: MetricKind,
    /// The OpenMetrics family name of the current counter (without `_total`).
    counter_base_len: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(format: Format, out: &'a mut Vec<u8>) -> Self {
        Writer {
            format,
            out,
            kind: MetricKind::Untyped,
            counter_base_len: 0,
        }
    }

    /// `# HELP`, `# TYPE` (and `# UNIT` in OpenMetrics) of a family.
    pub(crate) fn family_header(
        &mut self,
        name: &str,
        kind: MetricKind,
        help: Option<&str>,
        unit: Option<&str>,
    ) {
        self.kind = kind;
        let om = self.format == Format::OpenMetrics;
        let family = if om && kind == MetricKind::Counter {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name
        };
        self.counter_base_len = family.len();
        if let Some(help) = help {
            self.out.extend_from_slice(b"# HELP ");
            self.out.extend_from_slice(family.as_bytes());
            self.out.push(b' ');
            escape_help(help, om, self.out);
            self.out.push(b'\n');
        }
        self.out.extend_from_slice(b"# TYPE ");
        self.out.extend_from_slice(family.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(
            if om {
                kind.openmetrics_name()
            } else {
                kind.text_name()
            }
            .as_bytes(),
        );
        self.out.push(b'\n');
        if om
            && let Some(unit) = unit
            && !unit.is_empty()
            && family.strip_suffix(unit).is_some_and(|f| f.ends_with('_'))
        {
            self.out.extend_from_slice(b"# UNIT ");
            self.out.extend_from_slice(family.as_bytes());
            self.out.push(b' ');
            self.out.extend_from_slice(unit.as_bytes());
            self.out.push(b'\n');
        }
    }

    /// One sample line: `name{labels,extra} value`. Counters get `_total` in OpenMetrics.
    pub(crate) fn sample(&mut self, name: &str, suffix: &str, labels: &str, extra: &str, v: f64) {
        if self.format == Format::OpenMetrics && self.kind == MetricKind::Counter {
            let base = name.get(..self.counter_base_len).unwrap_or(name);
            self.out.extend_from_slice(base.as_bytes());
            self.out.extend_from_slice(b"_total");
        } else {
            self.out.extend_from_slice(name.as_bytes());
            self.out.extend_from_slice(suffix.as_bytes());
        }
        self.labels(labels, extra);
        self.out.push(b' ');
        write_value(v, self.out);
        self.out.push(b'\n');
    }

    /// One histogram bucket line with its `le` label.
    pub(crate) fn bucket(&mut self, name: &str, labels: &str, bound: f64, v: f64) {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"_bucket{");
        if !labels.is_empty() {
            self.out.extend_from_slice(labels.as_bytes());
            self.out.push(b',');
        }
        self.out.extend_from_slice(b"le=\"");
        write_bound(bound, self.out);
        self.out.extend_from_slice(b"\"} ");
        write_value(v, self.out);
        self.out.push(b'\n');
    }

    fn labels(&mut self, labels: &str, extra: &str) {
        if labels.is_empty() && extra.is_empty() {
            return;
        }
        self.out.push(b'{');
        self.out.extend_from_slice(labels.as_bytes());
        if !labels.is_empty() && !extra.is_empty() {
            self.out.push(b',');
        }
        self.out.extend_from_slice(extra.as_bytes());
        self.out.push(b'}');
    }

    /// One of the sidecar's own families.
    pub(crate) fn self_family(&mut self, f: &SelfFamily) {
        self.family_header(f.name, f.kind, Some(f.help), None);
        for (labels, v) in &f.samples {
            self.sample(f.name, "", labels, "", *v);
        }
    }

    /// Ends the exposition (`# EOF` in OpenMetrics).
    pub(crate) fn finish(self) {
        if self.format == Format::OpenMetrics {
            self.out.extend_from_slice(b"# EOF\n");
        }
    }
}

/// HELP text escaping: `\` and newline always, `"` too in OpenMetrics.
fn escape_help(help: &str, openmetrics: bool, out: &mut Vec<u8>) {
    for &b in help.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if openmetrics => out.extend_from_slice(b"\\\""),
            b => out.push(b),
        }
    }
}

/// A sample value: integers without a fraction, `NaN`, `+Inf`, `-Inf`, else the shortest
/// representation that reads back exactly.
pub(crate) fn write_value(v: f64, out: &mut Vec<u8>) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let mut buf = itoa::Buffer::new();
        if v == 0.0 && v.is_sign_negative() {
            out.extend_from_slice(b"-0");
        } else {
            out.extend_from_slice(buf.format(v as i64).as_bytes());
        }
    } else {
        let mut buf = ryu::Buffer::new();
        out.extend_from_slice(buf.format_finite(v).as_bytes());
    }
}

/// A bucket bound as prometheus_client writes it (`0.5`, `1.0`, `+Inf`), so series keep the
/// `le` values Python services already had.
pub(crate) fn write_bound(b: f64, out: &mut Vec<u8>) {
    if b.is_infinite() {
        out.extend_from_slice(if b > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if b.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if b.fract() == 0.0 && b.abs() < 1e15 {
        let _ = write!(out, "{}.0", b as i64);
    } else {
        let mut buf = ryu::Buffer::new();
        out.extend_from_slice(buf.format_finite(b).as_bytes());
    }
}
