//! The StatsD line parser: pure, no I/O, and no heap allocation on the common path (tags and
//! samples live in inline `SmallVec`s and borrow from the datagram; only escaped monasca
//! dimension strings and SignalFX names with text after the brackets are copied).
//!
//! Grammar (one line; a datagram holds several, separated by `\n`):
//!
//! ```text
//! line    = name-part ":" sample *(":" sample)
//! sample  = value "|" type *("|" section)
//! type    = "c" | "g" | "ms" | "h" | "d" | "s"
//! section = "@" rate | "#" tags | "c:" container-id | "T" unix-timestamp
//! ```
//!
//! Tag dialects, at most one per line ([`LineError::MixedTagStyles`] otherwise):
//! - DogStatsD: `name:1|c|#k:v,k2:v2`
//! - monasca-statsd: `name:1|c|#{'k': 'v', 'n': 204}`, a Python `dict` repr, parsed as data
//!   and never evaluated (see [`parse_python_dict`])
//! - InfluxDB: `name,k=v,k2=v2:1|c`
//! - Librato: `name#k=v,k2=v2:1|c`
//! - SignalFX: `name[k=v,k2=v2]:1|c` (the bracket group may sit anywhere in the name)
//!
//! Several samples per line (`a:1|c:2|c`, the old etsy multi-value form, also accepted by
//! statsd_exporter) are supported; every sample of a line shares the line's tags. DogStatsD
//! container ids (`|c:...`) and timestamps (`|T...`) are accepted and ignored: StatsD values
//! are accumulated when they arrive.

use smallvec::SmallVec;
use std::borrow::Cow;

/// Why a line was rejected. The set is fixed: [`LineError::reason`] labels a self-metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum LineError {
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    #[error("line has no ':' between name and value, no '|' before the type, or stray text")]
    InvalidLine,
    #[error("metric name is empty")]
    InvalidName,
    #[error("value is not a number")]
    InvalidValue,
    #[error("unknown metric type (expected c, g, ms, h, d or s)")]
    InvalidType,
    #[error("sample rate is not a number in (0, 1]")]
    InvalidSampleRate,
    #[error("tag section is malformed")]
    InvalidTags,
    #[error("line mixes tag dialects")]
    MixedTagStyles,
    #[error("sets (|s) are not supported")]
    UnsupportedSet,
    #[error("DogStatsD events and service checks are not supported")]
    UnsupportedEvent,
    #[error("line longer than the limit")]
    LineTooLong,
    #[error("datagram truncated: larger than the receive buffer")]
    Truncated,
    /// NaN, an infinity, or a finite value that the sample rate scales past `f64::MAX`
    /// (`x:1e308|c|@0.5`): accumulated, it would poison a counter or histogram for good.
    #[error("value or rate-scaled value is not a finite number")]
    NonFinite,
}

impl LineError {
    /// Every reason, for exposing zero-valued self-metrics.
    pub const ALL: [LineError; 13] = [
        LineError::InvalidUtf8,
        LineError::InvalidLine,
        LineError::InvalidName,
        LineError::InvalidValue,
        LineError::InvalidType,
        LineError::InvalidSampleRate,
        LineError::InvalidTags,
        LineError::MixedTagStyles,
        LineError::UnsupportedSet,
        LineError::UnsupportedEvent,
        LineError::LineTooLong,
        LineError::Truncated,
        LineError::NonFinite,
    ];

    /// A fixed label value for `monasca_sidecar_statsd_errors_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            LineError::InvalidUtf8 => "invalid_utf8",
            LineError::InvalidLine => "invalid_line",
            LineError::InvalidName => "invalid_name",
            LineError::InvalidValue => "invalid_value",
            LineError::InvalidType => "invalid_type",
            LineError::InvalidSampleRate => "invalid_sample_rate",
            LineError::InvalidTags => "invalid_tags",
            LineError::MixedTagStyles => "mixed_tag_styles",
            LineError::UnsupportedSet => "unsupported_set",
            LineError::UnsupportedEvent => "unsupported_event",
            LineError::LineTooLong => "line_too_long",
            LineError::Truncated => "truncated",
            LineError::NonFinite => "non_finite",
        }
    }

    /// Position in [`LineError::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The StatsD type of one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleType {
    /// `c`: a delta to add.
    Counter,
    /// `g`: an absolute value, or a relative adjustment when signed (etsy dialect only; the
    /// monasca-statsd dialect always sends absolute values). Never scaled by a sample rate.
    Gauge,
    /// `ms`: a duration in milliseconds (observed in seconds).
    Timer,
    /// `h`: a histogram observation.
    Histogram,
    /// `d`: a DogStatsD distribution (observed like `h`).
    Distribution,
}

/// One sample of a line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The value as sent (milliseconds for timers; see [`Sample::observation`]).
    pub value: f64,
    /// The value had an explicit `+` or `-` sign (relative for gauges).
    pub signed: bool,
    pub kind: SampleType,
    /// Sample rate in (0, 1] as sent; 1 when absent. See [`Sample::effective_rate`].
    pub rate: f64,
}

impl Sample {
    /// The value in base units: timers (`ms`) in seconds, everything else as sent.
    pub fn observation(&self) -> f64 {
        match self.kind {
            SampleType::Timer => self.value / 1000.0,
            _ => self.value,
        }
    }

    /// The rate that scales this sample: the sent rate, except 1 for gauges, which
    /// statsd_exporter and etsy statsd never scale (a gauge is a value, not a count of
    /// events of which only some were sent).
    pub fn effective_rate(&self) -> f64 {
        match self.kind {
            SampleType::Gauge => 1.0,
            _ => self.rate,
        }
    }

    /// The observation divided by the effective rate: a counter's delta, a histogram
    /// observation's weight times its value.
    pub fn scaled(&self) -> f64 {
        self.observation() / self.effective_rate()
    }
}

/// One tag: a name and a value as sent (not yet sanitized).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag<'a> {
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

/// Which tag dialect a line used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagStyle {
    None,
    DogStatsd,
    Monasca,
    Influx,
    Librato,
    SignalFx,
}

/// A parsed line, borrowing from the datagram.
#[derive(Clone, Debug, PartialEq)]
pub struct Line<'a> {
    /// The StatsD name with any tag syntax removed (not yet mapped or sanitized).
    pub name: Cow<'a, str>,
    pub style: TagStyle,
    pub tags: SmallVec<[Tag<'a>; 8]>,
    /// Tags without a value or with an empty name: skipped, counted as tag errors.
    pub bad_tags: u32,
    pub samples: SmallVec<[Sample; 2]>,
}

/// Splits a datagram (or a TCP buffer) into lines: `\n` separated, `\r\n` tolerated, blank
/// lines and a trailing newline skipped.
pub fn lines(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    datagram.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.trim_ascii();
        (!line.is_empty()).then_some(line)
    })
}

/// Parses one line (already split from its datagram and trimmed).
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, LineError> {
    let line = std::str::from_utf8(line).map_err(|_| LineError::InvalidUtf8)?;
    parse_str(line.trim())
}

/// Parses one line of text.
pub fn parse_str(line: &str) -> Result<Line<'_>, LineError> {
    if line.starts_with("_e{") || line.starts_with("_sc|") {
        return Err(LineError::UnsupportedEvent);
    }
    let colon = name_end(line.as_bytes()).ok_or(LineError::InvalidLine)?;
    let (name_part, mut rest) = (&line[..colon], &line[colon + 1..]);
    let mut parsed = Line {
        name: Cow::Borrowed(""),
        style: TagStyle::None,
        tags: SmallVec::new(),
        bad_tags: 0,
        samples: SmallVec::new(),
    };
    parse_name(name_part, &mut parsed)?;
    loop {
        let bar = rest.find('|').ok_or(LineError::InvalidLine)?;
        let value_text = &rest[..bar];
        rest = &rest[bar + 1..];
        let type_end = rest.find(['|', ':']).unwrap_or(rest.len());
        let kind = match &rest[..type_end] {
            "c" => SampleType::Counter,
            "g" => SampleType::Gauge,
            "ms" => SampleType::Timer,
            "h" => SampleType::Histogram,
            "d" => SampleType::Distribution,
            "s" => return Err(LineError::UnsupportedSet),
            _ => return Err(LineError::InvalidType),
        };
        rest = &rest[type_end..];
        let value = parse_value(value_text)?;
        let signed = is_signed(value_text);
        let mut rate = 1.0;
        while let Some(section) = rest.strip_prefix('|') {
            if let Some(r) = section.strip_prefix('@') {
                let end = r.find(['|', ':']).unwrap_or(r.len());
                rate = r[..end]
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0 && *r <= 1.0)
                    .ok_or(LineError::InvalidSampleRate)?;
                rest = &r[end..];
            } else if let Some(t) = section.strip_prefix('#') {
                if parsed.style != TagStyle::None {
                    return Err(
                        if parsed.style == TagStyle::DogStatsd || parsed.style == TagStyle::Monasca
                        {
                            LineError::InvalidTags
                        } else {
                            LineError::MixedTagStyles
                        },
                    );
                }
                rest = if t.starts_with('{') {
                    parsed.style = TagStyle::Monasca;
                    parse_python_dict(t, &mut parsed.tags)?
                } else {
                    parsed.style = TagStyle::DogStatsd;
                    let end = t.find('|').unwrap_or(t.len());
                    parsed.bad_tags += split_pairs(&t[..end], ':', &mut parsed.tags);
                    &t[end..]
                };
            } else if section.starts_with("c:") || section.starts_with('T') {
                // DogStatsD container id / timestamp: accepted, ignored.
                rest = &section[section.find('|').unwrap_or(section.len())..];
            } else {
                return Err(LineError::InvalidLine);
            }
        }
        parsed.samples.push(finite_sample(Sample {
            value,
            signed,
            kind,
            rate,
        })?);
        match rest.strip_prefix(':') {
            Some(next) => rest = next,
            None if rest.is_empty() => return Ok(parsed),
            None => return Err(LineError::InvalidLine),
        }
    }
}

/// A sample whose scaled value and weight are finite (an overflow is refused, not stored).
fn finite_sample(sample: Sample) -> Result<Sample, LineError> {
    if !sample.scaled().is_finite() || !(1.0 / sample.effective_rate()).is_finite() {
        return Err(LineError::NonFinite);
    }
    Ok(sample)
}

/// A value with an explicit sign (relative for etsy gauges).
fn is_signed(value_text: &str) -> bool {
    value_text.starts_with(['+', '-'])
}

/// Where the first value of a raw line (split and trimmed as [`lines`] does) sits, as byte
/// offsets `(start, end)`: after the `:` that ends the name part, up to the next `|`, found
/// as [`parse_str`] finds them. The rest of the line is its shape: two lines with the same
/// bytes before and after their value parse alike except for the value (the accumulator
/// caches what a shape resolves to).
pub fn value_span(line: &[u8]) -> Option<(usize, usize)> {
    let start = name_end(line)? + 1;
    let len = line[start..].iter().position(|&b| b == b'|')?;
    Some((start, start + len))
}

/// The sample of a line whose shape parsed before as one sample of type `kind` at `rate`,
/// with `text` (the bytes at [`value_span`]) as its value: the checks [`parse_line`] makes
/// on such a line, in its order (UTF-8, the value, then finiteness).
pub fn sample_of_shape(text: &[u8], kind: SampleType, rate: f64) -> Result<Sample, LineError> {
    let text = std::str::from_utf8(text).map_err(|_| LineError::InvalidUtf8)?;
    finite_sample(Sample {
        value: parse_value(text)?,
        signed: is_signed(text),
        kind,
        rate,
    })
}

/// The index of the `:` that ends the name part: the first one outside a SignalFX bracket
/// group.
fn name_end(line: &[u8]) -> Option<usize> {
    let mut depth = 0u32;
    for (i, &b) in line.iter().enumerate() {
        match b {
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            b':' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits the name part into the name and InfluxDB / Librato / SignalFX tags.
fn parse_name<'a>(part: &'a str, line: &mut Line<'a>) -> Result<(), LineError> {
    if let Some(open) = part.find('[') {
        let close = part[open..]
            .find(']')
            .map(|c| open + c)
            .ok_or(LineError::InvalidTags)?;
        let (before, inner, after) = (&part[..open], &part[open + 1..close], &part[close + 1..]);
        if after.contains(['[', ']']) || before.contains(']') {
            return Err(LineError::InvalidTags);
        }
        if before.contains([',', '#']) || after.contains([',', '#']) {
            return Err(LineError::MixedTagStyles);
        }
        line.style = TagStyle::SignalFx;
        line.bad_tags += split_pairs(inner, '=', &mut line.tags);
        line.name = if after.is_empty() {
            Cow::Borrowed(before)
        } else if before.is_empty() {
            Cow::Borrowed(after)
        } else {
            Cow::Owned(format!("{before}{after}"))
        };
    } else if part.contains(']') {
        return Err(LineError::InvalidTags);
    } else if let Some(hash) = part.find('#') {
        let name = &part[..hash];
        if name.contains(',') {
            return Err(LineError::MixedTagStyles);
        }
        line.style = TagStyle::Librato;
        line.bad_tags += split_pairs(&part[hash + 1..], '=', &mut line.tags);
        line.name = Cow::Borrowed(name);
    } else if let Some(comma) = part.find(',') {
        line.style = TagStyle::Influx;
        line.bad_tags += split_pairs(&part[comma + 1..], '=', &mut line.tags);
        line.name = Cow::Borrowed(&part[..comma]);
    } else {
        line.name = Cow::Borrowed(part);
    }
    if line.name.trim().is_empty() {
        return Err(LineError::InvalidName);
    }
    Ok(())
}

/// Splits `k<sep>v,k2<sep>v2` into tags; returns how many pieces were skipped (no separator
/// or empty name).
fn split_pairs<'a>(text: &'a str, sep: char, tags: &mut SmallVec<[Tag<'a>; 8]>) -> u32 {
    let mut bad = 0;
    for piece in text.split(',') {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        match piece.split_once(sep) {
            Some((name, value)) if !name.trim().is_empty() => tags.push(Tag {
                name: Cow::Borrowed(name.trim()),
                value: Cow::Borrowed(value.trim()),
            }),
            _ => bad += 1,
        }
    }
    bad
}

/// Parses a sample value: a finite float, optionally signed.
fn parse_value(text: &str) -> Result<f64, LineError> {
    let v: f64 = text.parse().map_err(|_| LineError::InvalidValue)?;
    if v.is_finite() {
        Ok(v)
    } else {
        // `nan`, `inf`, `-Infinity` and literals beyond f64 (`1e309`) are numbers, just not
        // ones a counter or histogram may hold.
        Err(LineError::NonFinite)
    }
}

/// Parses the monasca-statsd dimension section: the `str()` of a Python `dict`, e.g.
/// `{'service': 'monitoring', 'note': "it's", 'code': 204}`. Returns the text after the
/// closing brace.
///
/// This is a small recursive-descent reader for the literal subset `repr` produces for flat
/// dicts: quoted strings (`'...'` or `"..."`, with Python escapes `\\ \' \" \n \r \t \xHH
/// \uHHHH \UHHHHHHHH`, optional `u`/`b` prefix) and bare scalars (`204`, `1.5`, `True`,
/// `None`, `inf`), taken as their text. Nested containers are rejected. Nothing is ever
/// evaluated.
pub fn parse_python_dict<'a>(
    text: &'a str,
    tags: &mut SmallVec<[Tag<'a>; 8]>,
) -> Result<&'a str, LineError> {
    let mut rest = text.strip_prefix('{').ok_or(LineError::InvalidTags)?;
    rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('}') {
        return Ok(after);
    }
    loop {
        let (name, after) = py_scalar(rest, true)?;
        rest = after.trim_start();
        rest = rest.strip_prefix(':').ok_or(LineError::InvalidTags)?;
        let (value, after) = py_scalar(rest.trim_start(), false)?;
        tags.push(Tag { name, value });
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                return Ok(after);
            }
        } else if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        } else {
            return Err(LineError::InvalidTags);
        }
    }
}

/// One Python literal scalar; returns its text and the rest.
fn py_scalar(text: &str, is_key: bool) -> Result<(Cow<'_, str>, &str), LineError> {
    let unprefixed = text
        .strip_prefix(['u', 'U', 'b', 'B'])
        .filter(|t| t.starts_with(['\'', '"']))
        .unwrap_or(text);
    if let Some(quote) = unprefixed
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
    {
        return py_string(&unprefixed[1..], quote);
    }
    let end = text
        .find(|c: char| c == ',' || c == '}' || (is_key && c == ':'))
        .ok_or(LineError::InvalidTags)?;
    let token = text[..end].trim();
    // Only what `repr` gives for numbers, booleans and None: nothing that looks like code.
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'))
    {
        return Err(LineError::InvalidTags);
    }
    Ok((Cow::Borrowed(token), &text[end..]))
}

/// The body of a quoted Python string up to its closing `quote`; unescapes only when needed.
fn py_string(body: &str, quote: char) -> Result<(Cow<'_, str>, &str), LineError> {
    let bytes = body.as_bytes();
    let q = quote as u8;
    let mut i = 0;
    let mut escaped = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                escaped = true;
                i += 2;
            }
            b if b == q => {
                let raw = &body[..i];
                let value = if escaped {
                    Cow::Owned(py_unescape(raw)?)
                } else {
                    Cow::Borrowed(raw)
                };
                return Ok((value, &body[i + 1..]));
            }
            _ => i += 1,
        }
    }
    Err(LineError::InvalidTags)
}

fn py_unescape(raw: &str) -> Result<String, LineError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return Err(LineError::InvalidTags);
        };
        let hex_digits = match e {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => 0,
        };
        if hex_digits > 0 {
            let digits: String = chars.by_ref().take(hex_digits).collect();
            let code = u32::from_str_radix(&digits, 16)
                .ok()
                .filter(|_| digits.len() == hex_digits)
                .and_then(char::from_u32)
                .ok_or(LineError::InvalidTags)?;
            out.push(code);
            continue;
        }
        match e {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '0' => out.push('\0'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            '\\' | '\'' | '"' => out.push(e),
            // Python keeps unknown escapes verbatim.
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}
