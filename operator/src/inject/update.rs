//! UPDATE of an injected pod: keep the `prometheus.io/*` rewrite.
//!
//! Re-applying an unchanged manifest (`kubectl apply`) writes the app's own `prometheus.io/*`
//! annotations back, and Prometheus would then scrape the app directly while the sidecar scrapes
//! it too (every sample counted twice downstream). Most of a pod's spec is immutable on UPDATE;
//! its annotations are not, so the webhook restores the values the pod had before the update,
//! when those pointed at the sidecar's declared metrics port. Pure, like the rest of `inject`.

use super::build::{Ops, PORT_METRICS};
use super::{Decision, SkipReason};
use k8s_openapi::api::core::v1::{Container, Pod};
use monasca_crds::{
    ANNOTATION_INJECTED, PROMETHEUS_PATH, PROMETHEUS_PORT, PROMETHEUS_SCHEME, PROMETHEUS_SCRAPE,
    SIDECAR_CONTAINER_NAME,
};
use std::collections::BTreeMap;

/// The annotations the CREATE-time rewrite owns.
const REWRITTEN: [&str; 4] = [
    PROMETHEUS_SCRAPE,
    PROMETHEUS_PORT,
    PROMETHEUS_PATH,
    PROMETHEUS_SCHEME,
];

/// The port the pod's `monasca-sidecar` container declares for its metrics listener: what the
/// sidecar in this pod actually serves, whatever its `MetricsSidecar` says now.
pub fn declared_metrics_port(pod: &Pod) -> Option<u16> {
    let spec = pod.spec.as_ref()?;
    sidecar_container(
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten()),
    )
    .and_then(container_metrics_port)
}

/// The `sidecar-metrics` port `container` declares.
pub fn container_metrics_port(container: &Container) -> Option<u16> {
    metrics_port(
        container
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port)),
    )
}

/// The `sidecar-metrics` port among a container's `(name, containerPort)` pairs (none when
/// its number is not a port): the one rule for the full `Container` and the watch's decoding.
pub fn metrics_port<'a>(ports: impl IntoIterator<Item = (Option<&'a str>, i32)>) -> Option<u16> {
    ports
        .into_iter()
        .find(|(name, _)| *name == Some(PORT_METRICS))
        .and_then(|(_, port)| u16::try_from(port).ok())
}

fn sidecar_container<'a>(
    mut containers: impl Iterator<Item = &'a Container>,
) -> Option<&'a Container> {
    containers.find(|c| c.name == SIDECAR_CONTAINER_NAME)
}

/// The decision for an UPDATE of `new` (previously `old`): restore the rewritten
/// `prometheus.io/*` values that the update changed, or admit it unchanged.
pub fn keep_rewrite(old: &Pod, new: &Pod) -> Decision {
    let unchanged = Decision::Skip {
        reason: SkipReason::NotCreate,
        warning: None,
    };
    let Some(sidecar) = new
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_INJECTED))
    else {
        return unchanged;
    };
    let Some(port) = declared_metrics_port(new) else {
        return unchanged;
    };
    let old_annotations = old.metadata.annotations.as_ref();
    let get = |key: &str| old_annotations.and_then(|a| a.get(key));
    // Only a rewrite that happened is kept: the old pod pointed Prometheus at the sidecar.
    if get(PROMETHEUS_PORT) != Some(&port.to_string()) {
        return unchanged;
    }
    let wanted: BTreeMap<String, String> = REWRITTEN
        .iter()
        .filter_map(|key| get(key).map(|v| (key.to_string(), v.clone())))
        .collect();
    let mut ops = Ops::default();
    ops.set_entries(
        &["metadata", "annotations"],
        new.metadata.annotations.as_ref(),
        &wanted,
    );
    if ops.0.is_empty() {
        return unchanged;
    }
    Decision::Patch {
        patch: json_patch::Patch(ops.0),
        warnings: vec![format!(
            "{PROMETHEUS_PORT} and the other prometheus.io annotations keep pointing at the \
             monasca-sidecar (port {port}), which already scrapes the application"
        )],
        sidecar: sidecar.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::{Native, NativeSidecars, PodRequest, Settings, inject, native_sidecar};
    use kube::core::admission::Operation;
    use monasca_crds::{MetricsSidecar, MetricsSidecarSpec, NativeSidecar};
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).expect("test pod")
    }

    fn app(annotations: Value) -> Pod {
        pod(json!({
            "metadata": {"name": "app", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        }))
    }

    fn create(pod: &Pod, spec: MetricsSidecarSpec, native: NativeSidecars) -> Decision {
        let mut sidecar = MetricsSidecar::new("default", spec);
        sidecar.metadata.namespace = Some("demo".into());
        inject(
            &PodRequest {
                operation: &Operation::Create,
                namespace: "demo",
                pod,
            },
            None,
            &[Arc::new(sidecar)],
            &Settings::fixture(native),
        )
    }

    fn apply(pod: &Pod, decision: &Decision) -> Pod {
        let mut value = serde_json::to_value(pod).expect("pod JSON");
        if let Some(patch) = decision.patch() {
            json_patch::patch(&mut value, patch).expect("patch applies");
        }
        serde_json::from_value(value).expect("patched pod")
    }

    fn app_annotations() -> Value {
        json!({
            "monasca.openstack.org/inject": "true",
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "8000",
            "prometheus.io/path": "/app",
        })
    }

    #[test]
    fn reapplying_the_manifest_keeps_the_rewrite_and_only_the_annotations_are_patched() {
        let manifest = app(app_annotations());
        let injected = apply(
            &manifest,
            &create(
                &manifest,
                MetricsSidecarSpec::default(),
                NativeSidecars::Unknown,
            ),
        );
        assert_eq!(declared_metrics_port(&injected), Some(9102));
        // `kubectl apply` of the same manifest: the app's values are back.
        let mut updated = injected.clone();
        updated
            .metadata
            .annotations
            .get_or_insert_default()
            .extend([
                ("prometheus.io/port".to_string(), "8000".to_string()),
                ("prometheus.io/path".to_string(), "/app".to_string()),
            ]);
        let decision = keep_rewrite(&injected, &updated);
        let patch = decision.patch().expect("a patch");
        assert!(
            patch
                .0
                .iter()
                .all(|op| op.path().to_string().starts_with("/metadata/annotations/")),
            "only annotations may change on UPDATE: {patch:?}"
        );
        let kept = apply(&updated, &decision);
        let annotations = kept.metadata.annotations.expect("annotations");
        assert_eq!(annotations["prometheus.io/port"], "9102");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        // The restored pod updated again yields nothing.
        assert_eq!(
            keep_rewrite(&injected, &apply(&updated, &decision)).patch(),
            None
        );
    }

    #[test]
    fn pods_that_were_not_rewritten_are_left_alone_on_update() {
        // Never injected.
        let plain = app(app_annotations());
        let mut edited = plain.clone();
        edited
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("prometheus.io/port".into(), "8001".into());
        assert_eq!(keep_rewrite(&plain, &edited).patch(), None);
        // Injected with prometheusAnnotations off: the app's annotations were kept at CREATE.
        let off = MetricsSidecarSpec {
            prometheus_annotations: false,
            ..MetricsSidecarSpec::default()
        };
        let injected = apply(&plain, &create(&plain, off, NativeSidecars::Unknown));
        let mut edited = injected.clone();
        edited
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("prometheus.io/port".into(), "8001".into());
        assert_eq!(keep_rewrite(&injected, &edited).patch(), None);
    }

    #[test]
    fn a_sidecar_the_sidecar_would_refuse_is_never_injected() {
        let manifest = app(app_annotations());
        let mut spec = MetricsSidecarSpec::default();
        spec.config.listen.ingest = "127.0.0.1:9102".into();
        match create(&manifest, spec, NativeSidecars::Unknown) {
            Decision::Skip {
                reason: SkipReason::InvalidSidecar,
                warning: Some(warning),
            } => assert!(warning.contains("listen.ingest"), "{warning}"),
            other => panic!("expected an invalid_sidecar skip, got {other:?}"),
        }
    }

    #[test]
    fn native_sidecar_always_falls_back_only_on_a_server_detected_without_it() {
        use NativeSidecars::{Available, Unavailable, Unknown};
        let table = [
            (NativeSidecar::Always, Available, Native::Yes),
            (NativeSidecar::Always, Unknown, Native::Yes),
            (NativeSidecar::Always, Unavailable, Native::Unavailable),
            (NativeSidecar::Auto, Available, Native::Yes),
            (NativeSidecar::Auto, Unavailable, Native::No),
            (NativeSidecar::Auto, Unknown, Native::No),
            (NativeSidecar::Never, Available, Native::No),
            (NativeSidecar::Never, Unavailable, Native::No),
        ];
        for (mode, detected, expected) in table {
            assert_eq!(
                native_sidecar(mode, detected),
                expected,
                "{mode:?} on {detected:?}"
            );
        }
        let always = MetricsSidecarSpec {
            native_sidecar: NativeSidecar::Always,
            ..MetricsSidecarSpec::default()
        };
        let manifest = app(json!({"monasca.openstack.org/inject": "true"}));
        let decision = create(&manifest, always, Unavailable);
        let Decision::Patch { warnings, .. } = &decision else {
            panic!("still injected: {decision:?}");
        };
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("SidecarContainers=false") && w.contains("regular container")),
            "{warnings:?}"
        );
        let patched = apply(&manifest, &decision);
        let spec = patched.spec.expect("spec");
        assert!(spec.init_containers.is_none());
        let sidecar = spec
            .containers
            .iter()
            .find(|c| c.name == SIDECAR_CONTAINER_NAME)
            .expect("a regular container");
        assert_eq!(sidecar.restart_policy, None);
        assert_eq!(sidecar.startup_probe, None);
    }
}
