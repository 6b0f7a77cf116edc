//! Reading worker files into a [`DirState`]: a changed file's new content and the slots that
//! moved, a quiet file's cheap "unchanged" check, a dead worker's final re-read, and a
//! released worker's files read back.

use super::fold::{decreased, reset_fold};
use super::fs::{Faulted, ListedFile, Mapping, ident_of, layout, read_content, read_db, settled};
use super::round::RoundCtx;
use super::share::share;
use super::{
    DirState, FULL_READ_ROUNDS, FileState, Fold, Ident, MAX_OPEN_FILES, PidState,
    QUIET_REREAD_ROUNDS,
};
use crate::sources::multiprocess::Stats;
use crate::sources::multiprocess::format;
use crate::sources::multiprocess::merge::FxHashMap;
use crate::sources::multiprocess::retired;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

impl DirState {
    /// Reads a released worker's files back from disk, so it can be applied or folded again.
    /// Returns false (the worker stays released) when one of them cannot be read as the same
    /// file.
    pub(super) fn restore(&mut self, pid: &str, stats: &Stats) -> bool {
        let names: Vec<String> = self
            .files
            .iter()
            .filter(|(_, f)| f.pid == pid && f.released)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Ok((ident, Ok(()))) = read_db(
                &self.dir.join(&name),
                &mut self.scratch,
                &mut self.legacy_layout,
            ) else {
                return false;
            };
            stats.file_reads.inc();
            let Ok(offsets) = layout(&self.scratch) else {
                return false;
            };
            let Some(f) = self.files.get_mut(&name) else {
                continue;
            };
            if ident.dev != f.dev || ident.ino != f.ino {
                return false;
            }
            f.raw = std::mem::take(&mut self.scratch);
            f.map = None;
            f.offsets = offsets;
            f.mtime = ident.mtime;
            f.released = false;
        }
        if let Some(st) = self.pids.get_mut(pid) {
            st.released = false;
            st.plan = None;
            st.full = true;
        }
        true
    }

    /// Reads one worker file; records what changed for its pid, and folds for values that
    /// went away (compaction only). `looked`: its mapping was already read this round
    /// ([`DirState::look_ahead`]).
    pub(super) fn read_file(
        &mut self,
        file: &ListedFile,
        ctx: &mut RoundCtx<'_>,
        folds: &mut Vec<(String, Fold)>,
        looked: Option<Looked>,
    ) {
        let (name, kind, pid, ino) = (file.name.as_str(), file.kind, file.pid.as_str(), file.ino);
        let (compact, stats, log) = (ctx.compact, ctx.stats, &mut *ctx.log);
        match self.read_mapped(name, ino, compact, folds, looked) {
            MappedRead::Done => {
                stats.file_reads.inc();
                return;
            }
            MappedRead::NotUsed => {}
            MappedRead::Faulted => shrunk_under_map(&self.dir, name, stats),
        }
        let path = self.dir.join(name);
        // A known file still under its name (same inode in the listing) is read through the
        // handle kept open, with its last size as the read size: one syscall.
        let cached = self
            .files
            .get(name)
            .filter(|f| f.ino == ino && f.handle.is_some());
        let read = match cached {
            Some(f) => {
                let hint = if f.good { f.raw.len() } else { 0 };
                let ident = Ident {
                    dev: f.dev,
                    ino: f.ino,
                    mtime: f.mtime,
                };
                match &f.handle {
                    Some(h) => read_content(h, &mut self.scratch, hint, &mut self.legacy_layout)
                        .map(|r| (ident, r, None)),
                    None => Err(io::Error::from(io::ErrorKind::NotFound)),
                }
            }
            None => {
                let budget = &mut self.open_budget;
                let legacy = &mut self.legacy_layout;
                std::fs::File::open(&path).and_then(|file| {
                    let ident = ident_of(&file)?;
                    let hint = self
                        .files
                        .get(name)
                        .filter(|f| f.good && f.ino == ident.ino)
                        .map_or(0, |f| f.raw.len());
                    let r = read_content(&file, &mut self.scratch, hint, legacy)?;
                    let keep = (*budget > 0).then(|| {
                        *budget -= 1;
                        file
                    });
                    Ok((ident, r, keep))
                })
            }
        };
        let (ident, result, handle) = match read {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                if log.first(&format!("read:{name}")) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read a multiprocess file; keeping its last values");
                }
                stats.error("read");
                return;
            }
        };
        if let Some(f) = self.files.get_mut(name)
            && handle.is_some()
        {
            f.handle = None;
        }
        let handle = match (self.files.get_mut(name), handle) {
            (Some(f), Some(h)) if f.dev == ident.dev && f.ino == ident.ino => {
                f.handle = Some(h);
                None
            }
            (_, h) => h,
        };
        stats.file_reads.inc();
        let now = SystemTime::now();

        // A released file (no copy kept): unchanged when its length and hash are.
        if let Some(f) = self.files.get_mut(name)
            && f.released
            && result.is_ok()
            && f.dev == ident.dev
            && f.ino == ident.ino
            && f.released_len == self.scratch.len()
            && f.released_hash == retired::fnv1a(&self.scratch)
        {
            f.mtime = ident.mtime;
            return;
        }

        // The common case: same file, same size. The client never rewrites keys, so only
        // the value slots can differ.
        if let Some(f) = self.files.get_mut(name)
            && result.is_ok()
            && f.good
            && f.dev == ident.dev
            && f.ino == ident.ino
            && f.raw.len() == self.scratch.len()
        {
            f.mtime = ident.mtime;
            // One vectorised comparison for the usual "nothing changed". Anything but values
            // rewritten in place (not the client's doing: a garbled file, keys written over
            // keys) is read below as a new layout.
            let changed = if f.raw == self.scratch {
                Some(Vec::new())
            } else {
                changed_slots(&f.raw, &self.scratch, &f.offsets)
            };
            if let Some(changed) = changed {
                if f.corrupt.take().is_some() {
                    log.clear(&format!("corrupt:{name}"));
                }
                if changed.is_empty() {
                    self.remap_reporting(name, stats);
                    return;
                }
                // Every other byte is the same: take the changed slots only, and keep the
                // scratch buffer at its size (no zero-filling for the next, larger file).
                let changes: SlotBuffer = changed
                    .into_iter()
                    .filter_map(|i| {
                        let o = *f.offsets.get(i as usize)?;
                        Some((i, slot_bytes(&self.scratch, o)?))
                    })
                    .collect();
                take_changed_slots(f, &mut self.pids, compact, folds, &changes, now);
                self.remap_reporting(name, stats);
                return;
            }
        }

        let offsets = result.and_then(|()| layout(&self.scratch));
        let offsets = match offsets {
            Ok(o) => o,
            Err(e) => {
                let reason = e.reason();
                if log.first(&format!("corrupt:{name}")) {
                    tracing::warn!(file = %path.display(), error = %e, "corrupt multiprocess file skipped; its last good values are kept");
                    stats.corrupt(reason);
                }
                match self.files.get_mut(name) {
                    Some(f) => {
                        f.corrupt = Some(reason);
                        f.mtime = ident.mtime;
                    }
                    None => {
                        let mut f = FileState::new(kind, pid, ident, Vec::new(), Vec::new());
                        f.good = false;
                        f.corrupt = Some(reason);
                        self.files.insert(name.to_string(), f);
                    }
                }
                return;
            }
        };
        log.clear(&format!("corrupt:{name}"));
        match self.files.get_mut(name) {
            Some(f) => {
                // A released file has no old content to fold: the store retires what it held.
                if compact && f.good && !f.released {
                    let replaced = f.dev != ident.dev
                        || f.ino != ident.ino
                        || self.scratch.len() < f.raw.len();
                    if replaced {
                        if kind.folds() {
                            folds.push((
                                pid.to_string(),
                                Fold::Whole {
                                    kind,
                                    raw: f.raw.clone(),
                                },
                            ));
                        }
                    } else if kind.is_cumulative() {
                        let went_down = decreased(&f.raw, &self.scratch);
                        if let Some(fold) = reset_fold(kind, &f.raw, went_down) {
                            folds.push((pid.to_string(), fold));
                        }
                    }
                }
                std::mem::swap(&mut f.raw, &mut self.scratch);
                // A new layout (or inode): mapped anew below, once seen equal.
                f.map = None;
                f.offsets = offsets;
                f.good = true;
                f.released = false;
                f.dev = ident.dev;
                f.ino = ident.ino;
                f.mtime = ident.mtime;
                f.changed = now;
                f.corrupt = None;
                if handle.is_some() {
                    f.handle = handle;
                }
            }
            None => {
                let mut f =
                    FileState::new(kind, pid, ident, std::mem::take(&mut self.scratch), offsets);
                f.handle = handle;
                self.files.insert(name.to_string(), f);
            }
        }
        let st = self.pids.entry(pid.to_string()).or_default();
        st.full = true;
        st.plan = None;
        self.remap_reporting(name, stats);
    }

    /// The steady-state read of a mapped file, in place (see [`look_mapped`]), and what it
    /// found recorded: the changed value slots copied into `raw` and the worker's changed
    /// set. `looked`: the file was already looked at this round, on the look-ahead thread
    /// ([`DirState::look_ahead`]).
    fn read_mapped(
        &mut self,
        name: &str,
        ino: u64,
        compact: bool,
        folds: &mut Vec<(String, Fold)>,
        looked: Option<Looked>,
    ) -> MappedRead {
        let round = self.round_number;
        let Some(f) = self.files.get_mut(name) else {
            return MappedRead::NotUsed;
        };
        // Reused from file to file: no allocation per changed file.
        let own = &mut self.slot_changes;
        let (look, changed) = match &looked {
            Some(l) => {
                #[cfg(test)]
                {
                    self.looked_ahead += 1;
                }
                (l.look, l.changed.as_slice())
            }
            None => {
                own.clear();
                (look_mapped(f, ino, round, own), own.as_slice())
            }
        };
        let read = match look {
            Look::NotUsed => MappedRead::NotUsed,
            Look::Faulted => {
                // Cut in place under the mapping: what was read is partly zeros. Read whole
                // through `pread`, which sees the short file; mapped again once it is sound.
                f.map = None;
                f.map_ctime = None;
                MappedRead::Faulted
            }
            Look::Seen {
                trusted,
                ctime,
                mtime,
            } => {
                if trusted {
                    #[cfg(test)]
                    {
                        self.slot_only_reads += 1;
                    }
                } else {
                    #[cfg(test)]
                    {
                        self.mapped_whole_compares += 1;
                    }
                    f.map_ctime = settled(ctime);
                }
                f.mtime = mtime;
                if !changed.is_empty() {
                    take_changed_slots(
                        f,
                        &mut self.pids,
                        compact,
                        folds,
                        changed,
                        SystemTime::now(),
                    );
                }
                MappedRead::Done
            }
        };
        if let Some(l) = looked {
            self.give_back(l);
        }
        read
    }

    /// Keeps a look-ahead buffer for the next round, unless it grew past a relayout's worth.
    fn give_back(&mut self, looked: Looked) {
        if looked.changed.capacity() <= LOOK_BUFFER_KEPT && self.look_pool.len() < MAX_OPEN_FILES {
            self.look_pool.push(looked.changed);
        }
    }

    /// Looks at the round's mapped files on a second thread while this one looks at the
    /// others, when there are enough value slots to be worth the thread
    /// ([`DirState::look_ahead_min_slots`]): a cold scrape is bound by the latency of reading
    /// the slots scattered over the mappings, and two cores have twice the reads in flight.
    /// Only reads (nothing is recorded); returns each listed file's look by its index in
    /// `listed`, empty when not worth it.
    ///
    /// The files are shared file by file with the scan's kept helper thread ([`share`]).
    ///
    /// `pool`: buffers for the changed slots, given back by [`DirState::read_mapped`] (no
    /// allocation per file and round in the steady state).
    pub(super) fn look_ahead(
        &self,
        listed: &[ListedFile],
        pool: &mut Vec<SlotBuffer>,
    ) -> Vec<Option<Looked>> {
        if self.look_ahead_min_slots == usize::MAX {
            return Vec::new();
        }
        // The files `read_mapped` will read in place: not folded, not of a quiet worker the
        // store holds (those may be skipped unread), mapped and kept open under the listed
        // inode.
        let mut todo: Vec<(usize, &FileState, u64)> = Vec::new();
        let mut slots = 0usize;
        for (at, listed_file) in listed.iter().enumerate() {
            let name = listed_file.name.as_str();
            if listed_file.pid == format::RETIRED_PID
                || self.folded.contains_key(name)
                || self.quiet_in_store(&listed_file.pid)
            {
                continue;
            }
            let Some(f) = self.files.get(name) else {
                continue;
            };
            if let (Some(map), Some(_)) = (&f.map, &f.handle)
                && f.ino == listed_file.ino
            {
                slots += map.slots.len();
                todo.push((at, f, listed_file.ino));
            }
        }
        if slots < self.look_ahead_min_slots || todo.len() < 2 {
            return Vec::new();
        }
        // Half the kept buffers each; a thread that runs out allocates.
        let kept = pool.len().min(todo.len());
        let mut ours = pool.split_off(pool.len() - kept);
        let theirs = ours.split_off(kept / 2);
        let round = self.round_number;
        #[cfg(test)]
        let hook = self
            .look_ahead_hook
            .lock()
            .ok()
            .and_then(|mut h| h.take())
            .map(|action| -> Box<dyn FnOnce() + Send> {
                Box::new(move || super::fs::test_hooks::on_next_read(action))
            });
        #[cfg(not(test))]
        let hook = None;
        let shared = share(
            todo.len(),
            [ours, theirs],
            |buffers: &mut Vec<SlotBuffer>, i| {
                let (at, f, ino) = todo[i];
                let mut changed = buffers.pop().unwrap_or_default();
                changed.clear();
                let look = look_mapped(f, ino, round, &mut changed);
                (at, Looked { look, changed })
            },
            hook,
        );
        for mut buffers in shared.states {
            pool.append(&mut buffers);
        }
        // A file the helper did not look at (it panicked) is read in the round.
        let mut out: Vec<Option<Looked>> = Vec::new();
        out.resize_with(listed.len(), || None);
        for (_, (at, looked)) in shared.done {
            if let Some(slot) = out.get_mut(at) {
                *slot = Some(looked);
            }
        }
        out
    }

    /// [`DirState::remap`], reporting a file cut under the mapping while it was compared.
    fn remap_reporting(&mut self, name: &str, stats: &Stats) {
        if self.remap(name) {
            shrunk_under_map(&self.dir, name, stats);
        }
    }

    /// After a whole read that left `raw` the file's current content: (re)maps the file when
    /// it is kept open, in the current layout (not a legacy directory), and its mapped bytes
    /// are the same as `raw` now, recording the ctime seen before that check. Returns true
    /// when the file was cut under the mapping while it was compared.
    fn remap(&mut self, name: &str) -> bool {
        let legacy = self.legacy_layout;
        let Some(f) = self.files.get_mut(name) else {
            return false;
        };
        let mut faulted = false;
        let ok = (|| {
            if legacy
                || !f.good
                || f.released
                || f.corrupt.is_some()
                || f.raw.len() <= format::HEADER_LEN
            {
                return None;
            }
            let handle = f.handle.as_ref()?;
            let meta = handle.metadata().ok()?;
            if meta.ino() != f.ino || meta.dev() != f.dev || meta.len() < f.raw.len() as u64 {
                return None;
            }
            let (map, mut slots) = match f.map.take() {
                Some(m) if m.map.len() == f.raw.len() => (m.map, m.slots),
                _ => (Mapping::new(handle, f.raw.len()).ok()?, Vec::new()),
            };
            // A cut in place since the `fstat` (Faulted): not mapped; the next read is whole.
            let same = map
                .guarded(|now| now == f.raw.as_slice())
                .map_err(|Faulted| faulted = true);
            if same != Ok(true) {
                return None;
            }
            slots.clear();
            for &o in &f.offsets {
                slots.push(slot_bytes(&f.raw, o)?);
            }
            Some((
                Mapped { map, slots },
                settled((meta.ctime(), meta.ctime_nsec())),
            ))
        })();
        match ok {
            Some((map, ctime)) => {
                f.map = Some(map);
                f.map_ctime = ctime;
            }
            None => f.map = None,
        }
        faulted
    }

    /// True when `name` belongs to a worker found dead (or stale) last round and is certainly
    /// unchanged, so reading it can be skipped: a dead process's files are final when `/proc`
    /// says it is gone; otherwise the file's inode, mtime and length must not have moved
    /// (and it is read anyway every [`QUIET_REREAD_ROUNDS`] rounds). Without this, thousands
    /// of dead workers' files would be read every second when compaction is off.
    pub(super) fn quiet_unchanged(&mut self, name: &str, pid: &str, ino: u64, gone: bool) -> bool {
        if !self.quiet_in_store(pid) {
            return false;
        }
        let Some(f) = self.files.get_mut(name) else {
            return false;
        };
        if f.ino != ino || !f.good || f.corrupt.is_some() {
            return false;
        }
        if gone {
            return true;
        }
        if self.round_number.is_multiple_of(QUIET_REREAD_ROUNDS) {
            f.quiet_stat = None;
            return false;
        }
        let Ok(meta) = std::fs::metadata(self.dir.join(name)) else {
            return false;
        };
        let now = (meta.modified().unwrap_or(UNIX_EPOCH), meta.len());
        if meta.ino() == ino && f.quiet_stat == Some(now) {
            return true;
        }
        f.quiet_stat = Some(now);
        false
    }

    /// A worker found quiet (dead or stale) last round whose values the store holds: its
    /// files may be skipped unread ([`DirState::quiet_unchanged`]).
    fn quiet_in_store(&self, pid: &str) -> bool {
        self.pids.get(pid).is_some_and(|st| st.quiet && st.in_store)
    }

    /// Reads a dead worker's file once more and keeps the content if it is valid and the same
    /// file (otherwise the last good content stays).
    pub(super) fn reread_final(&mut self, name: &str, stats: &Stats) {
        let Some(f) = self.files.get_mut(name) else {
            return;
        };
        let Ok((ident, Ok(()))) = read_db(
            &self.dir.join(name),
            &mut self.scratch,
            &mut self.legacy_layout,
        ) else {
            return;
        };
        stats.file_reads.inc();
        if ident.dev != f.dev || ident.ino != f.ino {
            return;
        }
        let Ok(offsets) = layout(&self.scratch) else {
            return;
        };
        if f.raw != self.scratch {
            std::mem::swap(&mut f.raw, &mut self.scratch);
            f.map = None;
            f.offsets = offsets;
            f.good = true;
            f.corrupt = None;
        }
        f.mtime = ident.mtime;
    }
}

/// A file's changed value slots: each slot's index in `offsets` and its new bytes.
pub(super) type SlotBuffer = Vec<(u32, [u8; 16])>;

/// Look-ahead buffers of at most this many changed slots are kept for the next round (a
/// relayout's whole file is not).
const LOOK_BUFFER_KEPT: usize = 4096;

/// What a read of a mapped file in place found, before anything was recorded.
#[derive(Debug, Clone, Copy)]
pub(super) enum Look {
    /// Not usable this round (nothing read): the file is read whole.
    NotUsed,
    /// The file was cut in place while being read: it is read whole.
    Faulted,
    /// Read in place: by its value slots alone (`trusted`) or every byte, with the ctime
    /// and mtime its `fstat` gave before the read.
    Seen {
        trusted: bool,
        ctime: (i64, i64),
        mtime: SystemTime,
    },
}

/// A look taken ahead of the round's reads ([`DirState::look_ahead`]), with its changed
/// slots (entry index, new bytes).
#[derive(Debug)]
pub(super) struct Looked {
    look: Look,
    changed: SlotBuffer,
}

/// Reads a mapped file in place, changing nothing: when it is the same inode, not shorter,
/// its `used` unchanged, it is compared with `raw` through the mapping and its changed value
/// slots pushed to `changed`. While its ctime stands since the mapping was last checked
/// whole (and it is not its [`FULL_READ_ROUNDS`] round), only its value slots are compared,
/// unless a cumulative value went down; otherwise every byte. Anything else, or any byte
/// changed outside the value slots, is [`Look::NotUsed`]: the file is read whole through
/// `pread`.
fn look_mapped(f: &FileState, ino: u64, round: u64, changed: &mut SlotBuffer) -> Look {
    let FileState {
        raw,
        offsets,
        map,
        handle,
        ..
    } = f;
    let (Some(map), Some(handle)) = (map.as_ref(), handle.as_ref()) else {
        return Look::NotUsed;
    };
    if f.ino != ino
        || !f.good
        || f.released
        || f.corrupt.is_some()
        || map.map.len() != raw.len()
        || map.slots.len() != offsets.len()
    {
        return Look::NotUsed;
    }
    // Its round to be compared whole (see [`FULL_READ_ROUNDS`]): in place, like a file
    // whose ctime moved.
    let full_round = round.wrapping_add(ino).is_multiple_of(FULL_READ_ROUNDS);
    let Ok(meta) = handle.metadata() else {
        return Look::NotUsed;
    };
    if meta.ino() != f.ino || meta.dev() != f.dev || meta.len() < map.map.len() as u64 {
        return Look::NotUsed;
    }
    let ctime = (meta.ctime(), meta.ctime_nsec());
    let trusted = !full_round && f.map_ctime == Some(ctime);
    let cumulative = f.kind.is_cumulative();
    // The length was checked just above; a cut in place since is caught by the guard.
    let seen = map.map.guarded(|now_bytes| {
        if format::read_used(now_bytes).ok() != Some(raw.len()) {
            // Entries appended (or a damaged header): read whole.
            return None;
        }
        // The changed slots are copied out inside the guard: a fault after this must not
        // leave zeros in `raw`.
        let mut compare_whole = !trusted;
        if trusted {
            // The old values are read as one sequential stream (`slots`), the new ones at
            // their offsets in the mapping.
            for (i, (&o, old)) in offsets.iter().zip(&map.slots).enumerate() {
                let new = slot_bytes(now_bytes, o)?;
                if *old != new {
                    if cumulative && went_down(old, &new) {
                        // prometheus_client never lowers a cumulative value in place (a
                        // process reusing its file continues its values): before the fall is
                        // taken as a reset, the keys are checked to stand, as after a ctime
                        // move. Keys moved in place, values following them, then make the
                        // file read whole, instead of values pinned to the wrong keys and a
                        // false reset retired for good.
                        changed.clear();
                        compare_whole = true;
                        break;
                    }
                    changed.push((i as u32, new));
                }
            }
        }
        if compare_whole {
            // Written to since the last check (the client's own value writes move the
            // ctime too, when they dirty a clean page), checked too soon after a write to
            // tell, or its full round: every byte but the value slots must still be the
            // same, compared in place, and that compare already names the changed slots.
            for i in changed_slots(raw, now_bytes, offsets)? {
                let o = *offsets.get(i as usize)?;
                changed.push((i, slot_bytes(now_bytes, o)?));
            }
        }
        Some(compare_whole)
    });
    match seen {
        Ok(Some(compared_whole)) => Look::Seen {
            trusted: !compared_whole,
            ctime,
            mtime: meta.modified().unwrap_or(UNIX_EPOCH),
        },
        Ok(None) => {
            changed.clear();
            Look::NotUsed
        }
        Err(Faulted) => {
            changed.clear();
            Look::Faulted
        }
    }
}

/// A file's mapping, and the value slots of `raw` (in `offsets` order) it was last seen to
/// hold: the trusted compare reads the old values as one sequential stream instead of one
/// scattered cache line of `raw` per slot (measured ~35% faster on 64,000 slots). Dropped
/// with the mapping whenever `raw` is replaced; `take_changed_slots` keeps both in step.
#[derive(Debug)]
pub(super) struct Mapped {
    pub(super) map: Mapping,
    pub(super) slots: Vec<[u8; 16]>,
}

/// Whether a value slot's value is lower than before (NaN never is).
fn went_down(old: &[u8; 16], new: &[u8; 16]) -> bool {
    match (format::value_at(old, 0), format::value_at(new, 0)) {
        (Some((old, _)), Some((new, _))) => new < old,
        _ => false,
    }
}

/// The 16-byte value slot (value and timestamp) at `offset`, if `bytes` hold it whole.
fn slot_bytes(bytes: &[u8], offset: u32) -> Option<[u8; 16]> {
    bytes.get(offset as usize..)?.first_chunk::<16>().copied()
}

/// Takes value slots that changed in place (`changes`: each slot's index in `offsets` and new
/// bytes; every other byte of the file is the same) into the file's copy (and its mapping's
/// copy of the slots) and its worker's changed set. Under compaction a cumulative value that
/// went down is folded first, from the old copy (a restarted worker reusing its file).
fn take_changed_slots(
    f: &mut FileState,
    pids: &mut FxHashMap<String, PidState>,
    compact: bool,
    folds: &mut Vec<(String, Fold)>,
    changes: &[(u32, [u8; 16])],
    now: SystemTime,
) {
    let kind = f.kind;
    if compact && kind.is_cumulative() {
        // The old value from the mapping's copy of the slots when there is one (read in
        // order), else from `raw`: the two are kept the same.
        let slots = f.map.as_ref().map(|m| m.slots.as_slice());
        let fell: Vec<usize> = changes
            .iter()
            .filter_map(|(i, new)| {
                let o = *f.offsets.get(*i as usize)?;
                let old = match slots.and_then(|s| s.get(*i as usize)) {
                    Some(slot) => *slot,
                    None => slot_bytes(&f.raw, o)?,
                };
                went_down(&old, new).then_some(o as usize)
            })
            .collect();
        if let Some(fold) = reset_fold(kind, &f.raw, fell) {
            folds.push((f.pid.clone(), fold));
        }
    }
    let changed = &mut pids.entry(f.pid.clone()).or_default().changed;
    for (i, new) in changes {
        let Some(&o) = f.offsets.get(*i as usize) else {
            continue;
        };
        let at = o as usize;
        if let Some(dst) = f.raw.get_mut(at..at + 16) {
            dst.copy_from_slice(new);
        }
        if let Some(dst) = f.map.as_mut().and_then(|m| m.slots.get_mut(*i as usize)) {
            *dst = *new;
        }
        changed.push((kind.rank() as u32, *i));
    }
    f.changed = now;
}

/// What a mapped read of a file did.
enum MappedRead {
    /// Its value slots were checked in place (and changes recorded).
    Done,
    /// Not usable this round (nothing done): the file is read whole.
    NotUsed,
    /// The file was cut in place while being read (nothing kept): it is read whole.
    Faulted,
}

/// A file shrank under its mapping while it was read (another program cut it in place): one
/// log line and the self-metric; the caller reads it whole through `pread`.
fn shrunk_under_map(dir: &std::path::Path, name: &str, stats: &Stats) {
    tracing::warn!(
        file = %dir.join(name).display(),
        "a multiprocess file shrank while it was read through its mapping; reading it again"
    );
    stats.mapped_read_faults.inc();
}

/// The value slots whose 16 bytes differ between two contents of the same length, as
/// indexes into `offsets` (the slots' offsets, ascending), or None when any other byte
/// differs: only values may change in place for the slots to still describe the file.
/// (Compares the spans between slots with `memcmp`: measured as fast as one pass over both
/// contents in wide blocks, the compare being bound by memory, not by the calls.)
pub(super) fn changed_slots(old: &[u8], new: &[u8], offsets: &[u32]) -> Option<Vec<u32>> {
    if old.len() != new.len() {
        return None;
    }
    let mut changed = Vec::new();
    let mut from = 0usize;
    for (i, &o) in offsets.iter().enumerate() {
        let o = o as usize;
        let end = o.checked_add(16).filter(|&e| e <= old.len())?;
        if old.get(from..o)? != new.get(from..o)? {
            return None;
        }
        if old[o..end] != new[o..end] {
            changed.push(i as u32);
        }
        from = end;
    }
    (old.get(from..)? == new.get(from..)?).then_some(changed)
}

#[cfg(test)]
mod tests {
    use super::changed_slots;
    use crate::sources::multiprocess::format;

    fn file(values: &[f64]) -> (Vec<u8>, Vec<u32>) {
        let mut out = Vec::new();
        format::start_file(&mut out);
        for (i, v) in values.iter().enumerate() {
            let key = format::encode_key("c", "c_total", &[("i", &i.to_string())], "C.");
            format::encode_entry(&mut out, &key, *v, 0.0);
        }
        assert!(format::finish_file(&mut out));
        let offsets = format::entries(&out)
            .expect("header")
            .map(|e| e.expect("entry").value_offset as u32)
            .collect();
        (out, offsets)
    }

    #[test]
    fn only_value_slots_may_differ() {
        let (old, offsets) = file(&[1.0, 2.0, 3.0]);
        assert_eq!(changed_slots(&old, &old, &offsets), Some(vec![]));
        let (new, _) = file(&[1.0, 5.0, 3.0]);
        assert_eq!(changed_slots(&old, &new, &offsets), Some(vec![1]));
        // A key byte rewritten in place: not a value change.
        let mut garbled = old.clone();
        garbled[13] = 0xff;
        assert_eq!(changed_slots(&old, &garbled, &offsets), None);
        // A header (`used`) rewritten: not a value change either.
        let mut header = old.clone();
        header[0] ^= 1;
        assert_eq!(changed_slots(&old, &header, &offsets), None);
        assert_eq!(changed_slots(&old, &old[..old.len() - 1], &offsets), None);
    }

    #[test]
    fn a_difference_next_to_a_slot_is_not_a_value_change() {
        let (old, offsets) = file(&[1.0, 2.0, 3.0, 4.0]);
        let o = offsets[2] as usize;
        for at in [offsets[0] as usize - 1, o - 1, o + 16] {
            let mut new = old.clone();
            new[at] ^= 0x20;
            assert_eq!(changed_slots(&old, &new, &offsets), None, "byte {at}");
        }
        // The first and last byte of a slot are the slot's (the file's last byte is its last
        // slot's).
        for (at, slot) in [(o, 2), (o + 15, 2), (old.len() - 1, 3)] {
            let mut new = old.clone();
            new[at] ^= 0x20;
            assert_eq!(changed_slots(&old, &new, &offsets), Some(vec![slot]));
        }
        // Every slot changed, and slots that overlap or lie past the end describe nothing.
        let (all, _) = file(&[9.0, 8.0, 7.0, 6.0]);
        assert_eq!(changed_slots(&old, &all, &offsets), Some(vec![0, 1, 2, 3]));
        let overlapping = [offsets[0], offsets[0] + 8];
        assert_eq!(changed_slots(&old, &old, &overlapping), None);
        assert_eq!(changed_slots(&old, &old, &[old.len() as u32 - 8]), None);
        let backwards = [offsets[1], offsets[0]];
        assert_eq!(changed_slots(&old, &old, &backwards), None);
    }
}
