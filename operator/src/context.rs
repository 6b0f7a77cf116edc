//! The state shared by every request handler and the reconcilers.

use crate::inject::Settings;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::webhook::tls::CertResolver;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use monasca_crds::MetricsSidecar;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Shared as `Arc<Context>`. Admission reads only from here: the reflector stores are kept
/// current by watches, so a review never waits on the API server.
pub struct Context {
    /// Operator-wide settings (namespace, default image, apiserver version).
    pub settings: Settings,
    /// Every `MetricsSidecar` in the cluster.
    pub sidecars: Store<MetricsSidecar>,
    /// Every Namespace's metadata (for the namespace-wide `inject` annotation).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Every Pod, slimmed to what counting needs (metadata, phase, `hostNetwork`, container
    /// names: see [`crate::controller::status::slim`]).
    pub pods: Store<Pod>,
    /// Injected pods (label `monasca.openstack.org/sidecar`), slimmed to metadata, phase and IP
    /// (discovery needs the IP, which metadata-only watches do not carry).
    pub injected_pods: Store<Pod>,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    /// Conflicts found at admission, published as Events on their `MetricsSidecar`.
    pub admission_events: crate::webhook::events::Sink,
    /// The webhook's certificate source, once `main` has one (readiness needs it loaded).
    certs: OnceLock<Arc<CertResolver>>,
    sidecars_synced: AtomicBool,
    namespaces_synced: AtomicBool,
    pods_synced: AtomicBool,
    draining: AtomicBool,
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
            pods: Writer::default().as_reader(),
            injected_pods: Writer::default().as_reader(),
            leadership: Leadership::standalone(),
            metrics: Arc::new(Metrics::default()),
            admission_events: Default::default(),
            certs: OnceLock::new(),
            sidecars_synced: AtomicBool::new(false),
            namespaces_synced: AtomicBool::new(false),
            // Without pod stores (webhook-only use) there is nothing to wait for.
            pods_synced: AtomicBool::new(true),
            draining: AtomicBool::new(false),
        }
    }

    /// Adds the pod stores; readiness then also waits for them.
    pub fn with_pods(mut self, pods: Store<Pod>, injected_pods: Store<Pod>) -> Context {
        self.pods = pods;
        self.injected_pods = injected_pods;
        self.pods_synced = AtomicBool::new(false);
        self
    }

    /// Replaces the leadership view (default: standalone, always the leader).
    pub fn with_leadership(mut self, leadership: Leadership) -> Context {
        self.leadership = leadership;
        self
    }

    /// Records the certificate source; readiness then waits for a certificate to be loaded.
    pub fn set_certs(&self, certs: Arc<CertResolver>) {
        let _ = self.certs.set(certs);
    }

    /// Records that both pod stores have their first complete list.
    pub fn mark_pods_synced(&self) {
        self.pods_synced.store(true, Ordering::Release);
    }

    /// Whether the pod stores are complete (counting from a partial list would report pods as
    /// missing).
    pub fn pods_synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire)
    }

    /// Whether a serving certificate is loaded (true when none is registered).
    pub fn cert_loaded(&self) -> bool {
        self.certs.get().is_none_or(|c| c.is_loaded())
    }

    /// When the served webhook certificate expires (Unix seconds), if one is loaded.
    pub fn cert_expiry(&self) -> Option<i64> {
        self.certs.get().and_then(|c| c.expiry())
    }

    /// The (slimmed) pods of one namespace.
    pub fn pods_in(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods
            .state_filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
    }

    /// Records that the `MetricsSidecar` store has its first complete list.
    pub fn mark_sidecars_synced(&self) {
        self.sidecars_synced.store(true, Ordering::Release);
    }

    /// Records that the Namespace store has its first complete list.
    pub fn mark_namespaces_synced(&self) {
        self.namespaces_synced.store(true, Ordering::Release);
    }

    /// Ready to answer reviews: answering before the stores admission reads are synced would
    /// skip pods whose `MetricsSidecar` simply is not known yet. Until then the Service has no
    /// endpoint for this replica, and the apiserver asks another one (or, with
    /// `failurePolicy: Ignore`, none). Gated only on what admission needs: the cluster-wide pod
    /// lists (status counts, discovery) can take long on a big cluster and admission never reads
    /// them. Not ready either once shutdown began (see [`Context::start_draining`]).
    pub fn is_ready(&self) -> bool {
        self.sidecars_synced.load(Ordering::Acquire)
            && self.namespaces_synced.load(Ordering::Acquire)
            && self.cert_loaded()
            && !self.is_draining()
    }

    /// Shutdown began: still serving, but reporting not ready so that endpoints drop this
    /// replica before it closes its listeners.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
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
