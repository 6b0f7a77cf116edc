//! What the operator promises stays true: admitted pods work, status and events say what is, repairs are prompt, shutdown completes (issue 21).

use super::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::core::DynamicObject;
use monasca_crds::MetricsSidecarStatus;
use serde_json::json;

pub(super) const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "an_invalid_metrics_sidecar_is_reported_and_its_pods_are_admitted_without_it",
        |env| Box::pin(invalid_sidecar(env)),
    ),
    (
        "a_listen_port_change_rolls_every_workload_and_discovery_follows_the_declared_port",
        |env| Box::pin(listen_port_change(env)),
    ),
    (
        "status_counts_pending_and_running_pods_and_not_pods_skipped_by_rule",
        |env| Box::pin(census_by_phase_and_rule(env)),
    ),
    (
        "a_malformed_metrics_sidecar_is_reported_the_good_one_reconciled_and_sigterm_exits",
        |env| Box::pin(malformed_sidecar_and_sigterm(env)),
    ),
    (
        "reapplying_an_injected_pod_keeps_the_prometheus_rewrite",
        |env| Box::pin(update_keeps_rewrite(env)),
    ),
    (NATIVE_SIDECARS_OFF, |env| {
        Box::pin(native_sidecars_off(env))
    }),
    (
        "a_deleted_webhook_secret_is_replaced_and_a_deleted_webhook_configuration_reported_under_the_shipped_rbac",
        |env| Box::pin(repairs_under_the_shipped_rbac(env)),
    ),
    (
        "a_deleted_webhook_configuration_is_recreated_with_the_opt_in_role_and_only_under_its_name",
        |env| Box::pin(recreated_with_the_opt_in_role(env)),
    ),
];

const NATIVE_SIDECARS_OFF: &str =
    "native_sidecar_always_falls_back_to_a_regular_container_where_the_apiserver_has_them_off";

/// Scenarios that need a control plane of their own (see [`OwnPlane`]). Native sidecars off:
/// the oldest supported Kubernetes with the gate turned off, which the shared control plane
/// (1.37 has no such gate any more) cannot be.
pub(super) const OWN_PLANES: &[(&str, OwnPlane)] = &[(
    NATIVE_SIDECARS_OFF,
    OwnPlane {
        version_key: "K8S_OLDEST",
        apiserver_flags: &["--feature-gates=SidecarContainers=false"],
    },
)];

/// Waits until the named MetricsSidecar's status (for its current generation) passes `check`.
async fn wait_sidecar_status(
    sidecars: &Api<MetricsSidecar>,
    name: &str,
    what: &str,
    check: impl Fn(&MetricsSidecarStatus) -> bool,
) -> MetricsSidecarStatus {
    eventually(&format!("{name}: status {what}"), WAIT, || async {
        let sidecar = sidecars.get(name).await.ok()?;
        let status = sidecar.status?;
        (check(&status) && status.observed_generation == sidecar.metadata.generation)
            .then_some(status)
    })
    .await
}

fn condition<'a>(
    status: &'a MetricsSidecarStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// The notes of the Events with `reason` about MetricsSidecar `name`.
async fn event_notes(client: &Client, namespace: &str, name: &str, reason: &str) -> Vec<String> {
    events_named(client, namespace, reason)
        .await
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.note)
        .collect()
}

async fn wait_event(client: &Client, namespace: &str, name: &str, reason: &str, needle: &str) {
    eventually(
        &format!("a {reason} Event about {name} saying {needle:?}"),
        WAIT,
        || async {
            event_notes(client, namespace, name, reason)
                .await
                .iter()
                .any(|n| n.contains(needle))
                .then_some(())
        },
    )
    .await;
}

/// Waits until a dry-run pod asking for `sidecar` comes back injected.
async fn wait_injecting_for(pods: &Api<Pod>, sidecar: &str) {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually(
        &format!("the webhook to inject {sidecar}"),
        WAIT,
        || async {
            let pod = pods
                .create(&dry_run, &pod_for("probe", sidecar))
                .await
                .ok()?;
            has_sidecar(&pod).then_some(())
        },
    )
    .await;
}

fn pod_for(name: &str, sidecar: &str) -> Pod {
    let mut pod = annotated_pod(name);
    pod.metadata
        .annotations
        .get_or_insert_default()
        .insert(ANNOTATION_INJECT.into(), sidecar.into());
    pod
}

/// Sets a pod's phase and IP through the status subresource (there is no kubelet).
async fn set_pod_status(pods: &Api<Pod>, name: &str, phase: &str, ip: Option<&str>) {
    let mut status = json!({"phase": phase});
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap_or_else(|e| panic!("set the status of pod {name}: {e}"));
}

fn declared_metrics_port(pod: &Pod) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == SIDECAR_CONTAINER_NAME)?
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("sidecar-metrics"))
        .map(|p| p.container_port)
}

/// Items 3 and 7: a MetricsSidecar the sidecar would refuse (`listen.ingest` on the metrics port
/// of another address, which the CRD's CEL rule lets through) is `Ready=False, InvalidConfig`
/// with the sidecar's own reason; a pod asking for it is admitted without the sidecar
/// (`invalid_sidecar` skip), counted as uninjected, and an Event says why. A good sidecar next
/// to it keeps working, and a name too long for a label value is refused by the apiserver.
async fn invalid_sidecar(env: Env) {
    let Started {
        app_namespace,
        operator_args,
        operator,
        ..
    } = env.start_operator().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let mut bad = MetricsSidecarSpec::default();
    bad.config.listen.ingest = "127.0.0.1:9102".into();
    for (name, spec) in [("bad", bad), ("good", MetricsSidecarSpec::default())] {
        sidecars
            .create(&PostParams::default(), &MetricsSidecar::new(name, spec))
            .await
            .unwrap_or_else(|e| panic!("create MetricsSidecar {name}: {e}"));
    }
    let status = wait_sidecar_status(&sidecars, "bad", "Ready=False InvalidConfig", |s| {
        condition(s, "Ready").is_some_and(|c| c.status == "False" && c.reason == "InvalidConfig")
    })
    .await;
    let ready = condition(&status, "Ready").expect("Ready");
    assert!(
        ready.message.contains("listen.ingest") && ready.message.contains("both cannot bind"),
        "the sidecar's own reason: {}",
        ready.message
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &app_namespace);
    assert!(
        config_maps
            .get_opt(&config_map_name("bad"))
            .await
            .expect("get ConfigMap")
            .is_none(),
        "no ConfigMap for an invalid configuration"
    );
    wait_event(
        &env.client,
        &app_namespace,
        "bad",
        "InvalidConfig",
        "listen.ingest",
    )
    .await;

    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_injecting_for(&pods, "good").await;
    let skips = |metrics: &str| {
        cluster::sample(
            metrics,
            "monasca_operator_admission_skips_total{reason=\"invalid_sidecar\"}",
        )
        .expect("admission_skips_total{reason=invalid_sidecar}")
    };
    let before = skips(&operator_args.metrics().await);
    let pod = pods
        .create(&PostParams::default(), &pod_for("asks-bad", "bad"))
        .await
        .expect("a pod asking for the invalid sidecar is admitted");
    assert!(!has_sidecar(&pod), "admitted without the sidecar");
    assert!(
        pod.spec.iter().flat_map(|s| s.containers.iter()).all(|c| c
            .ports
            .iter()
            .flatten()
            .all(|p| p.container_port != 9102)),
        "no port declared for a sidecar that does not run"
    );
    assert_eq!(skips(&operator_args.metrics().await), before + 1.0);
    wait_sidecar_status(&sidecars, "bad", "uninjectedPods 1", |s| {
        s.uninjected_pods == 1
    })
    .await;
    wait_event(
        &env.client,
        &app_namespace,
        "bad",
        "UninjectedPods",
        "asks-bad",
    )
    .await;

    // The good one is unaffected.
    let pod = pods
        .create(&PostParams::default(), &pod_for("asks-good", "good"))
        .await
        .expect("create pod");
    assert!(has_sidecar(&pod));
    wait_sidecar_status(&sidecars, "good", "Ready, injectedPods 1", |s| {
        condition(s, "Ready").is_some_and(|c| c.status == "True") && s.injected_pods == 1
    })
    .await;

    // A name the operator could not use as a label value is refused when written, with the
    // reason (not a reconcile failing in a loop with an empty status).
    let long = "n".repeat(64);
    match sidecars
        .create(
            &PostParams::default(),
            &MetricsSidecar::new(&long, MetricsSidecarSpec::default()),
        )
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("63 characters"),
                "{}",
                status.message
            );
        }
        other => panic!("a 64-character name must be refused: {other:?}"),
    }
    operator.stop();
}

/// Items 2 and 5: a Deployment and a StatefulSet share a `restartOnChange` sidecar; moving
/// `listen.metrics` to 9300 rolls both (one RolloutTriggered Event names both), the new pods
/// declare 9300, and `/discovery/targets` lists each pod on the port it declares: a bare pod
/// made before the change (never rolled) stays on 9102. Each count change has its own Event.
async fn listen_port_change(env: Env) {
    let Started {
        app_namespace,
        operator_args,
        operator,
        ..
    } = env.start_operator().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let spec = MetricsSidecarSpec {
        restart_on_change: true,
        ..MetricsSidecarSpec::default()
    };
    create_sidecar(&sidecars, "default", spec).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;
    wait_config_map(&env.client, &app_namespace, "default").await;

    // A bare pod first: one Event per count change, each with its own message.
    pods.create(&PostParams::default(), &annotated_pod("bare"))
        .await
        .expect("create pod");
    set_pod_status(&pods, "bare", "Running", Some("10.9.0.1")).await;
    wait_event(
        &env.client,
        &app_namespace,
        "default",
        "InjectedPodsChanged",
        "1 pod carries the sidecar (was 0)",
    )
    .await;

    // Recreate and Parallel: without a kubelet no pod ever becomes Ready, which a rolling
    // Deployment and an OrderedReady StatefulSet would wait for.
    let mut web = deployment("web");
    web.spec.as_mut().expect("spec").strategy =
        Some(serde_json::from_value(json!({"type": "Recreate"})).expect("strategy"));
    Api::<Deployment>::namespaced(env.client.clone(), &app_namespace)
        .create(&PostParams::default(), &web)
        .await
        .expect("create Deployment");
    let statefulset: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "podManagementPolicy": "Parallel",
            "replicas": 1,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}, "annotations": {ANNOTATION_INJECT: "true"}},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                    "nodeSelector": {"monasca.openstack.org/e2e": "no-such-node"},
                },
            },
        },
    }))
    .expect("statefulset");
    Api::<StatefulSet>::namespaced(env.client.clone(), &app_namespace)
        .create(&PostParams::default(), &statefulset)
        .await
        .expect("create StatefulSet");
    wait_sidecar_status(&sidecars, "default", "injectedPods 3", |s| {
        s.injected_pods == 3
    })
    .await;
    wait_event(
        &env.client,
        &app_namespace,
        "default",
        "InjectedPodsChanged",
        "3 pods carry the sidecar (was",
    )
    .await;

    // Move the metrics listener.
    sidecars
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"config": {"listen": {"metrics": "0.0.0.0:9300"}}}})),
        )
        .await
        .expect("patch listen.metrics");
    wait_event(
        &env.client,
        &app_namespace,
        "default",
        "RolloutTriggered",
        "deployment web",
    )
    .await;
    let notes = event_notes(&env.client, &app_namespace, "default", "RolloutTriggered").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("deployment web") && n.contains("statefulset db")),
        "one Event names every workload restarted: {notes:?}"
    );

    // The rolled pods declare the new port; the bare pod keeps the old one.
    let rolled = |pods: Vec<Pod>| {
        pods.into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.metadata.name.as_deref() != Some("bare"))
            .collect::<Vec<_>>()
    };
    let new_pods = eventually("the rolled pods to declare port 9300", WAIT, || async {
        let list = rolled(pods.list(&ListParams::default()).await.ok()?.items);
        (list.len() == 2 && list.iter().all(|p| declared_metrics_port(p) == Some(9300)))
            .then_some(list)
    })
    .await;
    let bare = pods.get("bare").await.expect("get bare pod");
    assert_eq!(declared_metrics_port(&bare), Some(9102));
    for (i, pod) in new_pods.iter().enumerate() {
        let name = pod.metadata.name.clone().expect("name");
        set_pod_status(&pods, &name, "Running", Some(&format!("10.9.1.{}", i + 1))).await;
    }
    let targets = eventually("discovery to list the three pods", WAIT, || async {
        let (status, body) = get(operator_args.admin, "/discovery/targets").await?;
        let groups: serde_json::Value = serde_json::from_str(&body).ok()?;
        let targets: Vec<String> = groups
            .as_array()?
            .iter()
            .filter_map(|g| g["targets"][0].as_str().map(String::from))
            .collect();
        (status == 200 && targets.len() == 3).then_some(targets)
    })
    .await;
    assert!(
        targets.contains(&"10.9.0.1:9102".to_string()),
        "the bare pod on the port it declares: {targets:?}"
    );
    assert!(
        targets.contains(&"10.9.1.1:9300".to_string()),
        "{targets:?}"
    );
    assert!(
        targets.contains(&"10.9.1.2:9300".to_string()),
        "{targets:?}"
    );
    operator.stop();
}

/// Item 6: only Pending and Running pods count; a `hostNetwork` pod asking for the sidecar is
/// never injected by design and neither counts as uninjected nor makes the sidecar Degraded.
async fn census_by_phase_and_rule(env: Env) {
    let Started {
        app_namespace,
        operator_args,
        operator,
        ..
    } = env.start_operator().await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    // Before the MetricsSidecar exists: admitted uninjected, then it fails.
    pods.create(&PostParams::default(), &annotated_pod("failed-early"))
        .await
        .expect("create pod");
    set_pod_status(&pods, "failed-early", "Failed", None).await;

    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    create_sidecar(&sidecars, "default", MetricsSidecarSpec::default()).await;
    wait_until_injecting(&pods).await;
    for name in ["running", "done"] {
        let pod = pods
            .create(&PostParams::default(), &annotated_pod(name))
            .await
            .expect("create pod");
        assert!(has_sidecar(&pod));
    }
    set_pod_status(&pods, "running", "Running", Some("10.9.2.1")).await;
    set_pod_status(&pods, "done", "Succeeded", None).await;
    let mut host = annotated_pod("host-network");
    host.spec.as_mut().expect("spec").host_network = Some(true);
    let host = pods
        .create(&PostParams::default(), &host)
        .await
        .expect("create hostNetwork pod");
    assert!(!has_sidecar(&host), "hostNetwork pods are never injected");

    let status = wait_sidecar_status(
        &sidecars,
        "default",
        "injectedPods 1, uninjectedPods 0",
        |s| s.injected_pods == 1 && s.uninjected_pods == 0,
    )
    .await;
    let degraded = condition(&status, "Degraded").expect("Degraded");
    assert_eq!(degraded.status, "False", "{degraded:?}");

    // The control: a Pending pod that could carry the sidecar and does not is uninjected.
    operator.stop();
    pods.create(&PostParams::default(), &annotated_pod("missed"))
        .await
        .expect("create pod while the webhook is down");
    let operator = operator_args.start().await;
    let status = wait_sidecar_status(&sidecars, "default", "uninjectedPods 1", |s| {
        s.injected_pods == 1 && s.uninjected_pods == 1
    })
    .await;
    let degraded = condition(&status, "Degraded").expect("Degraded");
    assert_eq!(degraded.status, "True");
    assert!(degraded.message.contains("missed"), "{}", degraded.message);
    assert!(
        !degraded.message.contains("host-network") && !degraded.message.contains("failed-early"),
        "{}",
        degraded.message
    );
    operator.stop();
}

/// Issue 13's malformed object and item 4: a MetricsSidecar stored before the schema was
/// tightened (its `forgetAfter` does not parse) next to a good one. The operator starts, the good
/// one is reconciled, the bad one is reported (status, Event, metric), and SIGTERM ends the
/// process by itself. `300000d`, which once passed the schema but not the parser, now parses.
async fn malformed_sidecar_and_sigterm(env: Env) {
    install(&env.client).await;
    let operator_namespace = env.namespace("op").await;
    let app_namespace = env.namespace("app").await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let crd_name = "metricssidecars.monasca.openstack.org";
    let forget_after = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/config/properties/forgetAfter";
    // An older schema: no pattern on forgetAfter.
    let loosen: json_patch::Patch = serde_json::from_value(json!([
        {"op": "remove", "path": format!("{forget_after}/pattern")},
        {"op": "remove", "path": format!("{forget_after}/maxLength")},
    ]))
    .expect("patch");
    crds.patch(
        crd_name,
        &PatchParams::default(),
        &Patch::<()>::Json(loosen),
    )
    .await
    .expect("loosen the CRD schema");
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let bad: serde_json::Value = json!({
        "apiVersion": "monasca.openstack.org/v1alpha1",
        "kind": "MetricsSidecar",
        "metadata": {"name": "bad", "namespace": app_namespace},
        "spec": {"config": {"forgetAfter": "99999999999999999999999999999999d"}},
    });
    eventually(
        "the loosened schema to admit the bad object",
        WAIT,
        || async {
            Api::<DynamicObject>::namespaced_with(
                env.client.clone(),
                &app_namespace,
                &kube::core::ApiResource::erase::<MetricsSidecar>(&()),
            )
            .create(
                &PostParams::default(),
                &serde_json::from_value(bad.clone()).ok()?,
            )
            .await
            .ok()
            .map(drop)
        },
    )
    .await;
    install(&env.client).await; // the current schema again
    // The current schema and the parser agree on the value that once slipped through.
    let mut long = MetricsSidecarSpec::default();
    long.config.forget_after = monasca_crds::config::Duration::parse("300000d").expect("parses");
    sidecars
        .create(&PostParams::default(), &MetricsSidecar::new("good", long))
        .await
        .expect("300000d is admitted by the schema");

    let operator_args = env.operator_args(&env.kubeconfig, &operator_namespace);
    let mut operator = operator_args.start().await;
    wait_config_map(&env.client, &app_namespace, "good").await;
    let status = eventually("the bad object's status to say Malformed", WAIT, || async {
        let object = Api::<DynamicObject>::namespaced_with(
            env.client.clone(),
            &app_namespace,
            &kube::core::ApiResource::erase::<MetricsSidecar>(&()),
        )
        .get("bad")
        .await
        .ok()?;
        let conditions = object
            .data
            .get("status")?
            .get("conditions")?
            .as_array()?
            .clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "False" && c["reason"] == "Malformed")
            .then_some(conditions)
    })
    .await;
    assert!(
        status.iter().any(|c| c["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot read"))),
        "{status:?}"
    );
    wait_event(
        &env.client,
        &app_namespace,
        "bad",
        "Malformed",
        "cannot read",
    )
    .await;
    let metrics = operator_args.metrics().await;
    assert_eq!(
        cluster::sample(
            &metrics,
            "monasca_operator_malformed_objects{kind=\"MetricsSidecar\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // Still reconciling others after the bad one: a new good sidecar gets its ConfigMap.
    create_sidecar(&sidecars, "later", MetricsSidecarSpec::default()).await;
    wait_config_map(&env.client, &app_namespace, "later").await;
    assert!(operator.is_running(), "no crash");

    // SIGTERM: the process ends by itself (the bound only catches a hang; the operator's own
    // deadline is 10 s).
    let started = std::time::Instant::now();
    let exit = operator.sigterm_and_wait(Duration::from_secs(60));
    let took = started.elapsed();
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "the operator did not exit within 60 s of SIGTERM:\n{}",
            operator.log()
        )
    });
    say(&format!("operator exited {exit} {took:.1?} after SIGTERM"));
    assert!(exit.success(), "clean exit: {exit}\n{}", operator.log());
}

/// Item 9: `kubectl apply` of the unchanged manifest (an UPDATE that writes the app's own
/// `prometheus.io/*` back) keeps them pointing at the sidecar; other annotation edits pass.
async fn update_keeps_rewrite(env: Env) {
    let Started {
        app_namespace,
        operator,
        ..
    } = env.start_operator().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    create_sidecar(&sidecars, "default", MetricsSidecarSpec::default()).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;
    let app_annotations = json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/app-metrics",
    });
    let mut manifest = annotated_pod("scraped");
    for (k, v) in app_annotations.as_object().expect("map") {
        manifest
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(k.clone(), v.as_str().unwrap_or_default().into());
    }
    let pod = pods
        .create(&PostParams::default(), &manifest)
        .await
        .expect("create pod");
    assert!(has_sidecar(&pod));
    assert_eq!(
        annotation(&pod.metadata, "prometheus.io/port").map(String::as_str),
        Some("9102")
    );

    // What `kubectl apply` sends for the unchanged manifest: its annotations, merged.
    let updated = pods
        .patch(
            "scraped",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
                "annotations": app_annotations,
                "labels": {"team": "a"},
            }})),
        )
        .await
        .expect("update the pod");
    assert_eq!(
        annotation(&updated.metadata, "prometheus.io/port").map(String::as_str),
        Some("9102"),
        "{:?}",
        updated.metadata.annotations
    );
    assert_eq!(
        annotation(&updated.metadata, "prometheus.io/path").map(String::as_str),
        Some("/metrics")
    );
    assert_eq!(
        updated
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("a"),
        "the rest of the update is applied"
    );
    // A pod that was never injected is left alone on UPDATE.
    let mut plain = annotated_pod("plain");
    plain.metadata.annotations = Some(
        app_annotations
            .as_object()
            .expect("map")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
    );
    pods.create(&PostParams::default(), &plain)
        .await
        .expect("create pod");
    let plain = pods
        .patch(
            "plain",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"prometheus.io/port": "8001"}}})),
        )
        .await
        .expect("update the plain pod");
    assert_eq!(
        annotation(&plain.metadata, "prometheus.io/port").map(String::as_str),
        Some("8001")
    );
    operator.stop();
}

/// The metric `monasca_operator_webhook_configuration_missing` of a running operator.
async fn webhook_missing_gauge(operator_args: &OperatorArgs) -> f64 {
    let metrics = operator_args.metrics().await;
    cluster::sample(&metrics, "monasca_operator_webhook_configuration_missing")
        .unwrap_or_else(|| panic!("monasca_operator_webhook_configuration_missing in:\n{metrics}"))
}

/// The Events with `reason` in `namespace`.
async fn events_named(client: &Client, namespace: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .collect()
        })
        .unwrap_or_default()
}

/// Item 1: an apiserver (1.30, the oldest supported) started with
/// `--feature-gates=SidecarContainers=false` drops `restartPolicy: Always` from init containers
/// and refuses such a pod (shown first). The operator, as the shipped ServiceAccount (its
/// ClusterRole grants `get` on `/metrics`), reads the gate and falls back: a Deployment of a
/// `nativeSidecar: always` MetricsSidecar gets pods from the controller-manager with the sidecar
/// as a regular container, the MetricsSidecar says `NativeSidecar=False` with reason
/// `NativeSidecarUnavailable` and an Event, and a direct create gets the admission warning.
async fn native_sidecars_off(env: Env) {
    let (as_operator, kubeconfig, token_dir) = env.as_shipped_service_account(&[]).await;
    let app_namespace = env.namespace("app").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);

    // The control: this apiserver really refuses a native sidecar.
    let native: Pod = serde_json::from_value(json!({
        "metadata": {"name": "native-by-hand"},
        "spec": {
            "initContainers": [{
                "name": "helper", "image": "registry.k8s.io/pause:3.10",
                "restartPolicy": "Always",
                "livenessProbe": {"tcpSocket": {"port": 9102}},
            }],
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
        },
    }))
    .expect("pod");
    match pods.create(&PostParams::default(), &native).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            say(&format!(
                "the apiserver refuses a native sidecar: {}",
                status.message
            ));
        }
        other => panic!("SidecarContainers=false must refuse a native sidecar pod: {other:?}"),
    }
    // And the operator's ServiceAccount can read what tells it so.
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let metrics = as_operator
        .request_text(request)
        .await
        .expect("the ServiceAccount may get /metrics");
    assert!(
        metrics.contains(r#"kubernetes_feature_enabled{name="SidecarContainers",stage="BETA"} 0"#),
        "the gate is off in the apiserver's own metrics"
    );

    let operator_args = env.operator_args(&kubeconfig, monasca_crds::DEFAULT_OPERATOR_NAMESPACE);
    let operator = operator_args.start().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let always = MetricsSidecarSpec {
        native_sidecar: NativeSidecar::Always,
        ..MetricsSidecarSpec::default()
    };
    create_sidecar(&sidecars, "default", always).await;
    wait_until_injecting(&pods).await;

    let pod = create_deployment_and_its_first_pod(&env.client, &app_namespace, "web").await;
    assert!(
        controller_name(&pod.metadata, "ReplicaSet").is_some(),
        "created by the controller-manager"
    );
    assert!(
        has_regular_sidecar(&pod),
        "a regular sidecar container: {:?}",
        pod.spec
    );
    assert!(
        pod.spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .all(|c| c.name != SIDECAR_CONTAINER_NAME),
        "no init container sidecar"
    );
    let status = wait_sidecar_status(&sidecars, "default", "NativeSidecar=False", |s| {
        condition(s, "NativeSidecar").is_some_and(|c| c.status == "False") && s.injected_pods == 1
    })
    .await;
    let native_condition = condition(&status, "NativeSidecar").expect("condition");
    assert_eq!(native_condition.reason, "NativeSidecarUnavailable");
    assert!(
        native_condition.message.contains("SidecarContainers=false"),
        "{}",
        native_condition.message
    );
    assert_eq!(
        condition(&status, "Ready").map(|c| c.status.as_str()),
        Some("True")
    );
    wait_event(
        &env.client,
        &app_namespace,
        "default",
        "NativeSidecarUnavailable",
        "regular container",
    )
    .await;

    // A direct create: the admission warning reaches the client.
    let body = serde_json::to_vec(&annotated_pod("direct-1")).expect("pod JSON");
    let request = http::Request::post(format!("/api/v1/namespaces/{app_namespace}/pods"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(kube::client::Body::from(body))
        .expect("request");
    let response = env.client.send(request).await.expect("create pod");
    assert_eq!(response.status(), 201, "created");
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("nativeSidecar: always") && w.contains("regular container")),
        "{warnings:?}"
    );
    let stored = pods.get("direct-1").await.expect("get pod");
    assert!(has_regular_sidecar(&stored), "{:?}", stored.spec);

    no_forbidden_reconcile_then_stop(&operator_args, operator, &token_dir).await;
}

/// Item 8 under the shipped RBAC (the operator as its ServiceAccount, no `create` on webhook
/// configurations). The Secret is deleted: a new CA and Secret within seconds and a
/// `WebhookCAReissued` Event on the new Secret. The webhook configuration is deleted: reported at
/// once (the gauge, a `WebhookConfigurationMissing` Warning Event and a log line with the
/// command to re-apply it), and not recreated; re-applying the shipped file as the advice says
/// restores injection without restarting the operator.
async fn repairs_under_the_shipped_rbac(env: Env) {
    delete_opt_in_binding(&env.client).await;
    let (_, kubeconfig, token_dir) = env.as_shipped_service_account(&[]).await;
    let operator_namespace = monasca_crds::DEFAULT_OPERATOR_NAMESPACE;
    let app_namespace = env.namespace("app").await;
    let operator_args = env.operator_args(&kubeconfig, operator_namespace);
    let operator = operator_args.start().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    create_sidecar(&sidecars, "default", MetricsSidecarSpec::default()).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;
    assert_eq!(webhook_missing_gauge(&operator_args).await, 0.0);

    // The Secret.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), operator_namespace);
    let first_ca = secrets
        .get(WEBHOOK_TLS_SECRET_NAME)
        .await
        .expect("the Secret")
        .data
        .and_then(|d| d.get("ca.crt").map(|c| c.0.clone()))
        .expect("ca.crt");
    let deleted_at = std::time::Instant::now();
    secrets
        .delete(WEBHOOK_TLS_SECRET_NAME, &DeleteParams::default())
        .await
        .expect("delete the Secret");
    let (new_ca, uid) = eventually("a new Secret with a new CA", WAIT, || async {
        let secret = secrets.get_opt(WEBHOOK_TLS_SECRET_NAME).await.ok()??;
        let ca = secret.data?.get("ca.crt")?.0.clone();
        (ca != first_ca).then_some((ca, secret.metadata.uid?))
    })
    .await;
    say(&format!(
        "Secret deleted -> new CA in {:.1}s",
        deleted_at.elapsed().as_secs_f64()
    ));
    let note = eventually(
        "a WebhookCAReissued Event on the new Secret",
        WAIT,
        || async {
            events_named(&env.client, operator_namespace, "WebhookCAReissued")
                .await
                .into_iter()
                .find(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str()))
                .and_then(|e| e.note)
        },
    )
    .await;
    assert!(
        note.contains("cannot be recovered") && note.contains("new webhook CA"),
        "{note}"
    );
    eventually("caBundle to trust the new CA", WAIT, || async {
        let bundle = webhook_ca_bundle(&env.client).await?;
        String::from_utf8_lossy(&bundle)
            .contains(String::from_utf8_lossy(&new_ca).trim())
            .then_some(())
    })
    .await;
    wait_until_injecting(&pods).await;

    // The webhook configuration.
    let configs: Api<MutatingWebhookConfiguration> = Api::all(env.client.clone());
    let before: Vec<Option<String>> =
        events_named(&env.client, "default", "WebhookConfigurationMissing")
            .await
            .into_iter()
            .map(|e| e.metadata.name)
            .collect();
    let deleted_at = std::time::Instant::now();
    configs
        .delete(WEBHOOK_CONFIGURATION_NAME, &DeleteParams::default())
        .await
        .expect("delete the webhook configuration");
    let note = eventually("a new WebhookConfigurationMissing Event", WAIT, || async {
        events_named(&env.client, "default", "WebhookConfigurationMissing")
            .await
            .into_iter()
            .find(|e| !before.contains(&e.metadata.name))
            .and_then(|e| {
                let regarding = e.regarding?;
                assert_eq!(
                    regarding.kind.as_deref(),
                    Some("MutatingWebhookConfiguration")
                );
                assert_eq!(regarding.name.as_deref(), Some(WEBHOOK_CONFIGURATION_NAME));
                assert_eq!(e.type_.as_deref(), Some("Warning"));
                e.note
            })
    })
    .await;
    say(&format!(
        "webhook configuration deleted -> reported in {:.1}s",
        deleted_at.elapsed().as_secs_f64()
    ));
    let command = "kubectl apply -f manifests/base/mutatingwebhookconfiguration.yaml";
    assert!(note.contains(command), "{note}");
    assert!(
        note.contains("manifests/optional/webhook-recreate/"),
        "{note}"
    );
    assert_eq!(webhook_missing_gauge(&operator_args).await, 1.0);
    assert!(operator.log().contains(command), "the log says what to run");
    assert!(
        configs
            .get_opt(WEBHOOK_CONFIGURATION_NAME)
            .await
            .expect("get")
            .is_none(),
        "not recreated without the opt-in role"
    );
    let uninjected = pods
        .create(&PostParams::default(), &annotated_pod("while-missing"))
        .await
        .expect("admitted: nothing calls the webhook");
    assert!(!has_sidecar(&uninjected));

    // The advice, followed: the shipped file re-applied; the operator fills in its caBundle and
    // URL, the gauge clears, pods are injected again.
    cluster::apply_yaml(
        &env.client,
        &cluster::repo_root().join("manifests/base/mutatingwebhookconfiguration.yaml"),
        None,
    )
    .await;
    wait_until_injecting(&pods).await;
    eventually("the gauge to clear", WAIT, || async {
        (webhook_missing_gauge(&operator_args).await == 0.0).then_some(())
    })
    .await;
    no_forbidden_reconcile_then_stop(&operator_args, operator, &token_dir).await;
}

/// Item 8 with the opt-in ClusterRole `monasca-operator-webhook-recreate` bound (and the shipped
/// ValidatingAdmissionPolicy): a deleted webhook configuration is recreated within seconds and
/// injection resumes; the ServiceAccount still may not create a webhook configuration of
/// another name (the policy pins it).
async fn recreated_with_the_opt_in_role(env: Env) {
    env.defer(Cleanup::ClusterRoleBinding(OPT_IN_BINDING.into()));
    for name in [
        "monasca-operator-own-objects",
        "monasca-operator-restart-only",
    ] {
        env.defer(Cleanup::AdmissionPolicy(name.into()));
    }
    let (as_operator, kubeconfig, token_dir) = env
        .as_shipped_service_account(&[
            "manifests/policy/validatingadmissionpolicy.yaml",
            "manifests/optional/webhook-recreate/clusterrole.yaml",
        ])
        .await;
    let app_namespace = env.namespace("app").await;
    let operator_args = env.operator_args(&kubeconfig, monasca_crds::DEFAULT_OPERATOR_NAMESPACE);
    let operator = operator_args.start().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    create_sidecar(&sidecars, "default", MetricsSidecarSpec::default()).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;

    let configs: Api<MutatingWebhookConfiguration> = Api::all(env.client.clone());
    let old_uid = configs
        .get(WEBHOOK_CONFIGURATION_NAME)
        .await
        .expect("the shipped configuration")
        .metadata
        .uid;
    let deleted_at = std::time::Instant::now();
    configs
        .delete(WEBHOOK_CONFIGURATION_NAME, &DeleteParams::default())
        .await
        .expect("delete the webhook configuration");
    eventually(
        "the webhook configuration to be recreated",
        WAIT,
        || async {
            let config = configs.get_opt(WEBHOOK_CONFIGURATION_NAME).await.ok()??;
            (config.metadata.uid != old_uid).then_some(())
        },
    )
    .await;
    say(&format!(
        "webhook configuration deleted -> recreated in {:.1}s",
        deleted_at.elapsed().as_secs_f64()
    ));
    wait_until_injecting(&pods).await;
    let pod = pods
        .create(&PostParams::default(), &annotated_pod("after-recreate"))
        .await
        .expect("create pod");
    assert!(has_sidecar(&pod), "injected again");
    assert_eq!(webhook_missing_gauge(&operator_args).await, 0.0);

    // Another name: refused by the policy although RBAC now allows `create`.
    let evil: MutatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": {"name": "evil"}})).expect("MWC");
    let refusal = eventually(
        "another webhook configuration to be refused",
        WAIT,
        || async {
            match Api::<MutatingWebhookConfiguration>::all(as_operator.clone())
                .create(&PostParams::default(), &evil)
                .await
            {
                Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
                Ok(_) => {
                    let _ = configs.delete("evil", &DeleteParams::default()).await;
                    None
                }
                Err(_) => None,
            }
        },
    )
    .await;
    assert!(refusal.contains(WEBHOOK_CONFIGURATION_NAME), "{refusal}");
    operator.stop();
    let _ = std::fs::remove_dir_all(token_dir);
}

/// The opt-in binding of manifests/optional/webhook-recreate/.
const OPT_IN_BINDING: &str = "monasca-operator-webhook-recreate";

async fn delete_opt_in_binding(client: &Client) {
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone())
        .delete(OPT_IN_BINDING, &DeleteParams::default())
        .await;
}

/// The `caBundle` of the first webhook of the configuration, if any.
async fn webhook_ca_bundle(client: &Client) -> Option<Vec<u8>> {
    let config = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(WEBHOOK_CONFIGURATION_NAME)
        .await
        .ok()??;
    Some(config.webhooks?.first()?.client_config.ca_bundle.clone()?.0)
}

/// The end of a scenario run as the shipped ServiceAccount: not one reconcile was refused by
/// RBAC; the operator stops and the token's scratch directory goes.
async fn no_forbidden_reconcile_then_stop(
    operator_args: &OperatorArgs,
    operator: cluster::Operator,
    token_dir: &Path,
) {
    let metrics = operator_args.metrics().await;
    assert_eq!(
        cluster::sample(
            &metrics,
            "monasca_operator_reconcile_errors_total{reason=\"forbidden\"}"
        ),
        Some(0.0),
        "{metrics}"
    );
    operator.stop();
    let _ = std::fs::remove_dir_all(token_dir);
}
