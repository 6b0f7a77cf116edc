//! The state shared by every request handler and the reconcilers.

use crate::inject::Settings;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::pod_entry::PodEntry;
use crate::tls::CertResolver;
use futures::Stream;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use monasca_crds::MetricsSidecar;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;

fn is_injected(pod: &PodEntry) -> bool {
    pod.sidecar.is_some()
}

/// The namespaces whose pods changed since the controller last took them: one entry per
/// namespace however many of its pods changed, so it stays bounded by the namespaces even when
/// nothing takes them.
#[derive(Default)]
pub struct PodChanges {
    pending: Mutex<HashSet<String>>,
    notify: Notify,
}

impl PodChanges {
    /// Records a change to a pod of `namespace`.
    pub fn record(&self, namespace: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.contains(namespace) {
            pending.insert(namespace.to_string());
        }
        drop(pending);
        self.notify.notify_one();
    }

    /// The namespaces recorded since the last call (each once).
    pub fn take(&self) -> Vec<String> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.drain().collect()
    }

    /// Every recorded namespace, as it is recorded (batched while nobody reads).
    pub fn namespaces(self: Arc<Self>) -> impl Stream<Item = String> + Send + 'static {
        use futures::StreamExt;
        futures::stream::unfold(self, |changes| async move {
            loop {
                let batch = changes.take();
                if !batch.is_empty() {
                    return Some((futures::stream::iter(batch), changes));
                }
                changes.notify.notified().await;
            }
        })
        .flatten()
    }
}

/// Shared as `Arc<Context>`. Admission reads only from here: the reflector stores are kept
/// current by watches, so a review never waits on the API server.
pub struct Context {
    /// Operator-wide settings (namespace, default image, apiserver version).
    pub settings: Settings,
    /// Every `MetricsSidecar` in the cluster.
    pub sidecars: Store<MetricsSidecar>,
    /// Every Namespace's metadata (for the namespace-wide `inject` annotation).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Every Pod, from the operator's one pod watch, kept as the compact [`PodEntry`] (what
    /// counting, the skip rules, discovery and rollouts read). Injected pods are those with the
    /// sidecar label ([`Context::injected_pods`]).
    pub pods: Store<PodEntry>,
    /// Namespaces whose pods changed, for the controller's reconcile trigger (fed by the same
    /// pod watch).
    pub pod_changes: Arc<PodChanges>,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    /// Conflicts found at admission, published as Events on their `MetricsSidecar`.
    pub admission_events: crate::conflicts::Sink,
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
            pod_changes: Arc::default(),
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

    /// Adds the pod store; readiness then also waits for it.
    pub fn with_pods(mut self, pods: Store<PodEntry>) -> Context {
        self.pods = pods;
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

    /// Records that the pod store has its first complete list.
    pub fn mark_pods_synced(&self) {
        self.pods_synced.store(true, Ordering::Release);
    }

    /// Whether the pod store is complete (counting from a partial list would report pods as
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

    /// The injected pods: those carrying the sidecar label.
    pub fn injected_pods(&self) -> Vec<Arc<PodEntry>> {
        self.pods.state_filter(is_injected)
    }

    /// How many pods are injected.
    pub fn injected_pod_count(&self) -> usize {
        self.pods.state_filter(is_injected).len()
    }

    /// The pods of one namespace.
    pub fn pods_in(&self, namespace: &str) -> Vec<Arc<PodEntry>> {
        self.pods.state_filter(|p| &*p.namespace == namespace)
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use monasca_crds::LABEL_SIDECAR;

    #[tokio::test]
    async fn pod_changes_come_once_per_namespace_and_wake_a_waiting_reader() {
        let changes = Arc::new(PodChanges::default());
        for namespace in ["a", "b", "a", "a"] {
            changes.record(namespace);
        }
        let mut namespaces = Box::pin(changes.clone().namespaces());
        let mut first = vec![
            namespaces.next().await.expect("a namespace"),
            namespaces.next().await.expect("a namespace"),
        ];
        first.sort();
        assert_eq!(first, ["a", "b"], "four changes, two namespaces");
        // Nothing pending: the reader waits for the next change.
        let next = tokio::spawn(async move { namespaces.next().await });
        tokio::task::yield_now().await;
        changes.record("c");
        assert_eq!(next.await.expect("reader").as_deref(), Some("c"));
    }

    #[test]
    fn injected_pods_are_the_stored_pods_with_the_sidecar_label() {
        let mut writer: Writer<PodEntry> = Writer::default();
        for (name, labelled) in [("plain", false), ("injected", true)] {
            let mut pod = Pod::default();
            pod.metadata.name = Some(name.into());
            pod.metadata.namespace = Some("ns".into());
            if labelled {
                pod.metadata.labels = Some([(LABEL_SIDECAR.to_string(), "default".into())].into());
            }
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(PodEntry::from_pod(
                &pod,
            )));
        }
        let settings = Settings {
            operator_namespace: "monasca-system".into(),
            sidecar_image: "monasca/monasca-sidecar:test".into(),
            native_sidecars: crate::inject::NativeSidecars::Unknown.into(),
            sidecar_checks: Default::default(),
        };
        let ctx = Context::new(
            settings,
            Writer::default().as_reader(),
            Writer::default().as_reader(),
        )
        .with_pods(writer.as_reader());
        let names: Vec<_> = ctx
            .injected_pods()
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        assert_eq!(names, ["injected"]);
        assert_eq!(ctx.injected_pod_count(), 1);
    }
}
