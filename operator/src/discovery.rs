//! `GET /discovery/targets`: every injected pod's sidecar as Prometheus HTTP service discovery
//! JSON (`[{"targets": ["10.0.0.7:9102"], "labels": {...}}]`), so Prometheus or monasca-agent
//! finds all sidecars cluster-wide from one URL, without kubernetes_sd relabeling recipes.
//!
//! Pure: built from the operator's pod store (its one pod watch, kept as
//! [`PodEntry`]s), filtered by the sidecar label; the port is the one
//! the pod declares,
//! so a `MetricsSidecar` moved to another port never points Prometheus at pods still on the old.

use crate::pod_entry::PodEntry;
use monasca_crds::{DEFAULT_METRICS_PORT, MetricsSidecar};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

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
fn metrics_port(
    pod: &PodEntry,
    sidecars: &[Arc<MetricsSidecar>],
    namespace: &str,
    name: &str,
) -> u16 {
    if let Some(port) = pod.metrics_port {
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
pub fn targets(pods: &[Arc<PodEntry>], sidecars: &[Arc<MetricsSidecar>]) -> Vec<TargetGroup> {
    let mut groups: Vec<TargetGroup> = pods
        .iter()
        .filter(|p| !p.terminating && !p.phase.stopped())
        .filter_map(|pod| {
            let sidecar = pod.sidecar.as_deref()?;
            let ip = pod.ip?;
            let port = metrics_port(pod, sidecars, &pod.namespace, sidecar);
            let mut out = BTreeMap::from([
                ("namespace".to_string(), pod.namespace.to_string()),
                ("pod".to_string(), pod.name.to_string()),
                ("sidecar".to_string(), sidecar.to_string()),
            ]);
            for (key, value) in pod.copied_labels() {
                out.insert(sanitize(key), value.to_string());
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
pub fn render(pods: &[Arc<PodEntry>], sidecars: &[Arc<MetricsSidecar>]) -> Vec<u8> {
    serde_json::to_vec(&targets(pods, sidecars)).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, PodStatus};
    use kube::api::ObjectMeta;
    use monasca_crds::LABEL_SIDECAR;
    use serde_json::json;

    fn full_pod(name: &str, labels: &[(&str, &str)], ip: Option<&str>, phase: &str) -> Pod {
        Pod {
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
        }
    }

    /// A pod as the store keeps it.
    fn pod(name: &str, labels: &[(&str, &str)], ip: Option<&str>, phase: &str) -> Arc<PodEntry> {
        Arc::new(PodEntry::from_pod(&full_pod(name, labels, ip, phase)))
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
        let mut injected = full_pod(
            "old",
            &[(LABEL_SIDECAR, "custom")],
            Some("10.1.2.3"),
            "Running",
        );
        injected.spec = Some(
            serde_json::from_value(json!({"containers": [
                {"name": "app", "ports": [{"name": "sidecar-metrics", "containerPort": 8000}]},
                {"name": "monasca-sidecar", "image": "x", "args": ["--config", "y"],
                 "ports": [{"name": "sidecar-metrics", "containerPort": 9102}]},
            ]}))
            .expect("spec"),
        );
        let injected = PodEntry::from_pod(&injected);
        assert_eq!(
            injected.metrics_port,
            Some(9102),
            "the sidecar container's port, not another container's of the same name"
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
