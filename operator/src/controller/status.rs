//! The observed state of one `MetricsSidecar`, computed from values (pods' metadata, the
//! namespace's annotations, the namespace's sidecars): no I/O and no clock, so tests feed
//! objects in and compare the status out.

use super::Workload;
use crate::inject::{Native, Settings, native_fallback_note, requested_sidecar};
use crate::pod_entry::{Phase, PodEntry};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::runtime::events::EventType;
use monasca_crds::{MetricsSidecar, MetricsSidecarStatus};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Condition types.
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";
/// Present only when `nativeSidecar: always` cannot be honoured (status False).
pub const NATIVE_SIDECAR: &str = "NativeSidecar";

/// Condition and event reasons: a fixed set, so alerts and scripts can match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Ready: the ConfigMap holds the current configuration.
    Reconciled,
    /// Not ready: the configuration cannot be rendered; the ConfigMap keeps the last good one.
    InvalidConfig,
    /// Degraded: pods ask for this sidecar but run without it.
    UninjectedPods,
    /// Not degraded.
    AllPodsInjected,
    /// Event: the number of injected pods changed.
    InjectedPodsChanged,
    /// Event: pods were rolled to pick up a pod-shaping change (`restartOnChange`).
    RolloutTriggered,
    /// Event: a pod-shaping change (image, listen ports...) left pods on the old shape, and
    /// `restartOnChange` is off.
    PodsOutdated,
    /// Not ready: the object does not parse (stored before a schema change, or a value the
    /// schema admits and the parser refuses).
    Malformed,
    /// `nativeSidecar: always` on a server without native sidecars: regular containers instead.
    NativeSidecarUnavailable,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reconciled => "Reconciled",
            Reason::InvalidConfig => "InvalidConfig",
            Reason::UninjectedPods => "UninjectedPods",
            Reason::AllPodsInjected => "AllPodsInjected",
            Reason::InjectedPodsChanged => "InjectedPodsChanged",
            Reason::RolloutTriggered => "RolloutTriggered",
            Reason::PodsOutdated => "PodsOutdated",
            Reason::Malformed => "Malformed",
            Reason::NativeSidecarUnavailable => "NativeSidecarUnavailable",
        }
    }
}

/// What the controller sees of the sidecar's namespace.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The namespace's pods, as the pod store keeps them.
    pub pods: &'a [Arc<PodEntry>],
    /// The namespace's annotations (for a namespace-wide `inject`).
    pub namespace_annotations: Option<&'a BTreeMap<String, String>>,
    /// The namespace's `MetricsSidecar`s (which one `inject: "true"` means depends on them).
    pub sidecars: &'a [Arc<MetricsSidecar>],
    pub settings: &'a Settings,
}

/// The pods of one sidecar, by state. Names are `namespace`-relative pod names, sorted.
#[derive(Clone, Debug, Default)]
pub struct PodCensus {
    /// Pending and Running pods carrying the sidecar label.
    pub injected: Vec<String>,
    /// Injected pods whose `config-hash` differs from the current one.
    pub outdated: Vec<Arc<PodEntry>>,
    /// Pending and Running pods asking for this sidecar (by the webhook's own rules) without
    /// carrying it, although nothing in their spec keeps the webhook from injecting them.
    pub uninjected: Vec<String>,
    /// Pods asking for this sidecar that the webhook never injects by rule (`hostNetwork`, their
    /// own `monasca-sidecar` container): not a fault, so not counted as uninjected.
    pub excluded: Vec<String>,
}

/// Whether a pod is one the status counts: Pending or Running (a pod just created has no phase
/// yet). Succeeded and Failed pods have stopped; whatever they carried no longer runs.
fn counted(pod: &PodEntry) -> bool {
    matches!(pod.phase, Phase::None | Phase::Pending | Phase::Running)
}

/// Sorts the namespace's pods for `sidecar`. Terminating, Succeeded and Failed pods are left out:
/// they are leaving or gone. "Carries the sidecar" is read from the label the webhook sets with
/// the container; a pod that asks for the sidecar but that the webhook skips by rule
/// ([`crate::inject::skipped_by_rule`]) is `excluded`, not uninjected.
pub fn census(sidecar: &MetricsSidecar, observed: &Observed<'_>, hash: Option<&str>) -> PodCensus {
    let name = sidecar.name_any();
    let namespace = sidecar.namespace().unwrap_or_default();
    let mut census = PodCensus::default();
    for pod in observed.pods {
        if pod.terminating || !counted(pod) {
            continue;
        }
        let pod_name = pod.name.to_string();
        match pod.sidecar.as_deref() {
            Some(carried) if carried == name => {
                if hash.is_some_and(|h| pod.config_hash.as_deref() != Some(h)) {
                    census.outdated.push(pod.clone());
                }
                census.injected.push(pod_name);
            }
            Some(_) => {}
            None => {
                let wanted = requested_sidecar(
                    &namespace,
                    pod.inject.as_deref(),
                    observed.namespace_annotations,
                    observed.sidecars,
                    observed.settings,
                );
                if wanted.is_some_and(|s| s.name_any() == name) {
                    if pod.skipped_by_rule().is_some() {
                        census.excluded.push(pod_name);
                    } else {
                        census.uninjected.push(pod_name);
                    }
                }
            }
        }
    }
    census.injected.sort();
    census.uninjected.sort();
    census.excluded.sort();
    census
}

/// The configuration as the controller could render it.
#[derive(Clone, Copy, Debug)]
pub enum ConfigState<'a> {
    /// Rendered; its [`MetricsSidecarSpec::config_hash`](monasca_crds::MetricsSidecarSpec).
    Valid { hash: &'a str },
    /// Not renderable, with the reason.
    Invalid { error: &'a str },
}

/// How many pod names a message lists before "and N more".
const LISTED_PODS: usize = 5;

fn list(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(LISTED_PODS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED_PODS {
        out.push_str(&format!(" and {} more", names.len() - LISTED_PODS));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "pod" } else { "pods" }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A condition that keeps its `lastTransitionTime` when its status did not change, so an
/// unchanged status serializes identically and is not rewritten.
fn condition(
    previous: Option<&MetricsSidecarStatus>,
    type_: &str,
    status: bool,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The status of `sidecar`, given its pods' census, configuration state and what its
/// `nativeSidecar` means on this server, at `now`.
pub fn status(
    sidecar: &MetricsSidecar,
    census: &PodCensus,
    config: ConfigState<'_>,
    native: Native,
    now: &Time,
) -> MetricsSidecarStatus {
    let previous = sidecar.status.as_ref();
    let generation = sidecar.metadata.generation;
    let name = sidecar.name_any();
    let (ready, config_hash) = match config {
        ConfigState::Valid { hash } => (
            condition(
                previous,
                READY,
                true,
                Reason::Reconciled,
                format!(
                    "ConfigMap {} holds configuration {hash}",
                    monasca_crds::config_map_name(&name)
                ),
                generation,
                now,
            ),
            Some(hash.to_string()),
        ),
        ConfigState::Invalid { error } => (
            condition(
                previous,
                READY,
                false,
                Reason::InvalidConfig,
                format!("the sidecar configuration is invalid: {error}"),
                generation,
                now,
            ),
            previous.and_then(|p| p.config_hash.clone()),
        ),
    };
    let uninjected = &census.uninjected;
    let degraded = if uninjected.is_empty() {
        condition(
            previous,
            DEGRADED,
            false,
            Reason::AllPodsInjected,
            "every pod that asks for this sidecar carries it".into(),
            generation,
            now,
        )
    } else {
        condition(
            previous,
            DEGRADED,
            true,
            Reason::UninjectedPods,
            uninjected_note(uninjected),
            generation,
            now,
        )
    };
    let mut conditions = vec![ready, degraded];
    if native == Native::Unavailable {
        conditions.push(condition(
            previous,
            NATIVE_SIDECAR,
            false,
            Reason::NativeSidecarUnavailable,
            native_fallback_note(),
            generation,
            now,
        ));
    }
    MetricsSidecarStatus {
        observed_generation: generation,
        conditions,
        injected_pods: count(census.injected.len()),
        uninjected_pods: count(uninjected.len()),
        config_hash,
    }
}

fn uninjected_note(uninjected: &[String]) -> String {
    format!(
        "{} {} {} for this sidecar but {} without it (created while the webhook was unavailable, \
         or before this MetricsSidecar existed): {}; delete or roll them to inject",
        uninjected.len(),
        plural(uninjected.len()),
        if uninjected.len() == 1 { "asks" } else { "ask" },
        if uninjected.len() == 1 { "runs" } else { "run" },
        list(uninjected)
    )
}

/// An Event to publish on the `MetricsSidecar`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: Reason,
    pub action: &'static str,
    pub note: String,
}

/// The Events that going from the sidecar's previous status to `new` deserves: a count that
/// changed, uninjected pods found (again, when their number changes), a configuration that
/// became invalid. An unchanged status yields none, so periodic reconciles stay quiet.
pub fn events(
    sidecar: &MetricsSidecar,
    new: &MetricsSidecarStatus,
    census: &PodCensus,
    config: ConfigState<'_>,
) -> Vec<Note> {
    let previous = sidecar.status.as_ref();
    let mut notes = Vec::new();
    let was = previous.map(|p| p.injected_pods).unwrap_or(0);
    if new.injected_pods != was {
        notes.push(Note {
            type_: EventType::Normal,
            reason: Reason::InjectedPodsChanged,
            action: "Count",
            note: format!(
                "{} {} {} the sidecar (was {was})",
                new.injected_pods,
                plural(census.injected.len()),
                if census.injected.len() == 1 {
                    "carries"
                } else {
                    "carry"
                }
            ),
        });
    }
    let was_uninjected = previous.map(|p| p.uninjected_pods).unwrap_or(0);
    if new.uninjected_pods > 0 && new.uninjected_pods != was_uninjected {
        notes.push(Note {
            type_: EventType::Warning,
            reason: Reason::UninjectedPods,
            action: "Count",
            note: uninjected_note(&census.uninjected),
        });
    }
    if let Some(fallback) = new.conditions.iter().find(|c| c.type_ == NATIVE_SIDECAR) {
        let already =
            previous.is_some_and(|p| p.conditions.iter().any(|c| c.type_ == NATIVE_SIDECAR));
        if !already {
            notes.push(Note {
                type_: EventType::Warning,
                reason: Reason::NativeSidecarUnavailable,
                action: "Inject",
                note: fallback.message.clone(),
            });
        }
    }
    if let ConfigState::Invalid { error } = config {
        let already = previous.is_some_and(|p| {
            p.conditions
                .iter()
                .any(|c| c.type_ == READY && c.reason == Reason::InvalidConfig.as_str())
        });
        if !already {
            notes.push(Note {
                type_: EventType::Warning,
                reason: Reason::InvalidConfig,
                action: "Render",
                note: format!("the sidecar configuration is invalid: {error}"),
            });
        }
    }
    notes
}

/// The one Event of a rollout, naming every workload restarted (a Deployment and a StatefulSet
/// rolled together are both in it).
pub fn rollout_note(workloads: &[Workload], template_hash: &str) -> Note {
    let names = workloads
        .iter()
        .map(|w| format!("{} {}", w.plural.trim_end_matches('s'), w.name))
        .collect::<Vec<_>>()
        .join(", ");
    Note {
        type_: EventType::Normal,
        reason: Reason::RolloutTriggered,
        action: "Rollout",
        note: format!("restarting {names} for pod template {template_hash} (restartOnChange)"),
    }
}

/// The Event for pods left on an older pod shape when `restartOnChange` is off.
pub fn outdated_note(pods: &[Arc<PodEntry>]) -> Note {
    let names: Vec<String> = pods.iter().map(|p| p.name.to_string()).collect();
    Note {
        type_: EventType::Warning,
        reason: Reason::PodsOutdated,
        action: "Rollout",
        note: format!(
            "{} {} {} an older pod shape (image, resources, listen ports...) than this spec: {}; \
             roll them, or set restartOnChange: true",
            names.len(),
            plural(names.len()),
            if names.len() == 1 { "runs" } else { "run" },
            list(&names)
        ),
    }
}

/// The status of a `MetricsSidecar` that does not parse: only `Ready=False` with the reason.
pub fn malformed_status(error: &str, generation: Option<i64>, now: &Time) -> MetricsSidecarStatus {
    MetricsSidecarStatus {
        observed_generation: generation,
        conditions: vec![condition(
            None,
            READY,
            false,
            Reason::Malformed,
            malformed_message(error),
            generation,
            now,
        )],
        ..MetricsSidecarStatus::default()
    }
}

fn malformed_message(error: &str) -> String {
    format!(
        "the operator cannot read this MetricsSidecar ({}); pods asking for it are admitted \
         without the sidecar until it is fixed",
        error.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// The Event for a `MetricsSidecar` that does not parse.
pub fn malformed_note(error: &str) -> Note {
    Note {
        type_: EventType::Warning,
        reason: Reason::Malformed,
        action: "Read",
        note: malformed_message(error),
    }
}
