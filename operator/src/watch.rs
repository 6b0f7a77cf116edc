//! Keeps the [`Context`] stores current from the API server (the only I/O admission relies on).
//!
//! One malformed `MetricsSidecar` (stored before a schema change, or written with validation
//! off) must not stop the webhook from seeing all the others, so sidecars are watched through
//! kube's `DeserializeGuard`: an object that does not parse is logged and dropped from the store
//! (as if deleted) instead of failing the whole list.

use crate::Context;
use crate::context::PodChanges;
use crate::inject::Settings;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::pod_entry::{PodEntry, WatchedPod, entry_event};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use monasca_crds::MetricsSidecar;
use std::sync::Arc;

/// Logs an object that does not parse and returns a tombstone (its metadata only) that removes
/// it from the store.
fn tombstone(invalid: InvalidObject) -> MetricsSidecar {
    tracing::warn!(
        namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
        name = invalid.metadata.name.as_deref().unwrap_or_default(),
        error = %invalid.error,
        "ignoring a MetricsSidecar that does not parse"
    );
    let mut tombstone = MetricsSidecar::new(
        invalid.metadata.name.as_deref().unwrap_or_default(),
        Default::default(),
    );
    tombstone.metadata = invalid.metadata;
    tombstone
}

/// `namespace/name` of an object, for the malformed-objects gauge.
fn key(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Records in the malformed-objects gauge whether each object of `event` parses.
fn count_malformed(metrics: &Metrics, event: &watcher::Event<DeserializeGuard<MetricsSidecar>>) {
    use watcher::Event;
    match event {
        Event::Apply(DeserializeGuard(parsed)) | Event::InitApply(DeserializeGuard(parsed)) => {
            match parsed {
                Ok(sidecar) => metrics.set_malformed(key(&sidecar.metadata), false),
                Err(invalid) => metrics.set_malformed(key(&invalid.metadata), true),
            }
        }
        Event::Delete(DeserializeGuard(Ok(sidecar))) => {
            metrics.set_malformed(key(&sidecar.metadata), false)
        }
        Event::Delete(DeserializeGuard(Err(invalid))) => {
            metrics.set_malformed(key(&invalid.metadata), false)
        }
        Event::Init | Event::InitDone => {}
    }
}

/// Turns guarded events into plain ones: invalid objects become deletions.
fn unguard(
    event: watcher::Event<DeserializeGuard<MetricsSidecar>>,
) -> Option<watcher::Event<MetricsSidecar>> {
    use watcher::Event;
    Some(match event {
        Event::Apply(DeserializeGuard(Ok(sidecar))) => Event::Apply(sidecar),
        Event::Apply(DeserializeGuard(Err(invalid))) => Event::Delete(tombstone(invalid)),
        Event::Delete(DeserializeGuard(Ok(sidecar))) => Event::Delete(sidecar),
        Event::Delete(DeserializeGuard(Err(invalid))) => Event::Delete(tombstone(invalid)),
        Event::InitApply(DeserializeGuard(Ok(sidecar))) => Event::InitApply(sidecar),
        Event::InitApply(DeserializeGuard(Err(invalid))) => {
            tombstone(invalid);
            return None;
        }
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    })
}

/// Runs a store-feeding stream forever, logging (not propagating) watch errors: the watcher
/// retries with backoff by itself.
async fn drive<S, T>(stream: S, what: &'static str)
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            tracing::warn!(error = %e, what, "watch error; retrying");
        }
    }
}

/// Logs, once per namespace (again after it was fixed and broken again), each namespace opted in
/// by the `inject` annotation without the label, with the command that fixes it; the
/// `monasca_operator_namespaces_annotation_without_label` gauge counts them.
fn report_annotation_without_label()
-> impl FnMut(&Result<watcher::Event<PartialObjectMeta<Namespace>>, watcher::Error>) {
    let mut reported = std::collections::HashSet::new();
    move |item| {
        let Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) = item else {
            return;
        };
        let name = ns.metadata.name.clone().unwrap_or_default();
        match crate::webhook::review::annotation_without_label(&ns.metadata) {
            Some(value) if reported.insert(name.clone()) => tracing::warn!(
                namespace = %name,
                "namespace has the {key} annotation but not the label: the apiserver no longer \
                 sends its pods to the webhook, so only pods annotated themselves are injected; \
                 fix: kubectl label namespace {name} {key}={value}",
                key = monasca_crds::ANNOTATION_INJECT,
            ),
            Some(_) => {}
            None => {
                reported.remove(&name);
            }
        }
    }
}

/// Tells the controller which namespaces pod events concern, once the store holds them (it sits
/// after the reflector): a watched change at once; a relist's pods (a change may have been
/// missed while the watch was down) when the relist is done, since the store swaps in the new
/// list only then and a reconcile before that would count the old one.
fn record_changes(
    changes: Arc<PodChanges>,
) -> impl FnMut(&Result<watcher::Event<PodEntry>, watcher::Error>) {
    let mut relisted = std::collections::HashSet::new();
    move |item| match item {
        Ok(watcher::Event::Apply(pod) | watcher::Event::Delete(pod)) => {
            changes.record(&pod.namespace);
        }
        Ok(watcher::Event::Init) => relisted.clear(),
        Ok(watcher::Event::InitApply(pod)) => {
            if !relisted.contains(&*pod.namespace) {
                relisted.insert(pod.namespace.to_string());
            }
        }
        Ok(watcher::Event::InitDone) => {
            for namespace in relisted.drain() {
                changes.record(&namespace);
            }
        }
        Err(_) => {}
    }
}

/// Creates the context's stores and spawns the watches that fill them (for the life of the
/// process). The context reports ready once both stores have had their first full list.
pub fn start(client: Client, settings: Settings, leadership: Leadership) -> Arc<Context> {
    let mut sidecar_writer: Writer<MetricsSidecar> = Writer::default();
    let namespace_writer: Writer<PartialObjectMeta<Namespace>> = Writer::default();
    let pod_writer: Writer<PodEntry> = Writer::default();
    let ctx = Arc::new(
        Context::new(
            settings,
            sidecar_writer.as_reader(),
            namespace_writer.as_reader(),
        )
        .with_pods(pod_writer.as_reader())
        .with_leadership(leadership),
    );

    let metrics = ctx.metrics.clone();
    let sidecars = watcher(
        Api::<DeserializeGuard<MetricsSidecar>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(move |item| {
        item.map(|event| {
            count_malformed(&metrics, &event);
            if let Some(event) = unguard(event) {
                sidecar_writer.apply_watcher_event(&event);
            }
        })
    });
    tokio::spawn(drive(sidecars, "MetricsSidecar"));

    // Only the metadata of Namespaces is needed (annotations): a metadata watch keeps memory low.
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .inspect(report_annotation_without_label());
    tokio::spawn(drive(
        reflector::reflector(namespace_writer, namespaces),
        "Namespace",
    ));

    // Every pod, watched once, each decoded straight into a compact `PodEntry` (never a full
    // `Pod`): the store behind the controller's counts and skip rules, discovery (injected pods
    // carry the sidecar label) and rollouts, and the controller's trigger (the namespace of each
    // change).
    let pods = watcher(
        Api::<WatchedPod>::all(client),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .map_ok(entry_event);
    let stored =
        reflector::reflector(pod_writer, pods).inspect(record_changes(ctx.pod_changes.clone()));
    tokio::spawn(drive(stored, "Pod"));

    let (c, pods) = (ctx.clone(), ctx.pods.clone());
    tokio::spawn(async move {
        if pods.wait_until_ready().await.is_ok() {
            c.mark_pods_synced();
        }
    });
    let (c, store) = (ctx.clone(), ctx.sidecars.clone());
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            c.mark_sidecars_synced();
        }
    });
    let (c, store) = (ctx.clone(), ctx.namespaces.clone());
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            c.mark_namespaces_synced();
        }
    });
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(namespace: &str, name: &str) -> PodEntry {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some(namespace.into());
        pod.metadata.name = Some(name.into());
        PodEntry::from_pod(&pod)
    }

    /// The controller is told of a change only once the store it reconciles from holds it: a
    /// watched change at once, a relist's namespaces when the relisted store is swapped in.
    #[tokio::test]
    async fn pod_changes_are_recorded_after_the_store_holds_them() {
        let changes = Arc::new(PodChanges::default());
        let writer: Writer<PodEntry> = Writer::default();
        let store = writer.as_reader();
        let events = futures::stream::iter([
            watcher::Event::Init,
            watcher::Event::InitApply(pod("a", "p1")),
            watcher::Event::InitApply(pod("b", "p2")),
            watcher::Event::InitApply(pod("a", "p3")),
            watcher::Event::InitDone,
            watcher::Event::Apply(pod("c", "p4")),
            watcher::Event::Delete(pod("a", "p1")),
        ])
        .map(Ok::<_, watcher::Error>);
        let mut stored = std::pin::pin!(
            reflector::reflector(writer, events).inspect(record_changes(changes.clone()))
        );
        let mut seen = Vec::new();
        while stored.next().await.is_some() {
            let mut namespaces = changes.take();
            namespaces.sort();
            let names: Vec<String> = {
                let mut n: Vec<String> = store.state().iter().map(|p| p.name.to_string()).collect();
                n.sort();
                n
            };
            seen.push((namespaces, names));
        }
        let expect = |ns: &[&str], names: &[&str]| {
            (
                ns.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            seen,
            [
                expect(&[], &[]),
                expect(&[], &[]),
                expect(&[], &[]),
                expect(&[], &[]),
                // The relist is recorded once per namespace, with the new list in the store.
                expect(&["a", "b"], &["p1", "p2", "p3"]),
                expect(&["c"], &["p1", "p2", "p3", "p4"]),
                expect(&["a"], &["p2", "p3", "p4"]),
            ]
        );
    }
}
