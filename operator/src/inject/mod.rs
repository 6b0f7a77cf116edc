//! The injection decision and the JSON patch that carries it out.
//!
//! Pure: no I/O, no clock, no kube client. The webhook hands in the pod, its namespace's
//! annotations and the namespace's `MetricsSidecar`s (all from in-memory stores) and gets back a
//! [`Decision`]. Everything the webhook does to a pod is decided here, which is what lets the
//! tests feed real apiserver requests and random pods through it.
//!
//! The patch is *additive*: it adds annotations, a label, volumes, env entries, mounts and one
//! container, appending to arrays with `/-` and creating an array or map only when it is absent.
//! It never replaces an array, because another mutating webhook may have edited it before us and
//! the apiserver applies our patch to *its* version of the pod. Each piece is added only when
//! missing, so feeding the mutated pod back (the apiserver's `reinvocationPolicy: IfNeeded`)
//! yields no patch, or only what another webhook's later additions need (a new app container
//! gets the multiprocess env and mount).

mod build;
mod checks;
mod update;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::Operation;
use monasca_crds::{
    ANNOTATION_INJECT, ANNOTATION_INJECTED, DEFAULT_SIDECAR_NAME, INJECT_FALSE, INJECT_TRUE,
    MetricsSidecar, SIDECAR_CONTAINER_NAME,
};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use build::{
    CONFIG_MOUNT_PATH, CONFIG_VOLUME, DEFAULT_MULTIPROC_DIR, ENV_MULTIPROC_DIR,
    ENV_MULTIPROCESS_LIVENESS, ENV_SCRAPE_PATH, ENV_SCRAPE_TARGETS, MULTIPROC_VOLUME, Native,
    PORT_INGEST, PORT_METRICS, PORT_STATSD, SIDECAR_GID, SIDECAR_UID, STATE_VOLUME,
    native_fallback_note, native_sidecar,
};
pub use checks::{Checked, SidecarChecks};
pub use update::{container_metrics_port, declared_metrics_port, keep_rewrite, metrics_port};

/// The namespace whose pods are never injected, whatever they ask: the control plane must not
/// depend on a webhook it may itself be needed to run.
pub const KUBE_SYSTEM: &str = "kube-system";

/// Operator-wide settings the decision depends on.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The operator's own namespace, never injected (the webhook must not depend on itself).
    pub operator_namespace: String,
    /// The sidecar image when a `MetricsSidecar` does not name one.
    pub sidecar_image: String,
    /// Whether the apiserver accepts native sidecars, as last detected (see
    /// [`crate::features`]); read once per decision.
    pub native_sidecars: NativeSupport,
    /// Each `MetricsSidecar`'s validity and config hash, worked out once per object version.
    pub sidecar_checks: SidecarChecks,
}

impl Settings {
    /// The settings the tests build on (controller-rs' fixtures: one builder, on the type):
    /// namespace `monasca-system`, image `monasca/monasca-sidecar:test`, native sidecars as
    /// given. Hidden from the docs; always compiled so that integration tests can use it.
    #[doc(hidden)]
    pub fn fixture(native: NativeSidecars) -> Settings {
        Settings {
            operator_namespace: "monasca-system".into(),
            sidecar_image: "monasca/monasca-sidecar:test".into(),
            native_sidecars: native.into(),
            sidecar_checks: SidecarChecks::default(),
        }
    }
}

/// Whether the apiserver accepts native sidecars (init containers with `restartPolicy:
/// Always`), decided by what it does, never by its version: a 1.29+ server can run with the
/// `SidecarContainers` feature gate off, and then drops that `restartPolicy` and refuses the pod
/// ("probes must not be set for init containers").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeSidecars {
    /// The gate is on, or gone because the feature is GA (Kubernetes 1.36 and newer).
    Available,
    /// The gate is off: `nativeSidecar: always` falls back to a regular container.
    Unavailable,
    /// Not detected (not asked yet, refused, no answer): `always` is honoured, as every
    /// supported Kubernetes (1.30+) has native sidecars on by default; `auto` stays regular.
    Unknown,
}

/// The detected [`NativeSidecars`], shared between the detector that updates it and every
/// admission and reconcile that reads it; [`NativeSupport::changes`] wakes the controller, so
/// the status conditions follow a change without waiting for the resync.
#[derive(Clone, Debug)]
pub struct NativeSupport(Arc<tokio::sync::watch::Sender<NativeSidecars>>);

impl NativeSupport {
    pub fn new(initial: NativeSidecars) -> NativeSupport {
        NativeSupport(Arc::new(tokio::sync::watch::Sender::new(initial)))
    }

    /// The state now.
    pub fn get(&self) -> NativeSidecars {
        *self.0.borrow()
    }

    /// Records a detection; true when it changed the state.
    pub fn set(&self, detected: NativeSidecars) -> bool {
        self.0.send_if_modified(|state| {
            let changed = *state != detected;
            *state = detected;
            changed
        })
    }

    /// One item per change of the state (for `reconcile_all_on`).
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.0.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }
}

impl From<NativeSidecars> for NativeSupport {
    fn from(state: NativeSidecars) -> NativeSupport {
        NativeSupport::new(state)
    }
}

/// What the webhook knows about the request besides the pod.
#[derive(Clone, Copy, Debug)]
pub struct PodRequest<'a> {
    /// The admission operation; only `Create` injects.
    pub operation: &'a Operation,
    /// `request.namespace` (the pod's own `metadata.namespace` is often empty on CREATE).
    pub namespace: &'a str,
    /// `request.object`.
    pub pod: &'a Pod,
}

/// Why a pod was admitted unchanged. A fixed set: these are metric label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Not a CREATE (UPDATE, DELETE, CONNECT): injection only happens at creation.
    NotCreate,
    /// The review is not about a Pod, or its object is missing or not a valid Pod.
    NotAPod,
    /// `kube-system` or the operator's namespace.
    ExcludedNamespace,
    /// Neither the pod nor its namespace has the `inject` annotation.
    NotRequested,
    /// The effective `inject` annotation is `"false"`.
    Disabled,
    /// The `inject` annotation is neither `true`, `false` nor a valid resource name.
    BadAnnotation,
    /// `hostNetwork: true`: the sidecar's listeners would bind on the node.
    HostNetwork,
    /// The pod already has a `monasca-sidecar` container that we did not inject.
    HasContainer,
    /// The pod was injected before (reinvocation) and nothing is missing.
    AlreadyInjected,
    /// The named `MetricsSidecar` does not exist in the pod's namespace.
    UnknownSidecar,
    /// `inject: "true"` but the namespace has no `default` and not exactly one `MetricsSidecar`.
    NoDefaultSidecar,
    /// The `MetricsSidecar` cannot produce a valid pod (bad listen address, name too long...).
    InvalidSidecar,
    /// A container of the pod declares a port the sidecar would listen on: one of the two
    /// could not bind it (with a native sidecar, the app would never start).
    PortConflict,
    /// A volume or port name the patch would add already exists in the pod with another
    /// meaning.
    NameConflict,
}

impl SkipReason {
    /// Every reason, in label order (for metrics exposition).
    pub const ALL: [SkipReason; 14] = [
        SkipReason::NotCreate,
        SkipReason::NotAPod,
        SkipReason::ExcludedNamespace,
        SkipReason::NotRequested,
        SkipReason::Disabled,
        SkipReason::BadAnnotation,
        SkipReason::HostNetwork,
        SkipReason::HasContainer,
        SkipReason::AlreadyInjected,
        SkipReason::UnknownSidecar,
        SkipReason::NoDefaultSidecar,
        SkipReason::InvalidSidecar,
        SkipReason::PortConflict,
        SkipReason::NameConflict,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::NotCreate => "not_create",
            SkipReason::NotAPod => "not_a_pod",
            SkipReason::ExcludedNamespace => "excluded_namespace",
            SkipReason::NotRequested => "not_requested",
            SkipReason::Disabled => "disabled",
            SkipReason::BadAnnotation => "bad_annotation",
            SkipReason::HostNetwork => "host_network",
            SkipReason::HasContainer => "has_container",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::UnknownSidecar => "unknown_sidecar",
            SkipReason::NoDefaultSidecar => "no_default_sidecar",
            SkipReason::InvalidSidecar => "invalid_sidecar",
            SkipReason::PortConflict => "port_conflict",
            SkipReason::NameConflict => "name_conflict",
        }
    }

    /// Index into [`SkipReason::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The outcome of [`inject`].
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Admit unchanged. `warning` is returned to the client when the user asked for something
    /// we could not do (it explains why, so nobody has to read operator logs).
    Skip {
        reason: SkipReason,
        warning: Option<String>,
    },
    /// Admit unchanged: the pod and the patch would clash (a port, a volume name). Injecting
    /// anyway could keep the app from starting; the `MetricsSidecar` gets an Event so its
    /// owner learns about it, not only the pod's creator.
    Conflict {
        reason: SkipReason,
        warning: String,
        /// The `MetricsSidecar` the pod asked for.
        sidecar: String,
    },
    /// Admit with this patch.
    Patch {
        patch: json_patch::Patch,
        /// Things the user should fix that did not prevent injection.
        warnings: Vec<String>,
        /// The `MetricsSidecar` used.
        sidecar: String,
    },
}

impl Decision {
    fn skip(reason: SkipReason) -> Decision {
        Decision::Skip {
            reason,
            warning: None,
        }
    }

    fn skip_warning(reason: SkipReason, warning: String) -> Decision {
        Decision::Skip {
            reason,
            warning: Some(warning),
        }
    }

    /// The patch, if any.
    pub fn patch(&self) -> Option<&json_patch::Patch> {
        match self {
            Decision::Patch { patch, .. } => Some(patch),
            Decision::Skip { .. } | Decision::Conflict { .. } => None,
        }
    }

    /// Why the pod was admitted unchanged, if it was.
    pub fn skip_reason(&self) -> Option<SkipReason> {
        match self {
            Decision::Skip { reason, .. } | Decision::Conflict { reason, .. } => Some(*reason),
            Decision::Patch { .. } => None,
        }
    }
}

/// What an `inject` annotation asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Wanted<'a> {
    Off,
    Default,
    Named(&'a str),
}

/// Reads an `inject` annotation value. `true`/`false` are matched case-insensitively (people
/// write `"True"`); anything else must be a valid resource name.
fn parse_inject(value: &str) -> Option<Wanted<'_>> {
    let value = value.trim();
    if value.eq_ignore_ascii_case(INJECT_TRUE) {
        Some(Wanted::Default)
    } else if value.eq_ignore_ascii_case(INJECT_FALSE) {
        Some(Wanted::Off)
    } else if is_dns_subdomain(value) {
        Some(Wanted::Named(value))
    } else {
        None
    }
}

/// RFC 1123 subdomain, the syntax of a namespaced resource name.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Decides whether and how to inject `request.pod`.
///
/// `namespace_annotations` are the annotations of the pod's Namespace (`None` if unknown: the
/// pod's own annotation still works). `sidecars` are the `MetricsSidecar`s of the pod's namespace
/// (others are ignored).
pub fn inject(
    request: &PodRequest<'_>,
    namespace_annotations: Option<&BTreeMap<String, String>>,
    sidecars: &[Arc<MetricsSidecar>],
    settings: &Settings,
) -> Decision {
    if *request.operation != Operation::Create {
        return Decision::skip(SkipReason::NotCreate);
    }
    let namespace = request.namespace;
    if namespace == KUBE_SYSTEM || namespace == settings.operator_namespace {
        return Decision::skip(SkipReason::ExcludedNamespace);
    }
    let pod = request.pod;
    let Some(spec) = pod.spec.as_ref() else {
        return Decision::skip(SkipReason::NotAPod);
    };

    // The pod's annotation wins over its namespace's, so a pod can opt out of (or pick another
    // sidecar than) a namespace-wide default.
    let pod_annotations = pod.metadata.annotations.as_ref();
    let (source, raw) = match pod_annotations.and_then(|a| a.get(ANNOTATION_INJECT)) {
        Some(v) => ("pod", v),
        None => match namespace_annotations.and_then(|a| a.get(ANNOTATION_INJECT)) {
            Some(v) => ("namespace", v),
            None => return Decision::skip(SkipReason::NotRequested),
        },
    };
    let wanted = match parse_inject(raw) {
        Some(Wanted::Off) => return Decision::skip(SkipReason::Disabled),
        Some(w) => w,
        None => {
            return Decision::skip_warning(
                SkipReason::BadAnnotation,
                format!(
                    "monasca-sidecar not injected: {source} annotation {ANNOTATION_INJECT}={raw:?} \
                     is not \"true\", \"false\" or a MetricsSidecar name"
                ),
            );
        }
    };

    if let Some((reason, warning)) = skipped_by_rule(pod) {
        return Decision::skip_warning(reason, warning);
    }
    let has_container = has_sidecar_container(spec);

    let sidecar = match select(&wanted, &in_namespace(sidecars, namespace)) {
        Ok(s) => s,
        Err(decision) => return decision,
    };

    build::build(pod, spec, sidecar, has_container, settings)
}

/// Why a pod that asks for a sidecar is never injected, by rule (what its spec says, not the
/// webhook's availability), with the warning the webhook returns. The controller's census uses
/// it too: such pods are not "uninjected" and never make a sidecar Degraded.
pub fn skipped_by_rule(pod: &Pod) -> Option<(SkipReason, String)> {
    let spec = pod.spec.as_ref()?;
    let injected_by_us = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_INJECTED));
    skip_rule(
        spec.host_network == Some(true),
        has_sidecar_container(spec),
        injected_by_us,
    )
}

/// The skip rules themselves: `hostNetwork`, or a `monasca-sidecar` container the webhook did
/// not add. Shared by [`skipped_by_rule`] and the pod store's entries.
pub fn skip_rule(
    host_network: bool,
    has_sidecar_container: bool,
    injected_by_us: bool,
) -> Option<(SkipReason, String)> {
    if host_network {
        return Some((
            SkipReason::HostNetwork,
            "monasca-sidecar not injected: hostNetwork pods would bind the sidecar's ports on the node"
                .into(),
        ));
    }
    if has_sidecar_container && !injected_by_us {
        return Some((
            SkipReason::HasContainer,
            format!(
                "monasca-sidecar not injected: the pod already has a container named {SIDECAR_CONTAINER_NAME}"
            ),
        ));
    }
    None
}

fn has_sidecar_container(spec: &k8s_openapi::api::core::v1::PodSpec) -> bool {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == SIDECAR_CONTAINER_NAME)
}

/// The `MetricsSidecar`s of `sidecars` that live in `namespace`.
fn in_namespace<'s>(
    sidecars: &'s [Arc<MetricsSidecar>],
    namespace: &str,
) -> Vec<&'s Arc<MetricsSidecar>> {
    sidecars
        .iter()
        .filter(|s| {
            s.metadata
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == namespace)
        })
        .collect()
}

/// The `MetricsSidecar` a pod asks for by the same annotation rules as [`inject`]
/// (pod annotation over namespace annotation, `"true"` -> `default` or the only one), or `None`
/// when it asks for none, asks for one that does not exist, or lives in an excluded namespace.
///
/// The controller uses it on the pod store's entries (`pod_inject` is the pod's own `inject`
/// annotation) to count pods that asked for a sidecar but were
/// admitted without one (webhook down, `failurePolicy: Ignore`); sharing the rules keeps that
/// count and the webhook's decisions from ever disagreeing.
pub fn requested_sidecar<'s>(
    namespace: &str,
    pod_inject: Option<&str>,
    namespace_annotations: Option<&BTreeMap<String, String>>,
    sidecars: &'s [Arc<MetricsSidecar>],
    settings: &Settings,
) -> Option<&'s MetricsSidecar> {
    if namespace == KUBE_SYSTEM || namespace == settings.operator_namespace {
        return None;
    }
    let raw = pod_inject.or_else(|| {
        namespace_annotations
            .and_then(|a| a.get(ANNOTATION_INJECT))
            .map(String::as_str)
    })?;
    let wanted = parse_inject(raw)?;
    select(&wanted, &in_namespace(sidecars, namespace))
        .ok()
        .map(AsRef::as_ref)
}

/// Finds the `MetricsSidecar` an annotation asks for.
fn select<'s>(
    wanted: &Wanted<'_>,
    sidecars: &[&'s Arc<MetricsSidecar>],
) -> Result<&'s Arc<MetricsSidecar>, Decision> {
    let named = |name: &str| {
        sidecars
            .iter()
            .copied()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    };
    match wanted {
        Wanted::Named(name) => named(name).ok_or_else(|| {
            Decision::skip_warning(
                SkipReason::UnknownSidecar,
                format!(
                    "monasca-sidecar not injected: no MetricsSidecar {name:?} in this namespace"
                ),
            )
        }),
        Wanted::Default => match (named(DEFAULT_SIDECAR_NAME), sidecars) {
            (Some(s), _) => Ok(s),
            (None, [only]) => Ok(only),
            (None, []) => Err(Decision::skip_warning(
                SkipReason::NoDefaultSidecar,
                "monasca-sidecar not injected: no MetricsSidecar in this namespace".into(),
            )),
            (None, many) => Err(Decision::skip_warning(
                SkipReason::NoDefaultSidecar,
                format!(
                    "monasca-sidecar not injected: {} MetricsSidecars in this namespace and none \
                     named {DEFAULT_SIDECAR_NAME:?}; name one in the {ANNOTATION_INJECT} annotation",
                    many.len()
                ),
            )),
        },
        Wanted::Off => Err(Decision::skip(SkipReason::Disabled)),
    }
}

#[cfg(test)]
mod tests;
