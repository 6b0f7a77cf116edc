//! The Pushgateway API, pure part: grouping keys from paths, bodies into families.
//!
//! Semantics follow Pushgateway: `PUT` replaces the whole group, `POST` only the families in
//! the body, `DELETE` removes the group; path labels (`@base64` URL-safe, padding optional)
//! override body labels; samples must not carry timestamps.

use crate::model::Family;
use crate::sources::parse::{ParseError, protobuf, text};
use crate::store::{Source, WorkerKey};
use base64::Engine as _;
use monasca_config::is_label_name;

/// Why a push was refused (HTTP 400, or 413 for [`PushError::TooLarge`]).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid push path: {0}")]
    Path(String),
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("sample {0} carries a timestamp; pushed metrics must not have timestamps")]
    Timestamp(String),
    #[error("text body is not valid UTF-8")]
    Utf8,
    #[error("unsupported Content-Encoding {0:?}")]
    Encoding(String),
    #[error("body is not valid gzip: {0}")]
    Gzip(String),
    #[error("body larger than the limit of {0} bytes")]
    TooLarge(u64),
}

impl PushError {
    /// A fixed label for self-metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PushError::Path(_) => "invalid_path",
            PushError::Parse(e) => e.kind.as_str(),
            PushError::Utf8 => "invalid_utf8",
            PushError::Timestamp(_) => "timestamp",
            PushError::Encoding(_) => "invalid_encoding",
            PushError::Gzip(_) => "invalid_gzip",
            PushError::TooLarge(_) => "too_large",
        }
    }
}

/// A Pushgateway grouping key: `job` first, then the other labels in path order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupingKey {
    pub labels: Vec<(String, String)>,
}

impl GroupingKey {
    /// Parses the part of the path after `/metrics/`: `job/<job>{/<label>/<value>}`.
    pub fn from_path(rest: &str) -> Result<GroupingKey, PushError> {
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        if segments.len() < 2 || !segments.len().is_multiple_of(2) {
            return Err(PushError::Path(
                "expected /metrics/job/<job>{/<label>/<value>}".into(),
            ));
        }
        let mut labels: Vec<(String, String)> = Vec::with_capacity(segments.len() / 2);
        for pair in segments.chunks_exact(2) {
            let (name, value) = decode_pair(pair[0], pair[1])?;
            if labels.iter().any(|(n, _)| *n == name) {
                return Err(PushError::Path(format!("label {name} appears twice")));
            }
            labels.push((name, value));
        }
        match labels.first() {
            Some((name, value)) if name == "job" && !value.is_empty() => {}
            Some((name, _)) if name == "job" => {
                return Err(PushError::Path("job name must not be empty".into()));
            }
            _ => return Err(PushError::Path("the first label must be job".into())),
        }
        Ok(GroupingKey { labels })
    }

    /// The worker this group is: identity from the whole key; its worker labels shown by
    /// `all` gauges; every label added to every series.
    pub fn worker(&self, worker_labels: &[String]) -> WorkerKey {
        let mut sorted = self.labels.clone();
        sorted.sort();
        let mut id = String::from("push:");
        for (i, (n, v)) in sorted.iter().enumerate() {
            if i > 0 {
                id.push(',');
            }
            id.push_str(n);
            id.push('=');
            id.push_str(&v.replace('\\', "\\\\").replace(',', "\\,"));
        }
        let mut labels: Vec<(String, String)> = sorted
            .iter()
            .filter(|(n, _)| worker_labels.contains(n))
            .cloned()
            .collect();
        if labels.is_empty() {
            labels = sorted.iter().filter(|(n, _)| n == "job").cloned().collect();
        }
        WorkerKey {
            id,
            source: Source::Push,
            labels,
            common_labels: self.labels.clone(),
            // A grouping key is one process pushing its whole registry.
            one_process: true,
        }
    }
}

fn decode_pair(raw_name: &str, raw_value: &str) -> Result<(String, String), PushError> {
    let (name, base64) = match raw_name.strip_suffix("@base64") {
        Some(n) => (n, true),
        None => (raw_name, false),
    };
    let name = percent_decode(name)?;
    if !is_label_name(&name) || name.starts_with("__") {
        return Err(PushError::Path(format!("invalid label name {name:?}")));
    }
    let value = if base64 {
        let raw = percent_decode(raw_value)?;
        let trimmed = raw.trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(trimmed)
            .map_err(|e| PushError::Path(format!("label {name}: invalid base64: {e}")))?;
        String::from_utf8(bytes)
            .map_err(|_| PushError::Path(format!("label {name}: base64 value is not UTF-8")))?
    } else {
        percent_decode(raw_value)?
    };
    Ok((name, value))
}

fn percent_decode(s: &str) -> Result<String, PushError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| PushError::Path(format!("{s:?} is not UTF-8 after percent-decoding")))
}

/// The body formats a push may use, from its Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Text,
    OpenMetrics,
    Protobuf,
}

impl BodyFormat {
    /// Pushgateway's rule: delimited protobuf when the Content-Type says so, text otherwise.
    pub fn from_content_type(ct: Option<&str>) -> BodyFormat {
        let ct = ct.unwrap_or("").to_ascii_lowercase();
        if ct.starts_with("application/vnd.google.protobuf") {
            BodyFormat::Protobuf
        } else if ct.starts_with("application/openmetrics-text") {
            BodyFormat::OpenMetrics
        } else {
            BodyFormat::Text
        }
    }
}

/// Parses a (decompressed) body and rejects timestamps.
pub fn parse_body(body: &[u8], format: BodyFormat) -> Result<Vec<Family<'_>>, PushError> {
    let families: Vec<Family<'_>> = match format {
        BodyFormat::Protobuf => protobuf::decode(body)?,
        BodyFormat::Text | BodyFormat::OpenMetrics => {
            let text = std::str::from_utf8(body).map_err(|_| PushError::Utf8)?;
            text::parse(text, format == BodyFormat::OpenMetrics)?
        }
    };
    for f in &families {
        if f.series.iter().any(|s| s.timestamp.is_some()) {
            return Err(PushError::Timestamp(f.name.to_string()));
        }
    }
    Ok(families)
}

/// Decompresses a gzip body, refusing to expand beyond `limit` bytes. Every member of a
/// multi-member body is read (concatenated gzip streams are valid gzip; reading only the first
/// would silently cut the body short).
pub fn gunzip(body: &[u8], limit: u64) -> Result<Vec<u8>, PushError> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit as usize));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(limit + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| PushError::Gzip(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(PushError::TooLarge(limit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_key_from_plain_and_base64_paths() {
        let k = GroupingKey::from_path("job/api/instance/w1").unwrap();
        assert_eq!(
            k.labels,
            [
                ("job".into(), "api".into()),
                ("instance".into(), "w1".into())
            ]
        );
        // URL-safe base64 with and without padding; "/" inside a value.
        let k = GroupingKey::from_path("job@base64/YS9i/path@base64/L3Zhci90bXA=").unwrap();
        assert_eq!(
            k.labels,
            [
                ("job".into(), "a/b".into()),
                ("path".into(), "/var/tmp".into())
            ]
        );
        let k = GroupingKey::from_path("job/x/instance@base64/=").unwrap();
        assert_eq!(k.labels[1], ("instance".into(), String::new()));
        let k = GroupingKey::from_path("job/my%20job/").unwrap();
        assert_eq!(k.labels[0].1, "my job");
    }

    #[test]
    fn bad_paths_are_clear_errors() {
        for (path, needle) in [
            ("", "expected"),
            ("job", "expected"),
            ("instance/w1", "first label must be job"),
            ("job/a/job/b", "twice"),
            ("job/a/bad-name/x", "invalid label name"),
            ("job/a/__name__/x", "invalid label name"),
            ("job@base64/!!!", "base64"),
            ("job/%ff", "UTF-8"),
        ] {
            let err = GroupingKey::from_path(path).unwrap_err().to_string();
            assert!(err.contains(needle), "{path}: {err}");
        }
    }

    #[test]
    fn worker_identity_and_labels() {
        let k = GroupingKey::from_path("job/api/instance/w1").unwrap();
        let w = k.worker(&["instance".into(), "pid".into()]);
        assert_eq!(w.id, "push:instance=w1,job=api");
        assert_eq!(w.labels, [("instance".into(), "w1".into())]);
        assert_eq!(w.common_labels.len(), 2);
        let w = GroupingKey::from_path("job/api")
            .unwrap()
            .worker(&["instance".into()]);
        assert_eq!(w.labels, [("job".into(), "api".into())]);
    }

    #[test]
    fn timestamps_are_refused() {
        let err = parse_body(b"a 1 1000\n", BodyFormat::Text).unwrap_err();
        assert_eq!(err.reason(), "timestamp");
    }

    #[test]
    fn gzip_bomb_is_stopped_at_the_limit() {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b'#'; 1 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(matches!(gunzip(&gz, 1000), Err(PushError::TooLarge(1000))));
        assert_eq!(gunzip(&gz, 1 << 20).unwrap().len(), 1 << 20);
        assert!(matches!(gunzip(b"not gzip", 100), Err(PushError::Gzip(_))));
    }
}
