//! The `MetricsSidecar` controller: ConfigMap, status, Events, rollouts and PodMonitors.
//!
//! controller-rs style: a free [`reconcile`] and [`error_policy`] over an `Arc<Context>`; the
//! decisions are pure ([`status`]) and the I/O is a straight line of server-side applies with
//! the field manager [`FIELD_MANAGER`]. It runs on every replica so that caches are warm at
//! failover, but only the Lease holder writes: a follower's reconcile returns at once, and
//! becoming the leader reconciles every object.

pub mod status;

use crate::identity::FIELD_MANAGER;
use crate::metrics::ReconcileResult;
use crate::pod_entry::{OwnerKind, PodEntry};
use crate::{Error, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use monasca_crds::{
    ANNOTATION_CONFIG_HASH, CONFIG_MAP_KEY, LABEL_SIDECAR, MetricsSidecar, MetricsSidecarStatus,
    config_map_name,
};
use serde_json::json;
use status::{ConfigState, Note, Observed};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// ConfigMap annotation remembering the pod-template hash the running pods were rolled for, so
/// that `restartOnChange` rolls once per pod-shaping change and never for config-only ones.
pub const ANNOTATION_POD_TEMPLATE_HASH: &str = "monasca.openstack.org/pod-template-hash";
/// Labels on every object the controller creates.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", FIELD_MANAGER);
/// A successful reconcile is repeated this often (namespace annotations and other inputs the
/// controller does not watch).
const RESYNC: Duration = Duration::from_secs(300);
/// Triggers closer together than this are merged into one reconcile.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// Error backoff: doubled per consecutive failure of one object, up to the resync interval.
const BACKOFF_MIN: Duration = Duration::from_secs(5);

/// What reconciles share (controller-rs' `Context`): the API client, the Event reporter, and
/// the operator-wide state (stores, settings, leadership, metrics).
pub struct Context {
    pub client: Client,
    pub reporter: Reporter,
    pub shared: Arc<crate::Context>,
    /// Whether the `monitoring.coreos.com/v1` `PodMonitor` CRD is installed (checked at start).
    pub pod_monitors: bool,
    /// The clock (fixed in tests, so that request bodies are exact).
    pub now: fn() -> Timestamp,
    failures: Mutex<HashMap<String, u32>>,
    /// Malformed objects already reported, with the `(uid, generation)` reported: writing their
    /// status again would trigger another reconcile, and another Event, forever.
    reported_malformed: Mutex<HashMap<String, Seen>>,
}

/// Which version of an object was seen: its uid and generation.
type Seen = (Option<String>, Option<i64>);

impl Context {
    pub fn new(client: Client, shared: Arc<crate::Context>, pod_monitors: bool) -> Context {
        Context {
            client,
            reporter: crate::identity::reporter(),
            shared,
            pod_monitors,
            now: Timestamp::now,
            failures: Mutex::new(HashMap::new()),
            reported_malformed: Mutex::new(HashMap::new()),
        }
    }

    fn writable(&self) -> Result<()> {
        if self.shared.leadership.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }
}

/// The `PodMonitor` API (Prometheus Operator).
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"),
        "podmonitors",
    )
}

/// The controller's object: a `MetricsSidecar`, or what is left of one that does not parse
/// (its metadata and the error), so one malformed object never stops the others' reconciles.
pub type Guarded = DeserializeGuard<MetricsSidecar>;

/// `namespace/name` of a guarded object (the failure counts' key).
fn key_of(sidecar: &Guarded) -> String {
    let meta = match &sidecar.0 {
        Ok(s) => &s.metadata,
        Err(invalid) => &invalid.metadata,
    };
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Reconciles one `MetricsSidecar`, counting the outcome.
pub async fn reconcile(sidecar: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.shared.leadership.is_leader() {
        // A follower keeps its caches warm and does nothing else; not counted as a reconcile.
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let result = match &sidecar.0 {
        Ok(parsed) => {
            ctx.reported_malformed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key_of(&sidecar));
            apply(parsed, &ctx).await
        }
        Err(invalid) => report_malformed(invalid, &key_of(&sidecar), &ctx).await,
    };
    let metrics = &ctx.shared.metrics;
    match &result {
        Ok(_) => {
            ctx.failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key_of(&sidecar));
            metrics.reconciled(ReconcileResult::Ok, started.elapsed());
        }
        Err(Error::NotLeader) => {}
        Err(e) => {
            metrics.reconciled(ReconcileResult::Error, started.elapsed());
            metrics.reconcile_error(e.reconcile_reason());
        }
    }
    result
}

/// Requeues a failed object with exponential backoff (5 s doubling to 5 min); a follower's
/// refusal to write waits for leadership instead.
pub fn error_policy(sidecar: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    if matches!(error, Error::NotLeader) {
        return Action::await_change();
    }
    let key = key_of(&sidecar);
    let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
    let n = failures.entry(key.clone()).or_insert(0);
    *n = n.saturating_add(1);
    let delay = BACKOFF_MIN
        .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
        .min(RESYNC);
    tracing::warn!(
        sidecar = key,
        error = %error,
        reason = error.reconcile_reason().label(),
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// The body of a reconcile: everything between reading the stores and writing the status.
async fn apply(sidecar: &MetricsSidecar, ctx: &Context) -> Result<Action> {
    if !ctx.shared.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    if sidecar.metadata.deletion_timestamp.is_some() {
        // Garbage collection removes what it owns; writing now would only race with it.
        return Ok(Action::await_change());
    }
    if !ctx.shared.pods_synced() {
        // Counting pods from a partial list would report pods as missing.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let namespace = sidecar
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = sidecar.name_any();
    let owner = sidecar
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;

    let spec = &sidecar.spec;
    // One check for the webhook and the controller (and the sidecar's own for `config`): what
    // the webhook refuses to inject is exactly what is reported here as `InvalidConfig`.
    let rendered = sidecar.validate().and_then(|()| spec.rendered_config());
    let hashes = spec
        .config_hash()
        .and_then(|full| spec.pod_template_hash().map(|template| (full, template)));
    let rendered = rendered.and_then(|r| hashes.map(|h| (r, h)));

    // The stores are shared with the webhook; the object being reconciled is the freshest copy
    // of itself.
    let mut sidecars = ctx.shared.sidecars_in(&namespace);
    sidecars.retain(|s| s.name_any() != name);
    sidecars.push(Arc::new(sidecar.clone()));
    let pods = ctx.shared.pods_in(&namespace);
    let namespace_meta = ctx.shared.namespace(&namespace);
    let observed = Observed {
        pods: &pods,
        namespace_annotations: namespace_meta
            .as_ref()
            .and_then(|n| n.metadata.annotations.as_ref()),
        sidecars: &sidecars,
        settings: &ctx.shared.settings,
    };

    let error_text;
    let config = match &rendered {
        Ok((yaml, (hash, template))) => {
            let census = status::census(sidecar, &observed, Some(hash));
            if let Some(stale) =
                pod_shape_changed(ctx, sidecar, &namespace, template, &census).await?
            {
                if spec.restart_on_change {
                    roll(ctx, sidecar, &namespace, template, &stale).await?;
                } else {
                    publish(ctx, sidecar, status::outdated_note(&stale)).await;
                }
            }
            apply_config_map(ctx, &namespace, &name, &owner, yaml, hash, template).await?;
            if ctx.pod_monitors {
                reconcile_pod_monitor(ctx, sidecar, &namespace, &name, &owner).await?;
            }
            ConfigState::Valid { hash }
        }
        Err(e) => {
            error_text = e.to_string();
            ConfigState::Invalid { error: &error_text }
        }
    };
    let hash = match config {
        ConfigState::Valid { hash } => Some(hash),
        ConfigState::Invalid { .. } => None,
    };
    let census = status::census(sidecar, &observed, hash);
    let now = Time((ctx.now)());
    let native = crate::inject::native_sidecar(
        spec.native_sidecar,
        ctx.shared.settings.native_sidecars.get(),
    );
    let new = status::status(sidecar, &census, config, native, &now);
    if sidecar.status.as_ref() != Some(&new) {
        patch_status(ctx, &namespace, &name, &new).await?;
    }
    for note in status::events(sidecar, &new, &census, config) {
        publish(ctx, sidecar, note).await;
    }
    Ok(match config {
        ConfigState::Valid { .. } => Action::requeue(RESYNC),
        // Nothing to retry until the spec changes.
        ConfigState::Invalid { .. } => Action::await_change(),
    })
}

/// A `MetricsSidecar` that does not parse (stored before a schema change, or with a value the
/// schema admits and the parser refuses): reported in its status (`Ready=False`, `Malformed`),
/// an Event and the `monasca_operator_malformed_objects` gauge; nothing else is touched. The
/// webhook skips pods that ask for it (`unknown_sidecar`: its store drops the object).
async fn report_malformed(invalid: &InvalidObject, key: &str, ctx: &Context) -> Result<Action> {
    let seen = (invalid.metadata.uid.clone(), invalid.metadata.generation);
    if ctx
        .reported_malformed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
        == Some(&seen)
    {
        return Ok(Action::await_change());
    }
    let namespace = invalid
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = invalid
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    tracing::warn!(%namespace, %name, error = %invalid.error, "a MetricsSidecar does not parse");
    let now = Time((ctx.now)());
    let new = status::malformed_status(&invalid.error, invalid.metadata.generation, &now);
    // Untyped: the answer is the object, which does not parse either.
    ctx.writable()?;
    let body = json!({
        "apiVersion": MetricsSidecar::api_version(&()),
        "kind": MetricsSidecar::kind(&()),
        "status": new,
    });
    Api::<DynamicObject>::namespaced_with(
        ctx.client.clone(),
        &namespace,
        &ApiResource::erase::<MetricsSidecar>(&()),
    )
    .patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    let regarding = ObjectReference {
        api_version: Some(MetricsSidecar::api_version(&()).into()),
        kind: Some(MetricsSidecar::kind(&()).into()),
        name: Some(name),
        namespace: Some(namespace),
        uid: invalid.metadata.uid.clone(),
        resource_version: invalid.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    publish_to(ctx, regarding, status::malformed_note(&invalid.error)).await;
    ctx.reported_malformed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.to_string(), seen);
    // Retried only when the object changes (or leadership moves): nothing else can fix it.
    Ok(Action::await_change())
}

/// The ConfigMap mounted by every injected pod, server-side applied.
pub fn config_map(
    namespace: &str,
    name: &str,
    owner: &OwnerReference,
    yaml: &str,
    hash: &str,
    template_hash: &str,
) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(name),
            "namespace": namespace,
            "labels": {
                MANAGED_BY.0: MANAGED_BY.1,
                "app.kubernetes.io/name": "monasca-sidecar",
                "app.kubernetes.io/instance": name,
            },
            "annotations": {
                ANNOTATION_CONFIG_HASH: hash,
                ANNOTATION_POD_TEMPLATE_HASH: template_hash,
            },
            "ownerReferences": [owner],
        },
        "data": { CONFIG_MAP_KEY: yaml },
    })
}

async fn apply_config_map(
    ctx: &Context,
    namespace: &str,
    name: &str,
    owner: &OwnerReference,
    yaml: &str,
    hash: &str,
    template_hash: &str,
) -> Result<()> {
    ctx.writable()?;
    let body = config_map(namespace, name, owner, yaml, hash, template_hash);
    Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &config_map_name(name),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    Ok(())
}

async fn patch_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &MetricsSidecarStatus,
) -> Result<()> {
    ctx.writable()?;
    let body = json!({
        "apiVersion": MetricsSidecar::api_version(&()),
        "kind": MetricsSidecar::kind(&()),
        "status": status,
    });
    Api::<MetricsSidecar>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    Ok(())
}

/// Events are best effort: a failure is logged, never fails the reconcile (the status already
/// says the same).
async fn publish(ctx: &Context, sidecar: &MetricsSidecar, note: Note) {
    publish_to(ctx, sidecar.object_ref(&()), note).await;
}

/// Creates one `events.k8s.io/v1` Event per note. Not kube's `Recorder`: it folds every Event of
/// one reason into a series that keeps the *first* message ("1 pod carries the sidecar (was 0)"
/// with count 3), while each change here has its own message.
async fn publish_to(ctx: &Context, regarding: ObjectReference, note: Note) {
    if ctx.writable().is_err() {
        return;
    }
    let now = (ctx.now)();
    let namespace = regarding.namespace.clone().unwrap_or_default();
    let base = regarding.name.clone().unwrap_or_default();
    let event = K8sEvent {
        metadata: ObjectMeta {
            // Unique per Event, like kubectl's: `<object>.<hex nanoseconds>` (plus a counter, as
            // one reconcile may publish twice within the fixed test clock's nanosecond).
            name: Some(format!(
                "{base}.{:x}{:x}",
                now.as_nanosecond(),
                EVENT_SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(note.action.into()),
        reason: Some(note.reason.as_str().into()),
        note: Some(note.note),
        regarding: Some(regarding),
        reporting_controller: Some(ctx.reporter.controller.clone()),
        reporting_instance: Some(
            ctx.reporter
                .instance
                .clone()
                .unwrap_or_else(|| ctx.reporter.controller.clone()),
        ),
        type_: Some(
            match note.type_ {
                kube::runtime::events::EventType::Normal => "Normal",
                kube::runtime::events::EventType::Warning => "Warning",
            }
            .into(),
        ),
        ..K8sEvent::default()
    };
    if let Err(e) = Api::<K8sEvent>::namespaced(ctx.client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await
    {
        tracing::warn!(error = %e, reason = note.reason.as_str(), "cannot publish an Event");
    }
}

/// Makes Event names unique within one process.
static EVENT_SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A workload whose pod template the controller annotates to roll it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    /// `deployments`, `statefulsets` or `daemonsets`.
    pub plural: &'static str,
    pub name: String,
}

/// The owner reference marked `controller: true`, if any.
fn controller_of(meta: &kube::api::ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The injected pods made for an older pod shape, when the pod-shaping fields (image, resources,
/// listen addresses...) changed since the ConfigMap was last written: `None` when nothing
/// changed. Config-only changes never count: the ConfigMap update reaches the running sidecars.
async fn pod_shape_changed(
    ctx: &Context,
    sidecar: &MetricsSidecar,
    namespace: &str,
    template_hash: &str,
    census: &status::PodCensus,
) -> Result<Option<Vec<Arc<PodEntry>>>> {
    if census.outdated.is_empty() {
        return Ok(None);
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let previous = config_maps
        .get_metadata_opt(&config_map_name(&sidecar.name_any()))
        .await?;
    let previous = previous
        .as_ref()
        .and_then(|cm| cm.metadata.annotations.as_ref())
        .and_then(|a| a.get(ANNOTATION_POD_TEMPLATE_HASH));
    // No previous ConfigMap: the pods were made for this very spec or by hand; nothing to roll.
    if previous.is_none_or(|p| p == template_hash) {
        return Ok(None);
    }
    Ok(Some(census.outdated.clone()))
}

/// Rolls the workloads of `stale` pods (`restartOnChange`), then says so in one Event naming
/// every workload restarted.
async fn roll(
    ctx: &Context,
    sidecar: &MetricsSidecar,
    namespace: &str,
    template_hash: &str,
    stale: &[Arc<PodEntry>],
) -> Result<()> {
    let workloads = owning_workloads(ctx, namespace, stale).await?;
    let mut restarted = Vec::new();
    let mut failure = None;
    for workload in &workloads {
        ctx.writable()?;
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            ANNOTATION_CONFIG_HASH: template_hash,
        }}}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let result = match workload.plural {
            "deployments" => Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
                ctx.client.clone(),
                namespace,
            )
            .patch(&workload.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
            "statefulsets" => Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(
                ctx.client.clone(),
                namespace,
            )
            .patch(&workload.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
            _ => Api::<k8s_openapi::api::apps::v1::DaemonSet>::namespaced(
                ctx.client.clone(),
                namespace,
            )
            .patch(&workload.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
        };
        if let Err(e) = result {
            failure = Some(e);
            break;
        }
        restarted.push(workload.clone());
    }
    // What was restarted is said even when a later workload failed.
    if !restarted.is_empty() {
        publish(
            ctx,
            sidecar,
            status::rollout_note(&restarted, template_hash),
        )
        .await;
    }
    failure.map_or(Ok(()), |e| Err(e.into()))
}

/// The Deployments, StatefulSets and DaemonSets that own `pods` (through their ReplicaSet for
/// Deployments). Bare pods and other owners (Jobs, operators' own kinds) are not rolled.
async fn owning_workloads(
    ctx: &Context,
    namespace: &str,
    pods: &[Arc<PodEntry>],
) -> Result<BTreeSet<Workload>> {
    let mut workloads = BTreeSet::new();
    let mut replica_sets = BTreeSet::new();
    for pod in pods {
        let Some(owner) = &pod.owner else {
            continue;
        };
        let name = owner.name.to_string();
        match owner.kind {
            OwnerKind::ReplicaSet => {
                replica_sets.insert(name);
            }
            OwnerKind::StatefulSet => {
                workloads.insert(Workload {
                    plural: "statefulsets",
                    name,
                });
            }
            OwnerKind::DaemonSet => {
                workloads.insert(Workload {
                    plural: "daemonsets",
                    name,
                });
            }
        }
    }
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    for rs in replica_sets {
        let Some(meta) = api.get_metadata_opt(&rs).await? else {
            continue;
        };
        if let Some(owner) = controller_of(&meta.metadata)
            && owner.kind == "Deployment"
        {
            workloads.insert(Workload {
                plural: "deployments",
                name: owner.name.clone(),
            });
        }
    }
    Ok(workloads)
}

/// The PodMonitor selecting this sidecar's pods on their `sidecar-metrics` port.
pub fn pod_monitor(namespace: &str, name: &str, owner: &OwnerReference) -> serde_json::Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": config_map_name(name),
            "namespace": namespace,
            "labels": { MANAGED_BY.0: MANAGED_BY.1 },
            "ownerReferences": [owner],
        },
        "spec": {
            "selector": { "matchLabels": { LABEL_SIDECAR: name } },
            "podMetricsEndpoints": [{ "port": crate::inject::PORT_METRICS, "path": "/metrics" }],
        },
    })
}

async fn reconcile_pod_monitor(
    ctx: &Context,
    sidecar: &MetricsSidecar,
    namespace: &str,
    name: &str,
    owner: &OwnerReference,
) -> Result<()> {
    ctx.writable()?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &pod_monitor_resource());
    if sidecar.spec.pod_monitor {
        api.patch(
            &config_map_name(name),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(pod_monitor(namespace, name, owner)),
        )
        .await?;
    } else {
        match api
            .delete(&config_map_name(name), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The sidecars a pod change may concern: every `MetricsSidecar` of the pod's namespace (which
/// one a pod asks for depends on annotations and on the namespace's other sidecars).
fn sidecars_of_namespace(shared: &crate::Context, namespace: &str) -> Vec<ObjectRef<Guarded>> {
    shared
        .sidecars_in(namespace)
        .iter()
        .map(|s| ObjectRef::new(&s.name_any()).within(namespace))
        .collect()
}

/// Runs the controller until `shutdown` resolves.
///
/// Pods trigger reconciles through [`crate::Context::pod_changes`], fed by the operator's one
/// pod watch (the one behind [`crate::Context::pods`]), not a watch of their own: at 10,000
/// pods every watch is another copy in memory and another stream from the apiserver. The
/// `MetricsSidecar` watch is guarded
/// ([`Guarded`]): an object that does not parse is reconciled as such (reported), never a
/// failed relist that would stop every other object's reconciles.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let shared = ctx.shared.clone();
    let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    Controller::new(
        Api::<Guarded>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .owns(Api::<ConfigMap>::all(client.clone()), managed)
    // A pod change reconciles the sidecars of its namespace.
    .reconcile_on(
        ctx.shared
            .pod_changes
            .clone()
            .namespaces()
            .flat_map(move |namespace| {
                futures::stream::iter(sidecars_of_namespace(&shared, &namespace))
            }),
    )
    .reconcile_all_on(ctx.shared.leadership.gained())
    // Native sidecars detected on or off: every NativeSidecar condition follows at once.
    .reconcile_all_on(ctx.shared.settings.native_sidecars.changes())
    // Pod churn (a rollout) triggers the namespace's sidecars once per burst, not per pod.
    .with_config(kube::runtime::controller::Config::default().debounce(DEBOUNCE))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "controller event");
        }
    })
    .await;
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
