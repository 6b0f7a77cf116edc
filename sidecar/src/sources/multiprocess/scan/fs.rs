//! File-system helpers of a round: listing the directory, reading a worker file up to its
//! `used` size, checking a folded file is still the one recorded, writing the retired tables.
//! No state of their own: everything they know comes in as arguments.

use super::{INITIAL_READ, Ident, MAX_FILE_BYTES, bus_guard};
use crate::sources::multiprocess::format::{self, FileError, FileKind, RETIRED_PID};
use crate::sources::multiprocess::retired::{self, FoldedFile, Table};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Checks a file's layout (entries within `used`, keys UTF-8) and returns the value offsets.
/// Keys are parsed when the worker's plan is built; one that is not valid JSON leaves out
/// only its entry.
pub(super) fn layout(raw: &[u8]) -> Result<Vec<u32>, FileError> {
    let mut offsets = Vec::new();
    for entry in format::entries(raw)? {
        offsets.push(entry?.value_offset as u32);
    }
    Ok(offsets)
}

/// Reads a worker file by path: `used` first, then exactly `used` bytes into `buf`. The
/// outer error is I/O; the inner one says the content is not a valid file (yet, or any more).
pub(super) fn read_db(
    path: &Path,
    buf: &mut Vec<u8>,
    legacy: &mut bool,
) -> io::Result<(Ident, Result<(), FileError>)> {
    let file = std::fs::File::open(path)?;
    let ident = ident_of(&file)?;
    let result = read_content(&file, buf, 0, legacy)?;
    Ok((ident, result))
}

pub(super) fn ident_of(file: &std::fs::File) -> io::Result<Ident> {
    let meta = file.metadata()?;
    Ok(Ident {
        dev: meta.dev(),
        ino: meta.ino(),
        mtime: meta.modified().unwrap_or(UNIX_EPOCH),
    })
}

/// Reads the first `used` bytes of `file` into `buf` (exactly `used` long afterwards). One
/// `pread` when `hint` (the last known `used`) is still right, two when the file grew.
/// `buf` is only grown, never cleared first, so a steady file costs no zero-filling.
pub(super) fn read_content(
    file: &std::fs::File,
    buf: &mut Vec<u8>,
    hint: usize,
    legacy: &mut bool,
) -> io::Result<Result<(), FileError>> {
    let want = if hint >= format::HEADER_LEN {
        hint
    } else {
        INITIAL_READ
    };
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let got = read_at_most(file, &mut buf[..want], 0)?;
    let empty = |buf: &mut Vec<u8>| {
        buf.truncate(0);
        buf.extend_from_slice(&[0u8; format::HEADER_LEN]);
    };
    if got == 0 {
        // Created, not yet sized by the client: empty.
        empty(buf);
        return Ok(Ok(()));
    }
    let used = match format::read_used(&buf[..got]) {
        Ok(u) => u,
        Err(e) => return Ok(Err(e)),
    };
    if used == 0 {
        empty(buf);
        return Ok(Ok(()));
    }
    if used > MAX_FILE_BYTES {
        return Ok(Err(FileError::TooLarge(used)));
    }
    let mut have = got;
    if used > got && got == want {
        if buf.len() < used {
            buf.resize(used, 0);
        }
        have = got + read_at_most(file, &mut buf[got..used], got as u64)?;
    }
    if have < used {
        buf.truncate(have);
        return Ok(Err(FileError::UsedBeyondEnd { used, len: have }));
    }
    buf.truncate(used);
    // Everything past this point (offsets, change detection, folds) sees the current layout.
    if format::normalize_legacy(buf) {
        *legacy = true;
    }
    Ok(Ok(()))
}

/// `pread` until `buf` is full or the file ends; returns the bytes read.
fn read_at_most(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A ctime older than this when it was seen can be trusted to move on the next change: the
/// kernel stamps changes from a clock that lags real time by at most a tick.
const CTIME_SETTLED: std::time::Duration = std::time::Duration::from_millis(50);

/// The same for a ctime with no sub-second part: the file system may keep whole seconds
/// (ext4 with 128-byte inodes, some NFS servers; FAT keeps two), so a change in the same
/// second or two would get the same ctime.
const COARSE_CTIME_SETTLED: std::time::Duration = std::time::Duration::from_millis(2050);

/// `ctime` if it is old enough that a later change is certain to get a different one (a
/// write in the same clock tick as the check would not); None otherwise.
pub(super) fn settled(ctime: (i64, i64)) -> Option<(i64, i64)> {
    settled_at(ctime, SystemTime::now())
}

/// [`settled`] as of `now`.
fn settled_at(ctime: (i64, i64), now: SystemTime) -> Option<(i64, i64)> {
    let (secs, nanos) = ctime;
    let stamp = UNIX_EPOCH.checked_add(std::time::Duration::new(
        u64::try_from(secs).ok()?,
        u32::try_from(nanos).ok()?,
    ))?;
    let age = now.duration_since(stamp).ok()?;
    let needed = if nanos == 0 {
        COARSE_CTIME_SETTLED
    } else {
        CTIME_SETTLED
    };
    (age >= needed).then_some(ctime)
}

/// What says a directory's entries are the ones last listed: creating, removing or renaming
/// an entry moves the directory's ctime, and a replaced directory has another inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DirStamp {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl DirStamp {
    /// The directory's stamp now, if its ctime is [`settled`]: only then does any later
    /// change give another stamp. None when it cannot be read or is too recent to tell.
    pub(super) fn settled(dir: &Path) -> Option<DirStamp> {
        let meta = std::fs::metadata(dir).ok()?;
        Some(DirStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: settled((meta.ctime(), meta.ctime_nsec()))?,
        })
    }
}

/// The directory's `.db` files.
pub(super) struct Listing {
    /// In directory order.
    pub files: Vec<ListedFile>,
    /// `.db` files that are not prometheus_client files (at most [`MAX_UNKNOWN_LISTED`]).
    pub unknown: Vec<String>,
    /// Worker files over the cap: not listed, never read.
    pub skipped: usize,
}

/// A prometheus_client file in a listing.
pub(super) struct ListedFile {
    pub name: String,
    pub kind: FileKind,
    pub pid: String,
    pub ino: u64,
}

/// Names of unknown `.db` files remembered per listing (they are only logged).
const MAX_UNKNOWN_LISTED: usize = 64;

/// Lists the directory: the retired files and the worker files `known` says are tracked
/// always, other worker files while fewer than `new_allowed` have been taken.
pub(super) fn list_dir(
    dir: &Path,
    new_allowed: usize,
    known: &dyn Fn(&str) -> bool,
) -> io::Result<Listing> {
    let mut files = Vec::new();
    let mut unknown = Vec::new();
    let mut new = 0usize;
    let mut skipped = 0usize;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.ends_with(".db") || name.starts_with('.') {
            continue;
        }
        match format::parse_file_name(&name) {
            Some(n) => {
                if n.pid != RETIRED_PID && !known(&name) {
                    if new >= new_allowed {
                        skipped += 1;
                        continue;
                    }
                    new += 1;
                }
                let (kind, pid) = (n.kind, n.pid.to_string());
                files.push(ListedFile {
                    name,
                    kind,
                    pid,
                    ino: entry.ino(),
                });
            }
            None if unknown.len() < MAX_UNKNOWN_LISTED => unknown.push(name),
            None => {}
        }
    }
    Ok(Listing {
        files,
        unknown,
        skipped,
    })
}

/// True when `rec` describes the file now in the directory (same inode, same content).
pub(super) fn leftover_matches(dir: &Path, rec: &FoldedFile) -> bool {
    let path = dir.join(&rec.file);
    let Ok(meta) = std::fs::metadata(&path) else {
        return false;
    };
    if meta.dev() != rec.dev || meta.ino() != rec.ino {
        return false;
    }
    if rec.len == 0 {
        return true;
    }
    let mut buf = Vec::new();
    match read_db(&path, &mut buf, &mut false) {
        Ok((_, Ok(()))) => buf.len() as u64 == rec.len && retired::fnv1a(&buf) == rec.hash,
        _ => false,
    }
}

/// Writes the staged tables atomically, then makes the renames durable.
pub(super) fn write_tables(
    dir: &Path,
    staged: &BTreeMap<FileKind, Table>,
    layout: format::Layout,
) -> io::Result<()> {
    for (kind, table) in staged {
        let data = table
            .encode(layout)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        retired::write_atomic(dir, &retired::file_name(*kind), &data)?;
    }
    retired::sync_dir(dir)
}

/// A read-only shared mapping of the first `len` bytes of a worker file: the page cache the
/// client writes through its own mapping, read in place. A steady file is then checked by
/// reading only its value slots (no copy of the whole `used` range, no compare of keys).
///
/// Reading a mapping past the end of a file that shrank raises SIGBUS. Every read is preceded
/// by an `fstat` of the same inode showing it at least `len` long (the client only ever grows
/// its files), but another program may still cut the file in place right after: the range is
/// registered with the [`bus_guard`], which turns such a fault into zeros, and every read goes
/// through [`Mapping::guarded`], which reports it.
pub(super) struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    /// Dropped (unregistered) before the range is unmapped.
    guard: Option<bus_guard::Registration>,
}

/// A read of a mapping met the end of its file (the file shrank under it): what was read is
/// not the file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Faulted;

// The mapping is read-only and owned: moving it to another thread is sound.
unsafe impl Send for Mapping {}
// Only ever read (through `&self`, as `&[u8]`), and a fault on any thread is absorbed by the
// guard and reported to that thread's reader: sharing it between threads is sound.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes (`len > 0`) of `file`, guarded against SIGBUS (an error
    /// when the guard cannot take it: the file is then read through `pread`).
    pub(super) fn new(file: &std::fs::File, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let ptr = map_read_only(file, len)?;
        let mut map = Mapping {
            ptr,
            len,
            guard: None,
        };
        // Dropping `map` on failure unmaps it.
        map.guard = Some(
            bus_guard::register(ptr.as_ptr() as usize, len)
                .ok_or_else(|| io::Error::other("no SIGBUS guard slot for a mapping"))?,
        );
        Ok(map)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Runs `read` over the mapped bytes; [`Faulted`] when a page of the mapping was past the
    /// end of the file meanwhile (it read zeros there: the result must be thrown away). The
    /// caller checks (`fstat`)
    /// that the file is at least [`Mapping::len`] long first, so a fault is only a race.
    pub(super) fn guarded<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R, Faulted> {
        let before = bus_guard::faults();
        #[cfg(test)]
        test_hooks::before_read();
        let out = read(self.bytes());
        if bus_guard::faults() == before {
            Ok(out)
        } else {
            Err(Faulted)
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop` (a page past the end of the
        // file is replaced by zeros by the registered SIGBUS guard, never left unreadable).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Tests: the bytes without the fault check.
    #[cfg(test)]
    pub(super) fn bytes_unchecked_for_tests(&self) -> &[u8] {
        self.bytes()
    }
}

/// A fresh read-only shared mapping of the first `len` bytes of `file`, unguarded: only
/// [`Mapping::new`] (and the guard's tests) call it.
pub(super) fn map_read_only(file: &std::fs::File, len: usize) -> io::Result<std::ptr::NonNull<u8>> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh read-only mapping of a file descriptor the caller owns; the kernel picks
    // the address; failure is reported as MAP_FAILED and checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(ptr.cast::<u8>())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Unregistered first: the range must not be claimed by the handler once unmapped.
        self.guard = None;
        // SAFETY: unmaps exactly what `new` mapped, once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len).finish()
    }
}

/// Tests: an action run inside [`Mapping::guarded`] right before the bytes are read (after
/// the caller's `fstat`), to cut a file at the worst moment deterministically.
#[cfg(test)]
pub(super) mod test_hooks {
    use std::cell::RefCell;

    thread_local! {
        static BEFORE_READ: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    }

    /// Runs `action` at the next guarded read on this thread (once).
    pub(in crate::sources::multiprocess::scan) fn on_next_read(action: impl FnOnce() + 'static) {
        BEFORE_READ.with(|h| *h.borrow_mut() = Some(Box::new(action)));
    }

    /// Drops an action that did not run, so it cannot fire in a later job of a thread that is
    /// kept (the look-ahead thread).
    pub(in crate::sources::multiprocess::scan) fn clear() {
        BEFORE_READ.with(|h| h.borrow_mut().take());
    }

    pub(super) fn before_read() {
        if let Some(action) = BEFORE_READ.with(|h| h.borrow_mut().take()) {
            action();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::settled_at;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_ctime_is_trusted_once_no_later_change_can_share_it() {
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        let fine = (1_000, 123_456_789);
        assert_eq!(settled_at(fine, at(1_000, 143_456_789)), None, "20 ms old");
        assert_eq!(
            settled_at(fine, at(1_000, 183_456_789)),
            Some(fine),
            "60 ms old"
        );
        // Whole seconds: the file system may not keep more, so the same second (or two, for
        // FAT) could give a later change the same ctime.
        let coarse = (1_000, 0);
        assert_eq!(settled_at(coarse, at(1_000, 900_000_000)), None);
        assert_eq!(settled_at(coarse, at(1_001, 500_000_000)), None);
        assert_eq!(settled_at(coarse, at(1_002, 100_000_000)), Some(coarse));
        // A ctime in the future (clock stepped back) or out of range is never trusted.
        assert_eq!(settled_at(fine, at(999, 0)), None);
        assert_eq!(settled_at((-1, 0), at(1_000, 0)), None);
        assert_eq!(settled_at((1_000, -1), at(2_000, 0)), None);
    }
}
