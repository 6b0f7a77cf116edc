//! Folding into the retired totals: what a reset or a departed file contributes, staging and
//! writing the tables (before anything relies on them), loading them at start, and deleting
//! the files already folded.

use super::fs::{leftover_matches, write_tables};
use super::{DirState, FileState, Fold, RETRY_AFTER, slot};
use crate::sources::multiprocess::format::{self, FileKind};
use crate::sources::multiprocess::merge::{FxHashSet, MergeIssues, Plan, PlanBuilder};
use crate::sources::multiprocess::retired::{self, FOLDABLE, FoldedFile, Retired, Table};
use crate::sources::multiprocess::{LogOnce, Stats};
use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

impl DirState {
    /// Folds into copies of the affected tables, writes them, and installs them only when
    /// written. Returns false (nothing changed) when the directory cannot be written.
    pub(super) fn commit_folds(
        &mut self,
        folds: &[(String, Fold)],
        newly_folded: &[(String, FoldedFile, bool)],
        missing_retired: &[FileKind],
        stats: &Stats,
        log: &mut LogOnce,
    ) -> bool {
        let mut staged: BTreeMap<FileKind, Table> = BTreeMap::new();
        let base = &self.retired;
        let mut bad_keys = 0;
        fn stage<'t>(
            staged: &'t mut BTreeMap<FileKind, Table>,
            base: &Retired,
            kind: FileKind,
        ) -> Option<&'t mut Table> {
            if !kind.folds() {
                return None;
            }
            Some(
                staged
                    .entry(kind)
                    .or_insert_with(|| base.tables.get(&kind).cloned().unwrap_or_default()),
            )
        }
        for (_, fold) in folds {
            let (kind, raw, only) = match fold {
                Fold::Whole { kind, raw } => (*kind, raw, None),
                Fold::Entries { kind, raw, offsets } => (*kind, raw, Some(offsets)),
            };
            if let Some(table) = stage(&mut staged, base, kind) {
                bad_keys += fold_raw(table, kind, raw, only.map(Vec::as_slice));
            }
        }
        for (_, rec, _) in newly_folded {
            if let Some(name) = format::parse_file_name(&rec.file) {
                stage(&mut staged, base, name.kind);
            }
        }
        for kind in missing_retired {
            stage(&mut staged, base, *kind);
        }
        if bad_keys > 0 {
            stats.corrupt_keys(bad_keys as u64);
        }
        // Each table records the files folded into it that may still exist.
        for (kind, table) in staged.iter_mut() {
            table.folded = self
                .folded
                .values()
                .map(|(rec, _)| rec)
                .chain(newly_folded.iter().map(|(_, rec, _)| rec))
                .filter(|rec| {
                    rec.len > 0
                        && format::parse_file_name(&rec.file).is_some_and(|n| n.kind == *kind)
                })
                .cloned()
                .collect();
        }
        // The retired files stay readable by the workers' own MultiProcessCollector.
        let layout = if self.legacy_layout {
            format::Layout::Legacy
        } else {
            format::Layout::Current
        };
        match write_tables(&self.dir, &staged, layout) {
            Ok(()) => {
                self.retry_writes_at = None;
                log.clear("persist");
                for (kind, table) in staged {
                    self.retired.tables.insert(kind, table);
                }
                self.retired_in_store = false;
                true
            }
            Err(e) => {
                if log.first("persist") {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the retired totals; dead workers are kept as they are and their files stay");
                }
                stats.error("persist");
                self.retry_writes_at = Some(Instant::now() + RETRY_AFTER);
                false
            }
        }
    }

    /// Loads the retired totals and settles files a previous run folded but did not delete.
    /// Until every retired file has been read (or found absent), nothing is folded: writing
    /// new totals over unread ones would lose them. Retried every round.
    pub(super) fn load_retired(&mut self, compact: bool, stats: &Stats, log: &mut LogOnce) {
        let mut tables = Vec::new();
        for kind in FOLDABLE {
            let name = retired::file_name(kind);
            let path = self.dir.join(&name);
            match std::fs::read(&path) {
                Ok(d) => tables.push((kind, name, path, d)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    if log.first("retired-read") {
                        tracing::error!(file = %path.display(), error = %e, "cannot read the retired totals; nothing is compacted until they can be read");
                    }
                    stats.error("read");
                    return;
                }
            }
        }
        log.clear("retired-read");
        self.retired_loaded = true;
        self.retired_in_store = false;
        for (kind, name, path, data) in tables {
            match Table::decode(kind, &data) {
                Ok(decoded) => {
                    if !decoded.trailer_ok {
                        tracing::warn!(file = %path.display(), "the retired totals' bookkeeping trailer is damaged; files folded just before the last stop may be counted again");
                    }
                    for rec in &decoded.table.folded {
                        if leftover_matches(&self.dir, rec) {
                            self.folded
                                .insert(rec.file.clone(), (rec.clone(), !compact));
                        }
                    }
                    self.retired.tables.insert(kind, decoded.table);
                }
                Err(e) => {
                    stats.corrupt(e.reason());
                    let aside = self.dir.join(format!("{name}.corrupt"));
                    let moved = compact && std::fs::rename(&path, &aside).is_ok();
                    if log.first(&format!("corrupt:{name}")) {
                        tracing::error!(file = %path.display(), error = %e, moved_aside = moved, "the retired totals are corrupt; counters of dead workers restart from zero");
                    }
                }
            }
        }
        if !self.folded.is_empty() {
            tracing::info!(
                files = self.folded.len(),
                "found files folded before the last stop; deleting them instead of counting them again"
            );
        }
    }

    pub(super) fn delete_folded(&mut self, stats: &Stats, log: &mut LogOnce) {
        let mut deleted = Vec::new();
        let mut failed = false;
        for (name, (_, keep)) in &self.folded {
            if *keep {
                continue;
            }
            match std::fs::remove_file(self.dir.join(name)) {
                Ok(()) => {
                    stats.deleted_files.inc();
                    deleted.push(name.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => deleted.push(name.clone()),
                Err(e) => {
                    failed = true;
                    stats.error("delete");
                    if log.first("delete") {
                        tracing::warn!(dir = %self.dir.display(), file = %name, error = %e, "cannot delete a dead worker's file (already counted, so it is ignored); the directory is not compacted");
                    }
                }
            }
        }
        for name in deleted {
            self.folded.remove(&name);
        }
        if failed {
            self.retry_deletes_at = Some(Instant::now() + RETRY_AFTER);
        } else {
            self.retry_deletes_at = None;
            log.clear("delete");
        }
    }
}

/// The fold for counter-like entries that went down in a live file (`Counter.reset()`, or a
/// pid reused by a new process before its files were seen to go): counters keep just the
/// entries that dropped. A histogram or summary series restarted only when one of its buckets
/// or its `_count` dropped: `_sum` alone may fall (negative observations are legal); such a
/// series is folded with all its parts, and only the series that fell. `None`: nothing reset.
pub(super) fn reset_fold(kind: FileKind, raw: &[u8], mut went_down: Vec<usize>) -> Option<Fold> {
    // The common case (values only went up): no key of the file is parsed.
    if went_down.is_empty() {
        return None;
    }
    went_down.sort_unstable();
    let offsets = match kind {
        FileKind::Counter => went_down,
        _ => series_that_fell(raw, &went_down),
    };
    (!offsets.is_empty()).then(|| Fold::Entries {
        kind,
        raw: raw.to_vec(),
        offsets,
    })
}

/// The value offsets of every entry of the histogram or summary series that have a bucket or
/// `_count` entry among `went_down` (sorted).
fn series_that_fell(raw: &[u8], went_down: &[usize]) -> Vec<usize> {
    let Ok(iter) = format::entries(raw) else {
        return Vec::new();
    };
    let mut parts: Vec<(usize, String)> = Vec::new();
    let mut fell: FxHashSet<String> = FxHashSet::default();
    for entry in iter.flatten() {
        let Ok(key) = format::parse_key(entry.key) else {
            continue;
        };
        let mut id = String::from(&*key.metric);
        for (name, value) in key.labels.iter() {
            if name != "le" && name != "quantile" {
                id.push('\0');
                id.push_str(name);
                id.push('=');
                id.push_str(value);
            }
        }
        if !key.sample.ends_with("_sum") && went_down.binary_search(&entry.value_offset).is_ok() {
            fell.insert(id.clone());
        }
        parts.push((entry.value_offset, id));
    }
    parts
        .into_iter()
        .filter(|(_, id)| fell.contains(id))
        .map(|(offset, _)| offset)
        .collect()
}

/// Builds a pid's plan from its readable files. Returns the plan, the series of each entry
/// (per kind rank, in entry order) and the number of entries whose key did not parse (left
/// out).
pub(super) fn build_plan(
    files: &[&FileState],
    issues: &mut MergeIssues,
) -> (Plan, Vec<Vec<u32>>, usize) {
    let mut builder = PlanBuilder::with_capacity(files.iter().map(|f| f.offsets.len()).sum());
    let mut entry_series: Vec<Vec<u32>> = vec![Vec::new(); FileKind::COUNT];
    let mut bad = 0;
    // A stable order (by kind) so the same files always give the same plan.
    let mut files: Vec<&FileState> = files.iter().copied().filter(|f| f.good).collect();
    files.sort_by_key(|f| f.kind);
    for f in files {
        let Ok(iter) = format::entries(&f.raw) else {
            continue;
        };
        let out = &mut entry_series[f.kind.rank()];
        out.reserve_exact(f.offsets.len());
        for entry in iter.flatten() {
            let series = match format::parse_key(entry.key) {
                Ok(key) => builder.add(f.kind, &key, slot(f.kind, entry.value_offset as u32)),
                Err(_) => {
                    bad += 1;
                    None
                }
            };
            out.push(series.unwrap_or(u32::MAX));
        }
    }
    let (plan, found) = builder.finish();
    issues.conflicts += found.conflicts;
    issues.bad_buckets += found.bad_buckets;
    (plan, entry_series, bad)
}

/// Folds the entries of `raw` (all, or those at `only` value offsets, sorted) into `table`.
/// Returns the number of entries left out because their key is not valid JSON.
fn fold_raw(table: &mut Table, kind: FileKind, raw: &[u8], only: Option<&[usize]>) -> usize {
    let Ok(iter) = format::entries(raw) else {
        return 0;
    };
    let mut bad = 0;
    for entry in iter.flatten() {
        if only.is_some_and(|o| o.binary_search(&entry.value_offset).is_err()) {
            continue;
        }
        match format::parse_key(entry.key) {
            Ok(key) => {
                table.fold(kind, &key, entry.value, entry.timestamp);
            }
            Err(_) => bad += 1,
        }
    }
    bad
}

/// Value offsets of entries of `old` whose value is lower in `new` (same file, appended to):
/// the worker reset a counter.
pub(super) fn decreased(old: &[u8], new: &[u8]) -> Vec<usize> {
    let Ok(iter) = format::entries(old) else {
        return Vec::new();
    };
    iter.flatten()
        .filter(|e| format::value_at(new, e.value_offset).is_some_and(|(v, _)| v < e.value))
        .map(|e| e.value_offset)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::reset_fold;
    use crate::sources::multiprocess::format::{self, FileKind};
    use crate::sources::multiprocess::scan::Fold;

    /// A histogram file with two series (`/a` and `/b`), each with two buckets, `_count` and
    /// `_sum`; returns the content and each entry's (sample, path label, value offset).
    fn histogram_file() -> (Vec<u8>, Vec<(String, String, usize)>) {
        let mut keys = Vec::new();
        for path in ["/a", "/b"] {
            for le in ["1.0", "+Inf"] {
                let key =
                    format::encode_key("lat", "lat_bucket", &[("le", le), ("path", path)], "L.");
                keys.push(("lat_bucket".to_string(), path.to_string(), key));
            }
            for sample in ["lat_count", "lat_sum"] {
                let key = format::encode_key("lat", sample, &[("path", path)], "L.");
                keys.push((sample.to_string(), path.to_string(), key));
            }
        }
        let mut raw = Vec::new();
        format::start_file(&mut raw);
        for (_, _, key) in &keys {
            format::encode_entry(&mut raw, key, 5.0, 0.0);
        }
        assert!(format::finish_file(&mut raw));
        let offsets = format::entries(&raw)
            .expect("header")
            .map(|e| e.expect("entry").value_offset);
        let parts = keys
            .into_iter()
            .zip(offsets)
            .map(|((sample, path, _), o)| (sample, path, o))
            .collect();
        (raw, parts)
    }

    fn offsets_of(
        parts: &[(String, String, usize)],
        pick: impl Fn(&str, &str) -> bool,
    ) -> Vec<usize> {
        parts
            .iter()
            .filter(|(sample, path, _)| pick(sample, path))
            .map(|(_, _, o)| *o)
            .collect()
    }

    #[test]
    fn nothing_went_down_folds_nothing() {
        let (raw, _) = histogram_file();
        assert!(reset_fold(FileKind::Histogram, &raw, Vec::new()).is_none());
        assert!(reset_fold(FileKind::Counter, &raw, Vec::new()).is_none());
    }

    #[test]
    fn a_fallen_bucket_folds_every_part_of_its_series_only() {
        let (raw, parts) = histogram_file();
        let bucket = offsets_of(&parts, |s, p| s == "lat_bucket" && p == "/a")[1];
        let Some(Fold::Entries { kind, offsets, .. }) =
            reset_fold(FileKind::Histogram, &raw, vec![bucket])
        else {
            panic!("a bucket that fell must fold its series");
        };
        assert_eq!(kind, FileKind::Histogram);
        assert_eq!(offsets, offsets_of(&parts, |_, p| p == "/a"));
        // `_sum` alone may fall (negative observations): not a restart.
        let sum = offsets_of(&parts, |s, p| s == "lat_sum" && p == "/b");
        assert!(reset_fold(FileKind::Histogram, &raw, sum).is_none());
    }
}
