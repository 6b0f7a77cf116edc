//! Test builders on the CRD types (controller-rs' `fixtures.rs`): one per type, so that the
//! operator's unit tests, its integration tests and the e2e tests build the same objects
//! instead of each keeping its own copy. Hidden from the docs; tiny, so always compiled
//! (integration tests in other crates cannot see `cfg(test)` items).

use crate::{MetricsSidecar, MetricsSidecarSpec};

impl MetricsSidecar {
    /// A `MetricsSidecar` named `name` in `namespace`, as a client creates it.
    #[doc(hidden)]
    pub fn fixture(namespace: &str, name: &str, spec: MetricsSidecarSpec) -> Self {
        let mut sidecar = MetricsSidecar::new(name, spec);
        sidecar.metadata.namespace = Some(namespace.into());
        sidecar
    }

    /// The same object as the API server returns it: with `uid` and generation 1.
    #[doc(hidden)]
    pub fn stored(mut self, uid: &str) -> Self {
        self.metadata.uid = Some(uid.into());
        self.metadata.generation = Some(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_fixture_has_what_the_apiserver_adds() {
        let sidecar = MetricsSidecar::fixture("demo", "workers", MetricsSidecarSpec::default())
            .stored("uid-1");
        assert_eq!(sidecar.metadata.namespace.as_deref(), Some("demo"));
        assert_eq!(sidecar.metadata.name.as_deref(), Some("workers"));
        assert_eq!(sidecar.metadata.uid.as_deref(), Some("uid-1"));
        assert_eq!(sidecar.metadata.generation, Some(1));
    }
}
