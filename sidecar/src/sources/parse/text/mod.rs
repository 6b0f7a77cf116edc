//! Prometheus text format 0.0.4 and OpenMetrics 1.0 text parser.
//!
//! Hand-written rather than a general-purpose crate because the sidecar needs three things
//! together: borrowing from the request body (label values are `Cow::Borrowed` unless they
//! contain escapes, so a 1 MB push costs a few allocations per family, not per label),
//! assembling samples straight into the aggregation model (histogram buckets grouped per
//! series, `_created` dropped, counter family names normalised to `<name>_total`), and rejecting
//! the inputs that would corrupt aggregation (interleaved families, duplicate series,
//! histograms without `+Inf`) with a fixed [`ParseErrorKind`](super::ParseErrorKind).
//!
//! Leniency follows the Go parser where that is harmless: runs of spaces or tabs between
//! tokens, blank lines, CRLF line ends, free comments, `# TYPE` names in either format's
//! vocabulary, exemplars in either mode. Strictness is kept where it protects the data.

mod cursor;
mod family;

use super::{ParseError, ParseErrorKind as K, Position, excerpt, is_metric_name, is_name_continue};
use crate::hashing::HashState;
use crate::model::{Family, Labels, MetricKind};
use cursor::{Cursor, ends_metric_name};
use family::*;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Parses a text exposition body.
///
/// `openmetrics` selects OpenMetrics 1.0 (`# EOF` required as the last line, counters named
/// `foo` with samples `foo_total`, float-second timestamps) instead of text 0.0.4 (integer
/// millisecond timestamps; a final `# EOF` is tolerated). Families come back in body order;
/// a body with no samples gives an empty vector.
pub fn parse(body: &str, openmetrics: bool) -> Result<Vec<Family<'_>>, ParseError> {
    let mut builder = Builder::new(openmetrics);
    let mut rest = body;
    let mut line_no = 0usize;
    let mut saw_eof = false;
    while !rest.is_empty() {
        line_no += 1;
        let (raw, next) = match memchr::memchr(b'\n', rest.as_bytes()) {
            // A line feed is ASCII: both cuts are on character boundaries.
            Some(end) => (
                rest.get(..end).unwrap_or_default(),
                rest.get(end + 1..).unwrap_or_default(),
            ),
            None => (rest, ""),
        };
        rest = next;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim_end_matches([' ', '\t']) == "# EOF" {
            // OpenMetrics allows only the final line feed after `# EOF`; in 0.0.4 trailing
            // blank lines are harmless. Anything else suggests concatenated bodies.
            let trailing_ok = if openmetrics {
                rest.is_empty()
            } else {
                rest.trim().is_empty()
            };
            if !trailing_ok {
                return Err(ParseError::new(
                    K::ContentAfterEof,
                    Position::Line(line_no + 1),
                    "content after # EOF",
                ));
            }
            saw_eof = true;
            break;
        }
        builder.line(line, line_no)?;
    }
    if openmetrics && !saw_eof {
        return Err(ParseError::new(
            K::MissingEof,
            Position::Line(line_no.max(1)),
            "OpenMetrics body does not end with # EOF",
        ));
    }
    builder.finish()
}

/// [`parse`] for a body not yet known to be UTF-8 (the text formats are UTF-8 by definition);
/// invalid UTF-8 is reported with the line it occurs on.
pub fn parse_bytes(body: &[u8], openmetrics: bool) -> Result<Vec<Family<'_>>, ParseError> {
    match std::str::from_utf8(body) {
        Ok(s) => parse(s, openmetrics),
        Err(e) => {
            let valid = body.get(..e.valid_up_to()).unwrap_or_default();
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            Err(ParseError::new(
                K::InvalidUtf8,
                Position::Line(line),
                "body is not valid UTF-8",
            ))
        }
    }
}

/// Turns lines into families, enforcing the family-level rules.
struct Builder<'a> {
    openmetrics: bool,
    /// Keys the series hashes; per parse so that collisions cannot be precomputed.
    state: HashState,
    families: Vec<Family<'a>>,
    /// First line of each family in `families`.
    lines: Vec<usize>,
    /// Families already finished, by their `# TYPE` name, to detect interleaving.
    seen: HashMap<&'a str, TextKind>,
    cur: Option<Current<'a>>,
    /// The previous sample line's name and label names, validated: the next line most likely
    /// repeats them, and [`Cursor::known_name`] then takes them without a scan.
    last_name: &'a str,
    last_label_names: SmallVec<[&'a str; 8]>,
}

impl<'a> Builder<'a> {
    fn new(openmetrics: bool) -> Self {
        Builder {
            openmetrics,
            state: HashState::default(),
            families: Vec::new(),
            lines: Vec::new(),
            seen: HashMap::new(),
            cur: None,
            last_name: "",
            last_label_names: SmallVec::new(),
        }
    }

    fn line(&mut self, line: &'a str, no: usize) -> Result<(), ParseError> {
        let t = line.trim_start_matches([' ', '\t']);
        match t.as_bytes().first() {
            None => Ok(()),
            Some(b'#') => self.comment(t, no),
            Some(_) => self.sample(t, no),
        }
    }

    fn comment(&mut self, t: &'a str, no: usize) -> Result<(), ParseError> {
        #[derive(PartialEq)]
        enum Meta {
            Help,
            Type,
            Unit,
        }
        let mut c = Cursor::new(t, no);
        c.bump(); // '#'
        c.skip_ws();
        let meta = match c.token() {
            "HELP" => Meta::Help,
            "TYPE" => Meta::Type,
            "UNIT" => Meta::Unit,
            // A free comment.
            _ => return Ok(()),
        };
        let keyword = match meta {
            Meta::Help => "HELP",
            Meta::Type => "TYPE",
            Meta::Unit => "UNIT",
        };
        c.skip_ws();
        let name = c.token();
        if name.is_empty() {
            return Err(c.err(
                K::InvalidMetadata,
                format!("# {keyword} line without a metric name"),
            ));
        }
        if !is_metric_name(name) {
            return Err(c.err(
                K::InvalidName,
                format!("invalid metric name {} in # {keyword} line", excerpt(name)),
            ));
        }
        // Exactly one separator: HELP text keeps any further leading spaces, as written.
        if !c.eat(b' ') {
            c.eat(b'\t');
        }
        let mut kind = None;
        let mut text = Cow::Borrowed("");
        match meta {
            Meta::Help => text = unescape_help(c.rest(), self.openmetrics),
            Meta::Unit => text = Cow::Borrowed(c.rest().trim_matches([' ', '\t'])),
            Meta::Type => {
                c.skip_ws();
                let ty = c.token();
                c.skip_ws();
                if ty.is_empty() {
                    return Err(c.err(
                        K::InvalidMetadata,
                        format!("# TYPE line for {name} without a type"),
                    ));
                }
                if !c.at_end() {
                    return Err(c.err(
                        K::InvalidMetadata,
                        format!(
                            "unexpected text {} after # TYPE {name} {ty}",
                            excerpt(c.rest())
                        ),
                    ));
                }
                kind = Some(parse_type(ty, name, no)?);
            }
        }

        if self.cur.as_ref().map(|cur| cur.name) != Some(name) {
            self.start_family(name, no)?;
        }
        let openmetrics = self.openmetrics;
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };
        let at = Position::Line(no);
        match meta {
            Meta::Help | Meta::Unit => {
                let slot = if meta == Meta::Help {
                    &mut cur.help
                } else {
                    &mut cur.unit
                };
                if slot.is_some() {
                    return Err(ParseError::new(
                        K::DuplicateMetadata,
                        at,
                        format!("second # {keyword} line for {name}"),
                    ));
                }
                *slot = Some(text);
            }
            Meta::Type => {
                if cur.typed {
                    return Err(ParseError::new(
                        K::TypeConflict,
                        at,
                        format!("second # TYPE line for {name}"),
                    ));
                }
                if cur.has_samples {
                    return Err(ParseError::new(
                        K::TypeConflict,
                        at,
                        format!("# TYPE line for {name} after its samples"),
                    ));
                }
                if let Some(kind) = kind {
                    cur.set_kind(kind, openmetrics);
                    cur.typed = true;
                }
            }
        }
        Ok(())
    }

    fn sample(&mut self, t: &'a str, no: usize) -> Result<(), ParseError> {
        let mut c = Cursor::new(t, no);
        let name = if c.known_name(self.last_name, ends_metric_name) {
            self.last_name
        } else {
            let name = c.take_while(|b| is_name_continue(b) || b == b':');
            if !is_metric_name(name) || !c.peek().is_none_or(ends_metric_name) {
                return Err(c.err(
                    K::InvalidName,
                    format!("invalid metric name at {}", excerpt(t)),
                ));
            }
            self.last_name = name;
            name
        };
        c.skip_ws();
        let mut labels = Labels::new();
        let mut same_names = self.last_label_names.is_empty();
        if c.eat(b'{') {
            same_names = c.label_set(&mut labels, &self.last_label_names)?;
            c.skip_ws();
        }
        if !same_names {
            self.last_label_names.clear();
            self.last_label_names
                .extend(labels.iter().map_while(|l| match l.name {
                    Cow::Borrowed(name) => Some(name),
                    Cow::Owned(_) => None,
                }));
        }
        let tok = c.token();
        if tok.is_empty() {
            return Err(c.err(K::InvalidSample, format!("sample {name} has no value")));
        }
        let Ok(value) = tok.parse::<f64>() else {
            return Err(c.err(
                K::InvalidValue,
                format!("invalid value {} for sample {name}", excerpt(tok)),
            ));
        };
        c.skip_ws();
        let mut timestamp = None;
        if !c.at_end() && c.peek() != Some(b'#') {
            let tok = c.token();
            timestamp = parse_timestamp(tok, self.openmetrics);
            if timestamp.is_none() {
                return Err(c.err(
                    K::InvalidTimestamp,
                    format!("invalid timestamp {} for sample {name}", excerpt(tok)),
                ));
            }
            c.skip_ws();
        }
        if c.eat(b'#') {
            c.exemplar(name)?;
        } else if !c.at_end() {
            return Err(c.err(
                K::InvalidSample,
                format!(
                    "unexpected text {} after the value of sample {name}",
                    excerpt(c.rest())
                ),
            ));
        }
        self.add_sample(name, labels, value, timestamp, no)
    }

    fn add_sample(
        &mut self,
        name: &'a str,
        labels: Labels<'a>,
        value: f64,
        timestamp: Option<f64>,
        no: usize,
    ) -> Result<(), ParseError> {
        let role = match self.cur.as_ref().and_then(|cur| cur.role_of(name)) {
            Some(role) => role,
            None => {
                self.start_from_sample(name, no)?;
                Role::Value
            }
        };
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };
        cur.add(&self.state, role, name, labels, value, timestamp, no)
    }

    /// A `# HELP`/`# TYPE`/`# UNIT` for a name other than the current family's.
    fn start_family(&mut self, name: &'a str, no: usize) -> Result<(), ParseError> {
        self.finish_current()?;
        if self.seen.contains_key(name) {
            return Err(ParseError::new(
                K::InterleavedFamily,
                Position::Line(no),
                format!("family {name} appears again after other families"),
            ));
        }
        self.cur = Some(Current::new(name, no));
        Ok(())
    }

    /// A sample that does not belong to the current family starts an untyped one.
    fn start_from_sample(&mut self, name: &'a str, no: usize) -> Result<(), ParseError> {
        if let Some(cur) = &self.cur
            && cur.name == name
        {
            return Err(ParseError::new(
                K::TypeConflict,
                Position::Line(no),
                format!(
                    "sample {name} does not fit {} family {name}",
                    cur.kind.as_str()
                ),
            ));
        }
        self.finish_current()?;
        if let Some(family) = self.claimed_by(name) {
            return Err(ParseError::new(
                K::InterleavedFamily,
                Position::Line(no),
                format!("sample {name} of family {family} appears after other families"),
            ));
        }
        self.cur = Some(Current::new(name, no));
        Ok(())
    }

    /// The finished family a sample name belongs to, if any: a family must not continue
    /// after another one started.
    fn claimed_by(&self, sample: &'a str) -> Option<&'a str> {
        const CLAIMS: &[(&str, &[TextKind])] = &[
            ("_bucket", &[TextKind::Histogram]),
            ("_count", &[TextKind::Histogram, TextKind::Summary]),
            ("_sum", &[TextKind::Histogram, TextKind::Summary]),
            (
                "_created",
                &[TextKind::Counter, TextKind::Histogram, TextKind::Summary],
            ),
            ("_total", &[TextKind::Counter]),
            ("_info", &[TextKind::Info]),
        ];
        if self.seen.contains_key(sample) {
            return Some(sample);
        }
        CLAIMS.iter().find_map(|(suffix, kinds)| {
            // A 0.0.4 counter `foo` owns the sample `foo`, not `foo_total`.
            if *suffix == "_total" && !self.openmetrics {
                return None;
            }
            let base = sample.strip_suffix(suffix)?;
            let (name, kind) = self.seen.get_key_value(base)?;
            kinds.contains(kind).then_some(*name)
        })
    }

    fn finish_current(&mut self) -> Result<(), ParseError> {
        let Some(cur) = self.cur.take() else {
            return Ok(());
        };
        self.seen.insert(cur.name, cur.kind);
        let line = cur.line;
        let family = cur.into_family()?;
        if is_created_gauge(&family, self.families.last()) {
            return Ok(());
        }
        self.families.push(family);
        self.lines.push(line);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Family<'a>>, ParseError> {
        self.finish_current()?;
        if self.families.len() > 1 {
            // Different `# TYPE` names can still produce one model name (an OpenMetrics
            // counter `foo` and a gauge `foo_total`): the store would merge them.
            let mut names = HashSet::with_capacity(self.families.len());
            for (family, line) in self.families.iter().zip(&self.lines) {
                if !names.insert(&*family.name) {
                    return Err(ParseError::new(
                        K::TypeConflict,
                        Position::Line(*line),
                        format!("two families are named {}", family.name),
                    ));
                }
            }
        }
        Ok(self.families)
    }
}

/// True for the gauge family `foo_created` that Python's prometheus_client writes in text
/// 0.0.4 right after counter `foo_total` (or histogram/summary `foo`), with the same HELP.
/// It holds creation timestamps, which summed across workers would be nonsense; OpenMetrics
/// carries the same data as `_created` samples, which are dropped too.
fn is_created_gauge(family: &Family<'_>, prev: Option<&Family<'_>>) -> bool {
    let Some(prev) = prev else {
        return false;
    };
    let Some(base) = family.name.strip_suffix("_created") else {
        return false;
    };
    let prev_base = match prev.kind {
        MetricKind::Counter => prev.name.strip_suffix("_total").unwrap_or(&prev.name),
        MetricKind::Histogram | MetricKind::Summary => &prev.name,
        _ => return false,
    };
    family.kind == MetricKind::Gauge && base == prev_base && family.help == prev.help
}

fn parse_type(ty: &str, name: &str, no: usize) -> Result<TextKind, ParseError> {
    const TYPES: &[(&str, TextKind)] = &[
        ("counter", TextKind::Counter),
        ("gauge", TextKind::Gauge),
        ("histogram", TextKind::Histogram),
        ("summary", TextKind::Summary),
        ("untyped", TextKind::Untyped),
        ("unknown", TextKind::Untyped),
        ("info", TextKind::Info),
        ("stateset", TextKind::StateSet),
    ];
    if let Some((_, kind)) = TYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(ty)) {
        return Ok(*kind);
    }
    let at = Position::Line(no);
    if ty.eq_ignore_ascii_case("gaugehistogram") {
        return Err(ParseError::new(
            K::UnsupportedType,
            at,
            format!("unsupported metric type gaugehistogram for family {name}"),
        ));
    }
    Err(ParseError::new(
        K::InvalidType,
        at,
        format!("unknown metric type {} for family {name}", excerpt(ty)),
    ))
}

/// Timestamps: integer milliseconds in 0.0.4, float seconds in OpenMetrics; seconds out.
fn parse_timestamp(tok: &str, openmetrics: bool) -> Option<f64> {
    if openmetrics {
        tok.parse::<f64>().ok().filter(|t| t.is_finite())
    } else {
        tok.parse::<i64>().ok().map(|ms| ms as f64 / 1000.0)
    }
}

/// HELP escapes: `\\` and `\n` in 0.0.4, plus `\"` in OpenMetrics. Other backslashes are kept
/// as written: HELP is cosmetic, not worth rejecting a body for.
fn unescape_help(s: &str, openmetrics: bool) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if openmetrics => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}
