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
];

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
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                })
                .filter_map(|e| e.note)
                .collect()
        })
        .unwrap_or_default()
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
