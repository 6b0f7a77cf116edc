//! OpenTelemetry names to Prometheus names, following the OpenTelemetry "Prometheus and
//! OpenMetrics compatibility" specification: invalid characters become `_` (runs collapsed),
//! the unit is appended as a suffix (`s` → `_seconds`, `By` → `_bytes`, `m/s` →
//! `_meters_per_second`, `{requests}` annotations dropped, `1` → `_ratio` for gauges), and
//! monotonic Sums get `_total`.

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use std::fmt::Write as _;

/// Appends `raw` as a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`): every
/// other character becomes `_`, runs of `_` collapse to one, a leading digit gets a `_`.
pub fn sanitize_metric_name(raw: &str, out: &mut String) {
    sanitize(raw, true, out);
}

/// Appends `raw` as a valid label name: like metric names without `:`; a leading digit is
/// prefixed with `key_` as the specification says.
pub fn sanitize_label_name(raw: &str, out: &mut String) {
    if raw.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        out.push_str("key_");
    }
    sanitize(raw, false, out);
}

fn sanitize(raw: &str, colon: bool, out: &mut String) {
    let start = out.len();
    if raw.as_bytes().first().is_some_and(u8::is_ascii_digit) && colon {
        out.push('_');
    }
    for c in raw.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out.len() > start && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.len() == start {
        out.push('_');
    }
}

/// The Prometheus word for a UCUM unit the specification maps, or `None`.
fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        // Time
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        // Bytes
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        // SI
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        // Misc
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

/// The denominator word of a `x/y` unit (`s` → `second`).
fn per_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// The unit suffix for `unit` (without the leading `_`), or empty when there is none.
/// `gauge_ratio` is true for gauges, where the dimensionless `1` means `ratio`.
pub fn unit_suffix(unit: &str, gauge_ratio: bool) -> String {
    // `{...}` annotations carry no unit.
    let mut cleaned = String::with_capacity(unit.len());
    let mut depth = 0u32;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => cleaned.push(c),
            _ => {}
        }
    }
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        return String::new();
    }
    if cleaned == "1" {
        return if gauge_ratio {
            "ratio".into()
        } else {
            String::new()
        };
    }
    let (main, per) = match cleaned.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (cleaned, None),
    };
    let mut out = String::new();
    if !main.is_empty() && main != "1" {
        match unit_word(main) {
            Some(w) => out.push_str(w),
            None => sanitize_metric_name(main, &mut out),
        }
    }
    if let Some(per) = per.filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str("per_");
        match per_word(per) {
            Some(w) => out.push_str(w),
            None => sanitize_metric_name(per, &mut out),
        }
    }
    out.trim_matches('_').to_string()
}

/// The Prometheus family name of an OpenTelemetry metric: sanitised, unit suffix appended
/// unless already present, `_total` for counters (the family name of a counter is its
/// sample name, as elsewhere in the sidecar).
pub fn family_name(name: &str, unit: &str, counter: bool, gauge: bool) -> String {
    let mut out = String::with_capacity(name.len() + 16);
    sanitize_metric_name(name, &mut out);
    let trimmed = out.trim_end_matches('_').len();
    out.truncate(trimmed.max(1));
    // `_total` in the middle is moved to the end, as the specification says.
    if counter && let Some(base) = out.strip_suffix("_total") {
        out = base.to_string();
    }
    let suffix = unit_suffix(unit, gauge);
    if !suffix.is_empty() && !out.ends_with(&format!("_{suffix}")) && out != suffix {
        out.push('_');
        out.push_str(&suffix);
    }
    if counter {
        out.push_str("_total");
    }
    out
}

/// An attribute value as a label value: strings as they are, other scalars in their usual
/// text form, arrays and maps as JSON (the specification's rule for non-string values).
pub fn value_text(value: Option<&AnyValue>, out: &mut String) {
    let Some(v) = value.and_then(|v| v.value.as_ref()) else {
        return;
    };
    match v {
        any_value::Value::StringValue(s) => out.push_str(s),
        any_value::Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) => out.push_str(&crate::sources::otlp::float_text(*d)),
        other => out.push_str(&json_value(other).to_string()),
    }
}

fn json_value(v: &any_value::Value) -> serde_json::Value {
    use base64::Engine as _;
    match v {
        any_value::Value::StringValue(s) => s.clone().into(),
        any_value::Value::BoolValue(b) => (*b).into(),
        any_value::Value::IntValue(i) => (*i).into(),
        // A string-table index (profiles only); metrics never use it.
        any_value::Value::StringValueStrindex(i) => (*i).into(),
        any_value::Value::DoubleValue(d) => serde_json::Number::from_f64(*d)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| crate::sources::otlp::float_text(*d).into()),
        any_value::Value::BytesValue(b) => {
            base64::engine::general_purpose::STANDARD.encode(b).into()
        }
        any_value::Value::ArrayValue(a) => serde_json::Value::Array(
            a.values
                .iter()
                .map(|v| v.value.as_ref().map_or(serde_json::Value::Null, json_value))
                .collect(),
        ),
        any_value::Value::KvlistValue(kv) => serde_json::Value::Object(
            kv.values
                .iter()
                .map(|kv| {
                    let v = kv
                        .value
                        .as_ref()
                        .and_then(|v| v.value.as_ref())
                        .map_or(serde_json::Value::Null, json_value);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_specification() {
        assert_eq!(
            family_name("http.server.duration", "s", false, false),
            "http_server_duration_seconds"
        );
        assert_eq!(
            family_name("http.server.requests", "{request}", true, false),
            "http_server_requests_total"
        );
        assert_eq!(
            family_name("system.memory.usage", "By", false, true),
            "system_memory_usage_bytes"
        );
        assert_eq!(
            family_name("cpu.utilization", "1", false, true),
            "cpu_utilization_ratio"
        );
        assert_eq!(family_name("requests", "1", true, false), "requests_total");
        assert_eq!(
            family_name("speed", "m/s", false, true),
            "speed_meters_per_second"
        );
        assert_eq!(family_name("rate", "1/s", false, true), "rate_per_second");
        assert_eq!(family_name("x_seconds", "s", false, true), "x_seconds");
        assert_eq!(family_name("jobs_total", "", true, false), "jobs_total");
        assert_eq!(
            family_name("2xx..responses", "", true, false),
            "_2xx_responses_total"
        );
        assert_eq!(family_name("a-b/c", "foo", false, true), "a_b_c_foo");
    }

    #[test]
    fn label_names_are_sanitised() {
        let label = |raw: &str| {
            let mut s = String::new();
            sanitize_label_name(raw, &mut s);
            s
        };
        assert_eq!(label("http.route"), "http_route");
        assert_eq!(label("2fa"), "key_2fa");
        assert_eq!(label("a..b"), "a_b");
        assert_eq!(label(""), "_");
        assert_eq!(label("ünï"), "_n_");
    }
}
