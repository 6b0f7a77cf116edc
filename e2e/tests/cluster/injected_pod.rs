//! The injected pod as Kubernetes runs it: shared process namespace, no readiness gate, conflicts skipped (issue 12).

#[allow(unused_imports)]
use super::*;

pub(super) const SCENARIOS: &[(&str, Scenario)] = &[(
    "multiprocess_pods_share_pids_never_gate_the_app_and_port_clashes_are_admitted_unchanged",
    |env| Box::pin(injected_pod(env)),
)];

/// The environment variable the operator renders for the sidecar (the pod's liveness).
const ENV_LIVENESS: &str = "MONASCA_SIDECAR_MULTIPROCESS_LIVENESS";

/// A `multiprocess: true` MetricsSidecar; pods as the apiserver stores them after admission:
/// - an annotated pod gets `shareProcessNamespace: true`, a sidecar container without a
///   readiness or startup probe (a liveness probe only), and `proc` liveness rendered for it;
/// - a pod that says `shareProcessNamespace: false` keeps it, and its sidecar is told `mtime`;
/// - a pod whose app declares port 9091 (the sidecar's ingest port) is created unchanged, the
///   client gets the warning (HTTP `Warning` header), the MetricsSidecar an Event, and the
///   operator counts the skip as `port_conflict`.
async fn injected_pod(env: Env) {
    let Started {
        app_namespace,
        operator_args,
        operator,
        ..
    } = env.start_operator().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let spec = MetricsSidecarSpec {
        multiprocess: true,
        ..MetricsSidecarSpec::default()
    };
    create_sidecar(&sidecars, "default", spec).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;

    // The shared namespace and the sidecar as stored.
    pods.create(&PostParams::default(), &annotated_pod("shared-1"))
        .await
        .expect("create pod");
    let stored = pods.get("shared-1").await.expect("get pod");
    let spec = stored.spec.as_ref().expect("pod spec");
    assert_eq!(spec.share_process_namespace, Some(true), "{spec:?}");
    let sidecar = spec
        .containers
        .iter()
        .find(|c| c.name == SIDECAR_CONTAINER_NAME)
        .unwrap_or_else(|| panic!("a regular sidecar container: {spec:?}"));
    assert!(
        sidecar.readiness_probe.is_none(),
        "no readiness gate: {sidecar:?}"
    );
    assert!(
        sidecar.startup_probe.is_none(),
        "no startup gate: {sidecar:?}"
    );
    assert!(
        sidecar.liveness_probe.is_some(),
        "liveness restarts the sidecar only"
    );
    assert_eq!(env_value(sidecar, ENV_LIVENESS).as_deref(), Some("proc"));
    let app = spec
        .containers
        .iter()
        .find(|c| c.name == "app")
        .expect("app");
    assert_eq!(
        env_value(app, "PROMETHEUS_MULTIPROC_DIR"),
        env_value(sidecar, "PROMETHEUS_MULTIPROC_DIR"),
        "app and sidecar share the directory"
    );
    // The config the sidecar reads leaves liveness to the pod (`auto`), and is valid.
    let config_map = wait_config_map(&env.client, &app_namespace, "default").await;
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_MAP_KEY))
        .expect("config.yaml");
    let config = monasca_crds::config::SidecarConfig::from_yaml(text).expect("a valid config");
    assert_eq!(
        config.multiprocess_liveness,
        monasca_crds::config::MultiprocessLiveness::Auto
    );

    // A pod that refuses the shared namespace keeps its choice; the sidecar knows it.
    let mut private = annotated_pod("private-1");
    private.spec.get_or_insert_default().share_process_namespace = Some(false);
    pods.create(&PostParams::default(), &private)
        .await
        .expect("create pod");
    let stored = pods.get("private-1").await.expect("get pod");
    let spec = stored.spec.as_ref().expect("pod spec");
    assert_eq!(spec.share_process_namespace, Some(false));
    let sidecar = spec
        .containers
        .iter()
        .find(|c| c.name == SIDECAR_CONTAINER_NAME)
        .expect("injected");
    assert_eq!(env_value(sidecar, ENV_LIVENESS).as_deref(), Some("mtime"));

    // A port clash: admitted unchanged, with the warning, the Event and the metric.
    let mut clash = annotated_pod("clash-1");
    let app = &mut clash.spec.get_or_insert_default().containers[0];
    app.ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
        container_port: 9091,
        name: Some("metrics".into()),
        ..Default::default()
    }]);
    let warnings = create_with_warnings(&env.client, &app_namespace, &clash).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not injected") && w.contains("9091")),
        "the client is told why: {warnings:?}"
    );
    let stored = pods.get("clash-1").await.expect("get pod");
    assert!(!has_sidecar(&stored), "admitted unchanged");
    assert_eq!(
        stored.spec.as_ref().and_then(|s| s.share_process_namespace),
        None
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), &app_namespace);
    eventually(
        "a PodNotInjected Event on the MetricsSidecar",
        WAIT,
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("PodNotInjected")
                        && e.type_.as_deref() == Some("Warning")
                        && e.regarding.as_ref().and_then(|r| r.kind.as_deref())
                            == Some("MetricsSidecar")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("default")
                        && e.note.as_deref().is_some_and(|n| n.contains("9091"))
                })
                .map(drop)
        },
    )
    .await;
    let metrics = operator_args.metrics().await;
    assert!(
        metrics.contains("monasca_operator_admission_skips_total{reason=\"port_conflict\"} 1"),
        "{metrics}"
    );
    operator.stop();
}

fn env_value(container: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

/// Creates `pod` with a raw request, to read the admission warnings the apiserver returns as
/// `Warning` headers (kube's typed API does not expose them).
async fn create_with_warnings(client: &Client, namespace: &str, pod: &Pod) -> Vec<String> {
    let body = serde_json::to_vec(pod).expect("pod JSON");
    let request = ::http::Request::post(format!("/api/v1/namespaces/{namespace}/pods"))
        .header("Content-Type", "application/json")
        .body(kube::client::Body::from(body))
        .expect("request");
    let response = client.send(request).await.expect("create pod");
    assert!(
        response.status().is_success(),
        "create pod: {}",
        response.status()
    );
    response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(String::from)
        .collect()
}
