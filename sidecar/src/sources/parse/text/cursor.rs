//! The lexer of one line: names, label sets, quoted values with their escapes, exemplars.

use super::super::{
    ParseError, ParseErrorKind as K, Position, excerpt, is_label_name, is_name_continue,
    repeated_label,
};
use crate::model::{Label, Labels};
use std::borrow::Cow;

/// A byte that may follow a label name (spaces, then its `=`). The scan and the repeat of the
/// previous line's name ([`Cursor::known_name`]) both end a name here, so they take the same.
#[inline]
pub(super) fn ends_label_name(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'=')
}

/// A byte that may follow a sample's metric name (spaces, then its labels or value); as
/// [`ends_label_name`], for both ways of reading the name.
#[inline]
pub(super) fn ends_metric_name(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'{')
}

/// A position in one line. Every slice is cut at ASCII delimiters, so `str::get` never
/// fails; it is used anyway so that no input can panic the parser.
pub(super) struct Cursor<'a> {
    pub(super) s: &'a str,
    pub(super) pos: usize,
    pub(super) line: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(s: &'a str, line: usize) -> Self {
        Cursor { s, pos: 0, line }
    }

    #[inline]
    pub(super) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    #[inline]
    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    #[inline]
    pub(super) fn bump(&mut self) {
        self.pos += 1;
    }

    #[inline]
    pub(super) fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    #[inline]
    pub(super) fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    #[inline]
    pub(super) fn slice(&self, start: usize, end: usize) -> &'a str {
        self.s.get(start..end).unwrap_or_default()
    }

    pub(super) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or_default()
    }

    #[inline]
    pub(super) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if !f(b) {
                break;
            }
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    /// Takes `known` (a name already validated on an earlier line) if the rest starts with it
    /// followed by a byte `ends` accepts: the name a scan would take, without the scan.
    #[inline]
    pub(super) fn known_name(&mut self, known: &'a str, ends: impl Fn(u8) -> bool) -> bool {
        let rest = self.s.as_bytes().get(self.pos..).unwrap_or_default();
        let hit = !known.is_empty()
            && rest.starts_with(known.as_bytes())
            && rest.get(known.len()).is_some_and(|&b| ends(b));
        if hit {
            self.pos += known.len();
        }
        hit
    }

    /// Up to the next space or tab.
    #[inline]
    pub(super) fn token(&mut self) -> &'a str {
        self.take_while(|b| b != b' ' && b != b'\t')
    }

    pub(super) fn err(&self, kind: K, detail: String) -> ParseError {
        ParseError::new(kind, Position::Line(self.line), detail)
    }

    pub(super) fn unterminated(&self, what: &str) -> ParseError {
        self.err(K::Unterminated, format!("{what} is not terminated"))
    }

    /// Reads `name="value", ...}` after the opening brace. Accepts a trailing comma and
    /// spaces around tokens; rejects a repeated label name.
    ///
    /// `known` are the label names of the previous sample line, in order: a name found at the
    /// same place is taken without scanning it again, and a set of exactly those names needs
    /// no check for a repeated name (the previous line passed it). Lines of one family nearly
    /// always repeat their label names. Returns whether the names were exactly `known`.
    pub(super) fn label_set(
        &mut self,
        labels: &mut Labels<'a>,
        known: &[&'a str],
    ) -> Result<bool, ParseError> {
        let mut all_known = true;
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
            let known_here = known.get(labels.len()).copied().unwrap_or_default();
            let name = if self.known_name(known_here, ends_label_name) {
                known_here
            } else {
                all_known = false;
                let name = self.take_while(is_name_continue);
                if !is_label_name(name) || !self.peek().is_none_or(ends_label_name) {
                    return Err(self.err(
                        K::InvalidName,
                        format!(
                            "invalid label name at {}",
                            excerpt(self.slice(start, self.s.len()))
                        ),
                    ));
                }
                name
            };
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
        if all_known && labels.len() == known.len() {
            return Ok(true);
        }
        if let Some(name) = repeated_label(labels) {
            return Err(self.err(
                K::DuplicateLabel,
                format!("label {name} appears twice in one label set"),
            ));
        }
        Ok(false)
    }

    /// Reads a label value after its opening quote. Borrowed unless it has escapes.
    pub(super) fn quoted(&mut self, label: &str) -> Result<Cow<'a, str>, ParseError> {
        let start = self.pos;
        let tail = self.s.as_bytes().get(start..).unwrap_or_default();
        let Some(i) = memchr::memchr2(b'"', b'\\', tail) else {
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
                    let rest = self.s.as_bytes().get(self.pos..).unwrap_or_default();
                    let len = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                    out.push_str(self.slice(self.pos, self.pos + len));
                    self.pos += len;
                }
            }
        }
    }

    /// Reads an exemplar `{labels} value [timestamp]` after its `#`, and discards it:
    /// exemplars of different workers cannot be merged into anything meaningful.
    pub(super) fn exemplar(&mut self, sample: &str) -> Result<(), ParseError> {
        self.skip_ws();
        if !self.eat(b'{') {
            return Err(self.err(
                K::InvalidExemplar,
                format!("exemplar of sample {sample} does not start with '{{'"),
            ));
        }
        let mut labels = Labels::new();
        self.label_set(&mut labels, &[])?;
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
