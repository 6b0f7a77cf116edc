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
    )?
    .ports
    .iter()
    .flatten()
    .find(|p| p.name.as_deref() == Some(PORT_METRICS))
    .and_then(|p| u16::try_from(p.container_port).ok())
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
