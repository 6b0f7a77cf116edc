//! Hands the memory of large request bodies back to the OS once a burst of them is over.
//!
//! A push body and the families parsed from it are freed right after the update, but glibc
//! keeps freed heap pages resident (they sit between the store's long-lived allocations, so
//! the heap top cannot shrink): after 16 concurrent pushes of 31,250 series each, about half
//! of the sidecar's RSS growth was such free pages, not series. When the last in-flight large
//! request finishes, `malloc_trim` returns them. Once per burst, never while a body is in
//! flight, so a steady stream of pushes pays nothing. musl (the release image) has no
//! `malloc_trim`; there this does nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bodies of at least this many bytes, in all since the last trim, make the end of a burst
/// worth a trim: below it the free pages are few and a trim would cost more than it returns.
pub const TRIM_AFTER_BYTES: u64 = 4 << 20;

/// Bodies in flight and bytes read since the last trim.
#[derive(Default)]
pub struct BodyMemory {
    in_flight: AtomicUsize,
    since_trim: AtomicU64,
    trims: AtomicU64,
}

impl BodyMemory {
    /// A request that may read a body starts. Declare the guard before the body and what is
    /// parsed from it, so that it drops after them.
    pub fn begin(&self) -> BodyGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        BodyGuard { memory: self }
    }

    /// Trims done so far (the `monasca_sidecar_allocator_trims_total` self-metric).
    pub fn trims(&self) -> u64 {
        self.trims.load(Ordering::Relaxed)
    }
}

/// One request's share of [`BodyMemory`]; the last one of a burst to finish trims.
pub struct BodyGuard<'a> {
    memory: &'a BodyMemory,
}

impl BodyGuard<'_> {
    /// Counts a body read by this request.
    pub fn read(&self, bytes: usize) {
        self.memory
            .since_trim
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Drop for BodyGuard<'_> {
    fn drop(&mut self) {
        let memory = self.memory;
        if memory.in_flight.fetch_sub(1, Ordering::AcqRel) != 1
            || memory.since_trim.load(Ordering::Relaxed) < TRIM_AFTER_BYTES
        {
            return;
        }
        memory.since_trim.store(0, Ordering::Relaxed);
        if release_free_heap() {
            memory.trims.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Returns free heap pages to the OS; false where the allocator cannot.
fn release_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists under its lock.
        unsafe {
            libc::malloc_trim(0);
        }
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
