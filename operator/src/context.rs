//! The state shared by every request handler (and, in the next issue, the reconcilers).

use crate::inject::Settings;
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use monasca_crds::MetricsSidecar;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared as `Arc<Context>`. Admission reads only from here: the reflector stores are kept
/// current by watches, so a review never waits on the API server.
pub struct Context {
    /// Operator-wide settings (namespace, default image, apiserver version).
    pub settings: Settings,
    /// Every `MetricsSidecar` in the cluster.
    pub sidecars: Store<MetricsSidecar>,
    /// Every Namespace's metadata (for the namespace-wide `inject` annotation).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    sidecars_synced: AtomicBool,
    namespaces_synced: AtomicBool,
}

impl Context {
    /// A context over the given stores; not ready until both are marked synced.
    pub fn new(
        settings: Settings,
        sidecars: Store<MetricsSidecar>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
    ) -> Context {
        Context {
            settings,
            sidecars,
            namespaces,
            metrics: Arc::new(Metrics::default()),
            sidecars_synced: AtomicBool::new(false),
            namespaces_synced: AtomicBool::new(false),
        }
    }

    /// Records that the `MetricsSidecar` store has its first complete list.
    pub fn mark_sidecars_synced(&self) {
        self.sidecars_synced.store(true, Ordering::Release);
    }

    /// Records that the Namespace store has its first complete list.
    pub fn mark_namespaces_synced(&self) {
        self.namespaces_synced.store(true, Ordering::Release);
    }

    /// Ready to answer reviews: answering before the stores are synced would skip pods whose
    /// `MetricsSidecar` simply is not known yet. Until then the Service has no endpoint for this
    /// replica, and the apiserver asks another one (or, with `failurePolicy: Ignore`, none).
    pub fn is_ready(&self) -> bool {
        self.sidecars_synced.load(Ordering::Acquire)
            && self.namespaces_synced.load(Ordering::Acquire)
    }

    /// The `MetricsSidecar`s of one namespace.
    pub fn sidecars_in(&self, namespace: &str) -> Vec<Arc<MetricsSidecar>> {
        self.sidecars
            .state_filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
    }

    /// The metadata of one namespace, if it is known (read its annotations from there).
    pub fn namespace(&self, namespace: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.namespaces.get(&ObjectRef::new(namespace))
    }
}
