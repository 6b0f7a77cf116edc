//! Builds the additive JSON patch for one pod and one `MetricsSidecar`: the plan and the
//! operations here, the app-side changes in `app`, the sidecar container in `container`.

mod app;
mod container;

use app::*;
use container::*;

use super::checks::Checked;
use super::{Decision, NativeSidecars, Settings, SkipReason};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, Pod, PodSpec, Probe, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use monasca_crds::config::MultiprocessLiveness;
use monasca_crds::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_INJECTED, CONFIG_MAP_KEY, LABEL_SIDECAR, MetricsSidecar,
    MetricsSidecarSpec, NativeSidecar, PROMETHEUS_PATH, PROMETHEUS_PORT, PROMETHEUS_SCHEME,
    PROMETHEUS_SCRAPE, SIDECAR_CONTAINER_NAME, ShareProcessNamespace, config_map_name,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Pod volume holding the sidecar's ConfigMap.
pub const CONFIG_VOLUME: &str = "monasca-sidecar-config";
/// Where the sidecar sees its ConfigMap.
pub const CONFIG_MOUNT_PATH: &str = "/etc/monasca-sidecar";
/// Pod volume (emptyDir) shared for prometheus_client multiprocess files.
pub const MULTIPROC_VOLUME: &str = "monasca-sidecar-multiproc";
/// Pod volume (emptyDir) for the sidecar's `stateDir` when multiprocess is off (with
/// multiprocess, the multiprocess emptyDir is mounted at `stateDir` too: one volume).
pub const STATE_VOLUME: &str = "monasca-sidecar-state";
/// `PROMETHEUS_MULTIPROC_DIR` given to app containers that do not set it, when the sidecar
/// config names no `multiprocessDir`.
pub const DEFAULT_MULTIPROC_DIR: &str = "/var/run/prometheus-multiproc";
/// The environment variable prometheus_client (and the sidecar) read.
pub const ENV_MULTIPROC_DIR: &str = "PROMETHEUS_MULTIPROC_DIR";
/// The OpenTelemetry SDKs' metrics endpoint and protocol, set with `spec.otlp.injectEnv`.
pub const ENV_OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub const ENV_OTLP_METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
/// Per-pod extra scrape targets for the sidecar (comma-separated `host:port`), taken from the
/// pod's former `prometheus.io/port` annotation. Per pod because the ConfigMap is shared.
pub const ENV_SCRAPE_TARGETS: &str = "MONASCA_SIDECAR_SCRAPE_TARGETS";
/// The HTTP path for [`ENV_SCRAPE_TARGETS`] (the pod's former `prometheus.io/path`).
pub const ENV_SCRAPE_PATH: &str = "MONASCA_SIDECAR_SCRAPE_PATH";
/// `proc` or `mtime`: whether this pod's sidecar sees the app's processes (the pod shares its
/// process namespace). Per pod, like the scrape targets, because the ConfigMap is shared by
/// pods that may differ; the sidecar uses it when its config says `multiprocessLiveness: auto`.
pub const ENV_MULTIPROCESS_LIVENESS: &str = "MONASCA_SIDECAR_MULTIPROCESS_LIVENESS";
/// Port names, prefixed so they never clash with the app's (`metrics` is a common app port name;
/// a Service `targetPort: metrics` must keep meaning the app's). At most 15 characters.
pub const PORT_METRICS: &str = "sidecar-metrics";
pub const PORT_INGEST: &str = "sidecar-ingest";
pub const PORT_STATSD: &str = "sidecar-statsd";
pub const PORT_OTLP: &str = "sidecar-otlp";
/// The sidecar runs as this non-root user and group (the distroless `nonroot` ids), so
/// `runAsNonRoot` holds whatever the image's `USER` says.
pub const SIDECAR_UID: i64 = 65532;
pub const SIDECAR_GID: i64 = 65532;

/// The path on which the sidecar serves its metrics.
const METRICS_PATH: &str = "/metrics";

/// JSON patch operations under construction. Paths are built from unescaped tokens; `jsonptr`
/// escapes `~` as `~0` and `/` as `~1` (annotation keys contain `/`).
#[derive(Default)]
pub(super) struct Ops(pub(super) Vec<PatchOperation>);

impl Ops {
    fn add(&mut self, path: &[&str], value: Value) {
        self.0.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        }));
    }

    /// True when an `add` of exactly `path` is already in the patch.
    fn adds(&self, path: &[&str]) -> bool {
        let path = PointerBuf::from_tokens(path.iter().copied());
        self.0
            .iter()
            .any(|op| matches!(op, PatchOperation::Add(a) if a.path == path))
    }

    fn replace(&mut self, path: &[&str], value: Value) {
        self.0.push(PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        }));
    }

    /// Sets `entries` in the string map at `path`: one `add` of a new map when the map is
    /// absent, otherwise an `add` per missing key and a `replace` per differing value.
    pub(super) fn set_entries(
        &mut self,
        path: &[&str],
        existing: Option<&BTreeMap<String, String>>,
        entries: &BTreeMap<String, String>,
    ) {
        match existing {
            None => {
                if !entries.is_empty() {
                    self.add(
                        path,
                        Value::from_iter(
                            entries
                                .iter()
                                .map(|(k, v)| (k.clone(), Value::from(v.as_str()))),
                        ),
                    );
                }
            }
            Some(existing) => {
                for (key, value) in entries {
                    let mut at = path.to_vec();
                    at.push(key);
                    match existing.get(key) {
                        None => self.add(&at, value.as_str().into()),
                        Some(old) if old != value => self.replace(&at, value.as_str().into()),
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// Appends `items` to the array at `path`: `/-` per item when the array exists, else one
    /// `add` of a new array. Never replaces an existing array.
    fn append<T>(
        &mut self,
        path: &[&str],
        exists: bool,
        items: Vec<T>,
    ) -> Result<(), serde_json::Error>
    where
        T: Serialize,
    {
        if items.is_empty() {
            return Ok(());
        }
        if exists {
            let mut at = path.to_vec();
            at.push("-");
            for item in items {
                self.add(&at, serde_json::to_value(item)?);
            }
        } else {
            self.add(path, serde_json::to_value(items)?);
        }
        Ok(())
    }
}

/// Everything resolved from the `MetricsSidecar` before touching the pod.
struct Plan<'a> {
    name: &'a str,
    spec: &'a MetricsSidecarSpec,
    hash: Arc<str>,
    metrics: SocketAddr,
    multiproc_dir: Option<String>,
    /// The sidecar config's `stateDir`, backed by an emptyDir: it survives container restarts,
    /// not the pod's deletion.
    state_dir: Option<String>,
    native: bool,
    native_mode: Native,
    /// With multiprocess: whether the pod will share its process namespace, and whether the
    /// patch must set it so.
    shared_pids: Option<SharedPids>,
}

/// The pod's process namespace, as the patch leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SharedPids {
    shared: bool,
    /// The patch sets `spec.shareProcessNamespace: true`.
    set: bool,
}

impl SharedPids {
    /// `spec.shareProcessNamespace` chosen by the `MetricsSidecar` and the pod.
    fn decide(choice: ShareProcessNamespace, pod: Option<bool>) -> SharedPids {
        let shared = match choice {
            ShareProcessNamespace::Always => true,
            ShareProcessNamespace::Auto => pod != Some(false),
            ShareProcessNamespace::Never => pod == Some(true),
        };
        SharedPids {
            shared,
            set: shared && pod != Some(true),
        }
    }
}

/// Whether the sidecar runs as a native sidecar, and why not when asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Native {
    /// An init container with `restartPolicy: Always`.
    Yes,
    /// A regular container (`never`, or `auto` where native sidecars are not known to work).
    No,
    /// `always` on an apiserver detected without native sidecars: it would drop the
    /// `restartPolicy` and refuse the pod (an init container with probes), so the sidecar falls
    /// back to a regular container, with a warning and a status condition.
    Unavailable,
}

/// What `nativeSidecar` means on an apiserver where native sidecars are `detected`. The
/// injection narrows `auto` further to pods that run to completion (see `plan`).
pub fn native_sidecar(mode: NativeSidecar, detected: NativeSidecars) -> Native {
    match (mode, detected) {
        (NativeSidecar::Never, _)
        | (NativeSidecar::Auto, NativeSidecars::Unavailable | NativeSidecars::Unknown) => {
            Native::No
        }
        (NativeSidecar::Auto, NativeSidecars::Available)
        | (NativeSidecar::Always, NativeSidecars::Available | NativeSidecars::Unknown) => {
            Native::Yes
        }
        (NativeSidecar::Always, NativeSidecars::Unavailable) => Native::Unavailable,
    }
}

/// The admission warning (and condition message) for [`Native::Unavailable`].
pub fn native_fallback_note() -> String {
    "nativeSidecar: always, but this apiserver has native sidecars off (feature gate \
     SidecarContainers=false): monasca-sidecar runs as a regular container"
        .to_string()
}

fn invalid(name: &str, why: impl std::fmt::Display) -> Decision {
    Decision::skip_warning(
        SkipReason::InvalidSidecar,
        format!("monasca-sidecar not injected: MetricsSidecar {name:?} {why}"),
    )
}

/// What injection needs of the `MetricsSidecar` alone, whatever the pod: the same check the
/// controller reports as `InvalidConfig` and the sidecar refuses at start (a pod whose declared
/// ports and probes disagree with what runs is never admitted), and the config hash. Kept per
/// object in [`Settings::sidecar_checks`].
fn check(sidecar: &MetricsSidecar) -> Checked {
    sidecar
        .validate()
        .map_err(|e| format!("is invalid ({e})"))
        .and_then(|()| {
            sidecar
                .spec
                .config_hash()
                .map_err(|e| format!("cannot be rendered: {e}"))
        })
        .map(Into::into)
        .map_err(Into::into)
}

fn plan<'a>(
    sidecar: &'a Arc<MetricsSidecar>,
    pod: &PodSpec,
    settings: &Settings,
) -> Result<Plan<'a>, Decision> {
    let name = sidecar.metadata.name.as_deref().unwrap_or_default();
    let hash = settings
        .sidecar_checks
        .get(sidecar, check)
        .map_err(|why| invalid(name, why))?;
    let spec = &sidecar.spec;
    let metrics: SocketAddr = spec.config.listen.metrics.parse().map_err(|_| {
        invalid(
            name,
            format_args!(
                "has an invalid listen.metrics {:?}",
                spec.config.listen.metrics
            ),
        )
    })?;
    let multiproc_dir = spec.multiprocess.then(|| {
        spec.config
            .multiprocess_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_MULTIPROC_DIR.to_string())
    });
    if let Some(dir) = &multiproc_dir
        && (!dir.starts_with('/') || same_path(dir, CONFIG_MOUNT_PATH))
    {
        return Err(invalid(
            name,
            format_args!("has an unusable multiprocessDir {dir:?}"),
        ));
    }
    let state_dir = spec.config.state_dir.clone();
    if let Some(dir) = &state_dir
        && (!dir.starts_with('/') || same_path(dir, CONFIG_MOUNT_PATH))
    {
        return Err(invalid(
            name,
            format_args!("has an unusable stateDir {dir:?}"),
        ));
    }
    // `auto`: native only where a regular container would break the pod (it would never
    // complete). Elsewhere a regular container, because a native sidecar runs before the app
    // containers: an unpullable image or a sidecar that never starts would keep the app from
    // starting at all, and the sidecar must never gate the app.
    let native = match native_sidecar(spec.native_sidecar, settings.native_sidecars.get()) {
        Native::Yes if spec.native_sidecar == NativeSidecar::Auto && !runs_to_completion(pod) => {
            Native::No
        }
        other => other,
    };
    let shared_pids = multiproc_dir
        .is_some()
        .then(|| SharedPids::decide(spec.share_process_namespace, pod.share_process_namespace));
    Ok(Plan {
        name,
        spec,
        hash,
        metrics,
        multiproc_dir,
        state_dir,
        native: native == Native::Yes,
        native_mode: native,
        shared_pids,
    })
}

/// A pod whose containers are not restarted when they exit (a Job's): it completes.
fn runs_to_completion(pod: &PodSpec) -> bool {
    matches!(pod.restart_policy.as_deref(), Some("Never" | "OnFailure"))
}

/// Mount paths compare equal regardless of a trailing slash.
fn same_path(a: &str, b: &str) -> bool {
    fn trim(s: &str) -> &str {
        if s.len() > 1 {
            s.trim_end_matches('/')
        } else {
            s
        }
    }
    trim(a) == trim(b)
}

/// Builds the patch. `reinvocation` is true when the pod already carries our container: then
/// only what later webhooks' changes need is added (never a second container).
pub(super) fn build(
    pod: &Pod,
    spec: &PodSpec,
    sidecar: &Arc<MetricsSidecar>,
    reinvocation: bool,
    settings: &Settings,
) -> Decision {
    let plan = match plan(sidecar, spec, settings) {
        Ok(plan) => plan,
        Err(decision) => return decision,
    };
    if !reinvocation && let Some((reason, why)) = conflict(spec, &plan) {
        return Decision::Conflict {
            reason,
            warning: format!("monasca-sidecar not injected: {why}"),
            sidecar: plan.name.to_string(),
        };
    }
    let mut ops = Ops::default();
    let mut warnings = Vec::new();
    if plan.native_mode == Native::Unavailable {
        warnings.push(native_fallback_note());
    }
    match build_ops(
        pod,
        spec,
        &plan,
        reinvocation,
        settings,
        &mut ops,
        &mut warnings,
    ) {
        Ok(()) => {}
        Err(e) => return invalid(plan.name, format_args!("cannot be serialized: {e}")),
    }
    if ops.0.is_empty() {
        return Decision::Skip {
            reason: SkipReason::AlreadyInjected,
            warning: None,
        };
    }
    Decision::Patch {
        patch: Patch(ops.0),
        warnings,
        sidecar: plan.name.to_string(),
    }
}

fn build_ops(
    pod: &Pod,
    spec: &PodSpec,
    plan: &Plan<'_>,
    reinvocation: bool,
    settings: &Settings,
    ops: &mut Ops,
    warnings: &mut Vec<String>,
) -> Result<(), serde_json::Error> {
    let annotations = pod.metadata.annotations.as_ref();

    // Marks. On reinvocation they are only completed, never overwritten.
    let mut wanted_annotations = BTreeMap::new();
    let mut wanted_labels = BTreeMap::new();
    let mark = |map: &mut BTreeMap<String, String>,
                existing: Option<&BTreeMap<String, String>>,
                key: &str,
                value: &str| {
        if !(reinvocation && existing.is_some_and(|m| m.contains_key(key))) {
            map.insert(key.to_string(), value.to_string());
        }
    };
    mark(
        &mut wanted_annotations,
        annotations,
        ANNOTATION_INJECTED,
        plan.name,
    );
    mark(
        &mut wanted_annotations,
        annotations,
        ANNOTATION_CONFIG_HASH,
        &plan.hash,
    );
    mark(
        &mut wanted_labels,
        pod.metadata.labels.as_ref(),
        LABEL_SIDECAR,
        plan.name,
    );

    // Prometheus annotations, only together with the container (the scrape targets they turn
    // into live in the container's env).
    let mut scrape_env = Vec::new();
    if plan.spec.prometheus_annotations && !reinvocation {
        prometheus_annotations(
            annotations,
            plan,
            &mut wanted_annotations,
            &mut scrape_env,
            warnings,
        );
    }
    ops.set_entries(
        &["metadata", "annotations"],
        annotations,
        &wanted_annotations,
    );
    ops.set_entries(
        &["metadata", "labels"],
        pod.metadata.labels.as_ref(),
        &wanted_labels,
    );

    // Volumes.
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let has_volume = |name: &str| volumes.iter().any(|v| v.name == name);
    let mut new_volumes = Vec::new();
    if !has_volume(CONFIG_VOLUME) {
        new_volumes.push(Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(plan.name),
                // The sidecar runs on defaults until the controller has written the ConfigMap;
                // a required volume would keep the pod from starting at all.
                optional: Some(true),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if plan.multiproc_dir.is_some() && !has_volume(MULTIPROC_VOLUME) {
        new_volumes.push(Volume {
            name: MULTIPROC_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    if plan.state_dir.is_some() && plan.multiproc_dir.is_none() && !has_volume(STATE_VOLUME) {
        new_volumes.push(Volume {
            name: STATE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    ops.append(&["spec", "volumes"], spec.volumes.is_some(), new_volumes)?;

    // App containers: the multiprocess directory.
    if let Some(dir) = &plan.multiproc_dir {
        for (index, container) in spec.containers.iter().enumerate() {
            if container.name != SIDECAR_CONTAINER_NAME {
                multiprocess_app_container(index, container, dir, ops, warnings)?;
            }
        }
    }
    // App containers: where OpenTelemetry SDKs export metrics.
    if plan.spec.otlp.inject_env {
        match otlp_endpoint(plan) {
            Ok(endpoint) => {
                for (index, container) in spec.containers.iter().enumerate() {
                    if container.name != SIDECAR_CONTAINER_NAME {
                        otlp_app_container(index, container, &endpoint, ops)?;
                    }
                }
            }
            Err(why) => warnings.push(why),
        }
    }

    if reinvocation {
        return Ok(());
    }

    // A shared process namespace, so the sidecar sees the workers in /proc (see SharedPids).
    if let Some(SharedPids { set: true, .. }) = plan.shared_pids {
        if spec.share_process_namespace.is_some() {
            ops.replace(&["spec", "shareProcessNamespace"], Value::Bool(true));
        } else {
            ops.add(&["spec", "shareProcessNamespace"], Value::Bool(true));
        }
    }
    if plan.shared_pids.is_some_and(|p| !p.shared)
        && plan.spec.config.multiprocess_liveness == MultiprocessLiveness::Proc
    {
        warnings.push(format!(
            "MetricsSidecar {:?} sets multiprocessLiveness: proc but this pod does not share its \
             process namespace: the sidecar cannot see the workers and may take live workers' \
             files for dead ones",
            plan.name
        ));
    }

    // Warnings about the pod that injection cannot fix.
    if !plan.native && runs_to_completion(spec) {
        warnings.push(
            "monasca-sidecar runs as a regular container: the pod will not complete when the \
             application exits (native sidecars need the apiserver's SidecarContainers feature, \
             on by default since Kubernetes 1.29)"
                .into(),
        );
    }
    if plan.multiproc_dir.is_none() && plan.spec.config.multiprocess_dir.is_some() {
        warnings.push(format!(
            "MetricsSidecar {:?} sets config.multiprocessDir but not multiprocess: true, so no \
             directory is shared with the application",
            plan.name
        ));
    }

    let container = sidecar_container(plan, settings, scrape_env, warnings);
    if plan.native {
        ops.append(
            &["spec", "initContainers"],
            spec.init_containers.is_some(),
            vec![container],
        )?;
    } else {
        ops.append(&["spec", "containers"], true, vec![container])?;
    }
    Ok(())
}

/// Why the patch would clash with the pod, if it would: a container declares a port one of
/// the sidecar's listeners binds (whatever its address: the pod has one network namespace, so
/// an app on `0.0.0.0:9091` and the sidecar on `127.0.0.1:9091` exclude each other), or the
/// pod already uses a volume or port name the patch adds, for something else.
fn conflict(spec: &PodSpec, plan: &Plan<'_>) -> Option<(SkipReason, String)> {
    let listeners = bound_ports(plan);
    let declared_names: Vec<String> = sidecar_ports(plan)
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for port in container.ports.iter().flatten() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            if let Some((listener, _, _)) = listeners
                .iter()
                .find(|(_, p, proto)| i32::from(*p) == port.container_port && *proto == protocol)
            {
                return Some((
                    SkipReason::PortConflict,
                    format!(
                        "container {:?} declares port {}/{protocol}, which the sidecar's {listener} \
                         listener of MetricsSidecar {:?} binds; change one of them",
                        container.name, port.container_port, plan.name
                    ),
                ));
            }
            if let Some(name) = port.name.as_ref().filter(|n| declared_names.contains(n)) {
                return Some((
                    SkipReason::NameConflict,
                    format!(
                        "container {:?} declares a port named {name:?}, a name the sidecar's \
                         container uses",
                        container.name
                    ),
                ));
            }
        }
    }
    for volume in spec.volumes.iter().flatten() {
        let ours = match volume.name.as_str() {
            CONFIG_VOLUME => volume
                .config_map
                .as_ref()
                .is_some_and(|c| c.name == config_map_name(plan.name)),
            MULTIPROC_VOLUME if plan.multiproc_dir.is_some() => volume.empty_dir.is_some(),
            STATE_VOLUME if plan.state_dir.is_some() && plan.multiproc_dir.is_none() => {
                volume.empty_dir.is_some()
            }
            _ => true,
        };
        if !ours {
            return Some((
                SkipReason::NameConflict,
                format!(
                    "the pod already has a volume named {:?} for something else",
                    volume.name
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_tokens_are_escaped() {
        let mut ops = Ops::default();
        ops.add(&["metadata", "annotations", "example.com/a~b"], Value::Null);
        ops.add(&["spec", "containers", "-"], Value::Null);
        let paths: Vec<String> = ops.0.iter().map(|op| op.path().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/metadata/annotations/example.com~1a~0b",
                "/spec/containers/-"
            ]
        );
    }

    #[test]
    fn absent_map_is_created_whole_and_present_map_is_edited_per_key() {
        let entries = BTreeMap::from([
            ("a/b".to_string(), "1".to_string()),
            ("c".to_string(), "2".to_string()),
        ]);
        let mut ops = Ops::default();
        ops.set_entries(&["metadata", "labels"], None, &entries);
        assert_eq!(
            serde_json::to_value(&ops.0).ok(),
            Some(serde_json::json!([
                {"op": "add", "path": "/metadata/labels", "value": {"a/b": "1", "c": "2"}}
            ]))
        );
        let existing = BTreeMap::from([
            ("c".to_string(), "old".to_string()),
            ("keep".to_string(), "x".to_string()),
        ]);
        let mut ops = Ops::default();
        ops.set_entries(&["metadata", "labels"], Some(&existing), &entries);
        assert_eq!(
            serde_json::to_value(&ops.0).ok(),
            Some(serde_json::json!([
                {"op": "add", "path": "/metadata/labels/a~1b", "value": "1"},
                {"op": "replace", "path": "/metadata/labels/c", "value": "2"}
            ]))
        );
    }

    #[test]
    fn mount_paths_compare_without_trailing_slash() {
        assert!(same_path("/var/run/prom/", "/var/run/prom"));
        assert!(same_path("/", "/"));
        assert!(!same_path("/var/run/prom", "/var/run/prometheus"));
    }
}
