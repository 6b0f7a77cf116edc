//! A SIGBUS guard for the mapped worker files (the technique of the JVM, Go's
//! `debug.SetPanicOnFault` and Chromium): reading a mapping past the end of a file that another
//! program shrank in place (`truncate`, `cp` over it, `> file`) makes the kernel send SIGBUS,
//! which would kill the whole sidecar. The handler installed here replaces the faulting page
//! with a page of zeros when it lies in a registered mapping (so the retried load succeeds)
//! and counts it (for the faulting thread); a reader compares [`faults`] before and after
//! touching a mapping and, when it moved, throws away what it read. Faults outside every registered range are left to the
//! previous handler (or the default action): they still crash as they would have.

use std::cell::Cell;
use std::sync::Once;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Registered ranges at most: the open worker files of a few directories (one mapping per
/// kept-open file, at most `MAX_OPEN_FILES` per directory). A mapping that finds no free slot
/// is not made (the file is read through `pread`).
const SLOTS: usize = 4 * super::MAX_OPEN_FILES;

/// One registered range; `start == 0` is a free slot. `len` is written after `start` is
/// claimed and cleared before it is released, so a handler never sees a stale length.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
};

/// The live mappings, read by the handler without locks or allocation.
static RANGES: [Slot; SLOTS] = [FREE; SLOTS];

/// Faults in a registered range, ever (process-wide).
static FAULTS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Faults in a registered range on this thread: SIGBUS for a memory access is delivered
    /// to the thread that made it, so a reader sees only its own faults (a fault on another
    /// thread does not throw its read away). A `const` cell without drop glue is a plain
    /// TLS slot (no lazy init, no allocation): safe to touch from the handler, and [`faults`]
    /// touches it before any guarded read anyway.
    static THREAD_FAULTS: Cell<u64> = const { Cell::new(0) };
}

/// The page size, read once before the handler is installed.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The SIGBUS action found when the guard was installed (std's stack-overflow handler, or
/// the default), put back for a fault that is not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

static INSTALL: Once = Once::new();

/// The handler is in place (set once, by `install`).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Faults absorbed so far on this thread. A reader takes it before and after reading a
/// mapping: a change means some page it read was replaced by zeros.
pub(super) fn faults() -> u64 {
    THREAD_FAULTS.with(Cell::get)
}

/// Faults absorbed so far in the whole process.
#[cfg(test)]
pub(super) fn total_faults() -> u64 {
    FAULTS.load(Ordering::SeqCst)
}

/// A registered range; unregistered when dropped (before the caller unmaps it).
#[derive(Debug)]
pub(super) struct Registration {
    slot: usize,
}

/// Installs the handler (once per process) and registers `[start, start + len)`. None when
/// the handler cannot be installed or every slot is taken: the caller must not map then.
pub(super) fn register(start: usize, len: usize) -> Option<Registration> {
    INSTALL.call_once(install);
    if !installed() || start == 0 || len == 0 {
        return None;
    }
    for (i, slot) in RANGES.iter().enumerate() {
        if slot
            .start
            .compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            slot.len.store(len, Ordering::SeqCst);
            return Some(Registration { slot: i });
        }
    }
    None
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(slot) = RANGES.get(self.slot) {
            slot.len.store(0, Ordering::SeqCst);
            slot.start.store(0, Ordering::SeqCst);
        }
    }
}

fn installed() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

fn install() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Ok(page) = usize::try_from(page) else {
        return;
    };
    if !page.is_power_of_two() {
        return;
    }
    PAGE_SIZE.store(page, Ordering::SeqCst);
    // SAFETY: a zeroed `sigaction` is a valid value (no handler, empty mask) to be filled in.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: queries the current action into a valid, owned struct.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) } != 0 {
        return;
    }
    // Set before the handler can run, so a fault not ours always finds it.
    let _ = PREVIOUS.set(previous);
    // SAFETY: as above.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigbus as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `sa_mask` is owned and valid to write.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: installs a handler that only uses async-signal-safe calls (mmap, sigaction) and
    // atomics; the previous action was saved above.
    if unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot install the SIGBUS guard; multiprocess files are read without a mapping"
        );
        // Not installed: `register` refuses, nothing is ever mapped.
        return;
    }
    INSTALLED.store(true, Ordering::SeqCst);
}

/// True when `addr` lies in a registered range.
fn ours(addr: usize) -> bool {
    RANGES.iter().any(|slot| {
        let start = slot.start.load(Ordering::SeqCst);
        let len = slot.len.load(Ordering::SeqCst);
        start != 0 && addr >= start && addr - start < len
    })
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local and always valid; the handler must leave it as it found it.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; for SIGBUS
    // `si_addr` is the faulting address.
    let addr = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_addr() as usize }
    };
    let page = PAGE_SIZE.load(Ordering::SeqCst);
    let mut handled = false;
    if addr != 0 && page != 0 && ours(addr) {
        let page_start = addr & !(page - 1);
        // SAFETY: replaces exactly the faulting page, which lies in a mapping this process
        // made read-only and still holds (it is unregistered before being unmapped), with a
        // private page of zeros; nothing else can be at that address. mmap is
        // async-signal-safe.
        let zeros = unsafe {
            libc::mmap(
                page_start as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            FAULTS.fetch_add(1, Ordering::SeqCst);
            let _ = THREAD_FAULTS.try_with(|n| n.set(n.get().wrapping_add(1)));
            handled = true;
        }
    }
    if !handled {
        // Not ours: put the previous action back and return; the load faults again and the
        // process dies (or the previous handler runs) as it would have without the guard.
        // SAFETY: a zeroed `sigaction` is SIG_DFL with an empty mask.
        let default: libc::sigaction = unsafe { std::mem::zeroed() };
        let previous = PREVIOUS.get().unwrap_or(&default);
        // SAFETY: sigaction is async-signal-safe; `previous` is a valid action.
        unsafe { libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(test)]
mod tests {
    use super::super::fs::Mapping;
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;

    const PAGES: usize = 4;

    fn page() -> usize {
        // SAFETY: sysconf has no preconditions.
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        crate::sources::multiprocess::tests::scanning::scratch(name)
    }

    fn filled_file(dir: &std::path::Path, len: usize) -> std::fs::File {
        let path = dir.join("w.db");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create");
        file.write_all(&vec![0xA5u8; len]).expect("fill");
        file.sync_all().expect("sync");
        file
    }

    #[test]
    fn a_file_cut_under_its_mapping_reads_zeros_and_reports_the_fault() {
        let dir = scratch("bus-guard");
        let len = PAGES * page();
        let file = filled_file(&dir, len);
        let map = Mapping::new(&file, len).expect("map");
        assert!(
            map.guarded(|b| b.iter().all(|&x| x == 0xA5))
                .expect("not cut yet")
        );
        let total = super::total_faults();
        // Keep the first page, cut the other three.
        file.set_len(page() as u64).expect("truncate");
        let read = map.guarded(|b| b.to_vec());
        assert!(read.is_err(), "the read over cut pages must report a fault");
        assert!(super::total_faults() >= total + 3, "one fault per cut page");
        // The retried loads saw zeros in the cut pages, the file's bytes in the kept one.
        let bytes = map.bytes_unchecked_for_tests().to_vec();
        assert!(bytes[..page()].iter().all(|&x| x == 0xA5));
        assert!(bytes[page()..].iter().all(|&x| x == 0));
        drop(map);
        // Cut to nothing: every page faults, the process lives on.
        let file = filled_file(&dir, len);
        let map = Mapping::new(&file, len).expect("map");
        file.set_len(0).expect("truncate");
        let sum = map.guarded(|b| b.iter().map(|&x| u64::from(x)).sum::<u64>());
        assert!(sum.is_err());
        assert!(map.bytes_unchecked_for_tests().iter().all(|&x| x == 0));
        drop(map);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Set in the child run of [`a_fault_outside_every_mapping_still_kills_the_process`]: the
    /// scratch directory it works in.
    const CHILD_ENV: &str = "MONASCA_BUS_GUARD_CHILD";

    #[test]
    fn a_fault_outside_every_mapping_still_kills_the_process() {
        if let Some(dir) = std::env::var_os(CHILD_ENV) {
            child_reads_an_unguarded_cut_mapping(std::path::Path::new(&dir));
            return;
        }
        // The child dies by SIGBUS and cannot clean up: its scratch directory is made and
        // removed here.
        let dir = scratch("bus-guard-child");
        let exe = std::env::current_exe().expect("test binary");
        let status = std::process::Command::new(exe)
            .args([
                "--exact",
                "sources::multiprocess::scan::bus_guard::tests::a_fault_outside_every_mapping_still_kills_the_process",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run the child");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            status.signal(),
            Some(libc::SIGBUS),
            "the child must die by SIGBUS: {status:?}"
        );
    }

    /// Installs the guard (a registered mapping), then reads a mapping of its own that is not
    /// registered past the end of its file: the guard must leave that fault alone.
    fn child_reads_an_unguarded_cut_mapping(dir: &std::path::Path) {
        let len = PAGES * page();
        let guarded = filled_file(dir, len);
        let _installed = Mapping::new(&guarded, len).expect("map");
        let path = dir.join("other.db");
        std::fs::write(&path, vec![1u8; len]).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let ptr = super::super::fs::map_read_only(&file, len).expect("map");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        // SAFETY: deliberately reads a mapped page past the end of its file: SIGBUS.
        let byte = unsafe { std::ptr::read_volatile(ptr.as_ptr()) };
        // Only reached if the guard swallowed the fault.
        std::process::exit(i32::from(byte) + 100);
    }
}
