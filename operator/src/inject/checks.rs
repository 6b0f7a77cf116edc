//! What injection derives from a `MetricsSidecar` alone (is it valid, what is its config hash),
//! kept per object version so that a review does not work it out again: rendering the
//! sidecar's config and hashing it was about 40% of a review's CPU, for a result that changes
//! only when someone edits the `MetricsSidecar`.

use monasca_crds::MetricsSidecar;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A `MetricsSidecar` checked for injection: its config hash, or why it cannot be injected
/// (the words that follow `MetricsSidecar "name"` in the warning).
pub type Checked = Result<Arc<str>, Arc<str>>;

/// The [`Checked`] result of each `MetricsSidecar` object the informer handed out, reused only
/// for that very object.
///
/// Objects are told apart by identity, not by name or `resourceVersion`: the informer's store
/// replaces an object's `Arc` when the object changes, and an entry holds a [`Weak`] to the
/// object it was made from. The `Weak` keeps that allocation from being reused while the entry
/// exists, so a new version (a new `Arc`) can never match an old entry, whatever its metadata
/// says. Entries of objects nobody holds any more are dropped whenever a new one is added.
/// Clones share the cache.
#[derive(Clone, Default)]
pub struct SidecarChecks {
    entries: Arc<Mutex<HashMap<usize, Entry>>>,
}

struct Entry {
    object: Weak<MetricsSidecar>,
    checked: Checked,
}

impl SidecarChecks {
    /// The result of `check` for `sidecar`, computed at most once per object (two reviews
    /// racing on a new object may both compute it; they get the same answer).
    pub fn get(
        &self,
        sidecar: &Arc<MetricsSidecar>,
        check: impl FnOnce(&MetricsSidecar) -> Checked,
    ) -> Checked {
        let address = Arc::as_ptr(sidecar) as usize;
        // An entry at this address was made from this very object: its `Weak` has kept the
        // allocation from being freed and reused since.
        if let Some(entry) = self.lock().get(&address) {
            return entry.checked.clone();
        }
        // Outside the lock: other reviews go on while this one renders.
        let checked = check(sidecar);
        let mut entries = self.lock();
        entries.retain(|_, e| e.object.strong_count() > 0);
        entries.insert(
            address,
            Entry {
                object: Arc::downgrade(sidecar),
                checked: checked.clone(),
            },
        );
        checked
    }

    /// How many objects have a result kept.
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Entry>> {
        // A panic while holding the lock leaves a map of complete entries: still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for SidecarChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarChecks")
            .field("kept", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn sidecar(name: &str) -> Arc<MetricsSidecar> {
        Arc::new(MetricsSidecar::new(name, Default::default()))
    }

    fn counting<'a>(
        calls: &'a Cell<u32>,
        answer: &'a str,
    ) -> impl FnOnce(&MetricsSidecar) -> Checked + 'a {
        move |_| {
            calls.set(calls.get() + 1);
            Ok(answer.into())
        }
    }

    #[test]
    fn an_object_is_checked_once() {
        let checks = SidecarChecks::default();
        let calls = Cell::new(0);
        let object = sidecar("default");
        for _ in 0..3 {
            assert_eq!(
                checks.get(&object, counting(&calls, "h1")).as_deref(),
                Ok("h1")
            );
        }
        assert_eq!(calls.get(), 1);
        // A clone of the settings shares the cache.
        assert_eq!(
            checks
                .clone()
                .get(&object, counting(&calls, "other"))
                .as_deref(),
            Ok("h1")
        );
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn a_new_version_of_the_same_object_is_checked_again() {
        let checks = SidecarChecks::default();
        let calls = Cell::new(0);
        let old = sidecar("default");
        checks.get(&old, counting(&calls, "old")).ok();
        // The informer replaces the object: a new Arc with the same name and metadata.
        let new = Arc::new((*old).clone());
        drop(old);
        assert_eq!(
            checks.get(&new, counting(&calls, "new")).as_deref(),
            Ok("new")
        );
        assert_eq!(calls.get(), 2);
        assert_eq!(checks.len(), 1, "the dropped version's entry is gone");
    }

    #[test]
    fn a_failed_check_is_kept_too() {
        let checks = SidecarChecks::default();
        let object = sidecar("bad");
        let calls = Cell::new(0);
        for _ in 0..2 {
            let checked = checks.get(&object, |_| {
                calls.set(calls.get() + 1);
                Err("is invalid".into())
            });
            assert_eq!(checked.err().as_deref(), Some("is invalid"));
        }
        assert_eq!(calls.get(), 1);
    }
}
