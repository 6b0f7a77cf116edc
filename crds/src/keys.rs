//! Names that users and other components rely on: annotation and label keys, object names,
//! ports and paths. They are the product's interface (see DESIGN.md); change none of them
//! without a migration.

/// The API group of the CRD; also the prefix of every annotation and label key.
pub const GROUP: &str = "monasca.openstack.org";

/// Pod or Namespace annotation asking for injection: `"true"`, `"false"` or a sidecar name.
pub const ANNOTATION_INJECT: &str = "monasca.openstack.org/inject";
/// Set by the webhook on an injected pod: the name of the `MetricsSidecar` it used.
pub const ANNOTATION_INJECTED: &str = "monasca.openstack.org/injected";
/// Set by the webhook on an injected pod: [`crate::MetricsSidecarSpec::config_hash`].
pub const ANNOTATION_CONFIG_HASH: &str = "monasca.openstack.org/config-hash";
/// Set by the webhook on an injected pod: the name of the `MetricsSidecar`. A label (not only an
/// annotation) so that the controller and discovery can select injected pods server-side.
pub const LABEL_SIDECAR: &str = "monasca.openstack.org/sidecar";

/// The `inject` value that selects the namespace's default sidecar.
pub const INJECT_TRUE: &str = "true";
/// The `inject` value that turns injection off (also overriding a namespace default).
pub const INJECT_FALSE: &str = "false";
/// The `MetricsSidecar` that `inject: "true"` selects when a namespace has several.
pub const DEFAULT_SIDECAR_NAME: &str = "default";

/// The name of the injected container.
pub const SIDECAR_CONTAINER_NAME: &str = "monasca-sidecar";
/// Suffix of the ConfigMap holding a sidecar's configuration: `<name>-monasca-sidecar`.
pub const CONFIG_MAP_SUFFIX: &str = "-monasca-sidecar";
/// Key of the sidecar configuration file inside that ConfigMap.
pub const CONFIG_MAP_KEY: &str = "config.yaml";

/// The ConfigMap that holds the configuration of the `MetricsSidecar` named `sidecar`.
pub fn config_map_name(sidecar: &str) -> String {
    format!("{sidecar}{CONFIG_MAP_SUFFIX}")
}

/// The sidecar's metrics port when its configuration does not say otherwise.
pub const DEFAULT_METRICS_PORT: u16 = 9102;

/// The namespace the operator runs in when neither `--namespace` nor `POD_NAMESPACE` is set.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "monasca-system";
/// The `MutatingWebhookConfiguration` the operator owns.
pub const WEBHOOK_CONFIGURATION_NAME: &str = "monasca-sidecar-injector";
/// The Secret holding the webhook CA and serving certificate (self-managed mode).
pub const WEBHOOK_TLS_SECRET_NAME: &str = "monasca-sidecar-webhook-tls";
/// The path the apiserver posts AdmissionReviews to.
pub const WEBHOOK_PATH: &str = "/mutate";

/// The conventional Prometheus scrape annotations (read by Prometheus' kubernetes_sd relabeling
/// recipes and by monasca-agent's autodiscovery).
pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
/// See [`PROMETHEUS_SCRAPE`].
pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
/// See [`PROMETHEUS_SCRAPE`].
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";
/// See [`PROMETHEUS_SCRAPE`].
pub const PROMETHEUS_SCHEME: &str = "prometheus.io/scheme";
