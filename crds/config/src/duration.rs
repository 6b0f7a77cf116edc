//! A duration written the Prometheus way (`90s`, `1m30s`, `500ms`, `2h`) or as whole seconds.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A non-negative duration that serializes as `"60s"`-style text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// The most nanoseconds one duration may hold: `std::time::Duration`'s range (u64 seconds).
const MAX_NANOS: u128 = u64::MAX as u128 * 1_000_000_000;

/// The CRD pattern of a duration: bounded components so that every accepted string parses
/// (see [`Duration::parse`]; a property test in the operator checks the two agree).
pub const DURATION_PATTERN: &str =
    "^([0-9]{1,12}(\\.[0-9]{1,9})?(ns|us|ms|s|m|h|d))+$|^[0-9]{1,18}$";
/// Longest duration string the CRD admits (keeps the sum of components in range).
pub const DURATION_MAX_LENGTH: u64 = 64;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: expected e.g. 500ms, 30s, 5m, 1h30m")]
pub struct DurationError(pub String);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Parses `1h30m`, `90s`, `250ms`, `1.5s`, or a bare number of seconds.
    pub fn parse(text: &str) -> Result<Duration, DurationError> {
        let err = || DurationError(text.to_string());
        let s = text.trim();
        if s.is_empty() {
            return Err(err());
        }
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(Duration::from_secs(secs));
        }
        let mut total_ns: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(err)?;
            if num_len == 0 {
                return Err(err());
            }
            let number = &rest[..num_len];
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale: u128 = match &rest[..unit_len] {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "d" => 86_400_000_000_000,
                _ => return Err(err()),
            };
            rest = &rest[unit_len..];
            let ns = component_nanos(number, scale).ok_or_else(err)?;
            total_ns = total_ns.checked_add(ns).ok_or_else(err)?;
        }
        // Up to `std::time::Duration`'s own range (u64 seconds): every string the CRD schema's
        // pattern admits parses (`300000d` once passed the schema but not this parser, which
        // made the whole MetricsSidecar unreadable).
        let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| err())?;
        let nanos = u32::try_from(total_ns % 1_000_000_000).map_err(|_| err())?;
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

/// `number` (`12`, `1.5`, `.5`, `2.`) times `scale` nanoseconds, exactly (integer arithmetic:
/// a float loses the last digits of long durations, which then do not read back the same);
/// sub-nanosecond fractions are dropped.
fn component_nanos(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let digits = |s: &str| -> Option<u128> {
        if s.is_empty() {
            Some(0)
        } else {
            s.parse().ok()
        }
    };
    let mut ns = digits(whole)?.checked_mul(scale)?;
    // Only the digits that can matter: scale is at most 8.64e13 ns, so 14 fraction digits reach
    // below a nanosecond.
    let fraction = &fraction[..fraction.len().min(14)];
    if !fraction.is_empty() {
        let denominator = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        ns = ns.checked_add(digits(fraction)?.checked_mul(scale)? / denominator)?;
    }
    if ns > MAX_NANOS {
        return None;
    }
    Some(ns)
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        // Below a millisecond of precision, write exact units: a config written back as YAML
        // (the operator, `to_yaml`) must read back as the same duration (`1500us` once became
        // `1ms`; found by the fuzz-style tests).
        let sub_ms = self.0.subsec_nanos() % 1_000_000;
        if sub_ms != 0 {
            return if sub_ms.is_multiple_of(1000) {
                write!(f, "{}us", self.0.as_micros())
            } else {
                write!(f, "{}ns", self.0.as_nanos())
            };
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        if s != 0 && s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => Duration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
            "description": "A duration such as 500ms, 30s, 5m or 1h30m."
        })
    }
}
