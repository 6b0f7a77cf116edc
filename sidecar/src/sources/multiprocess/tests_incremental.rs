//! The incremental scan path against a full re-read: a reader that has followed a directory
//! through a sequence of writes must show exactly what a fresh reader shows for the same
//! files (with each unreadable file replaced by its last good content, which the reader
//! keeps). Values are whole numbers, so sums do not depend on their order.

use super::format::{self, FileKind};
use super::tests::scanning::{scratch, start_with};
use super::{LivenessPolicy, Reader};
use crate::app::App;
use crate::expose::{Format, render};
use monasca_config::GaugeMode;
use proptest::prelude::*;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Size the client preallocates a file to; `used` stays below it.
const FILE_SIZE: usize = 1 << 16;

/// One worker file as the test writes it.
#[derive(Clone, Debug)]
struct ModelFile {
    name: String,
    kind: FileKind,
    /// (key, value), in file order.
    entries: Vec<(String, f64)>,
    /// The file on disk is unreadable; the reader shows `entries` (its last good content).
    garbled: bool,
}

impl ModelFile {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        format::start_file(&mut out);
        for (key, value) in &self.entries {
            format::encode_entry(&mut out, key, *value, 0.0);
        }
        assert!(format::finish_file(&mut out));
        out
    }

    /// The next key this file would append: a new label value of its series kind.
    fn new_key(&self, n: u8) -> Vec<String> {
        let v = format!("n{n}");
        match self.kind {
            FileKind::Counter => vec![format::encode_key(
                "req",
                "req_total",
                &[("path", &v)],
                "Requests.",
            )],
            FileKind::Histogram => {
                let mut keys: Vec<String> = ["0.5", "1.0", "+Inf"]
                    .iter()
                    .map(|le| {
                        format::encode_key("lat", "lat_bucket", &[("le", le), ("path", &v)], "L.")
                    })
                    .collect();
                keys.push(format::encode_key("lat", "lat_sum", &[("path", &v)], "L."));
                keys
            }
            _ => vec![format::encode_key(
                &self.gauge_name(),
                &self.gauge_name(),
                &[("slot", &v)],
                "G.",
            )],
        }
    }

    fn gauge_name(&self) -> String {
        match self.kind {
            FileKind::Gauge(mode) => format!("g_{}", mode.as_str()),
            _ => String::new(),
        }
    }
}

/// What the test does between two scans.
#[derive(Clone, Debug)]
enum Op {
    /// Values written in place (as the client's mmap writes do): `count` entries from `start`.
    Set {
        file: usize,
        start: usize,
        count: usize,
        value: u16,
    },
    /// A new series appended to a live file (same inode, `used` grows).
    Append { file: usize, label: u8 },
    /// The file replaced by another with the keys in another order (a new inode: a new
    /// process under the same pid), or rewritten in place with the same size.
    Relayout { file: usize, in_place: bool },
    /// The file made unreadable in place.
    Garble { file: usize, how: u8 },
    /// Values written through a shared mapping kept open between steps, as the client
    /// writes them: a page already dirty takes the write without moving the file's ctime.
    MapSet {
        file: usize,
        start: usize,
        count: usize,
        value: u16,
    },
    /// The file deleted, then created again under the same name (a new process, same pid).
    Recreate { file: usize },
    /// Time passes, so the reader's next check may trust an unchanged ctime and read only
    /// the value slots of a mapped file.
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..12usize, 0..40usize, 1..40usize, 0..1000u16)
            .prop_map(|(file, start, count, value)| Op::Set { file, start, count, value }),
        2 => (0..12usize, 0..30u8).prop_map(|(file, label)| Op::Append { file, label }),
        1 => (0..12usize, any::<bool>()).prop_map(|(file, in_place)| Op::Relayout { file, in_place }),
        1 => (0..12usize, 0..4u8).prop_map(|(file, how)| Op::Garble { file, how }),
        4 => (0..12usize, 0..40usize, 1..40usize, 0..1000u16)
            .prop_map(|(file, start, count, value)| Op::MapSet { file, start, count, value }),
        1 => (0..12usize).prop_map(|file| Op::Recreate { file }),
        2 => Just(Op::Settle),
    ]
}

/// Three workers, each with a counter, a histogram and two gauge files (`max`, `livesum`),
/// a few series each.
fn initial_files() -> Vec<ModelFile> {
    let mut files = Vec::new();
    for pid in ["101", "102", "103"] {
        for kind in [
            FileKind::Counter,
            FileKind::Histogram,
            FileKind::Gauge(GaugeMode::Max),
            FileKind::Gauge(GaugeMode::Livesum),
        ] {
            let mut f = ModelFile {
                name: kind.file_name(pid),
                kind,
                entries: Vec::new(),
                garbled: false,
            };
            for n in 0..4 {
                for key in f.new_key(n) {
                    f.entries.push((key, f64::from(n) + 1.0));
                }
            }
            files.push(f);
        }
    }
    files
}

/// Writes the file's content over the existing file from offset 0, as mmap writes land.
fn write_in_place(dir: &Path, f: &ModelFile) {
    let path = dir.join(&f.name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("open");
    file.set_len(FILE_SIZE as u64).expect("size");
    file.write_all_at(&f.encode(), 0).expect("write");
}

/// Replaces the file with a new one (new inode).
fn write_new(dir: &Path, f: &ModelFile) {
    let tmp = dir.join(".tmp-rewrite");
    let mut bytes = f.encode();
    bytes.resize(FILE_SIZE, 0);
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dir.join(&f.name)).expect("rename");
}

/// Makes the file unreadable in place, each way the format can fail.
fn garble(dir: &Path, f: &ModelFile, how: u8) {
    let mut bytes = f.encode();
    let used = bytes.len();
    match how {
        // `used` ends inside the last entry.
        0 => bytes[..4].copy_from_slice(&((used - 3) as i32).to_ne_bytes()),
        // `used` beyond the end of the file.
        1 => bytes[..4].copy_from_slice(&((FILE_SIZE + 8) as i32).to_ne_bytes()),
        // A negative key length in the first entry.
        2 => bytes[8..12].copy_from_slice(&(-5i32).to_ne_bytes()),
        // A key that is not UTF-8, same size.
        _ => bytes[13] = 0xff,
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(&f.name))
        .expect("open");
    file.write_all_at(&bytes, 0).expect("write");
}

/// A writable shared mapping of a whole test file: the client's way of writing values.
struct ClientMap {
    ptr: *mut u8,
}

impl ClientMap {
    fn open(path: &Path) -> ClientMap {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open");
        // SAFETY: a fresh shared mapping of FILE_SIZE bytes of a file of that size, unmapped
        // in `drop`; the tests never shrink a file while it is mapped.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                FILE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        ClientMap { ptr: ptr.cast() }
    }

    fn write(&mut self, bytes: &[u8]) {
        assert!(bytes.len() <= FILE_SIZE);
        // SAFETY: within the FILE_SIZE bytes mapped writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr, bytes.len()) };
    }
}

impl Drop for ClientMap {
    fn drop(&mut self) {
        // SAFETY: unmaps what `open` mapped.
        unsafe { libc::munmap(self.ptr.cast(), FILE_SIZE) };
    }
}

/// Longer than the reader waits before it trusts a ctime (see `scan::read::settled`).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(120);

fn set_values(f: &mut ModelFile, start: usize, count: usize, value: u16) {
    let n = f.entries.len();
    for i in start..start + count {
        f.entries[i % n].1 = f64::from(value) + (i % 7) as f64;
    }
    f.garbled = false;
}

/// Applies `op`; `maps` are the client mappings kept open, per file (dropped when the file
/// is replaced).
fn apply(dir: &Path, files: &mut [ModelFile], maps: &mut [Option<ClientMap>], op: &Op) {
    match *op {
        Op::Set {
            file,
            start,
            count,
            value,
        }
        | Op::MapSet {
            file,
            start,
            count,
            value,
        } => {
            let f = &mut files[file];
            set_values(f, start, count, value);
            if matches!(op, Op::MapSet { .. }) {
                maps[file]
                    .get_or_insert_with(|| ClientMap::open(&dir.join(&f.name)))
                    .write(&f.encode());
            } else {
                write_in_place(dir, f);
            }
        }
        Op::Recreate { file } => {
            let f = &mut files[file];
            maps[file] = None;
            std::fs::remove_file(dir.join(&f.name)).expect("remove");
            f.entries.rotate_left(1);
            f.garbled = false;
            write_in_place(dir, f);
        }
        Op::Settle => std::thread::sleep(SETTLE),
        Op::Append { file, label } => {
            let f = &mut files[file];
            for key in f.new_key(label) {
                if !f.entries.iter().any(|(k, _)| *k == key) {
                    f.entries.push((key, f64::from(label)));
                }
            }
            f.garbled = false;
            write_in_place(dir, f);
        }
        Op::Relayout { file, in_place } => {
            let f = &mut files[file];
            f.entries.reverse();
            f.garbled = false;
            if in_place {
                write_in_place(dir, f);
            } else {
                maps[file] = None;
                write_new(dir, f);
            }
        }
        Op::Garble { file, how } => {
            let f = &mut files[file];
            // A file that was never read cannot be garbled "after" a good read.
            garble(dir, f, how);
            f.garbled = true;
        }
    }
}

/// A reader that follows file changes only (nothing is ever deleted) and never finds a
/// worker stale within a test.
fn reader_on(dir: &Path) -> (Arc<App>, Reader) {
    start_with(
        dir,
        "multiprocessLiveness: mtime\nstaleAfter: 1h\n",
        LivenessPolicy::Mtime,
    )
}

/// The exposition's lines, sorted (series order within a family is the store's insertion
/// order, which differs between a reader that followed the writes and a fresh one).
fn lines(app: &App) -> Vec<String> {
    let mut out = Vec::new();
    render(
        &app.store.read(),
        Format::Text,
        app.now().mono,
        &[],
        &mut out,
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// What a fresh reader shows for the directory, with unreadable files replaced by their last
/// good content.
fn full_read(dir: &Path, fresh: &Path, files: &[ModelFile]) -> Vec<String> {
    let _ = std::fs::remove_dir_all(fresh);
    std::fs::create_dir_all(fresh).expect("mkdir");
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match files.iter().find(|f| f.name == name) {
            Some(f) if f.garbled => write_new(fresh, f),
            _ => {
                std::fs::copy(entry.path(), fresh.join(&name)).expect("copy");
            }
        }
    }
    let (app, mut reader) = reader_on(fresh);
    reader.scan(&app);
    lines(&app)
}

fn corrupt_count(reader: &Reader) -> u64 {
    super::format::FileError::REASONS
        .iter()
        .map(|r| reader.stats.corrupt.get_or_create(&[("reason", r)]).get())
        .sum()
}

/// `look_ahead`: the mapped files are looked at on two threads every round, however few.
fn run(ops: &[Op], look_ahead: bool) -> Result<(), TestCaseError> {
    let dir = scratch("live");
    let fresh = scratch("fresh");
    let mut files = initial_files();
    for f in &files {
        write_new(&dir, f);
    }
    let (app, mut reader) = reader_on(&dir);
    reader.scan(&app);
    if look_ahead && let Some(state) = reader.dir_state() {
        state.force_look_ahead();
    }
    let mut maps: Vec<Option<ClientMap>> = files.iter().map(|_| None).collect();
    for (step, op) in ops.iter().enumerate() {
        let corrupt_before = corrupt_count(&reader);
        let was_garbled = match op {
            Op::Garble { file, .. } => files[*file].garbled,
            _ => false,
        };
        apply(&dir, &mut files, &mut maps, op);
        reader.scan(&app);
        if matches!(op, Op::Garble { .. }) && !was_garbled {
            prop_assert!(
                corrupt_count(&reader) > corrupt_before,
                "step {step}: {op:?} was not reported as corrupt"
            );
        }
        let expected = full_read(&dir, &fresh, &files);
        let seen = lines(&app);
        prop_assert_eq!(&seen, &expected, "step {}: after {:?}", step, op);
    }
    if look_ahead {
        // The first scan mapped all twelve files; one op changes at most one of them.
        let looked = reader.dir_state().map_or(0, |d| d.looked_ahead);
        prop_assert!(looked > 0, "no file was looked at on the second thread");
    }
    drop(maps);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh);
    Ok(())
}

#[test]
fn incremental_scans_equal_a_full_re_read() {
    proptest!(ProptestConfig::with_cases(64), |(
        ops in proptest::collection::vec(op(), 1..24),
        look_ahead in any::<bool>(),
    )| {
        run(&ops, look_ahead)?;
    });
}

#[test]
fn a_value_change_a_new_key_a_relayout_and_a_garbled_file() {
    let ops = [
        Op::Set {
            file: 0,
            start: 1,
            count: 1,
            value: 50,
        },
        Op::Append { file: 0, label: 9 },
        Op::Set {
            file: 0,
            start: 0,
            count: 40,
            value: 60,
        },
        Op::Relayout {
            file: 4,
            in_place: true,
        },
        Op::Relayout {
            file: 5,
            in_place: false,
        },
        Op::Garble { file: 8, how: 3 },
        Op::Set {
            file: 9,
            start: 0,
            count: 2,
            value: 7,
        },
        Op::Garble { file: 1, how: 0 },
        Op::Append { file: 1, label: 12 },
    ];
    for look_ahead in [false, true] {
        if let Err(e) = run(&ops, look_ahead) {
            panic!("look_ahead {look_ahead}: {e}");
        }
    }
}

/// Every change the mapped fast path could miss, each after the reader came to trust the
/// file's ctime: values through the client's mapping (read by their slots alone), values
/// and a same-size relayout written in place, an append, a replacement with the same size,
/// a delete and re-create, a garbled file.
#[test]
fn changes_after_the_ctime_is_trusted_are_all_seen() {
    let settle = Op::Settle;
    let map_set = |value| Op::MapSet {
        file: 0,
        start: 0,
        count: 3,
        value,
    };
    let ops = [
        map_set(10),
        settle.clone(),
        map_set(11),
        map_set(12),
        map_set(13),
        map_set(14),
        settle.clone(),
        Op::Set {
            file: 0,
            start: 2,
            count: 1,
            value: 20,
        },
        settle.clone(),
        Op::Relayout {
            file: 0,
            in_place: true,
        },
        settle.clone(),
        Op::Append { file: 1, label: 9 },
        settle.clone(),
        Op::Relayout {
            file: 2,
            in_place: false,
        },
        settle.clone(),
        Op::Recreate { file: 3 },
        settle.clone(),
        Op::Garble { file: 5, how: 3 },
        settle,
        map_set(15),
    ];
    for look_ahead in [false, true] {
        if let Err(e) = run(&ops, look_ahead) {
            panic!("look_ahead {look_ahead}: {e}");
        }
    }
}

/// The fast paths are taken: values written through the client's mapping into pages it
/// already dirtied (no ctime change) are read by their slots alone, each is seen, and the
/// changed values are set through the store positions held for them.
#[test]
fn a_trusted_file_is_read_by_its_value_slots() {
    trusted_file_read_by_its_value_slots("slots", false);
}

/// The same, each round's mapped files looked at on two threads: the same reads, the same
/// values, the same held updates, and every file's look taken ahead.
#[test]
fn a_trusted_file_is_read_by_its_value_slots_on_two_threads() {
    trusted_file_read_by_its_value_slots("slots-two", true);
}

fn trusted_file_read_by_its_value_slots(name: &str, look_ahead: bool) {
    let mut t = Trusted::new(name);
    if look_ahead && let Some(state) = t.reader.dir_state() {
        state.force_look_ahead();
    }
    let looked = |r: &mut Reader| r.dir_state().map_or(0, |d| d.looked_ahead);
    let slot_reads = |r: &mut Reader| r.dir_state().map_or(0, |d| d.slot_only_reads);
    let held = |r: &mut Reader| r.dir_state().map_or(0, |d| d.held_updates);
    let before = slot_reads(&mut t.reader);
    let held_before = held(&mut t.reader);
    for value in 2..6 {
        apply(&t.dir, &mut t.files, &mut t.maps, &Trusted::map_set(value));
        t.reader.scan(&t.app);
        let fresh_view = full_read(&t.dir, &t.fresh, &t.files);
        assert_eq!(lines(&t.app), fresh_view, "after writing {value}");
    }
    // At most one of four consecutive rounds reads a file whole (FULL_READ_ROUNDS).
    assert!(
        slot_reads(&mut t.reader) >= before + 3 * 12,
        "the value slots were not read alone"
    );
    // Two changed series of sixteen: written through their held store positions.
    assert_eq!(
        held(&mut t.reader),
        held_before + 4,
        "the changed values did not go through the held positions"
    );
    // Twelve mapped files, four rounds.
    let expected_looks = if look_ahead { 4 * 12 } else { 0 };
    assert_eq!(looked(&mut t.reader), expected_looks);
}

/// Values set back and forth through the mapping, back to the ones the file was mapped with
/// (1): each trusted round compares with the values the last round took.
#[test]
fn a_value_set_back_through_the_mapping_is_seen() {
    let mut t = Trusted::new("set-back");
    for value in [2, 1, 2, 1] {
        apply(&t.dir, &mut t.files, &mut t.maps, &Trusted::map_set(value));
        t.reader.scan(&t.app);
        let fresh_view = full_read(&t.dir, &t.fresh, &t.files);
        assert_eq!(lines(&t.app), fresh_view, "after writing {value}");
    }
}

/// A directory of [`initial_files`] followed by a reader, with file 0's first values written
/// through a client mapping kept open (its pages dirty), then the ctime let settle and the
/// file checked again, so the reader trusts it: its value slots alone are read from now on.
struct Trusted {
    dir: std::path::PathBuf,
    fresh: std::path::PathBuf,
    files: Vec<ModelFile>,
    maps: Vec<Option<ClientMap>>,
    app: Arc<App>,
    reader: Reader,
}

impl Trusted {
    fn new(name: &str) -> Trusted {
        let dir = scratch(name);
        let fresh = scratch(&format!("{name}-fresh"));
        let mut files = initial_files();
        for f in &files {
            write_new(&dir, f);
        }
        let mut maps: Vec<Option<ClientMap>> = files.iter().map(|_| None).collect();
        let (app, mut reader) = reader_on(&dir);
        reader.scan(&app);
        apply(&dir, &mut files, &mut maps, &Trusted::map_set(1));
        std::thread::sleep(SETTLE);
        reader.scan(&app);
        Trusted {
            dir,
            fresh,
            files,
            maps,
            app,
            reader,
        }
    }

    /// File 0's first two values, through its client mapping.
    fn map_set(value: u16) -> Op {
        Op::MapSet {
            file: 0,
            start: 0,
            count: 2,
            value,
        }
    }
}

impl Drop for Trusted {
    fn drop(&mut self) {
        self.maps.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.fresh);
    }
}

/// A steady directory is never copied through `pread`: a settled file is checked by its
/// value slots, and at its full round (once every `FULL_READ_ROUNDS`) compared whole with the
/// last read in place, through its mapping.
#[test]
fn an_unchanged_mapped_file_is_compared_in_place_at_its_full_round() {
    let dir = scratch("full-round");
    let files = initial_files();
    for f in &files {
        write_new(&dir, f);
    }
    let (app, mut reader) = reader_on(&dir);
    reader.scan(&app);
    std::thread::sleep(SETTLE);
    reader.scan(&app);
    let counts = |r: &mut Reader| {
        let d = r.dir_state().expect("a directory is read");
        (d.slot_only_reads, d.mapped_whole_compares)
    };
    let reads = |r: &Reader| r.stats.file_reads.get();
    let shown = lines(&app);
    let (slots_before, whole_before) = counts(&mut reader);
    let reads_before = reads(&reader);
    let rounds = 2 * super::scan::FULL_READ_ROUNDS;
    for _ in 0..rounds {
        reader.scan(&app);
    }
    let (slots, whole) = counts(&mut reader);
    let files_read = reads(&reader) - reads_before;
    assert_eq!(files_read, rounds * files.len() as u64);
    // Every read went through the mapping, and each file had its full rounds.
    assert_eq!((slots - slots_before) + (whole - whole_before), files_read);
    assert!(
        whole - whole_before >= 2 * files.len() as u64,
        "the full rounds did not compare through the mapping"
    );
    assert_eq!(lines(&app), shown);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key garbled in place through a writer's mapping of pages already dirtied (the ctime
/// need not move, so the value slots alone would not see it) is found by the full round's
/// in-place compare: within `FULL_READ_ROUNDS` scans it is reported corrupt, and the reader
/// shows what a fresh reader shows with the last good content.
#[test]
fn a_key_garbled_through_the_mapping_is_seen_by_the_full_round() {
    let mut t = Trusted::new("mapped-keys");
    // The first key's first byte after `{"` no longer UTF-8; same size, values untouched.
    let mut bytes = t.files[0].encode();
    bytes[13] = 0xff;
    t.maps[0].as_mut().expect("mapped by MapSet").write(&bytes);
    t.files[0].garbled = true;
    let corrupt_before = corrupt_count(&t.reader);
    let mut seen_after = None;
    for round in 1..=super::scan::FULL_READ_ROUNDS {
        t.reader.scan(&t.app);
        if corrupt_count(&t.reader) > corrupt_before {
            seen_after = Some(round);
            break;
        }
    }
    assert!(seen_after.is_some(), "the garbled key was never seen");
    assert_eq!(lines(&t.app), full_read(&t.dir, &t.fresh, &t.files));
}

/// Two counter keys of the same length swapped in place through a writer's mapping of pages
/// already dirtied, each value moving with its key (the ctime need not move): one value slot
/// now holds a lower value. The reader checks the keys before it takes that fall as a reset,
/// so it shows at once, and from then on, exactly what a fresh reader shows (no value pinned
/// to the wrong key, no false reset retired for good).
#[test]
fn keys_swapped_through_the_mapping_are_seen_at_the_first_fall() {
    let mut t = Trusted::new("mapped-swap");
    assert_eq!(t.files[0].kind, FileKind::Counter);
    let last = t.files[0].entries.len() - 1;
    t.files[0].entries.swap(0, last);
    let (low, high) = (t.files[0].entries[last].1, t.files[0].entries[0].1);
    assert!(low < high, "the first slot must now hold the higher value");
    let bytes = t.files[0].encode();
    t.maps[0].as_mut().expect("mapped by MapSet").write(&bytes);
    for round in 0..=super::scan::FULL_READ_ROUNDS {
        t.reader.scan(&t.app);
        let fresh_view = full_read(&t.dir, &t.fresh, &t.files);
        assert_eq!(lines(&t.app), fresh_view, "after {round} more scans");
    }
}

/// Truncates `path` to nothing in place (the inode stays), as `> file` does.
fn cut_in_place(path: std::path::PathBuf) -> impl FnOnce() + Send + 'static {
    move || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .expect("truncate in place");
    }
}

/// A file cut in place by another program right after the reader's `fstat` (the worst
/// moment, set up through the test hook) faults under the mapping: the process lives on, the
/// read is thrown away and counted, and the file is read again through `pread`, so the
/// reader shows what a fresh reader shows; a rewrite afterwards is followed as usual.
/// (The guard's own tests, with the page contents and the fault that is not ours, are in
/// `scan::bus_guard`.)
#[test]
fn a_file_cut_under_its_mapping_is_read_again_whole() {
    let dir = scratch("cut");
    let fresh = scratch("cut-fresh");
    let files = vec![initial_files().remove(0)];
    write_new(&dir, &files[0]);
    let (app, mut reader) = reader_on(&dir);
    // The first scan reads the file whole and maps it.
    reader.scan(&app);
    let before = full_read(&dir, &fresh, &files);
    assert_eq!(lines(&app), before);
    let faults = |r: &Reader| r.stats.mapped_read_faults.get();
    let path = dir.join(&files[0].name);
    super::scan::on_next_mapped_read(cut_in_place(path.clone()));
    // Whether this round checks the mapping's slots or reads the file whole and compares
    // the mapping to it, the hook cuts the file between the fstat and the read.
    reader.scan(&app);
    assert_eq!(faults(&reader), 1, "the cut was not caught by the guard");
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        0,
        "the hook ran"
    );
    assert_eq!(lines(&app), full_read(&dir, &fresh, &files));
    reader.scan(&app);
    assert_eq!(lines(&app), full_read(&dir, &fresh, &files));
    // Written again by the client: followed as before (its series back; a counter that
    // vanished and came back is a reset, so its total is kept on top).
    write_in_place(&dir, &files[0]);
    reader.scan(&app);
    reader.scan(&app);
    let series = |l: &[String]| l.iter().filter(|l| !l.starts_with('#')).count();
    assert_eq!(series(&lines(&app)), series(&before));
    assert_eq!(faults(&reader), 1);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh);
}

/// The same cut, made under the look-ahead thread's read (each round's mapped files looked at
/// on two threads): the fault is caught on that thread, that file alone is read again whole,
/// and the other file's look, taken meanwhile on the scrape's thread, is kept.
#[test]
fn a_file_cut_under_the_look_ahead_threads_read_is_read_again_whole() {
    let dir = scratch("cut-two");
    let fresh = scratch("cut-two-fresh");
    let files: Vec<ModelFile> = initial_files().into_iter().take(2).collect();
    for f in &files {
        write_new(&dir, f);
    }
    let (app, mut reader) = reader_on(&dir);
    reader.scan(&app);
    assert_eq!(lines(&app), full_read(&dir, &fresh, &files));
    let faults = |r: &Reader| r.stats.mapped_read_faults.get();
    let looked = |r: &mut Reader| r.dir_state().map_or(0, |d| d.looked_ahead);
    // The second thread takes the first listed files up to half the slots: of two files of
    // the same size, the first the directory lists.
    let first = std::fs::read_dir(&dir)
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "db"))
        .expect("a file");
    let Some(state) = reader.dir_state() else {
        panic!("no directory state after a scan");
    };
    state.force_look_ahead();
    state.on_next_look_ahead_read(cut_in_place(first.clone()));
    reader.scan(&app);
    assert_eq!(
        std::fs::metadata(&first).expect("stat").len(),
        0,
        "the hook ran"
    );
    assert_eq!(
        faults(&reader),
        1,
        "the cut was not caught on the look-ahead thread"
    );
    assert_eq!(looked(&mut reader), 2, "both files were looked at ahead");
    assert_eq!(lines(&app), full_read(&dir, &fresh, &files));
    reader.scan(&app);
    assert_eq!(lines(&app), full_read(&dir, &fresh, &files));
    assert_eq!(faults(&reader), 1);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh);
}
