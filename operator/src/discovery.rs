//! `GET /discovery/targets`: every injected pod's sidecar as Prometheus HTTP service discovery
//! JSON (`[{"targets": ["10.0.0.7:9102"], "labels": {...}}]`), so Prometheus or monasca-agent
//! finds all sidecars cluster-wide from one URL, without kubernetes_sd relabeling recipes.
//!
//! Pure: built from the operator's pod store (its one pod watch, slimmed to metadata, phase, IP,
//! container names and the sidecar container's ports), filtered by the sidecar label; the port is the one the pod declares,
//! so a `MetricsSidecar` moved to another port never points Prometheus at pods still on the old.

use k8s_openapi::api::core::v1::Pod;
use monasca_crds::{DEFAULT_METRICS_PORT, LABEL_SIDECAR, MetricsSidecar};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Pod labels copied onto the targets (sanitized into Prometheus label names).
pub const COPIED_POD_LABELS: [&str; 4] = [
    "app",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
];

/// One HTTP SD target group.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// A Kubernetes label key as a Prometheus label name: every character outside `[a-zA-Z0-9_]`
/// becomes `_` (`app.kubernetes.io/name` -> `app_kubernetes_io_name`).
pub fn sanitize(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The port to scrape: the one the pod's sidecar container declares (what runs there, even
/// after its `MetricsSidecar` moved to another port), else the named sidecar's
/// `listen.metrics` (pods injected before ports were declared), else 9102.
fn metrics_port(pod: &Pod, sidecars: &[Arc<MetricsSidecar>], namespace: &str, name: &str) -> u16 {
    if let Some(port) = crate::inject::declared_metrics_port(pod) {
        return port;
    }
    sidecars
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
        .and_then(|s| s.spec.config.listen.metrics.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .unwrap_or(DEFAULT_METRICS_PORT)
}

/// The target groups, one per running injected pod with an IP, sorted by namespace and pod.
pub fn targets(pods: &[Arc<Pod>], sidecars: &[Arc<MetricsSidecar>]) -> Vec<TargetGroup> {
    let mut groups: Vec<TargetGroup> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let labels = pod.metadata.labels.as_ref()?;
            let sidecar = labels.get(LABEL_SIDECAR)?;
            let status = pod.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let port = metrics_port(pod, sidecars, &namespace, sidecar);
            let mut out = BTreeMap::from([
                ("namespace".to_string(), namespace),
                (
                    "pod".to_string(),
                    pod.metadata.name.clone().unwrap_or_default(),
                ),
                ("sidecar".to_string(), sidecar.clone()),
            ]);
            for key in COPIED_POD_LABELS {
                if let Some(value) = labels.get(key) {
                    out.insert(sanitize(key), value.clone());
                }
            }
            Some(TargetGroup {
                targets: vec![SocketAddr::new(ip, port).to_string()],
                labels: out,
            })
        })
        .collect();
    groups.sort_by(|a, b| {
        (a.labels.get("namespace"), a.labels.get("pod"))
            .cmp(&(b.labels.get("namespace"), b.labels.get("pod")))
    });
    groups
}

/// The response body.
pub fn render(pods: &[Arc<Pod>], sidecars: &[Arc<MetricsSidecar>]) -> Vec<u8> {
    serde_json::to_vec(&targets(pods, sidecars)).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use kube::api::ObjectMeta;
    use serde_json::json;

    fn pod(name: &str, labels: &[(&str, &str)], ip: Option<&str>, phase: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("monasca".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: ip.map(String::from),
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            spec: None,
        })
    }

    #[test]
    fn injected_pods_with_an_ip_become_targets_with_plain_labels() {
        let pods = vec![
            pod(
                "persister-1",
                &[
                    (LABEL_SIDECAR, "default"),
                    ("app.kubernetes.io/name", "persister"),
                    ("tier", "ignored"),
                ],
                Some("10.0.0.8"),
                "Running",
            ),
            pod(
                "api-0",
                &[(LABEL_SIDECAR, "default"), ("app", "monasca-api")],
                Some("fd00::7"),
                "Running",
            ),
            pod("pending", &[(LABEL_SIDECAR, "default")], None, "Pending"),
            pod("plain", &[("app", "x")], Some("10.0.0.9"), "Running"),
            pod(
                "done",
                &[(LABEL_SIDECAR, "default")],
                Some("10.0.0.10"),
                "Succeeded",
            ),
        ];
        let body: serde_json::Value =
            serde_json::from_slice(&render(&pods, &[])).expect("valid JSON");
        assert_eq!(
            body,
            json!([
                {"targets": ["[fd00::7]:9102"],
                 "labels": {"namespace": "monasca", "pod": "api-0", "sidecar": "default",
                            "app": "monasca-api"}},
                {"targets": ["10.0.0.8:9102"],
                 "labels": {"namespace": "monasca", "pod": "persister-1", "sidecar": "default",
                            "app_kubernetes_io_name": "persister"}},
            ])
        );
    }

    #[test]
    fn a_sidecar_listening_elsewhere_is_scraped_there() {
        let mut sidecar = MetricsSidecar::new("custom", Default::default());
        sidecar.metadata.namespace = Some("monasca".into());
        sidecar.spec.config.listen.metrics = "0.0.0.0:9200".into();
        let pods = vec![pod(
            "p",
            &[(LABEL_SIDECAR, "custom")],
            Some("10.1.2.3"),
            "Running",
        )];
        let groups = targets(&pods, &[Arc::new(sidecar)]);
        assert_eq!(groups[0].targets, vec!["10.1.2.3:9200".to_string()]);
    }

    #[test]
    fn the_port_the_pod_declares_wins_over_the_sidecars_current_config() {
        let mut sidecar = MetricsSidecar::new("custom", Default::default());
        sidecar.metadata.namespace = Some("monasca".into());
        sidecar.spec.config.listen.metrics = "0.0.0.0:9300".into();
        let mut injected: Pod = (*pod(
            "old",
            &[(LABEL_SIDECAR, "custom")],
            Some("10.1.2.3"),
            "Running",
        ))
        .clone();
        injected.spec = Some(
            serde_json::from_value(json!({"containers": [
                {"name": "app", "ports": [{"name": "sidecar-metrics", "containerPort": 8000}]},
                {"name": "monasca-sidecar", "image": "x", "args": ["--config", "y"],
                 "ports": [{"name": "sidecar-metrics", "containerPort": 9102}]},
            ]}))
            .expect("spec"),
        );
        crate::controller::status::slim(&mut injected);
        let spec = injected
            .spec
            .as_ref()
            .expect("the sidecar's ports are kept");
        assert_eq!(
            spec.containers.len(),
            1,
            "only the sidecar container is kept"
        );
        assert_eq!(
            spec.containers[0].image, None,
            "the sidecar: only its name and ports"
        );
        let groups = targets(&[Arc::new(injected)], &[Arc::new(sidecar)]);
        assert_eq!(groups[0].targets, vec!["10.1.2.3:9102".to_string()]);
    }

    #[test]
    fn label_keys_are_sanitized() {
        assert_eq!(sanitize("app.kubernetes.io/name"), "app_kubernetes_io_name");
        assert_eq!(sanitize("9lives"), "_9lives");
    }

    #[test]
    fn no_pods_is_an_empty_list() {
        assert_eq!(render(&[], &[]), b"[]");
    }
}
