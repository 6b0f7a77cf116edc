//! What dead workers left behind, persisted by the sidecar in the directory itself.
//!
//! One file per foldable kind, named like a worker file with the pid `retired`
//! (`counter_retired.db`, `histogram_retired.db`, `summary_retired.db`,
//! `gauge_{sum,min,max,mostrecent}_retired.db`), in prometheus_client's own format. That is
//! deliberate: MultiProcessCollector splits names on `_`, takes the first part as the type
//! (and the second as the gauge mode) and only uses the pid to label `all` gauges, which are
//! never folded. So an app that still serves its own `/metrics` with the collector keeps
//! seeing correct totals after the sidecar deleted dead workers' files.
//!
//! After `used` (where neither the client nor the collector ever reads) each file carries a
//! trailer: the worker files folded into it but possibly not yet deleted, by name and
//! identity (device, inode, content hash), plus a checksum. Folding is
//! "write the totals atomically (temp file, fsync, rename, fsync directory), then delete the
//! worker files"; if the sidecar dies in between, the next start finds the leftover files
//! named in the trailer with the same identity and deletes them instead of counting them
//! twice. Each worker file folds into exactly one retired file, so the per-file atomicity of
//! `rename` is enough.

use super::format::{self, FileKind, Key, RETIRED_PID};
use super::merge::Parsed;
use indexmap::{Equivalent, IndexMap};
use monasca_config::GaugeMode;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::Path;

/// Marks the sidecar's trailer after `used`.
const TRAILER_MAGIC: &[u8; 8] = b"MSCRTD01";

/// The kinds the sidecar keeps totals for, in file-writing order.
pub const FOLDABLE: [FileKind; 7] = [
    FileKind::Counter,
    FileKind::Histogram,
    FileKind::Summary,
    FileKind::Gauge(GaugeMode::Sum),
    FileKind::Gauge(GaugeMode::Min),
    FileKind::Gauge(GaugeMode::Max),
    FileKind::Gauge(GaugeMode::Mostrecent),
];

/// A series identity inside one retired table: metric, sample and labels sorted by name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OwnedKey {
    metric: Box<str>,
    sample: Box<str>,
    labels: Box<[(Box<str>, Box<str>)]>,
}

impl Hash for OwnedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(
            &self.metric,
            &self.sample,
            self.labels.iter().map(|(n, v)| (&**n, &**v)),
            state,
        );
    }
}

/// The same identity, borrowed from a parsed key (labels already sorted).
struct KeyRef<'k> {
    metric: &'k str,
    sample: &'k str,
    labels: &'k [(Cow<'k, str>, Cow<'k, str>)],
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(
            self.metric,
            self.sample,
            self.labels.iter().map(|(n, v)| (n.as_ref(), v.as_ref())),
            state,
        );
    }
}

impl Equivalent<OwnedKey> for KeyRef<'_> {
    fn equivalent(&self, key: &OwnedKey) -> bool {
        *key.metric == *self.metric
            && *key.sample == *self.sample
            && key.labels.len() == self.labels.len()
            && key
                .labels
                .iter()
                .zip(self.labels)
                .all(|((a, b), (c, d))| **a == **c && **b == **d)
    }
}

fn hash_key<'s, H: Hasher>(
    metric: &str,
    sample: &str,
    labels: impl Iterator<Item = (&'s str, &'s str)>,
    state: &mut H,
) {
    metric.hash(state);
    sample.hash(state);
    for (n, v) in labels {
        n.hash(state);
        v.hash(state);
    }
}

/// A folded value.
#[derive(Clone, Debug, PartialEq)]
struct Cell {
    value: f64,
    timestamp: f64,
    help: Box<str>,
}

/// A worker file folded into a table and maybe not deleted yet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FoldedFile {
    pub file: String,
    pub dev: u64,
    pub ino: u64,
    /// Bytes hashed (the file's `used`).
    pub len: u64,
    /// FNV-1a of the first `len` bytes.
    pub hash: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Trailer {
    version: u32,
    folded: Vec<FoldedFile>,
}

/// The totals of one foldable kind.
#[derive(Clone, Debug, Default)]
pub struct Table {
    cells: IndexMap<OwnedKey, Cell>,
    /// Worker files folded into this table that may still exist.
    pub folded: Vec<FoldedFile>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Folds one value of a dead worker in. Returns false when the kind does not fold.
    pub fn fold(&mut self, kind: FileKind, key: &Key<'_>, value: f64, timestamp: f64) -> bool {
        if !kind.folds() {
            return false;
        }
        let mostrecent = kind == FileKind::Gauge(GaugeMode::Mostrecent);
        if mostrecent && timestamp == 0.0 {
            // Never set; the collector never shows it either.
            return true;
        }
        let sorted;
        let labels: &[(Cow<'_, str>, Cow<'_, str>)] = if key.labels.is_sorted_by(|a, b| a.0 <= b.0)
        {
            &key.labels
        } else {
            let mut l = key.labels.clone();
            l.sort_by(|a, b| a.0.cmp(&b.0));
            sorted = l;
            &sorted
        };
        let probe = KeyRef {
            metric: &key.metric,
            sample: &key.sample,
            labels,
        };
        if let Some(cell) = self.cells.get_mut(&probe) {
            match kind {
                FileKind::Gauge(GaugeMode::Min) => cell.value = cell.value.min(value),
                FileKind::Gauge(GaugeMode::Max) => cell.value = cell.value.max(value),
                FileKind::Gauge(GaugeMode::Mostrecent) => {
                    if timestamp > cell.timestamp {
                        cell.value = value;
                        cell.timestamp = timestamp;
                    }
                }
                _ => cell.value += value,
            }
            return true;
        }
        let owned = OwnedKey {
            metric: key.metric.as_ref().into(),
            sample: key.sample.as_ref().into(),
            labels: labels
                .iter()
                .map(|(n, v)| (n.as_ref().into(), v.as_ref().into()))
                .collect(),
        };
        self.cells.insert(
            owned,
            Cell {
                value,
                timestamp: if mostrecent { timestamp } else { 0.0 },
                help: key.help.as_ref().into(),
            },
        );
        true
    }

    /// The totals as entries of `kind`, for building the retired worker's families.
    pub fn parsed(&self, kind: FileKind) -> impl Iterator<Item = Parsed<'_>> {
        self.cells.iter().map(move |(k, c)| Parsed {
            kind,
            key: Key {
                metric: Cow::Borrowed(&k.metric),
                sample: Cow::Borrowed(&k.sample),
                labels: k
                    .labels
                    .iter()
                    .map(|(n, v)| (Cow::Borrowed(&**n), Cow::Borrowed(&**v)))
                    .collect(),
                help: Cow::Borrowed(&c.help),
            },
            value: c.value,
            timestamp: c.timestamp,
        })
    }

    /// The table as a prometheus_client file in `layout` (the one the directory's workers
    /// write, so their own collector can read it) followed by the sidecar's trailer.
    pub fn encode(&self, layout: format::Layout) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64 + self.cells.len() * 128);
        format::start_file(&mut out);
        let mut labels: Vec<(&str, &str)> = Vec::new();
        for (k, c) in &self.cells {
            labels.clear();
            labels.extend(k.labels.iter().map(|(n, v)| (&**n, &**v)));
            let key = format::encode_key(&k.metric, &k.sample, &labels, &c.help);
            format::encode_entry_in(layout, &mut out, &key, c.value, c.timestamp);
        }
        if !format::finish_file(&mut out) {
            return Err(EncodeError::TooLarge);
        }
        let trailer = serde_json::to_vec(&Trailer {
            version: 1,
            folded: self.folded.clone(),
        })
        .map_err(|_| EncodeError::TooLarge)?;
        let len = u32::try_from(trailer.len()).map_err(|_| EncodeError::TooLarge)?;
        out.extend_from_slice(TRAILER_MAGIC);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&trailer);
        let checksum = fnv1a(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        Ok(out)
    }

    /// Reads a retired file. Entries come from the prometheus_client part; the trailer (folded
    /// files) is optional and ignored, with `trailer_ok == false`, when damaged.
    pub fn decode(kind: FileKind, data: &[u8]) -> Result<Decoded, format::FileError> {
        let mut table = Table::default();
        let used = format::entries(data)?.used();
        // Written for workers of prometheus_client < 0.17: read through the current layout.
        let mut normalized = data[..used.min(data.len())].to_vec();
        let entries_of = if format::normalize_legacy(&mut normalized) {
            &normalized[..]
        } else {
            data
        };
        for entry in format::entries(entries_of)? {
            let entry = entry?;
            let key = format::parse_key(entry.key).map_err(|error| format::FileError::BadKey {
                offset: entry.value_offset,
                error,
            })?;
            table.fold(kind, &key, entry.value, entry.timestamp);
        }
        let trailer_ok = match decode_trailer(data, used) {
            Some(folded) => {
                table.folded = folded;
                true
            }
            None => data.len() == used,
        };
        Ok(Decoded { table, trailer_ok })
    }
}

/// A decoded retired file.
#[derive(Debug)]
pub struct Decoded {
    pub table: Table,
    /// False when bytes follow `used` but are not a valid trailer.
    pub trailer_ok: bool,
}

/// Why a table could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("retired totals exceed the 2 GiB limit of the file format")]
    TooLarge,
}

fn decode_trailer(data: &[u8], used: usize) -> Option<Vec<FoldedFile>> {
    let rest = data.get(used..)?;
    let magic = rest.get(..8)?;
    if magic != TRAILER_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
    let body_end = used.checked_add(12)?.checked_add(len)?;
    let json = data.get(used + 12..body_end)?;
    let checksum = u64::from_le_bytes(data.get(body_end..body_end + 8)?.try_into().ok()?);
    if fnv1a(&data[..body_end]) != checksum || data.len() != body_end + 8 {
        return None;
    }
    let trailer: Trailer = serde_json::from_slice(json).ok()?;
    Some(trailer.folded)
}

/// 64-bit FNV-1a: a content fingerprint for folded files and a checksum for the trailer (not
/// security: the directory is shared with the app, which could write anything anyway).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The totals of every foldable kind.
#[derive(Clone, Debug, Default)]
pub struct Retired {
    pub tables: BTreeMap<FileKind, Table>,
}

impl Retired {
    /// Number of retired series.
    pub fn series(&self) -> usize {
        self.tables.values().map(Table::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.values().all(Table::is_empty)
    }

    /// All totals as entries, for building the retired worker's families.
    pub fn parsed(&self) -> Vec<Parsed<'_>> {
        let mut out = Vec::with_capacity(self.series());
        for (kind, table) in &self.tables {
            out.extend(table.parsed(*kind));
        }
        out
    }
}

/// The file name of a kind's retired totals.
pub fn file_name(kind: FileKind) -> String {
    kind.file_name(RETIRED_PID)
}

/// Writes `data` to `dir/name` atomically: a hidden temp file (neither `*.db` nor visible to
/// the collector's glob), fsync, rename. The caller fsyncs the directory (once for many files).
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
