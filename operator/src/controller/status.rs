//! The observed state of one `MetricsSidecar`, computed from values (pods' metadata, the
//! namespace's annotations, the namespace's sidecars): no I/O and no clock, so tests feed
//! objects in and compare the status out.

use crate::inject::{Settings, requested_sidecar};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::events::EventType;
use monasca_crds::{ANNOTATION_CONFIG_HASH, LABEL_SIDECAR, MetricsSidecar, MetricsSidecarStatus};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Condition types.
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";

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
        }
    }
}

/// What the controller sees of the sidecar's namespace.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// Metadata of the namespace's pods.
    pub pods: &'a [Arc<PartialObjectMeta<Pod>>],
    /// The namespace's annotations (for a namespace-wide `inject`).
    pub namespace_annotations: Option<&'a BTreeMap<String, String>>,
    /// The namespace's `MetricsSidecar`s (which one `inject: "true"` means depends on them).
    pub sidecars: &'a [Arc<MetricsSidecar>],
    pub settings: &'a Settings,
}

/// The pods of one sidecar, by state. Names are `namespace`-relative pod names, sorted.
#[derive(Clone, Debug, Default)]
pub struct PodCensus {
    /// Pods carrying the sidecar label.
    pub injected: Vec<String>,
    /// Injected pods whose `config-hash` differs from the current one.
    pub outdated: Vec<Arc<PartialObjectMeta<Pod>>>,
    /// Pods asking for this sidecar (by the webhook's own rules) without carrying it.
    pub uninjected: Vec<String>,
}

/// Sorts the namespace's pods for `sidecar`. Terminating pods are left out: they are leaving.
///
/// "Carries the sidecar" is read from the label the webhook sets with the container; the
/// controller watches pod metadata only, so a pod that asks for the sidecar but was skipped for
/// a reason visible only in its spec (hostNetwork, its own `monasca-sidecar` container) counts
/// as uninjected, which it is.
pub fn census(sidecar: &MetricsSidecar, observed: &Observed<'_>, hash: Option<&str>) -> PodCensus {
    let name = sidecar.name_any();
    let namespace = sidecar.namespace().unwrap_or_default();
    let mut census = PodCensus::default();
    for pod in observed.pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let labels = pod.metadata.labels.as_ref();
        let pod_name = pod.name_any();
        match labels.and_then(|l| l.get(LABEL_SIDECAR)) {
            Some(carried) if *carried == name => {
                let pod_hash = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_CONFIG_HASH));
                if hash.is_some_and(|h| pod_hash.map(String::as_str) != Some(h)) {
                    census.outdated.push(pod.clone());
                }
                census.injected.push(pod_name);
            }
            Some(_) => {}
            None => {
                let wanted = requested_sidecar(
                    &namespace,
                    pod.metadata.annotations.as_ref(),
                    observed.namespace_annotations,
                    observed.sidecars,
                    observed.settings,
                );
                if wanted.is_some_and(|s| s.name_any() == name) {
                    census.uninjected.push(pod_name);
                }
            }
        }
    }
    census.injected.sort();
    census.uninjected.sort();
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

/// The status of `sidecar`, given its pods' census and configuration state, at `now`.
pub fn status(
    sidecar: &MetricsSidecar,
    census: &PodCensus,
    config: ConfigState<'_>,
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
    MetricsSidecarStatus {
        observed_generation: generation,
        conditions: vec![ready, degraded],
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
