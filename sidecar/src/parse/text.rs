//! Prometheus text format 0.0.4 and OpenMetrics 1.0 text parser.
//!
//! Hand-written rather than a general-purpose crate because the sidecar needs three things
//! together: borrowing from the request body (label values are `Cow::Borrowed` unless they
//! contain escapes, so a 1 MB push costs a few allocations per family, not per label),
//! assembling samples straight into the aggregation model (histogram buckets grouped per
//! series, `_created` dropped, counter family names normalised to `<name>_total`), and rejecting
//! the inputs that would corrupt aggregation (interleaved families, duplicate series,
//! histograms without `+Inf`) with a fixed [`ParseErrorKind`].
//!
//! Leniency follows the Go parser where that is harmless: runs of spaces or tabs between
//! tokens, blank lines, CRLF line ends, free comments, `# TYPE` names in either format's
//! vocabulary, exemplars in either mode. Strictness is kept where it protects the data.

use super::{
    ParseError, ParseErrorKind as K, Position, SeriesIndex, excerpt, is_label_name, is_metric_name,
    is_name_continue, repeated_label,
};
use crate::model::{Family, HistogramValue, Label, Labels, MetricKind, Series, Value};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::RandomState;

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
        let (raw, next) = rest.split_once('\n').unwrap_or((rest, ""));
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

/// A `# TYPE` as written, before mapping to the model's [`MetricKind`]: `info` and `stateset`
/// name their samples differently from gauges but aggregate like them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TextKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
    Info,
    StateSet,
}

impl TextKind {
    fn model(self) -> MetricKind {
        match self {
            TextKind::Counter => MetricKind::Counter,
            TextKind::Gauge | TextKind::Info | TextKind::StateSet => MetricKind::Gauge,
            TextKind::Histogram => MetricKind::Histogram,
            TextKind::Summary => MetricKind::Summary,
            TextKind::Untyped => MetricKind::Untyped,
        }
    }

    fn as_str(self) -> &'static str {
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
enum Role {
    /// A counter, gauge or untyped value.
    Value,
    Bucket,
    Count,
    Sum,
    /// `_created` samples and summary quantiles: valid, but not aggregatable.
    Dropped,
}

/// Histogram/summary samples of one series, collected until the family ends.
struct Partial {
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
    /// First line of the series, for errors found when the family is complete.
    line: usize,
}

/// The family being read.
struct Current<'a> {
    /// The name in `# TYPE`/`# HELP`, or the sample name for a family without metadata.
    name: &'a str,
    kind: TextKind,
    /// The name of value samples (`foo_total` for an OpenMetrics counter `foo`), which is
    /// also the model family name for counters and infos.
    value_name: Cow<'a, str>,
    typed: bool,
    has_samples: bool,
    help: Option<Cow<'a, str>>,
    unit: Option<Cow<'a, str>>,
    series: Vec<Series<'a>>,
    /// Parallel to `series` for histograms and summaries; empty otherwise.
    partial: Vec<Partial>,
    index: SeriesIndex,
    line: usize,
}

impl<'a> Current<'a> {
    fn new(name: &'a str, line: usize) -> Self {
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

    fn set_kind(&mut self, kind: TextKind, openmetrics: bool) {
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
    fn role_of(&self, sample: &str) -> Option<Role> {
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
    fn add(
        &mut self,
        state: &RandomState,
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
    fn into_family(self) -> Result<Family<'a>, ParseError> {
        let name = match self.kind {
            TextKind::Counter => super::counter_family_name(self.value_name),
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
    fn histogram(self, name: &str, labels: &[Label<'_>]) -> Result<HistogramValue, ParseError> {
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
fn take_le(labels: &mut Labels<'_>, name: &str, at: Position) -> Result<f64, ParseError> {
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
fn describe(name: &str, labels: &[Label<'_>]) -> String {
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

/// Turns lines into families, enforcing the family-level rules.
struct Builder<'a> {
    openmetrics: bool,
    /// Keys the series hashes; per parse so that collisions cannot be precomputed.
    state: RandomState,
    families: Vec<Family<'a>>,
    /// First line of each family in `families`.
    lines: Vec<usize>,
    /// Families already finished, by their `# TYPE` name, to detect interleaving.
    seen: HashMap<&'a str, TextKind>,
    cur: Option<Current<'a>>,
}

impl<'a> Builder<'a> {
    fn new(openmetrics: bool) -> Self {
        Builder {
            openmetrics,
            state: RandomState::new(),
            families: Vec::new(),
            lines: Vec::new(),
            seen: HashMap::new(),
            cur: None,
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
        let name = c.take_while(|b| is_name_continue(b) || b == b':');
        if !is_metric_name(name) || !matches!(c.peek(), None | Some(b' ' | b'\t' | b'{')) {
            return Err(c.err(
                K::InvalidName,
                format!("invalid metric name at {}", excerpt(t)),
            ));
        }
        c.skip_ws();
        let mut labels = Labels::new();
        if c.eat(b'{') {
            c.label_set(&mut labels)?;
            c.skip_ws();
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

/// A position in one line. Every slice is cut at ASCII delimiters, so `str::get` never
/// fails; it is used anyway so that no input can panic the parser.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str, line: usize) -> Self {
        Cursor { s, pos: 0, line }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    #[inline]
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    #[inline]
    fn bump(&mut self) {
        self.pos += 1;
    }

    #[inline]
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    #[inline]
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    #[inline]
    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.s.get(start..end).unwrap_or_default()
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or_default()
    }

    #[inline]
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if !f(b) {
                break;
            }
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    /// Up to the next space or tab.
    #[inline]
    fn token(&mut self) -> &'a str {
        self.take_while(|b| b != b' ' && b != b'\t')
    }

    fn err(&self, kind: K, detail: String) -> ParseError {
        ParseError::new(kind, Position::Line(self.line), detail)
    }

    fn unterminated(&self, what: &str) -> ParseError {
        self.err(K::Unterminated, format!("{what} is not terminated"))
    }

    /// Reads `name="value", ...}` after the opening brace. Accepts a trailing comma and
    /// spaces around tokens; rejects a repeated label name.
    fn label_set(&mut self, labels: &mut Labels<'a>) -> Result<(), ParseError> {
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Err(self.unterminated("label set")),
                Some(b'}') => {
                    self.bump();
                    break;
                }
                Some(_) => {}
            }
            let start = self.pos;
            let name = self.take_while(is_name_continue);
            if !is_label_name(name) || !matches!(self.peek(), None | Some(b' ' | b'\t' | b'=')) {
                return Err(self.err(
                    K::InvalidName,
                    format!(
                        "invalid label name at {}",
                        excerpt(self.slice(start, self.s.len()))
                    ),
                ));
            }
            self.skip_ws();
            if !self.eat(b'=') {
                return Err(match self.at_end() {
                    true => self.unterminated("label set"),
                    false => self.err(
                        K::InvalidLabel,
                        format!("expected '=' after label name {name}"),
                    ),
                });
            }
            self.skip_ws();
            if !self.eat(b'"') {
                return Err(match self.at_end() {
                    true => self.unterminated("label set"),
                    false => self.err(
                        K::InvalidLabel,
                        format!("expected '\"' to open the value of label {name}"),
                    ),
                });
            }
            let value = self.quoted(name)?;
            labels.push(Label {
                name: Cow::Borrowed(name),
                value,
            });
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b'}') => {
                    self.bump();
                    break;
                }
                None => return Err(self.unterminated("label set")),
                Some(_) => {
                    return Err(self.err(
                        K::InvalidLabel,
                        format!("expected ',' or '}}' after the value of label {name}"),
                    ));
                }
            }
        }
        if let Some(name) = repeated_label(labels) {
            return Err(self.err(
                K::DuplicateLabel,
                format!("label {name} appears twice in one label set"),
            ));
        }
        Ok(())
    }

    /// Reads a label value after its opening quote. Borrowed unless it has escapes.
    fn quoted(&mut self, label: &str) -> Result<Cow<'a, str>, ParseError> {
        let start = self.pos;
        let tail = self.s.as_bytes().get(start..).unwrap_or_default();
        let Some(i) = tail.iter().position(|&b| b == b'"' || b == b'\\') else {
            return Err(self.unterminated(&format!("value of label {label}")));
        };
        if tail.get(i) == Some(&b'"') {
            self.pos = start + i + 1;
            return Ok(Cow::Borrowed(self.slice(start, start + i)));
        }
        let mut out = String::with_capacity(i + 16);
        out.push_str(self.slice(start, start + i));
        self.pos = start + i;
        loop {
            match self.peek() {
                None => return Err(self.unterminated(&format!("value of label {label}"))),
                Some(b'"') => {
                    self.bump();
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.bump();
                    match self.peek() {
                        Some(b'\\') => out.push('\\'),
                        Some(b'"') => out.push('"'),
                        Some(b'n') => out.push('\n'),
                        None => {
                            return Err(self.unterminated(&format!("value of label {label}")));
                        }
                        Some(_) => {
                            let c = self.rest().chars().next().unwrap_or('?');
                            return Err(self.err(
                                K::InvalidEscape,
                                format!(
                                    "invalid escape sequence \\{} in value of label {label}",
                                    c.escape_debug()
                                ),
                            ));
                        }
                    }
                    self.bump();
                }
                Some(_) => {
                    let chunk = self.take_while(|b| b != b'"' && b != b'\\');
                    out.push_str(chunk);
                }
            }
        }
    }

    /// Reads an exemplar `{labels} value [timestamp]` after its `#`, and discards it:
    /// exemplars of different workers cannot be merged into anything meaningful.
    fn exemplar(&mut self, sample: &str) -> Result<(), ParseError> {
        self.skip_ws();
        if !self.eat(b'{') {
            return Err(self.err(
                K::InvalidExemplar,
                format!("exemplar of sample {sample} does not start with '{{'"),
            ));
        }
        let mut labels = Labels::new();
        self.label_set(&mut labels)?;
        self.skip_ws();
        let value = self.token();
        if value.parse::<f64>().is_err() {
            return Err(self.err(
                K::InvalidExemplar,
                format!(
                    "invalid exemplar value {} for sample {sample}",
                    excerpt(value)
                ),
            ));
        }
        self.skip_ws();
        if !self.at_end() {
            let ts = self.token();
            if !ts.parse::<f64>().is_ok_and(f64::is_finite) {
                return Err(self.err(
                    K::InvalidExemplar,
                    format!(
                        "invalid exemplar timestamp {} for sample {sample}",
                        excerpt(ts)
                    ),
                ));
            }
            self.skip_ws();
        }
        if !self.at_end() {
            return Err(self.err(
                K::InvalidExemplar,
                format!(
                    "unexpected text {} after the exemplar of sample {sample}",
                    excerpt(self.rest())
                ),
            ));
        }
        Ok(())
    }
}
