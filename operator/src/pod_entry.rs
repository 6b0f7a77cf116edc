//! What the operator keeps of each pod in its one cluster-wide pod store: a compact value of its
//! own instead of a k8s-openapi `Pod` (one `Pod` is about 2 KB of struct before any string, and
//! its labels and annotations are B-tree maps with a node of their own each). A [`PodEntry`]
//! holds exactly what the census, the webhook's skip rules, discovery and rollouts read.
//!
//! Pure: [`PodEntry::from_pod`] maps a watched `Pod` (no I/O), and [`entry_event`] maps a watcher
//! event before it reaches the reflector store.

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Lookup;
use kube::runtime::watcher;
use monasca_crds::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_INJECT, ANNOTATION_INJECTED, LABEL_SIDECAR,
    SIDECAR_CONTAINER_NAME,
};
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

fn boxed(s: &str) -> Box<str> {
    s.into()
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

    /// Keeps what the operator reads of `pod`.
    pub fn from_pod(pod: &Pod) -> PodEntry {
        let meta = &pod.metadata;
        let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key));
        let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
        let spec = pod.spec.as_ref();
        let sidecar_container = spec.and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == SIDECAR_CONTAINER_NAME)
        });
        let status = pod.status.as_ref();
        PodEntry {
            namespace: boxed(meta.namespace.as_deref().unwrap_or_default()),
            name: boxed(meta.name.as_deref().unwrap_or_default()),
            phase: Phase::parse(status.and_then(|s| s.phase.as_deref())),
            ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            terminating: meta.deletion_timestamp.is_some(),
            host_network: spec.and_then(|s| s.host_network) == Some(true),
            has_sidecar_container: sidecar_container.is_some(),
            metrics_port: sidecar_container.and_then(crate::inject::container_metrics_port),
            sidecar: label(LABEL_SIDECAR).map(|v| boxed(v)),
            copied_labels: COPIED_POD_LABELS
                .iter()
                .enumerate()
                .filter_map(|(i, key)| Some((i as u8, boxed(label(key)?))))
                .collect(),
            inject: annotation(ANNOTATION_INJECT).map(|v| boxed(v)),
            injected_by_us: annotation(ANNOTATION_INJECTED).is_some(),
            config_hash: annotation(ANNOTATION_CONFIG_HASH).map(|v| boxed(v)),
            owner: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .and_then(|o| {
                    let kind = match o.kind.as_str() {
                        "ReplicaSet" => OwnerKind::ReplicaSet,
                        "StatefulSet" => OwnerKind::StatefulSet,
                        "DaemonSet" => OwnerKind::DaemonSet,
                        _ => return None,
                    };
                    Some(Owner {
                        kind,
                        name: boxed(&o.name),
                    })
                }),
        }
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
pub fn entry_event(event: watcher::Event<Pod>) -> watcher::Event<PodEntry> {
    use watcher::Event;
    match event {
        Event::Apply(pod) => Event::Apply(PodEntry::from_pod(&pod)),
        Event::Delete(pod) => Event::Delete(PodEntry::from_pod(&pod)),
        Event::Init => Event::Init,
        Event::InitApply(pod) => Event::InitApply(PodEntry::from_pod(&pod)),
        Event::InitDone => Event::InitDone,
    }
}

/// The store keys entries by namespace and name only: the resource version and uid are not kept
/// (the store never compares them), so a key holds no more strings than it needs.
impl Lookup for PodEntry {
    type DynamicType = ();

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
    use serde_json::{Value, json};

    /// The pod of a real AdmissionReview captured from a kube-apiserver, from
    /// `../shared/fixtures/admission` beside the repository (override: `MONASCA_FIXTURES_DIR`,
    /// as in the integration tests).
    fn fixture_pod(name: &str) -> Pod {
        let dir = std::env::var_os("MONASCA_FIXTURES_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../shared/fixtures/admission")
            });
        let path = dir.join(format!("{name}.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let review: Value = serde_json::from_str(&text).expect("review JSON");
        serde_json::from_value(review["request"]["object"].clone()).expect("a pod")
    }

    #[test]
    fn a_replicaset_pod_keeps_its_owner_and_inject_annotation() {
        let entry = PodEntry::from_pod(&fixture_pod("create-replicaset-pod-generatename"));
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
        let host = PodEntry::from_pod(&fixture_pod("create-hostnetwork"));
        assert!(host.host_network);
        assert_eq!(host.owner, None);
        let has = PodEntry::from_pod(&fixture_pod("create-already-has-sidecar"));
        assert!(has.has_sidecar_container);
        assert_eq!(has.metrics_port, Some(9102));
        let init = PodEntry::from_pod(&fixture_pod(
            "create-named-initcontainer-prometheus-annotations",
        ));
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
