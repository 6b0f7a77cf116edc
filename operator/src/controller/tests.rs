use super::fixtures::*;
use super::status::{self, ConfigState, Observed, PodCensus};
use super::*;
use crate::inject::Native;
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use monasca_crds::{ANNOTATION_INJECT, MetricsSidecarSpec};
use serde_json::{Value, json};

const CM_URI: &str = "/api/v1/namespaces/monasca/configmaps/default-monasca-sidecar?&force=true&fieldManager=monasca-operator";
const STATUS_URI: &str = "/apis/monasca.openstack.org/v1alpha1/namespaces/monasca/metricssidecars/default/status?&force=true&fieldManager=monasca-operator";
const EVENTS_URI: &str = "/apis/events.k8s.io/v1/namespaces/monasca/events?";

fn guarded(cr: &MetricsSidecar) -> Arc<Guarded> {
    Arc::new(DeserializeGuard(Ok(cr.clone())))
}

fn hashes(spec: &MetricsSidecarSpec) -> (String, String) {
    (
        spec.config_hash().expect("hash"),
        spec.pod_template_hash().expect("hash"),
    )
}

fn expect_config_map(spec: &MetricsSidecarSpec) -> Expect {
    let (hash, template) = hashes(spec);
    Expect::new(
        Method::PATCH,
        CM_URI,
        BodyCheck::Exact(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "default-monasca-sidecar",
                "namespace": "monasca",
                "labels": {
                    "app.kubernetes.io/managed-by": "monasca-operator",
                    "app.kubernetes.io/name": "monasca-sidecar",
                    "app.kubernetes.io/instance": "default",
                },
                "annotations": {
                    "monasca.openstack.org/config-hash": hash,
                    "monasca.openstack.org/pod-template-hash": template,
                },
                "ownerReferences": [owner()],
            },
            "data": {"config.yaml": spec.rendered_config().expect("renders")},
        })),
        Value::Null,
    )
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": 1, "lastTransitionTime": now_text(),
    })
}

fn ready(hash: &str) -> Value {
    condition(
        "Ready",
        "True",
        "Reconciled",
        &format!("ConfigMap default-monasca-sidecar holds configuration {hash}"),
    )
}

fn not_degraded() -> Value {
    condition(
        "Degraded",
        "False",
        "AllPodsInjected",
        "every pod that asks for this sidecar carries it",
    )
}

fn expect_status(sidecar: &MetricsSidecar, status: Value) -> Expect {
    Expect::new(
        Method::PATCH,
        STATUS_URI,
        BodyCheck::Exact(json!({
            "apiVersion": "monasca.openstack.org/v1alpha1",
            "kind": "MetricsSidecar",
            "status": status,
        })),
        sidecar_json(sidecar),
    )
}

fn expect_event(type_: &str, reason: &str, note: &str) -> Expect {
    Expect::new(
        Method::POST,
        EVENTS_URI,
        BodyCheck::Subset(json!({
            "type": type_,
            "reason": reason,
            "note": note,
            "reportingController": "monasca-operator",
            "regarding": {"kind": "MetricsSidecar", "name": "default", "namespace": "monasca",
                          "uid": UID},
        })),
        Value::Null,
    )
}

fn injected_pod(name: &str, hash: &str, owner: Option<(&str, &str)>) -> Pod {
    pod(
        name,
        &[(LABEL_SIDECAR, "default")],
        &[(ANNOTATION_INJECT, "true"), (ANNOTATION_CONFIG_HASH, hash)],
        owner,
    )
}

#[tokio::test]
async fn new_sidecar_gets_its_config_map_status_and_an_event() {
    let spec = MetricsSidecarSpec::default();
    let (hash, _) = hashes(&spec);
    let cr = MetricsSidecar::fixture(NAMESPACE, "default", spec.clone()).stored(UID);
    let harness = Harness::new(true)
        .with_sidecar(&cr)
        .with_pod(injected_pod("api-1", &hash, None))
        .with_pod(pod("unrelated", &[("app", "x")], &[], None));
    let (result, ctx) = harness
        .reconcile(
            cr.clone(),
            vec![
                expect_config_map(&spec),
                expect_status(
                    &cr,
                    json!({
                        "observedGeneration": 1,
                        "conditions": [ready(&hash), not_degraded()],
                        "injectedPods": 1,
                        "uninjectedPods": 0,
                        "configHash": hash,
                    }),
                ),
                expect_event(
                    "Normal",
                    "InjectedPodsChanged",
                    "1 pod carries the sidecar (was 0)",
                ),
            ],
        )
        .await;
    let action = result.expect("reconciled");
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(ctx.shared.metrics.reconciles(ReconcileResult::Ok), 1);
}

#[tokio::test]
async fn unchanged_sidecar_only_reapplies_its_config_map() {
    let spec = MetricsSidecarSpec::default();
    let (hash, _) = hashes(&spec);
    let mut cr = MetricsSidecar::fixture(NAMESPACE, "default", spec.clone()).stored(UID);
    cr.status = Some(MetricsSidecarStatus {
        observed_generation: Some(1),
        conditions: vec![
            serde_json::from_value(ready(&hash)).expect("condition"),
            serde_json::from_value(not_degraded()).expect("condition"),
        ],
        injected_pods: 1,
        uninjected_pods: 0,
        config_hash: Some(hash.clone()),
    });
    let harness = Harness::new(true).with_pod(injected_pod("api-1", &hash, None));
    let (result, _) = harness.reconcile(cr, vec![expect_config_map(&spec)]).await;
    result.expect("reconciled");
}

#[tokio::test]
async fn changed_config_updates_the_config_map_without_restarting_pods() {
    // restartOnChange is on, but only `config` changed: the ConfigMap carries the change to the
    // running sidecars and no workload is touched.
    let old = MetricsSidecarSpec {
        restart_on_change: true,
        ..MetricsSidecarSpec::default()
    };
    let (old_hash, template) = hashes(&old);
    let mut spec = old.clone();
    spec.config.stale_after = monasca_crds::config::Duration::from_secs(90);
    let (hash, same_template) = hashes(&spec);
    assert_eq!(template, same_template);
    let mut cr = MetricsSidecar::fixture(NAMESPACE, "default", spec.clone()).stored(UID);
    cr.metadata.generation = Some(2);
    cr.status = Some(MetricsSidecarStatus {
        observed_generation: Some(1),
        injected_pods: 1,
        config_hash: Some(old_hash.clone()),
        ..MetricsSidecarStatus::default()
    });
    let harness = Harness::new(true).with_pod(injected_pod(
        "api-7d9f-x",
        &old_hash,
        Some(("ReplicaSet", "api-7d9f")),
    ));
    let mut ready = ready(&hash);
    ready["observedGeneration"] = json!(2);
    let mut degraded = not_degraded();
    degraded["observedGeneration"] = json!(2);
    let (result, _) = harness
        .reconcile(
            cr.clone(),
            vec![
                Expect::new(
                    Method::GET,
                    "/api/v1/namespaces/monasca/configmaps/default-monasca-sidecar",
                    BodyCheck::None,
                    json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "default-monasca-sidecar", "namespace": "monasca",
                                     "annotations": {ANNOTATION_POD_TEMPLATE_HASH: template}},
                    }),
                ),
                expect_config_map(&spec),
                expect_status(
                    &cr,
                    json!({
                        "observedGeneration": 2,
                        "conditions": [ready, degraded],
                        "injectedPods": 1,
                        "uninjectedPods": 0,
                        "configHash": hash,
                    }),
                ),
            ],
        )
        .await;
    result.expect("reconciled");
}

#[tokio::test]
async fn pod_shape_change_rolls_the_owning_deployment_once() {
    let old = MetricsSidecarSpec {
        restart_on_change: true,
        ..MetricsSidecarSpec::default()
    };
    let (old_hash, old_template) = hashes(&old);
    let spec = MetricsSidecarSpec {
        image: Some("monasca/monasca-sidecar:2".into()),
        ..old.clone()
    };
    let (hash, template) = hashes(&spec);
    let mut cr = MetricsSidecar::fixture(NAMESPACE, "default", spec.clone()).stored(UID);
    cr.status = Some(MetricsSidecarStatus {
        observed_generation: Some(1),
        injected_pods: 2,
        config_hash: Some(old_hash.clone()),
        ..MetricsSidecarStatus::default()
    });
    let harness = Harness::new(true)
        .with_pod(injected_pod(
            "api-7d9f-a",
            &old_hash,
            Some(("ReplicaSet", "api-7d9f")),
        ))
        .with_pod(injected_pod(
            "api-7d9f-b",
            &old_hash,
            Some(("ReplicaSet", "api-7d9f")),
        ));
    let (result, _) = harness
        .reconcile(
            cr.clone(),
            vec![
                Expect::new(
                    Method::GET,
                    "/api/v1/namespaces/monasca/configmaps/default-monasca-sidecar",
                    BodyCheck::None,
                    json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "default-monasca-sidecar", "namespace": "monasca",
                                     "annotations": {ANNOTATION_POD_TEMPLATE_HASH: old_template}},
                    }),
                ),
                Expect::new(
                    Method::GET,
                    "/apis/apps/v1/namespaces/monasca/replicasets/api-7d9f",
                    BodyCheck::None,
                    json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "api-7d9f", "namespace": "monasca",
                                     "ownerReferences": [{"apiVersion": "apps/v1",
                                        "kind": "Deployment", "name": "api", "uid": "uid-api",
                                        "controller": true}]},
                    }),
                ),
                Expect::new(
                    Method::PATCH,
                    "/apis/apps/v1/namespaces/monasca/deployments/api?&fieldManager=monasca-operator",
                    BodyCheck::Exact(json!({"spec": {"template": {"metadata": {"annotations": {
                        "monasca.openstack.org/config-hash": template,
                    }}}}})),
                    json!({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "api", "namespace": "monasca"}}),
                ),
                expect_event(
                    "Normal",
                    "RolloutTriggered",
                    &format!("restarting deployment api for pod template {template} (restartOnChange)"),
                ),
                expect_config_map(&spec),
                expect_status(
                    &cr,
                    json!({
                        "observedGeneration": 1,
                        "conditions": [ready(&hash), not_degraded()],
                        "injectedPods": 2,
                        "uninjectedPods": 0,
                        "configHash": hash,
                    }),
                ),
            ],
        )
        .await;
    result.expect("reconciled");
}

#[tokio::test]
async fn uninjected_pods_are_counted_and_reported() {
    let spec = MetricsSidecarSpec::default();
    let (hash, _) = hashes(&spec);
    let cr = MetricsSidecar::fixture(NAMESPACE, "default", spec.clone()).stored(UID);
    let note = "1 pod asks for this sidecar but runs without it (created while the webhook was \
                unavailable, or before this MetricsSidecar existed): late-pod; delete or roll \
                them to inject";
    let harness = Harness::new(true)
        .with_sidecar(&cr)
        .with_pod(pod("late-pod", &[], &[(ANNOTATION_INJECT, "true")], None))
        .with_pod(pod("opted-out", &[], &[(ANNOTATION_INJECT, "false")], None));
    let (result, _) = harness
        .reconcile(
            cr.clone(),
            vec![
                expect_config_map(&spec),
                expect_status(
                    &cr,
                    json!({
                        "observedGeneration": 1,
                        "conditions": [
                            ready(&hash),
                            condition("Degraded", "True", "UninjectedPods", note),
                        ],
                        "injectedPods": 0,
                        "uninjectedPods": 1,
                        "configHash": hash,
                    }),
                ),
                expect_event("Warning", "UninjectedPods", note),
            ],
        )
        .await;
    result.expect("reconciled");
}

#[tokio::test]
async fn api_error_fails_the_reconcile_and_backs_off() {
    let spec = MetricsSidecarSpec::default();
    let cr = MetricsSidecar::fixture(NAMESPACE, "default", spec.clone()).stored(UID);
    let harness = Harness::new(true);
    let (result, ctx) = harness
        .reconcile(
            cr.clone(),
            vec![expect_config_map(&spec).failing(StatusCode::FORBIDDEN, "Forbidden")],
        )
        .await;
    let error = result.expect_err("a 403 fails the reconcile");
    assert_eq!(
        error.reconcile_reason(),
        crate::metrics::ErrorReason::Forbidden
    );
    assert_eq!(ctx.shared.metrics.reconciles(ReconcileResult::Error), 1);
    assert!(
        ctx.shared
            .metrics
            .render()
            .contains("monasca_operator_reconcile_errors_total{reason=\"forbidden\"} 1")
    );
    assert_eq!(
        error_policy(guarded(&cr), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(guarded(&cr), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    for _ in 0..20 {
        error_policy(guarded(&cr), &error, ctx.clone());
    }
    assert_eq!(
        error_policy(guarded(&cr), &error, ctx),
        Action::requeue(RESYNC)
    );
}

#[tokio::test]
async fn conflicting_status_write_is_an_error_with_a_fixed_reason() {
    let spec = MetricsSidecarSpec::default();
    let cr = MetricsSidecar::fixture(NAMESPACE, "default", spec.clone()).stored(UID);
    let (result, _) = Harness::new(true)
        .reconcile(
            cr.clone(),
            vec![
                expect_config_map(&spec),
                Expect::new(Method::PATCH, STATUS_URI, BodyCheck::None, Value::Null)
                    .failing(StatusCode::CONFLICT, "Conflict"),
            ],
        )
        .await;
    assert_eq!(
        result.expect_err("conflict").reconcile_reason(),
        crate::metrics::ErrorReason::Conflict
    );
}

#[tokio::test]
async fn follower_writes_nothing() {
    let cr =
        MetricsSidecar::fixture(NAMESPACE, "default", MetricsSidecarSpec::default()).stored(UID);
    let (result, _) = Harness::new(false).reconcile(cr, vec![]).await;
    assert_eq!(result.expect("no error"), Action::await_change());
}

#[tokio::test]
async fn invalid_config_is_reported_without_touching_the_config_map() {
    let mut spec = MetricsSidecarSpec::default();
    spec.config.listen.metrics = "not an address".into();
    let cr = MetricsSidecar::fixture(NAMESPACE, "default", spec.clone()).stored(UID);
    let error = spec.config.validate().expect_err("invalid").to_string();
    let message = format!("the sidecar configuration is invalid: sidecar configuration: {error}");
    let (result, _) = Harness::new(true)
        .reconcile(
            cr.clone(),
            vec![
                expect_status(
                    &cr,
                    json!({
                        "observedGeneration": 1,
                        "conditions": [
                            condition("Ready", "False", "InvalidConfig", &message),
                            not_degraded(),
                        ],
                        "injectedPods": 0,
                        "uninjectedPods": 0,
                    }),
                ),
                expect_event("Warning", "InvalidConfig", &message),
            ],
        )
        .await;
    assert_eq!(result.expect("reported"), Action::await_change());
}

// ---- pure status computation ----

fn census_of(
    cr: &MetricsSidecar,
    others: &[MetricsSidecar],
    pods: Vec<Pod>,
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> PodCensus {
    let pods: Vec<_> = pods
        .iter()
        .map(|p| Arc::new(crate::pod_entry::PodEntry::from_pod(p)))
        .collect();
    let mut sidecars: Vec<_> = others.iter().cloned().map(Arc::new).collect();
    sidecars.push(Arc::new(cr.clone()));
    let settings = crate::inject::Settings::fixture(crate::inject::NativeSidecars::Unknown);
    status::census(
        cr,
        &Observed {
            pods: &pods,
            namespace_annotations,
            sidecars: &sidecars,
            settings: &settings,
        },
        Some("h1"),
    )
}

use std::collections::BTreeMap;

#[test]
fn census_follows_the_webhook_annotation_rules() {
    let cr =
        MetricsSidecar::fixture(NAMESPACE, "default", MetricsSidecarSpec::default()).stored(UID);
    let other =
        MetricsSidecar::fixture(NAMESPACE, "other", MetricsSidecarSpec::default()).stored(UID);
    let mut terminating = pod("leaving", &[], &[(ANNOTATION_INJECT, "true")], None);
    terminating.metadata.deletion_timestamp = Some(Time(now()));
    let census = census_of(
        &cr,
        &[other],
        vec![
            injected_pod("fresh", "h1", None),
            injected_pod("stale", "h0", None),
            pod("carries-other", &[(LABEL_SIDECAR, "other")], &[], None),
            pod("asks-true", &[], &[(ANNOTATION_INJECT, "true")], None),
            pod("asks-by-name", &[], &[(ANNOTATION_INJECT, "default")], None),
            pod("asks-other", &[], &[(ANNOTATION_INJECT, "other")], None),
            pod("asks-missing", &[], &[(ANNOTATION_INJECT, "nope")], None),
            pod("no-annotation", &[], &[], None),
            terminating,
        ],
        None,
    );
    assert_eq!(census.injected, ["fresh", "stale"]);
    assert_eq!(census.uninjected, ["asks-by-name", "asks-true"]);
    let outdated: Vec<_> = census.outdated.iter().map(|p| p.name.to_string()).collect();
    assert_eq!(outdated, ["stale"]);
}

#[test]
fn namespace_annotation_asks_for_every_pod_but_a_pod_can_opt_out() {
    let cr =
        MetricsSidecar::fixture(NAMESPACE, "default", MetricsSidecarSpec::default()).stored(UID);
    let namespace = BTreeMap::from([(ANNOTATION_INJECT.to_string(), "true".to_string())]);
    let census = census_of(
        &cr,
        &[],
        vec![
            pod("plain", &[], &[], None),
            pod("opted-out", &[], &[(ANNOTATION_INJECT, "false")], None),
        ],
        Some(&namespace),
    );
    assert_eq!(census.uninjected, ["plain"]);
}

#[test]
fn status_keeps_transition_times_of_unchanged_conditions() {
    let mut cr =
        MetricsSidecar::fixture(NAMESPACE, "default", MetricsSidecarSpec::default()).stored(UID);
    let census = PodCensus {
        injected: vec!["a".into()],
        ..PodCensus::default()
    };
    let earlier = Time(Timestamp::from_second(NOW_SECONDS - 3600).expect("time"));
    let first = status::status(
        &cr,
        &census,
        ConfigState::Valid { hash: "h1" },
        Native::No,
        &earlier,
    );
    cr.status = Some(first.clone());
    let later = Time(now());
    let second = status::status(
        &cr,
        &census,
        ConfigState::Valid { hash: "h1" },
        Native::No,
        &later,
    );
    assert_eq!(first, second, "nothing changed, nothing to write");
    assert!(status::events(&cr, &second, &census, ConfigState::Valid { hash: "h1" }).is_empty());

    let census = PodCensus {
        injected: vec!["a".into()],
        uninjected: vec!["b".into()],
        ..PodCensus::default()
    };
    let third = status::status(
        &cr,
        &census,
        ConfigState::Valid { hash: "h1" },
        Native::No,
        &later,
    );
    let degraded = third
        .conditions
        .iter()
        .find(|c| c.type_ == status::DEGRADED)
        .expect("degraded");
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.last_transition_time, later);
    let ready = third
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
        .expect("ready");
    assert_eq!(ready.last_transition_time, earlier, "Ready did not change");
}

#[test]
fn long_lists_of_pods_are_cut_in_messages() {
    let cr =
        MetricsSidecar::fixture(NAMESPACE, "default", MetricsSidecarSpec::default()).stored(UID);
    let census = PodCensus {
        uninjected: (0..8).map(|i| format!("p{i}")).collect(),
        ..PodCensus::default()
    };
    let new = status::status(
        &cr,
        &census,
        ConfigState::Valid { hash: "h" },
        Native::No,
        &Time(now()),
    );
    let degraded = &new.conditions[1];
    assert!(
        degraded.message.contains("p0, p1, p2, p3, p4 and 3 more"),
        "{}",
        degraded.message
    );
    assert_eq!(new.uninjected_pods, 8);
}

#[test]
fn pod_monitor_selects_the_sidecar_label_on_the_metrics_port() {
    let owner: OwnerReference = serde_json::from_value(owner()).expect("owner");
    let value = pod_monitor("monasca", "default", &owner);
    assert_eq!(value["kind"], "PodMonitor");
    assert_eq!(
        value["spec"]["selector"]["matchLabels"]["monasca.openstack.org/sidecar"],
        "default"
    );
    assert_eq!(
        value["spec"]["podMetricsEndpoints"][0]["port"],
        "sidecar-metrics"
    );
    assert_eq!(value["metadata"]["ownerReferences"][0]["uid"], UID);
}

#[test]
fn census_counts_pending_and_running_pods_and_not_pods_skipped_by_rule() {
    let cr =
        MetricsSidecar::fixture(NAMESPACE, "default", MetricsSidecarSpec::default()).stored(UID);
    let asks = || pod("x", &[], &[(ANNOTATION_INJECT, "true")], None);
    let named = |mut p: Pod, name: &str| {
        p.metadata.name = Some(name.into());
        p
    };
    let mut host = named(asks(), "host-network");
    host.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        host_network: Some(true),
        ..Default::default()
    });
    let mut own = named(asks(), "own-container");
    own.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        containers: vec![k8s_openapi::api::core::v1::Container {
            name: monasca_crds::SIDECAR_CONTAINER_NAME.into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut no_phase = named(asks(), "just-created");
    no_phase.status = None;
    let census = census_of(
        &cr,
        &[],
        vec![
            injected_pod("running", "h1", None),
            in_phase(injected_pod("pending", "h1", None), "Pending"),
            in_phase(injected_pod("succeeded", "h1", None), "Succeeded"),
            in_phase(injected_pod("failed", "h0", None), "Failed"),
            in_phase(named(asks(), "uninjected-done"), "Succeeded"),
            named(asks(), "uninjected"),
            no_phase,
            host,
            own,
        ],
        None,
    );
    assert_eq!(census.injected, ["pending", "running"]);
    assert!(census.outdated.is_empty(), "a Failed pod is not rolled");
    assert_eq!(census.uninjected, ["just-created", "uninjected"]);
    assert_eq!(census.excluded, ["host-network", "own-container"]);

    // Pods skipped by rule alone do not make the sidecar Degraded.
    let only_excluded = PodCensus {
        excluded: vec!["host-network".into()],
        ..PodCensus::default()
    };
    let new = status::status(
        &cr,
        &only_excluded,
        ConfigState::Valid { hash: "h1" },
        Native::No,
        &Time(now()),
    );
    assert_eq!(new.uninjected_pods, 0);
    let degraded = new.conditions.iter().find(|c| c.type_ == "Degraded");
    assert_eq!(degraded.map(|c| c.status.as_str()), Some("False"));
}

/// The pod store's entries answer the webhook's skip rules as the full pod does: a pod with
/// its own `monasca-sidecar` container (as an init container too, or added by the webhook) and
/// a hostNetwork pod.
#[test]
fn the_pod_entry_keeps_what_the_skip_rules_read() {
    let cases = [
        json!({"containers": [{"name": "app"}, {"name": "monasca-sidecar", "image": "own:1"}]}),
        json!({"containers": [{"name": "app"}],
               "initContainers": [{"name": "monasca-sidecar", "image": "own:1"}]}),
        json!({"hostNetwork": true, "containers": [{"name": "app"}]}),
        json!({"containers": [{"name": "app"}], "initContainers": [{"name": "init"}]}),
    ];
    for spec in cases {
        for annotations in [
            json!({}),
            json!({monasca_crds::ANNOTATION_INJECTED: "true"}),
        ] {
            let full: Pod = serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "monasca", "annotations": annotations},
                "spec": spec,
            }))
            .expect("pod");
            let entry = crate::pod_entry::PodEntry::from_pod(&full);
            assert_eq!(
                entry.skipped_by_rule(),
                crate::inject::skipped_by_rule(&full),
                "{spec} {annotations}"
            );
        }
    }
}

#[test]
fn each_count_change_has_its_own_message() {
    let census = |n: usize| PodCensus {
        injected: (0..n).map(|i| format!("p{i}")).collect(),
        ..PodCensus::default()
    };
    let mut cr =
        MetricsSidecar::fixture(NAMESPACE, "default", MetricsSidecarSpec::default()).stored(UID);
    let mut notes = Vec::new();
    for n in [1, 2, 3, 2] {
        let new = status::status(
            &cr,
            &census(n),
            ConfigState::Valid { hash: "h1" },
            Native::No,
            &Time(now()),
        );
        notes.extend(
            status::events(&cr, &new, &census(n), ConfigState::Valid { hash: "h1" })
                .into_iter()
                .map(|n| n.note),
        );
        cr.status = Some(new);
    }
    assert_eq!(
        notes,
        [
            "1 pod carries the sidecar (was 0)",
            "2 pods carry the sidecar (was 1)",
            "3 pods carry the sidecar (was 2)",
            "2 pods carry the sidecar (was 3)",
        ]
    );
}

#[test]
fn one_rollout_event_names_every_workload() {
    let workloads = [
        Workload {
            plural: "deployments",
            name: "api".into(),
        },
        Workload {
            plural: "statefulsets",
            name: "db".into(),
        },
        Workload {
            plural: "daemonsets",
            name: "agent".into(),
        },
    ];
    let note = status::rollout_note(&workloads, "t2");
    assert_eq!(note.reason.as_str(), "RolloutTriggered");
    assert_eq!(
        note.note,
        "restarting deployment api, statefulset db, daemonset agent for pod template t2 \
         (restartOnChange)"
    );
    let pods: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| {
            Arc::new(crate::pod_entry::PodEntry::from_pod(&pod(
                n,
                &[],
                &[],
                None,
            )))
        })
        .collect();
    let outdated = status::outdated_note(&pods);
    assert_eq!(outdated.reason.as_str(), "PodsOutdated");
    assert!(
        outdated.note.starts_with("2 pods run an older pod shape"),
        "{}",
        outdated.note
    );
    assert!(outdated.note.contains("a, b"), "{}", outdated.note);
}

#[test]
fn native_sidecar_fallback_is_a_condition_and_one_event() {
    let cr =
        MetricsSidecar::fixture(NAMESPACE, "default", MetricsSidecarSpec::default()).stored(UID);
    let fallback = Native::Unavailable;
    let census = PodCensus::default();
    let config = ConfigState::Valid { hash: "h1" };
    let new = status::status(&cr, &census, config, fallback, &Time(now()));
    let condition = new
        .conditions
        .iter()
        .find(|c| c.type_ == status::NATIVE_SIDECAR)
        .expect("a NativeSidecar condition");
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason, "NativeSidecarUnavailable");
    assert!(
        condition.message.contains("SidecarContainers=false"),
        "{}",
        condition.message
    );
    let notes = status::events(&cr, &new, &census, config);
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.reason.as_str() == "NativeSidecarUnavailable")
            .count(),
        1
    );
    let mut again = cr.clone();
    again.status = Some(new.clone());
    assert!(status::events(&again, &new, &census, config).is_empty());
    // Supported: no such condition at all (existing statuses are unchanged).
    let plain = status::status(&cr, &census, config, Native::Yes, &Time(now()));
    assert!(
        plain
            .conditions
            .iter()
            .all(|c| c.type_ != status::NATIVE_SIDECAR)
    );
}

#[test]
fn a_malformed_object_is_not_ready_with_the_parse_error() {
    let status = status::malformed_status(
        "invalid duration \"9d\"\n  at line 1",
        Some(3),
        &Time(now()),
    );
    assert_eq!(status.observed_generation, Some(3));
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "False")
    );
    assert_eq!(ready.reason, "Malformed");
    assert!(
        ready.message.contains("invalid duration \"9d\" at line 1"),
        "one line: {}",
        ready.message
    );
    assert_eq!(status::malformed_note("e").reason.as_str(), "Malformed");
}

#[test]
fn a_name_too_long_for_a_label_is_invalid_config_not_an_api_error() {
    let long = MetricsSidecar::fixture(NAMESPACE, &"n".repeat(64), MetricsSidecarSpec::default())
        .stored(UID);
    let error = long.validate().expect_err("refused");
    assert!(error.to_string().contains("63 characters"), "{error}");
    let dotted =
        MetricsSidecar::fixture(NAMESPACE, "a..b", MetricsSidecarSpec::default()).stored(UID);
    assert!(dotted.validate().is_ok(), "dots are valid in a label value");
    let bad = MetricsSidecar::fixture(NAMESPACE, "-a", MetricsSidecarSpec::default()).stored(UID);
    assert!(bad.validate().is_err());
}

#[tokio::test]
async fn a_listen_change_without_restart_on_change_names_the_pods_to_roll() {
    // restartOnChange off: nothing is patched, and the pods still declaring the old port are
    // named in a PodsOutdated Event (the sidecar rebinds only at start).
    let old = MetricsSidecarSpec::default();
    let (old_hash, old_template) = hashes(&old);
    let mut spec = old.clone();
    spec.config.listen.metrics = "0.0.0.0:9300".into();
    let (hash, template) = hashes(&spec);
    assert_ne!(template, old_template, "a listen address shapes the pod");
    let mut cr = MetricsSidecar::fixture(NAMESPACE, "default", spec.clone()).stored(UID);
    cr.status = Some(MetricsSidecarStatus {
        observed_generation: Some(1),
        injected_pods: 1,
        config_hash: Some(old_hash.clone()),
        ..MetricsSidecarStatus::default()
    });
    let harness = Harness::new(true).with_pod(injected_pod(
        "api-7d9f-a",
        &old_hash,
        Some(("ReplicaSet", "api-7d9f")),
    ));
    let (result, _) = harness
        .reconcile(
            cr.clone(),
            vec![
                Expect::new(
                    Method::GET,
                    "/api/v1/namespaces/monasca/configmaps/default-monasca-sidecar",
                    BodyCheck::None,
                    json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "default-monasca-sidecar", "namespace": "monasca",
                                     "annotations": {ANNOTATION_POD_TEMPLATE_HASH: old_template}},
                    }),
                ),
                expect_event(
                    "Warning",
                    "PodsOutdated",
                    "1 pod runs an older pod shape (image, resources, listen ports...) than this \
                     spec: api-7d9f-a; roll them, or set restartOnChange: true",
                ),
                expect_config_map(&spec),
                expect_status(
                    &cr,
                    json!({
                        "observedGeneration": 1,
                        "conditions": [ready(&hash), not_degraded()],
                        "injectedPods": 1,
                        "uninjectedPods": 0,
                        "configHash": hash,
                    }),
                ),
            ],
        )
        .await;
    result.expect("reconciled");
}
