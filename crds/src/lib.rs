//! `MetricsSidecar` custom resource types and the annotation/label keys of the product contract.
//!
//! Everything the webhook and the controller must agree on lives here: the CRD types (from which
//! the committed YAML in `manifests/crds/` is generated), the annotation and label keys users
//! write, the names of generated objects, and [`MetricsSidecarSpec::config_hash`], which both
//! the webhook (stamping pods) and the controller (status, restarts) compute and must compute
//! identically.

pub use monasca_config as config;

mod fixtures;
mod keys;
mod schema;

pub use keys::*;
pub use schema::SOCKET_ADDR;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use monasca_config::SidecarConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded sidecar configuration could not be rendered.
    #[error("sidecar configuration: {0}")]
    Config(#[from] monasca_config::ConfigError),
    /// A value could not be serialized to JSON.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    /// The object's name cannot name what the operator derives from it.
    #[error("name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
    /// The CRD could not be rendered as YAML.
    #[error("rendering YAML: {0}")]
    Yaml(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many hex digits of the SHA-256 digest make a config hash. 64 bits are plenty to detect a
/// change and keep the annotation short enough to read in `kubectl describe`.
const CONFIG_HASH_HEX_LEN: usize = 16;

/// A sidecar setup that pods opt into with the `monasca.openstack.org/inject` annotation.
///
/// The name is used as a label value (`monasca.openstack.org/sidecar`) and in the ConfigMap name
/// `<name>-monasca-sidecar`, hence the 63-character limit enforced by the apiserver.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monasca.openstack.org",
    version = "v1alpha1",
    kind = "MetricsSidecar",
    plural = "metricssidecars",
    shortname = "msc",
    category = "monasca",
    namespaced,
    status = "MetricsSidecarStatus",
    derive = "PartialEq",
    doc = "A monasca-sidecar setup: pods annotated monasca.openstack.org/inject get the sidecar.",
    printcolumn(
        name = "Injected",
        type_ = "integer",
        json_path = ".status.injectedPods",
        description = "Pending and Running pods that carry this sidecar"
    ),
    printcolumn(
        name = "Uninjected",
        type_ = "integer",
        json_path = ".status.uninjectedPods",
        description = "Pending and Running pods that ask for this sidecar and could carry it but do not"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63")
        .message("the name is used as a label value and must be at most 63 characters")
)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSidecarSpec {
    /// Sidecar image. When absent, the operator's `--sidecar-image` is used, so upgrading the
    /// operator upgrades the sidecars of newly created pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy of the sidecar container; Kubernetes' default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Compute resources of the sidecar container. The default fits a sidecar aggregating a few
    /// thousand series; set `{}` to run without requests or limits.
    #[serde(default = "default_resources")]
    pub resources: ResourceRequirements,

    /// Run the sidecar as a Kubernetes native sidecar (an init container with
    /// `restartPolicy: Always`, started before and stopped after the application). A native
    /// sidecar comes before the app containers: when its image cannot be pulled or it never
    /// starts, the app never starts either. `auto` therefore chooses native only for pods that
    /// need it to finish (`restartPolicy: Never`/`OnFailure`, Jobs); a long-running pod gets a
    /// regular container, which can fail without stopping the app from starting.
    #[serde(default)]
    pub native_sidecar: NativeSidecar,

    /// Share an emptyDir between the sidecar and the application containers and set
    /// `PROMETHEUS_MULTIPROC_DIR` in the application containers (a value the user already set is
    /// kept), so prometheus_client multiprocess files are aggregated by the sidecar.
    #[serde(default)]
    pub multiprocess: bool,

    /// With `multiprocess`, whether the pod gets `spec.shareProcessNamespace: true`, so the
    /// sidecar sees the workers in `/proc`, can prove them dead and compact the directory.
    /// Caveat: in a shared process namespace the pause container is pid 1 for every
    /// container, so an app that expects to be pid 1 (signal handling, zombie reaping) sees
    /// another process there, and every container can see (not signal, unless it runs as the
    /// same uid) the others' processes.
    #[serde(default, skip_serializing_if = "ShareProcessNamespace::is_auto")]
    pub share_process_namespace: ShareProcessNamespace,

    /// Point the pod's `prometheus.io/scrape|port|path` annotations at the sidecar. Annotations
    /// that pointed at the application become the sidecar's scrape targets.
    #[serde(default = "default_true")]
    pub prometheus_annotations: bool,

    /// Restart the pods of this sidecar (by annotating the pod template of their Deployment,
    /// StatefulSet or DaemonSet) when a change needs new pods: image, resources, native mode,
    /// multiprocess, Prometheus annotations or a listen address (the pod declares the ports, the
    /// sidecar binds them only at start). Other changes of `config` never restart pods: the
    /// sidecar reloads its ConfigMap. When false, such a change is reported in an Event naming
    /// the pods to roll.
    #[serde(default)]
    pub restart_on_change: bool,

    /// Create a Prometheus Operator `PodMonitor` selecting the pods of this sidecar (port
    /// `sidecar-metrics`), when the `monitoring.coreos.com` CRDs are installed.
    #[serde(default)]
    pub pod_monitor: bool,

    /// OpenTelemetry SDKs in the application containers (the sidecar's OTLP receiver).
    #[serde(default)]
    pub otlp: OtlpSpec,

    /// The sidecar configuration, written to ConfigMap `<name>-monasca-sidecar`. Same schema as
    /// the `monasca-sidecar --config` file.
    #[serde(default)]
    #[schemars(schema_with = "schema::sidecar_config")]
    pub config: SidecarConfig,
}

/// How the application containers reach the sidecar's OTLP receiver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtlpSpec {
    /// Set `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (`http://127.0.0.1:<listen.otlp port>/v1/metrics`)
    /// and `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL` (`http/protobuf`) in application containers
    /// that do not set them, so OpenTelemetry SDKs export their metrics to the sidecar.
    #[serde(default)]
    pub inject_env: bool,
}

/// Observed state, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSidecarStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` and friends, keyed by type.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Pending and Running pods in the namespace that carry this sidecar (Succeeded and Failed
    /// pods are not counted).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub injected_pods: i32,

    /// Pending and Running pods that ask for this sidecar but do not carry it (created while the
    /// webhook was unavailable, or before this resource existed). Pods the webhook never injects
    /// by rule (`hostNetwork`, their own `monasca-sidecar` container) are not counted.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub uninjected_pods: i32,

    /// [`MetricsSidecarSpec::config_hash`] of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// Image pull policy, as in a Pod's container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Whether a multiprocess pod shares its process namespace (`spec.shareProcessNamespace`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShareProcessNamespace {
    /// Shared, unless the pod sets `shareProcessNamespace: false` itself.
    #[default]
    Auto,
    /// Shared, even when the pod sets it false.
    Always,
    /// Left as the pod has it: the sidecar sees the workers only if the pod shares anyway.
    Never,
}

impl ShareProcessNamespace {
    /// For `skip_serializing_if`: the default is left out of rendered specs and hashes.
    pub fn is_auto(&self) -> bool {
        *self == ShareProcessNamespace::Auto
    }
}

/// Whether the sidecar runs as a native sidecar (init container with `restartPolicy: Always`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NativeSidecar {
    /// Native for pods that run to completion (`restartPolicy: Never` or `OnFailure`: a
    /// regular sidecar would keep them from completing) when the apiserver has sidecar
    /// containers (its SidecarContainers feature, on by default since 1.29); a regular
    /// container otherwise, so that a sidecar
    /// that cannot start (image not pullable, crash loop) never holds back the app.
    #[default]
    Auto,
    /// Always native; a regular container, with a warning and a status condition, where the
    /// apiserver has sidecar containers off.
    Always,
    /// Always a regular container.
    Never,
}

fn default_true() -> bool {
    true
}

/// The default sidecar resources: small requests, a memory limit that protects the node from a
/// runaway cardinality explosion, and no CPU limit (throttling a scrape target causes gaps).
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("10m".into())),
            ("memory".to_string(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("128Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

impl Default for MetricsSidecarSpec {
    fn default() -> Self {
        MetricsSidecarSpec {
            image: None,
            image_pull_policy: None,
            resources: default_resources(),
            native_sidecar: NativeSidecar::Auto,
            multiprocess: false,
            share_process_namespace: ShareProcessNamespace::Auto,
            prometheus_annotations: true,
            restart_on_change: false,
            pod_monitor: false,
            otlp: OtlpSpec::default(),
            config: SidecarConfig::default(),
        }
    }
}

/// The spec fields that change the injected pod, in a fixed order for hashing. `image` is the
/// spec's own value: a change of the operator's default image does not restart pods.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodAffecting<'a> {
    image: &'a Option<String>,
    image_pull_policy: &'a Option<ImagePullPolicy>,
    resources: &'a ResourceRequirements,
    native_sidecar: NativeSidecar,
    multiprocess: bool,
    /// Left out when `auto`, so hashes of specs without it are unchanged.
    #[serde(skip_serializing_if = "ShareProcessNamespace::is_auto")]
    share_process_namespace: ShareProcessNamespace,
    prometheus_annotations: bool,
    /// Left out when false, so hashes of specs without it are unchanged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    otlp_inject_env: bool,
    /// The listeners: the pod declares their ports (probes, Services, discovery) and the sidecar
    /// binds them only at start, so a change needs new pods. Left out at the defaults, so hashes
    /// of specs that never moved a listener are unchanged.
    #[serde(skip_serializing_if = "is_default_listen")]
    listen: &'a monasca_config::Listen,
}

fn is_default_listen(listen: &&monasca_config::Listen) -> bool {
    **listen == monasca_config::Listen::default()
}

impl MetricsSidecarSpec {
    /// The sidecar configuration file as the controller writes it into the ConfigMap (YAML).
    pub fn rendered_config(&self) -> Result<String> {
        Ok(self.config.to_yaml()?)
    }

    /// A stable hash of the rendered sidecar configuration and of the spec fields that shape the
    /// injected pod. The webhook stamps it on pods (`monasca.openstack.org/config-hash`) and the
    /// controller compares it with the current spec to find pods running an old setup.
    ///
    /// Stable means: the same on every build and architecture (SHA-256 over a canonical text, not
    /// `std`'s hasher), and independent of map ordering (the config renders fields in declaration
    /// order and maps are `BTreeMap`s).
    pub fn config_hash(&self) -> Result<String> {
        let rendered = self.rendered_config()?;
        let affecting = self.pod_affecting_json()?;
        let mut digest = Sha256::new();
        digest.update(b"monasca-sidecar config-hash v1\0");
        digest.update(rendered.as_bytes());
        digest.update(b"\0");
        digest.update(&affecting);
        Ok(short_hex(digest))
    }

    /// A stable hash of only the spec fields that shape the injected pod (not `config`). When it
    /// changes, running pods are out of date and only a restart fixes them (`restartOnChange`);
    /// when only [`config_hash`](Self::config_hash) changes, the ConfigMap carries the change to
    /// the running sidecars.
    pub fn pod_template_hash(&self) -> Result<String> {
        let mut digest = Sha256::new();
        digest.update(b"monasca-sidecar pod-template-hash v1\0");
        digest.update(&self.pod_affecting_json()?);
        Ok(short_hex(digest))
    }

    fn pod_affecting_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(&PodAffecting {
            image: &self.image,
            image_pull_policy: &self.image_pull_policy,
            resources: &self.resources,
            native_sidecar: self.native_sidecar,
            multiprocess: self.multiprocess,
            share_process_namespace: self.share_process_namespace,
            prometheus_annotations: self.prometheus_annotations,
            otlp_inject_env: self.otlp.inject_env,
            listen: &self.config.listen,
        })?)
    }
}

/// Longest label value (the name is the `monasca.openstack.org/sidecar` label's value).
const MAX_LABEL_VALUE: usize = 63;
/// Longest object name (the ConfigMap `<name>-monasca-sidecar`).
const MAX_OBJECT_NAME: usize = 253;

impl MetricsSidecar {
    /// Everything the operator and the sidecar would refuse, checked once for both the webhook
    /// (which then skips the pod) and the controller (which then reports `InvalidConfig`): a name
    /// that cannot be a label value or name its ConfigMap, and [`SidecarConfig::validate`], the
    /// sidecar's own check.
    pub fn validate(&self) -> Result<()> {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let bad = |reason| {
            Err(Error::Name {
                name: name.to_string(),
                reason,
            })
        };
        if name.is_empty() || name.len() > MAX_LABEL_VALUE {
            return bad("must be 1 to 63 characters (it is a label value)");
        }
        if config_map_name(name).len() > MAX_OBJECT_NAME {
            return bad("too long for its ConfigMap name");
        }
        let label_value = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !label_value {
            return bad("is not a valid label value");
        }
        self.spec.config.validate()?;
        Ok(())
    }
}

fn short_hex(digest: Sha256) -> String {
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex[..CONFIG_HASH_HEX_LEN].to_string()
}

/// The header of the generated CRD file, so that nobody edits it by hand.
const CRD_HEADER: &str = "# Generated by `cargo run -p monasca-crds --bin crdgen -- --write`. Do not edit:\n\
# the drift test in crds/tests/crd_drift.rs fails when this file differs from the Rust types.\n";

/// The `MetricsSidecar` CustomResourceDefinition, as installed. Use this rather than
/// `MetricsSidecar::crd()`: it also removes the `null` that schemars lists among the values of an
/// optional enum (`nullable: true` already admits null, and older apiservers reject a `null`
/// enum value whose type is `string`).
pub fn crd() -> Result<CustomResourceDefinition> {
    let mut value = serde_json::to_value(MetricsSidecar::crd())?;
    schema::strip_null_enum_values(&mut value);
    Ok(serde_json::from_value(value)?)
}

/// The `MetricsSidecar` CustomResourceDefinition as YAML, exactly as committed in
/// `manifests/crds/metricssidecars.yaml`.
pub fn crd_yaml() -> Result<String> {
    let body = serde_saphyr::to_string(&crd()?).map_err(|e| Error::Yaml(e.to_string()))?;
    Ok(format!("{CRD_HEADER}{body}"))
}

#[cfg(test)]
mod tests;
