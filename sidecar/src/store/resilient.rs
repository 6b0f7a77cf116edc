//! Store policy for sources that send many families at once (the multiprocess reader, the
//! scrape source): one family the store refuses must not hide the others.

use super::{Now, Scope, Store, StoreError, WorkerKey};
use crate::model::Family;

impl Store {
    /// Applies a worker's families (`Scope::Worker`); when the store rejects the update (a type
    /// conflict with another source, a histogram layout mismatch, a reserved name), drops the
    /// offending family and retries, so one bad family never hides the worker's others.
    /// `on_reject` sees every rejection. Returns true when something was applied.
    pub fn apply_resilient(
        &mut self,
        worker: &WorkerKey,
        families: &[Family<'_>],
        now: Now,
        unbounded: bool,
        on_reject: &mut dyn FnMut(&StoreError),
    ) -> bool {
        let mut excluded: Vec<usize> = Vec::new();
        for _ in 0..=families.len() {
            let filtered: Vec<Family<'_>>;
            let current: &[Family<'_>] = if excluded.is_empty() {
                families
            } else {
                filtered = families
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !excluded.contains(i))
                    .map(|(_, f)| f.clone())
                    .collect();
                &filtered
            };
            if current.is_empty() {
                return false;
            }
            let result = if unbounded {
                self.apply_unbounded(worker, current, Scope::Worker, now)
            } else {
                self.apply(worker, current, Scope::Worker, now)
            };
            let err = match result {
                Ok(_) => return true,
                Err(e) => e,
            };
            on_reject(&err);
            let Some(name) = err.family() else {
                return false;
            };
            let Some(pos) = families
                .iter()
                .enumerate()
                .position(|(i, f)| !excluded.contains(&i) && f.name == name)
            else {
                return false;
            };
            excluded.push(pos);
        }
        false
    }
}
