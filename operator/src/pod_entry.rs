//! What the operator keeps of each pod in its one cluster-wide pod store: a compact value of its
//! own instead of a k8s-openapi `Pod` (one `Pod` is about 2 KB of struct before any string, and
//! its labels and annotations are B-tree maps with a node of their own each). A [`PodEntry`]
//! holds exactly what the census, the webhook's skip rules, discovery and rollouts read.
//!
//! The pod watch never decodes a full `Pod` either: it decodes [`WatchedPod`]s, whose
//! deserializer reads only the fields the entry keeps and maps them to the entry as it goes, so
//! the transient memory of a list page or watch event is a few small strings per pod instead of
//! a whole pod with its managed fields (the allocator's high-water mark is what RSS keeps).
//!
//! Pure: decoding a [`WatchedPod`] maps the pod (no I/O), and [`entry_event`] maps a watcher event
//! before it reaches the reflector store.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::Lookup;
use kube::runtime::watcher;
use monasca_crds::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_INJECT, ANNOTATION_INJECTED, LABEL_SIDECAR,
    SIDECAR_CONTAINER_NAME,
};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::net::IpAddr;

/// Pod labels discovery copies onto the targets (sanitized into Prometheus label names): the
/// entry keeps only these of a pod's labels.
pub const COPIED_POD_LABELS: [&str; 4] = [
    "app",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
];

/// A pod's phase; `None` is a pod just created, before the apiserver set one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    None,
    Pending,
    Running,
    Succeeded,
    Failed,
    /// `Unknown`, or a phase this operator does not know.
    Other,
}

impl Phase {
    fn parse(phase: Option<&str>) -> Phase {
        match phase {
            None => Phase::None,
            Some("Pending") => Phase::Pending,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some(_) => Phase::Other,
        }
    }

    /// Succeeded or Failed: whatever the pod ran has stopped.
    pub fn stopped(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The kinds of controlling owner a rollout can restart (through the ReplicaSet for a
/// Deployment); other owners are not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    ReplicaSet,
    StatefulSet,
    DaemonSet,
}

/// A pod's controlling owner, when it is one a rollout can restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: OwnerKind,
    pub name: Box<str>,
}

/// One pod as the operator stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEntry {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub phase: Phase,
    /// The pod IP, when it has one that parses.
    pub ip: Option<IpAddr>,
    /// Being deleted (`deletionTimestamp` set).
    pub terminating: bool,
    pub host_network: bool,
    /// Has a container (or init container) named `monasca-sidecar`.
    pub has_sidecar_container: bool,
    /// The `sidecar-metrics` port that container declares.
    pub metrics_port: Option<u16>,
    /// The sidecar label's value: the `MetricsSidecar` the webhook injected.
    pub sidecar: Option<Box<str>>,
    /// The labels of [`COPIED_POD_LABELS`] the pod has, by index into that list.
    pub copied_labels: Box<[(u8, Box<str>)]>,
    /// The pod's own `inject` annotation.
    pub inject: Option<Box<str>>,
    /// The webhook marked the pod as injected by it.
    pub injected_by_us: bool,
    /// The `config-hash` annotation (the configuration the pod was injected with).
    pub config_hash: Option<Box<str>>,
    pub owner: Option<Owner>,
}

impl PodEntry {
    /// Why the webhook would never inject this pod, by rule ([`crate::inject::skipped_by_rule`]
    /// on the full pod), from what the entry keeps.
    pub fn skipped_by_rule(&self) -> Option<(crate::inject::SkipReason, String)> {
        crate::inject::skip_rule(
            self.host_network,
            self.has_sidecar_container,
            self.injected_by_us,
        )
    }

    /// Keeps what the operator reads of a decoded pod.
    fn from_raw(raw: RawPod) -> PodEntry {
        let meta = raw.metadata;
        let (labels, annotations) = (meta.labels, meta.annotations);
        let spec = raw.spec.unwrap_or_default();
        let sidecar_container = spec
            .containers
            .iter()
            .flatten()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == SIDECAR_CONTAINER_NAME);
        let status = raw.status.unwrap_or_default();
        PodEntry {
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            phase: Phase::parse(status.phase.as_deref()),
            ip: status.pod_ip.and_then(|ip| ip.parse().ok()),
            terminating: meta.deletion_timestamp.is_some(),
            host_network: spec.host_network == Some(true),
            has_sidecar_container: sidecar_container.is_some(),
            metrics_port: sidecar_container.and_then(|c| {
                crate::inject::metrics_port(
                    c.ports
                        .iter()
                        .flatten()
                        .map(|p| (p.name.as_deref(), p.container_port)),
                )
            }),
            sidecar: labels.sidecar,
            copied_labels: {
                let mut copied = labels.copied;
                copied.sort_by_key(|(i, _)| *i);
                copied.into_boxed_slice()
            },
            inject: annotations.inject,
            injected_by_us: annotations.injected,
            config_hash: annotations.config_hash,
            owner: meta
                .owner_references
                .into_iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .and_then(|o| {
                    let kind = match o.kind.as_str() {
                        "ReplicaSet" => OwnerKind::ReplicaSet,
                        "StatefulSet" => OwnerKind::StatefulSet,
                        "DaemonSet" => OwnerKind::DaemonSet,
                        _ => return None,
                    };
                    Some(Owner { kind, name: o.name })
                }),
        }
    }

    /// The entry of a full `Pod`, through the same decoding as the watch (for tests that build
    /// pods with k8s-openapi).
    #[cfg(test)]
    pub fn from_pod(pod: &k8s_openapi::api::core::v1::Pod) -> PodEntry {
        let json = serde_json::to_vec(pod).expect("a Pod serializes");
        serde_json::from_slice::<WatchedPod>(&json)
            .expect("a serialized Pod decodes")
            .entry
    }

    /// The copied labels as (label key, value).
    pub fn copied_labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.copied_labels.iter().filter_map(|(i, value)| {
            COPIED_POD_LABELS
                .get(usize::from(*i))
                .map(|key| (*key, &**value))
        })
    }
}

/// A watcher event on pods as the same event on their entries, for the reflector store.
pub fn entry_event(event: watcher::Event<WatchedPod>) -> watcher::Event<PodEntry> {
    use watcher::Event;
    match event {
        Event::Apply(pod) => Event::Apply(pod.entry),
        Event::Delete(pod) => Event::Delete(pod.entry),
        Event::Init => Event::Init,
        Event::InitApply(pod) => Event::InitApply(pod.entry),
        Event::InitDone => Event::InitDone,
    }
}

/// A pod as the pod watch decodes it: the resource version the watcher resumes from, and the
/// [`PodEntry`] mapped while decoding. Deserializing it reads only the fields the entry keeps;
/// serde skips the rest of the pod (its managed fields, container specs, other labels and
/// annotations, conditions) without allocating them, so neither a list page nor a watch event
/// ever holds a full k8s-openapi `Pod`.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "RawPod")]
pub struct WatchedPod {
    /// Only `resourceVersion` is set: it is all the watcher reads of the metadata (to resume).
    metadata: ObjectMeta,
    pub entry: PodEntry,
}

impl From<RawPod> for WatchedPod {
    fn from(raw: RawPod) -> WatchedPod {
        let resource_version = raw.metadata.resource_version.clone();
        WatchedPod {
            metadata: ObjectMeta {
                resource_version,
                ..ObjectMeta::default()
            },
            entry: PodEntry::from_raw(raw),
        }
    }
}

/// The pod watch asks the apiserver for plain pods (`/api/v1/pods`).
impl Resource for WatchedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The parts of a pod's JSON the entry is made from (every field optional: a mapping never
/// fails on what a pod lacks).
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPod {
    metadata: RawMeta,
    spec: Option<RawSpec>,
    status: Option<RawStatus>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawMeta {
    name: Option<Box<str>>,
    namespace: Option<Box<str>>,
    resource_version: Option<String>,
    /// Only whether it is set matters.
    deletion_timestamp: Option<IgnoredAny>,
    #[serde(deserialize_with = "wanted_map")]
    labels: KeptLabels,
    #[serde(deserialize_with = "wanted_map")]
    annotations: KeptAnnotations,
    owner_references: Option<Vec<RawOwner>>,
}

#[derive(Deserialize)]
struct RawOwner {
    kind: String,
    name: Box<str>,
    controller: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawSpec {
    host_network: Option<bool>,
    containers: Option<Vec<RawContainer>>,
    init_containers: Option<Vec<RawContainer>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawContainer {
    name: String,
    ports: Option<Vec<RawPort>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawPort {
    name: Option<String>,
    container_port: i32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
}

/// Calls `keep` with each entry of a string map whose key `wanted` accepts; the other values
/// are skipped unread.
fn visit_wanted<'de, A: MapAccess<'de>>(
    mut map: A,
    wanted: impl Fn(&str) -> bool,
    mut keep: impl FnMut(&str, Box<str>),
) -> Result<(), A::Error> {
    while let Some(key) = map.next_key::<String>()? {
        if wanted(&key) {
            keep(&key, map.next_value::<Box<str>>()?);
        } else {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// A map visitor building `T` through [`visit_wanted`].
struct WantedVisitor<T>(std::marker::PhantomData<T>);

/// A string map of which only some keys are kept.
trait Wanted: Default {
    fn wanted(key: &str) -> bool;
    fn keep(&mut self, key: &str, value: Box<str>);
}

impl<'de, T: Wanted> Visitor<'de> for WantedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let mut kept = T::default();
        visit_wanted(map, T::wanted, |key, value| kept.keep(key, value))?;
        Ok(kept)
    }
}

/// The pod labels the entry keeps: the sidecar label and the [`COPIED_POD_LABELS`].
#[derive(Default)]
struct KeptLabels {
    sidecar: Option<Box<str>>,
    copied: Vec<(u8, Box<str>)>,
}

impl Wanted for KeptLabels {
    fn wanted(key: &str) -> bool {
        key == LABEL_SIDECAR || COPIED_POD_LABELS.contains(&key)
    }

    fn keep(&mut self, key: &str, value: Box<str>) {
        if key == LABEL_SIDECAR {
            self.sidecar = Some(value);
        } else if let Some(i) = COPIED_POD_LABELS.iter().position(|k| *k == key) {
            self.copied.push((i as u8, value));
        }
    }
}

/// The pod annotations the entry keeps.
#[derive(Default)]
struct KeptAnnotations {
    inject: Option<Box<str>>,
    injected: bool,
    config_hash: Option<Box<str>>,
}

impl Wanted for KeptAnnotations {
    fn wanted(key: &str) -> bool {
        [
            ANNOTATION_INJECT,
            ANNOTATION_INJECTED,
            ANNOTATION_CONFIG_HASH,
        ]
        .contains(&key)
    }

    fn keep(&mut self, key: &str, value: Box<str>) {
        match key {
            ANNOTATION_INJECT => self.inject = Some(value),
            ANNOTATION_INJECTED => self.injected = true,
            _ => self.config_hash = Some(value),
        }
    }
}

/// Decodes a string map (or null) keeping only the entries `T` wants.
fn wanted_map<'de, D: Deserializer<'de>, T: Wanted>(d: D) -> Result<T, D::Error> {
    d.deserialize_option(WantedVisitor(std::marker::PhantomData))
}

/// The store keys entries by namespace and name only (the kind is the watched pod's): the resource version and uid are not kept
/// (the store never compares them), so a key holds no more strings than it needs.
impl Lookup for PodEntry {
    type DynamicType = ();

    fn kind(dt: &()) -> Cow<'_, str> {
        <WatchedPod as Resource>::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        <WatchedPod as Resource>::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        <WatchedPod as Resource>::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        <WatchedPod as Resource>::plural(dt)
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.namespace))
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{Value, json};

    /// The pod JSON of a real AdmissionReview captured from a kube-apiserver
    /// ([`crate::admission_fixtures_dir`]).
    fn fixture_pod_json(name: &str) -> Value {
        let path = crate::admission_fixtures_dir().join(format!("{name}.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let review: Value = serde_json::from_str(&text).expect("review JSON");
        review["request"]["object"].clone()
    }

    /// A fixture pod decoded as the watch decodes it (from the JSON bytes).
    fn fixture_pod(name: &str) -> WatchedPod {
        let bytes = serde_json::to_vec(&fixture_pod_json(name)).expect("JSON");
        serde_json::from_slice(&bytes).expect("a watched pod")
    }

    #[test]
    fn a_replicaset_pod_keeps_its_owner_and_inject_annotation() {
        let entry = fixture_pod("create-replicaset-pod-generatename").entry;
        assert_eq!(&*entry.namespace, "demo");
        assert_eq!(entry.inject.as_deref(), Some("true"));
        assert_eq!(
            entry.owner,
            Some(Owner {
                kind: OwnerKind::ReplicaSet,
                name: "monasca-api-7d9f8c6b5d".into()
            })
        );
        assert_eq!(
            entry.copied_labels().collect::<Vec<_>>(),
            [("app", "monasca-api")]
        );
        assert!(!entry.host_network && !entry.has_sidecar_container && !entry.injected_by_us);
        assert_eq!(entry.phase, Phase::None);
    }

    #[test]
    fn the_skip_rule_inputs_come_from_the_real_pods() {
        let host = fixture_pod("create-hostnetwork").entry;
        assert!(host.host_network);
        assert_eq!(host.owner, None);
        let has = fixture_pod("create-already-has-sidecar").entry;
        assert!(has.has_sidecar_container);
        assert_eq!(has.metrics_port, Some(9102));
        let init = fixture_pod("create-named-initcontainer-prometheus-annotations").entry;
        assert_eq!(init.inject.as_deref(), Some("persister-workers"));
        assert!(
            !init.has_sidecar_container,
            "wait-for-kafka is not the sidecar"
        );
    }

    #[test]
    fn an_injected_running_pod_keeps_what_discovery_and_the_census_read() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "api-0", "namespace": "demo",
                "labels": {LABEL_SIDECAR: "default", "app.kubernetes.io/name": "api", "other": "x"},
                "annotations": {ANNOTATION_INJECTED: "true", ANNOTATION_CONFIG_HASH: "abc",
                                "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "deletionTimestamp": "2026-11-30T00:00:00Z",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Job", "name": "j", "uid": "u"},
                    {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "api", "uid": "u2", "controller": true}
                ]
            },
            "spec": {"initContainers": [{"name": SIDECAR_CONTAINER_NAME,
                     "ports": [{"name": "other", "containerPort": 1},
                               {"name": crate::inject::PORT_METRICS, "containerPort": 9200}]}],
                     "containers": [{"name": "api"}]},
            "status": {"phase": "Running", "podIP": "10.1.2.3"}
        }))
        .expect("a pod");
        let entry = PodEntry::from_pod(&pod);
        assert_eq!(entry.sidecar.as_deref(), Some("default"));
        assert_eq!(entry.config_hash.as_deref(), Some("abc"));
        assert!(entry.injected_by_us && entry.terminating && entry.has_sidecar_container);
        assert_eq!(entry.metrics_port, Some(9200));
        assert_eq!(entry.ip, Some("10.1.2.3".parse().expect("ip")));
        assert_eq!(entry.phase, Phase::Running);
        assert_eq!(
            entry.copied_labels().collect::<Vec<_>>(),
            [("app.kubernetes.io/name", "api")]
        );
        assert_eq!(entry.owner.map(|o| o.kind), Some(OwnerKind::StatefulSet));
    }

    /// Whatever a pod holds, the mapping keeps going: a bad IP is no IP, an unknown phase is
    /// `Other`, an owner kind not rolled is no owner, a missing spec or status is empty.
    #[test]
    fn odd_pods_map_without_failing() {
        for (status, ip, phase) in [
            (
                json!({"phase": "Unknown", "podIP": "not-an-ip"}),
                None,
                Phase::Other,
            ),
            (
                json!({"phase": "Failed", "podIP": "fd00::1"}),
                Some("fd00::1"),
                Phase::Failed,
            ),
            (json!({}), None, Phase::None),
        ] {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": "p", "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": true}]},
                "status": status,
            }))
            .expect("a pod");
            let entry = PodEntry::from_pod(&pod);
            assert_eq!(entry.ip, ip.map(|ip| ip.parse().expect("ip")));
            assert_eq!(entry.phase, phase);
            assert_eq!(entry.owner, None);
            assert_eq!(&*entry.namespace, "");
        }
        let empty = PodEntry::from_pod(&Pod::default());
        assert!(!empty.host_network && !empty.has_sidecar_container && empty.sidecar.is_none());
    }

    /// The watch lists `/api/v1/pods` and resumes from the resource version, the only metadata
    /// the decoded pod keeps.
    #[test]
    fn a_watched_pod_is_listed_as_a_pod_and_keeps_its_resource_version() {
        assert_eq!(WatchedPod::url_path(&(), None), "/api/v1/pods");
        let mut json = fixture_pod_json("create-hostnetwork");
        json["metadata"]["resourceVersion"] = json!("4242");
        let pod: WatchedPod = serde_json::from_value(json).expect("a watched pod");
        assert_eq!(pod.meta().resource_version.as_deref(), Some("4242"));
        assert_eq!(pod.meta().labels, None, "labels live in the entry only");
    }

    /// What the decoding skips does not reach the entry: other labels and annotations, managed
    /// fields, other containers' ports; an empty or null field is the same as a missing one.
    #[test]
    fn decoding_keeps_only_what_the_entry_reads() {
        let mut json = fixture_pod_json("create-already-has-sidecar");
        json["metadata"]["managedFields"] =
            json!([{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]);
        json["metadata"]["labels"] = json!({
            "app.kubernetes.io/component": "worker", "zz": "1", "app": "a",
            LABEL_SIDECAR: "default"});
        json["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
            ANNOTATION_CONFIG_HASH: "h1"});
        json["status"] =
            json!({"phase": "Pending", "podIP": null, "conditions": [{"type": "Ready"}]});
        let entry = serde_json::from_value::<WatchedPod>(json)
            .expect("a watched pod")
            .entry;
        assert_eq!(
            entry.copied_labels().collect::<Vec<_>>(),
            [("app", "a"), ("app.kubernetes.io/component", "worker")],
            "in the order of COPIED_POD_LABELS"
        );
        assert_eq!(entry.sidecar.as_deref(), Some("default"));
        assert_eq!(entry.config_hash.as_deref(), Some("h1"));
        assert_eq!((entry.inject, entry.injected_by_us), (None, false));
        assert_eq!((entry.phase, entry.ip), (Phase::Pending, None));
        assert_eq!(entry.metrics_port, Some(9102));

        let nulls: WatchedPod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": null, "annotations": null, "ownerReferences": null,
                         "deletionTimestamp": null},
            "spec": {"containers": null, "initContainers": null, "hostNetwork": null},
            "status": null
        }))
        .expect("nulls decode");
        let empty = PodEntry {
            name: "p".into(),
            ..PodEntry::from_pod(&Pod::default())
        };
        assert_eq!(nulls.entry, empty);
    }

    /// Input the apiserver would never send is a decoding error (the watcher logs it and
    /// retries), never a panic; no prefix of a real pod's JSON panics either.
    #[test]
    fn malformed_pod_json_is_an_error_not_a_panic() {
        for bad in [
            json!({"metadata": {"labels": ["app", "x"]}}),
            json!({"metadata": {"labels": {"app": 7}}}),
            json!({"metadata": {"annotations": "x"}}),
            json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]}}),
            json!({"spec": {"containers": [{"name": 1}]}}),
            json!({"spec": {"containers": [{"name": "monasca-sidecar", "ports": [{"containerPort": "x"}]}]}}),
            json!({"status": {"phase": 3}}),
            json!("a pod"),
        ] {
            assert!(
                serde_json::from_value::<WatchedPod>(bad.clone()).is_err(),
                "{bad} decoded"
            );
        }
        let bytes = serde_json::to_vec(&fixture_pod_json(
            "create-named-initcontainer-prometheus-annotations",
        ))
        .expect("JSON");
        for end in 0..bytes.len() {
            assert!(serde_json::from_slice::<WatchedPod>(&bytes[..end]).is_err());
        }
        let port = json!({"spec": {"containers": [{"name": SIDECAR_CONTAINER_NAME,
            "ports": [{"name": crate::inject::PORT_METRICS, "containerPort": 70000}]}]}});
        let entry = serde_json::from_value::<WatchedPod>(port)
            .expect("decodes")
            .entry;
        assert_eq!(entry.metrics_port, None, "a port out of range is no port");
    }

    #[test]
    fn the_store_finds_an_entry_by_namespace_and_name() {
        let mut writer = kube::runtime::reflector::store::Writer::<PodEntry>::default();
        let pod = fixture_pod("create-hostnetwork");
        writer.apply_watcher_event(&entry_event(watcher::Event::Apply(pod.clone())));
        let store = writer.as_reader();
        let found = store
            .get(&kube::runtime::reflector::ObjectRef::new("host-network").within("demo"))
            .expect("stored");
        assert!(found.host_network);
        writer.apply_watcher_event(&entry_event(watcher::Event::Delete(pod)));
        assert!(store.state().is_empty());
    }
}
