//! prometheus_client's multiprocess file format, read and written without I/O (so the reader
//! is fuzzable and the tests can feed it bytes).
//!
//! Layout, as `prometheus_client/mmap_dict.py` (0.17 to 0.26) writes it, in native byte order
//! (versions before 0.17 write no timestamp field: [`normalize_legacy`] rewrites such files
//! into this layout as they are read):
//!
//! ```text
//! 0      int32  used            bytes of the file in use, including this 8-byte header
//! 4      4 bytes                padding
//! 8      entry*                 up to `used`
//! entry: int32  key length n
//!        n bytes UTF-8 JSON key  json.dumps([metric, sample, {labels}, help], sort_keys=True)
//!        8 - (n + 4) % 8 spaces  pads the key so the value is 8-byte aligned (1 to 8 bytes)
//!        float64 value
//!        float64 timestamp       seconds since the epoch; only `mostrecent` gauges set it
//! ```
//!
//! The writer appends an entry first and bumps `used` afterwards, and never shrinks a file,
//! so a reader that reads `used` first and nothing past it sees only complete entries while
//! the worker keeps writing. The bytes beyond `used` are never read by the Python client
//! either; the sidecar's own `*_retired.db` files keep their bookkeeping there (see
//! [`super::retired`]).

use monasca_config::GaugeMode;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::fmt::Write as _;

/// Size of the file header (`used` plus padding); the first entry starts here.
pub const HEADER_LEN: usize = 8;

/// The pid part of the sidecar's own files (`counter_retired.db`). No process identifier
/// produces it: the client uses `os.getpid()`.
pub const RETIRED_PID: &str = "retired";

/// What a file holds, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Counter,
    Gauge(GaugeMode),
    Histogram,
    Summary,
}

/// The gauge modes prometheus_client writes (`Gauge._MULTIPROC_MODES`); the sidecar's
/// `mean`/`livemean` have no file of their own.
pub const PYTHON_GAUGE_MODES: [GaugeMode; 10] = [
    GaugeMode::All,
    GaugeMode::Liveall,
    GaugeMode::Min,
    GaugeMode::Livemin,
    GaugeMode::Max,
    GaugeMode::Livemax,
    GaugeMode::Sum,
    GaugeMode::Livesum,
    GaugeMode::Mostrecent,
    GaugeMode::Livemostrecent,
];

impl Ord for FileKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for FileKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl FileKind {
    /// Number of distinct kinds ([`FileKind::rank`] is below it).
    pub const COUNT: usize = 3 + GaugeMode::ALL.len();

    /// A dense index and total order (for deterministic file writing): counter, histogram,
    /// summary, then gauges in [`GaugeMode::ALL`] order.
    pub fn rank(self) -> usize {
        match self {
            FileKind::Counter => 0,
            FileKind::Histogram => 1,
            FileKind::Summary => 2,
            FileKind::Gauge(m) => 3 + GaugeMode::ALL.iter().position(|x| *x == m).unwrap_or(0),
        }
    }

    /// The file name before `_<pid>.db`: `counter`, `gauge_livesum`, ...
    pub fn prefix(self) -> Cow<'static, str> {
        match self {
            FileKind::Counter => Cow::Borrowed("counter"),
            FileKind::Histogram => Cow::Borrowed("histogram"),
            FileKind::Summary => Cow::Borrowed("summary"),
            FileKind::Gauge(mode) => Cow::Owned(format!("gauge_{}", mode.as_str())),
        }
    }

    /// The file name for `pid`.
    pub fn file_name(self, pid: &str) -> String {
        format!("{}_{pid}.db", self.prefix())
    }

    /// True when a dead worker's values of this kind survive it: counters, histograms and
    /// summaries always; gauges in the modes that keep departed workers' values and can be
    /// folded into one value (`all` keeps a series per pid and cannot).
    pub fn folds(self) -> bool {
        match self {
            FileKind::Counter | FileKind::Histogram | FileKind::Summary => true,
            FileKind::Gauge(m) => matches!(
                m,
                GaugeMode::Sum | GaugeMode::Min | GaugeMode::Max | GaugeMode::Mostrecent
            ),
        }
    }

    /// True for `live*` gauges, which forget dead workers.
    pub fn is_live_gauge(self) -> bool {
        matches!(self, FileKind::Gauge(m) if m.is_live())
    }

    /// True for kinds whose values only grow while the worker lives (counter-like).
    pub fn is_cumulative(self) -> bool {
        matches!(
            self,
            FileKind::Counter | FileKind::Histogram | FileKind::Summary
        )
    }
}

/// A parsed multiprocess file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileName<'a> {
    pub kind: FileKind,
    /// The process identifier (`os.getpid()` unless the app changed it).
    pub pid: &'a str,
}

/// Parses `counter_<pid>.db`, `gauge_<mode>_<pid>.db`, `histogram_<pid>.db` or
/// `summary_<pid>.db`. Anything else is not a prometheus_client file.
///
/// MultiProcessCollector splits the name on `_` and takes the third part as the gauge pid;
/// here the pid is everything after the mode, which is the same for every `os.getpid()`.
pub fn parse_file_name(name: &str) -> Option<FileName<'_>> {
    let stem = name.strip_suffix(".db")?;
    let (typ, rest) = stem.split_once('_')?;
    let (kind, pid) = match typ {
        "counter" => (FileKind::Counter, rest),
        "histogram" => (FileKind::Histogram, rest),
        "summary" => (FileKind::Summary, rest),
        "gauge" => {
            let (mode, pid) = rest.split_once('_')?;
            let mode = PYTHON_GAUGE_MODES
                .into_iter()
                .find(|m| m.as_str() == mode)?;
            (FileKind::Gauge(mode), pid)
        }
        _ => return None,
    };
    if pid.is_empty() {
        return None;
    }
    Some(FileName { kind, pid })
}

/// Why a file (or a piece of one) could not be read. Fixed reasons, usable as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("file is shorter than its {HEADER_LEN}-byte header")]
    ShortHeader,
    #[error("used size {0} is not a valid size")]
    BadUsed(i64),
    #[error("used size {used} is beyond the end of the file ({len} bytes)")]
    UsedBeyondEnd { used: usize, len: usize },
    #[error("used size {0} is larger than the reader accepts")]
    TooLarge(usize),
    #[error("entry at offset {0} runs past the used size")]
    EntryOverrun(usize),
    #[error("entry at offset {0} has a negative key length")]
    BadKeyLength(usize),
    #[error("key at offset {0} is not UTF-8")]
    KeyNotUtf8(usize),
    #[error("key at offset {offset}: {error}")]
    BadKey { offset: usize, error: KeyError },
}

impl FileError {
    /// A fixed label for the corrupt-files self-metric.
    pub fn reason(&self) -> &'static str {
        match self {
            FileError::ShortHeader | FileError::UsedBeyondEnd { .. } => "truncated",
            FileError::BadUsed(_) => "bad_header",
            FileError::TooLarge(_) => "too_large",
            FileError::EntryOverrun(_) | FileError::BadKeyLength(_) => "bad_entry",
            FileError::KeyNotUtf8(_) | FileError::BadKey { .. } => "bad_key",
        }
    }

    /// Every reason, for pre-registered self-metric labels.
    pub const REASONS: [&'static str; 5] = [
        "truncated",
        "bad_header",
        "too_large",
        "bad_entry",
        "bad_key",
    ];
}

/// Reads `used` from the first bytes of a file. `Ok(0)` means "nothing written yet": the
/// client truncates a new file to its initial size before it writes `used`, and the Python
/// reader treats 0 the same way.
pub fn read_used(header: &[u8]) -> Result<usize, FileError> {
    let bytes: [u8; 4] = header
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(FileError::ShortHeader)?;
    let used = i32::from_ne_bytes(bytes);
    match used {
        0 => Ok(0),
        u if u < HEADER_LEN as i32 => Err(FileError::BadUsed(i64::from(u))),
        u => Ok(u as usize),
    }
}

/// One entry of a file, borrowing its key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawEntry<'a> {
    /// The JSON key as stored.
    pub key: &'a str,
    pub value: f64,
    pub timestamp: f64,
    /// Where the value lives in the file (the timestamp follows it).
    pub value_offset: usize,
}

/// Iterates the entries of a file's bytes (at least `used` of them, starting at offset 0).
/// Stops at the first malformed entry, yielding its error.
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    data: &'a [u8],
    pos: usize,
    used: usize,
    failed: bool,
}

/// Validates the header of `data` and iterates its entries. Bytes past `used` are ignored.
pub fn entries(data: &[u8]) -> Result<Entries<'_>, FileError> {
    let used = read_used(data)?;
    if used > data.len() {
        return Err(FileError::UsedBeyondEnd {
            used,
            len: data.len(),
        });
    }
    Ok(Entries {
        data,
        pos: HEADER_LEN,
        used: used.max(HEADER_LEN),
        failed: false,
    })
}

impl<'a> Entries<'a> {
    /// The `used` size of the file (at least the header size).
    pub fn used(&self) -> usize {
        self.used
    }

    fn next_entry(&mut self) -> Result<RawEntry<'a>, FileError> {
        let start = self.pos;
        let len_end = start.checked_add(4).ok_or(FileError::EntryOverrun(start))?;
        if len_end > self.used {
            return Err(FileError::EntryOverrun(start));
        }
        let len_bytes: [u8; 4] = self.data[start..len_end]
            .try_into()
            .map_err(|_| FileError::EntryOverrun(start))?;
        let key_len = i32::from_ne_bytes(len_bytes);
        if key_len < 0 {
            return Err(FileError::BadKeyLength(start));
        }
        let key_len = key_len as usize;
        // Same padding as `_read_all_values`: always 1 to 8 bytes.
        let padded = key_len + (8 - (key_len + 4) % 8);
        let value_offset = len_end + padded;
        let end = value_offset + 16;
        if end > self.used {
            return Err(FileError::EntryOverrun(start));
        }
        let key = std::str::from_utf8(&self.data[len_end..len_end + key_len])
            .map_err(|_| FileError::KeyNotUtf8(start))?;
        let value = read_f64(self.data, value_offset);
        let timestamp = read_f64(self.data, value_offset + 8);
        self.pos = end;
        Ok(RawEntry {
            key,
            value,
            timestamp,
            value_offset,
        })
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<RawEntry<'a>, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.used {
            return None;
        }
        let r = self.next_entry();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

/// Reads the native-endian f64 at `at` (the caller checked the bounds).
fn read_f64(data: &[u8], at: usize) -> f64 {
    let mut b = [0u8; 8];
    if let Some(src) = data.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    f64::from_ne_bytes(b)
}

/// Reads the value and timestamp stored at `value_offset`, if in bounds.
pub fn value_at(data: &[u8], value_offset: usize) -> Option<(f64, f64)> {
    let end = value_offset.checked_add(16)?;
    (end <= data.len()).then(|| {
        (
            read_f64(data, value_offset),
            read_f64(data, value_offset + 8),
        )
    })
}

/// Labels of a key, as `(name, value)` pairs in the key's order (sorted by the client).
pub type KeyLabels<'a> = SmallVec<[(Cow<'a, str>, Cow<'a, str>); 6]>;

/// A decoded key: `[metric, sample, {labels}, help]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key<'a> {
    /// The metric (family) name without suffixes: `requests` for `requests_total`.
    pub metric: Cow<'a, str>,
    /// The sample name: `requests_total`, `latency_bucket`, `temperature`.
    pub sample: Cow<'a, str>,
    pub labels: KeyLabels<'a>,
    pub help: Cow<'a, str>,
}

impl<'a> Key<'a> {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Why a key is not `[string, string, {string: string...}, string]` JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected {expected} at byte {at}")]
    Expected { expected: &'static str, at: usize },
    #[error("invalid string escape at byte {0}")]
    BadEscape(usize),
    #[error("control character in string at byte {0}")]
    ControlCharacter(usize),
    #[error("label {0} appears twice")]
    DuplicateLabel(usize),
    #[error("text after the key at byte {0}")]
    Trailing(usize),
}

/// Parses a key. Strings without escapes are borrowed.
pub fn parse_key(key: &str) -> Result<Key<'_>, KeyError> {
    let mut p = KeyParser {
        s: key,
        b: key.as_bytes(),
        pos: 0,
    };
    p.expect(b'[', "'['")?;
    let metric = p.string()?;
    p.expect(b',', "','")?;
    let sample = p.string()?;
    p.expect(b',', "','")?;
    p.expect(b'{', "'{'")?;
    let mut labels = KeyLabels::new();
    p.ws();
    if p.peek() == Some(b'}') {
        p.pos += 1;
    } else {
        loop {
            let at = p.pos;
            let name = p.string()?;
            p.expect(b':', "':'")?;
            let value = p.string()?;
            if labels.iter().any(|(n, _)| *n == name) {
                return Err(KeyError::DuplicateLabel(at));
            }
            labels.push((name, value));
            p.ws();
            match p.peek() {
                Some(b',') => p.pos += 1,
                Some(b'}') => {
                    p.pos += 1;
                    break;
                }
                _ => {
                    return Err(KeyError::Expected {
                        expected: "',' or '}'",
                        at: p.pos,
                    });
                }
            }
        }
    }
    p.expect(b',', "','")?;
    let help = p.string()?;
    p.expect(b']', "']'")?;
    p.ws();
    if p.pos != p.b.len() {
        return Err(KeyError::Trailing(p.pos));
    }
    Ok(Key {
        metric,
        sample,
        labels,
        help,
    })
}

/// Skips plain string bytes eight at a time: returns the index of the first `"`, `\\` or
/// control character at or after `from`, or an index less than eight bytes from the end
/// (the caller's byte loop takes over there). Keys are mostly plain ASCII and this is the
/// reader's inner loop.
#[inline]
pub(crate) fn skip_plain(b: &[u8], mut from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(from..from + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let quote = zero(w ^ (ONES * u64::from(b'"')));
        let backslash = zero(w ^ (ONES * u64::from(b'\\')));
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let hits = quote | backslash | control;
        if hits != 0 {
            return from + (hits.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    from
}

struct KeyParser<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> KeyParser<'a> {
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8, expected: &'static str) -> Result<(), KeyError> {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(KeyError::Expected {
                expected,
                at: self.pos,
            })
        }
    }

    /// A JSON string; borrowed unless it contains escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, KeyError> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(KeyError::Expected {
                expected: "a string",
                at: self.pos,
            });
        }
        self.pos += 1;
        let start = self.pos;
        self.pos = skip_plain(self.b, self.pos);
        // Fast path: no escapes.
        loop {
            match self.peek() {
                None => {
                    return Err(KeyError::Expected {
                        expected: "'\"'",
                        at: self.pos,
                    });
                }
                Some(b'"') => {
                    let s = &self.s[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(c) if c < 0x20 => return Err(KeyError::ControlCharacter(self.pos)),
                Some(_) => self.pos += 1,
            }
        }
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(&self.s[start..self.pos]);
        loop {
            let Some(c) = self.peek() else {
                return Err(KeyError::Expected {
                    expected: "'\"'",
                    at: self.pos,
                });
            };
            match c {
                b'"' => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    let at = self.pos;
                    self.pos += 1;
                    let e = self.peek().ok_or(KeyError::BadEscape(at))?;
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4().ok_or(KeyError::BadEscape(at))?;
                            let ch = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair: `\uD83D\uDE00`.
                                if self.b.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return Err(KeyError::BadEscape(at));
                                }
                                self.pos += 2;
                                let lo = self.hex4().ok_or(KeyError::BadEscape(at))?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(KeyError::BadEscape(at));
                                }
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            } else {
                                char::from_u32(hi)
                            };
                            out.push(ch.ok_or(KeyError::BadEscape(at))?);
                        }
                        _ => return Err(KeyError::BadEscape(at)),
                    }
                }
                c if c < 0x20 => return Err(KeyError::ControlCharacter(self.pos)),
                _ => {
                    // Copy the run up to the next quote or backslash (whole UTF-8 sequences).
                    let run_start = self.pos;
                    while let Some(c) = self.peek() {
                        if c == b'"' || c == b'\\' || c < 0x20 {
                            break;
                        }
                        self.pos += 1;
                    }
                    out.push_str(&self.s[run_start..self.pos]);
                }
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.pos..self.pos + 4)?;
        let mut v = 0u32;
        for d in digits {
            v = v * 16 + (*d as char).to_digit(16)?;
        }
        self.pos += 4;
        Some(v)
    }
}

/// Encodes a key exactly as `mmap_key` does (`json.dumps(..., sort_keys=True)`: `", "` and
/// `": "` separators, non-ASCII escaped), so the client would find the same key. `labels`
/// must be sorted by name.
pub fn encode_key(metric: &str, sample: &str, labels: &[(&str, &str)], help: &str) -> String {
    let mut out =
        String::with_capacity(metric.len() + sample.len() + help.len() + labels.len() * 16 + 16);
    out.push('[');
    json_string(metric, &mut out);
    out.push_str(", ");
    json_string(sample, &mut out);
    out.push_str(", {");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_string(name, &mut out);
        out.push_str(": ");
        json_string(value, &mut out);
    }
    out.push_str("}, ");
    json_string(help, &mut out);
    out.push(']');
    out
}

/// Python's `json.dumps` string encoding with `ensure_ascii=True`.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{:04x}", u);
                }
            }
        }
    }
    out.push('"');
}

/// Which of the client's entry layouts a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// 0.17 and later: value and timestamp.
    Current,
    /// Before 0.17: the value alone.
    Legacy,
}

/// Appends one entry (key, padding, value, timestamp) in the client's layout.
pub fn encode_entry(out: &mut Vec<u8>, key: &str, value: f64, timestamp: f64) {
    encode_entry_in(Layout::Current, out, key, value, timestamp);
}

/// [`encode_entry`] in either layout (the legacy one has no place for the timestamp).
pub fn encode_entry_in(layout: Layout, out: &mut Vec<u8>, key: &str, value: f64, timestamp: f64) {
    let len = key.len();
    out.extend_from_slice(&(len as i32).to_ne_bytes());
    out.extend_from_slice(key.as_bytes());
    let pad = 8 - (len + 4) % 8;
    out.extend(std::iter::repeat_n(b' ', pad));
    out.extend_from_slice(&value.to_ne_bytes());
    if layout == Layout::Current {
        out.extend_from_slice(&timestamp.to_ne_bytes());
    }
}

/// Where a walk over entries of `width` value bytes (8: value; 16: value and timestamp) ends,
/// if every entry fits and every key starts like the client's JSON list (`[`). Reads only
/// the length fields and one byte per key, so it is cheap beside the reading itself.
fn walk_ends_exactly(data: &[u8], used: usize, width: usize) -> bool {
    let mut pos = HEADER_LEN;
    while pos < used {
        let Some(len) = data
            .get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes)
            .and_then(|l| usize::try_from(l).ok())
        else {
            return false;
        };
        if data.get(pos + 4) != Some(&b'[') {
            return false;
        }
        let padded = len + (8 - (len + 4) % 8);
        pos = match (pos + 4).checked_add(padded + width) {
            Some(end) if end <= used => end,
            _ => return false,
        };
    }
    pos == used
}

/// Rewrites a file in prometheus_client's layout before 0.17 (entries without the timestamp
/// field; Debian bookworm's python3-prometheus-client 0.16 writes it) into the current one,
/// with a timestamp of 0 (those versions have no `mostrecent` gauges, the only mode that
/// reads it). Returns false, leaving `data` alone, when it already is in the current layout
/// or is not a valid file in either: the reader then judges it as usual.
///
/// The two layouts cannot be confused: a walk with the wrong entry width lands inside a key
/// (a length of ASCII bytes, far past `used`) at the first or second entry.
pub fn normalize_legacy(data: &mut Vec<u8>) -> bool {
    let Ok(used) = read_used(data) else {
        return false;
    };
    if used <= HEADER_LEN
        || used > data.len()
        || walk_ends_exactly(data, used, 16)
        || !walk_ends_exactly(data, used, 8)
    {
        return false;
    }
    let mut out = Vec::with_capacity(used + used / 2);
    start_file(&mut out);
    let mut pos = HEADER_LEN;
    while pos < used {
        let len = i32::from_ne_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let len = len as usize;
        let value_at = pos + 4 + len + (8 - (len + 4) % 8);
        // The key and its padding as the client wrote them, then value and a zero timestamp.
        out.extend_from_slice(&data[pos..value_at + 8]);
        out.extend_from_slice(&0f64.to_ne_bytes());
        pos = value_at + 8;
    }
    // A damaged length can still walk to `used` while a key swallows a value's bytes: such a
    // file is left alone, so the reader judges (and counts) it like any other corrupt file.
    if !finish_file(&mut out) || !entries(&out).is_ok_and(|mut all| all.all(|e| e.is_ok())) {
        return false;
    }
    *data = out;
    true
}

/// Starts a file: the header with a placeholder `used` (see [`finish_file`]).
pub fn start_file(out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
}

/// Writes `used` into the header of a file built with [`start_file`] and [`encode_entry`].
/// Returns false when the file is too large for the format's int32 size.
pub fn finish_file(out: &mut [u8]) -> bool {
    let Ok(used) = i32::try_from(out.len()) else {
        return false;
    };
    if out.len() < HEADER_LEN {
        return false;
    }
    out[..4].copy_from_slice(&used.to_ne_bytes());
    true
}

/// Parses a histogram `le` label the way the client formats it (`0.005`, `1.0`, `+Inf`).
pub fn parse_bound(le: &str) -> Option<f64> {
    let v = match le {
        "+Inf" | "Inf" | "inf" | "+inf" => f64::INFINITY,
        "-Inf" | "-inf" => f64::NEG_INFINITY,
        other => other.parse::<f64>().ok()?,
    };
    (!v.is_nan()).then_some(v)
}
