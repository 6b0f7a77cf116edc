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
        self.family_header(&f.name, f.kind, Some(&f.help), None);
        for (labels, v) in &f.samples {
            self.sample(&f.name, "", labels, "", *v);
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

/// A bucket bound (`le`) exactly as client_python writes it (`floatToGoString`), so series
/// keep the `le` strings Python services already had and dashboards that match them keep
/// working: Python's `repr` (`0.1`, `1.0`, `1e-05`, `-0.0`), except that positive values of
/// 1e6 and above use Go's exponent form (`1e+06`, `1.2345675e+06`), and `+Inf`/`-Inf`/`NaN`.
/// For these values client_golang's OpenMetrics writer gives the same text; client_python
/// writes the same `le` in both formats.
pub(crate) fn write_bound(b: f64, out: &mut Vec<u8>) {
    if b.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if b.is_infinite() {
        out.extend_from_slice(if b > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    // Shortest round-trip digits and decimal exponent: `{:e}` gives `d[.ddd]e[-]x`.
    let sci = format!("{:e}", b.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if b.is_sign_negative() {
        out.push(b'-');
    }
    // Go's switch to an exponent at 1e6 applies to positive values only (client_python
    // checks `d > 0`); Python's repr switches below 1e-4 and from 1e16.
    let exponent_form = if b > 0.0 {
        !(-4..6).contains(&exp)
    } else {
        b != 0.0 && !(-4..16).contains(&exp)
    };
    if exponent_form {
        let (first, rest) = digits.split_at(1);
        out.extend_from_slice(first.as_bytes());
        if !rest.is_empty() {
            out.push(b'.');
            out.extend_from_slice(rest.as_bytes());
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if exp < 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-exp - 1) as usize));
        out.extend_from_slice(digits.as_bytes());
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.extend_from_slice(digits.as_bytes());
            out.extend(std::iter::repeat_n(b'0', int_len - digits.len()));
            out.extend_from_slice(b".0");
        } else {
            let (int, frac) = digits.split_at(int_len);
            out.extend_from_slice(int.as_bytes());
            out.push(b'.');
            out.extend_from_slice(frac.as_bytes());
        }
    }
}

#[cfg(test)]
mod bound_tests {
    use super::write_bound;
    use proptest::prelude::*;

    fn bound(b: f64) -> String {
        let mut out = Vec::new();
        write_bound(b, &mut out);
        String::from_utf8(out).expect("ASCII")
    }

    /// Expected strings printed by client_python 0.26 `floatToGoString` (the integration
    /// test `ingest_edges::le_values_are_written_as_client_python_writes_them` runs it).
    #[test]
    fn client_python_spellings() {
        for (b, want) in [
            (1e6, "1e+06"),
            (1e-5, "1e-05"),
            (0.1, "0.1"),
            (2.5, "2.5"),
            (1e21, "1e+21"),
            (100.0, "100.0"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1e15, "1e+15"),
            (123456789.0, "1.23456789e+08"),
            (0.000123, "0.000123"),
            (1e-4, "0.0001"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (-1.5, "-1.5"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e5, "100000.0"),
            (999999.0, "999999.0"),
            (-1e6, "-1000000.0"),
            (-1e16, "-1e+16"),
            (-1e-5, "-1e-05"),
            (12345678901234567.0, "1.2345678901234568e+16"),
        ] {
            assert_eq!(bound(b), want, "{b:e}");
        }
    }

    proptest! {
        /// Whatever the spelling, it reads back as the same float (bounds are compared as
        /// floats by everyone downstream).
        #[test]
        fn bound_round_trips(b in any::<f64>().prop_filter("finite", |b| b.is_finite())) {
            let text = bound(b);
            let back: f64 = text.parse().expect("parses");
            prop_assert_eq!(back.to_bits(), b.to_bits(), "{}", text);
        }
    }
}
