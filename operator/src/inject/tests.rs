//! Table tests of the decision and of the patch's shape, on pods built in place.

use super::*;
use json_patch::Patch;
use monasca_crds::{MetricsSidecarSpec, NativeSidecar, SIDECAR_CONTAINER_NAME};
use serde_json::{Value, json};

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("test pod")
}

fn app_pod(inject: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "app-", "annotations": {"monasca.openstack.org/inject": inject}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    })
}

fn decide(pod_json: &Value, sidecars: &[Arc<MetricsSidecar>]) -> Decision {
    decide_in("demo", pod_json, None, sidecars)
}

fn decide_in(
    namespace: &str,
    pod_json: &Value,
    ns_annotations: Option<&BTreeMap<String, String>>,
    sidecars: &[Arc<MetricsSidecar>],
) -> Decision {
    let pod = pod(pod_json.clone());
    inject(
        &PodRequest {
            operation: &Operation::Create,
            namespace,
            pod: &pod,
        },
        ns_annotations,
        sidecars,
        &Settings::fixture(NativeSidecars::Available),
    )
}

fn patched(pod_json: &Value, decision: &Decision) -> Value {
    let mut doc = pod_json.clone();
    let patch: &Patch = decision.patch().expect("a patch");
    json_patch::patch(&mut doc, patch).expect("patch applies");
    pod(doc.clone());
    doc
}

fn skip_reason(decision: &Decision) -> Option<SkipReason> {
    decision.skip_reason()
}

fn warnings(decision: &Decision) -> Vec<String> {
    match decision {
        Decision::Skip { warning, .. } => warning.iter().cloned().collect(),
        Decision::Conflict { warning, .. } => vec![warning.clone()],
        Decision::Patch { warnings, .. } => warnings.clone(),
    }
}

#[test]
fn inject_annotation_values() {
    assert_eq!(parse_inject("true"), Some(Wanted::Default));
    assert_eq!(parse_inject("True"), Some(Wanted::Default));
    assert_eq!(parse_inject("false"), Some(Wanted::Off));
    assert_eq!(
        parse_inject("persister-workers"),
        Some(Wanted::Named("persister-workers"))
    );
    assert_eq!(parse_inject("a.b-c"), Some(Wanted::Named("a.b-c")));
    for bad in ["", "Yes", "-x", "x-", "a..b", "with space", "UPPER"] {
        assert_eq!(parse_inject(bad), None, "{bad:?}");
    }
}

#[test]
fn skip_reason_labels_are_unique_and_indexed() {
    let labels: std::collections::BTreeSet<_> = SkipReason::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(labels.len(), SkipReason::ALL.len());
    for (i, r) in SkipReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
}

#[test]
fn only_create_injects() {
    let pod = pod(app_pod("true"));
    for op in [Operation::Update, Operation::Delete, Operation::Connect] {
        let d = inject(
            &PodRequest {
                operation: &op,
                namespace: "demo",
                pod: &pod,
            },
            None,
            &[Arc::new(MetricsSidecar::fixture(
                "demo",
                "default",
                Default::default(),
            ))],
            &Settings::fixture(NativeSidecars::Available),
        );
        assert_eq!(skip_reason(&d), Some(SkipReason::NotCreate));
    }
}

#[test]
fn pod_annotation_overrides_namespace_default() {
    let sidecars = [
        Arc::new(MetricsSidecar::fixture(
            "demo",
            "default",
            Default::default(),
        )),
        Arc::new(MetricsSidecar::fixture("demo", "other", Default::default())),
    ];
    let ns = BTreeMap::from([(ANNOTATION_INJECT.to_string(), "true".to_string())]);
    let mut pod = app_pod("other");
    let d = decide_in("demo", &pod, Some(&ns), &sidecars);
    assert_eq!(
        patched(&pod, &d)["metadata"]["annotations"][ANNOTATION_INJECTED],
        "other"
    );
    pod["metadata"]["annotations"] = json!({});
    let d = decide_in("demo", &pod, Some(&ns), &sidecars);
    assert_eq!(
        patched(&pod, &d)["metadata"]["annotations"][ANNOTATION_INJECTED],
        "default"
    );
    let ns_off = BTreeMap::from([(ANNOTATION_INJECT.to_string(), "false".to_string())]);
    assert_eq!(
        skip_reason(&decide_in("demo", &pod, Some(&ns_off), &sidecars)),
        Some(SkipReason::Disabled)
    );
}

#[test]
fn sidecars_of_other_namespaces_are_ignored() {
    let mut elsewhere = MetricsSidecar::new("default", Default::default());
    elsewhere.metadata.namespace = Some("other".into());
    let d = decide(&app_pod("true"), &[Arc::new(elsewhere)]);
    assert_eq!(skip_reason(&d), Some(SkipReason::NoDefaultSidecar));
}

#[test]
fn missing_maps_and_arrays_are_created_whole() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    let ns = BTreeMap::from([(ANNOTATION_INJECT.to_string(), "true".to_string())]);
    let spec = MetricsSidecarSpec {
        multiprocess: true,
        ..Default::default()
    };
    let d = decide_in(
        "demo",
        &pod,
        Some(&ns),
        &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
    );
    let patch = d.patch().expect("patch");
    let paths: Vec<String> = patch.0.iter().map(|op| op.path().to_string()).collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations",
            "/metadata/labels",
            "/spec/volumes",
            "/spec/containers/0/env",
            "/spec/containers/0/volumeMounts",
            // Multiprocess: the sidecar must see the workers in /proc.
            "/spec/shareProcessNamespace",
            // `auto` on a long-running pod: a regular container, appended.
            "/spec/containers/-",
        ]
    );
    let out = patched(&pod, &d);
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!([{"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/var/run/prometheus-multiproc"}])
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "monasca-sidecar-multiproc", "mountPath": "/var/run/prometheus-multiproc"}])
    );
}

#[test]
fn reinvocation_only_completes_what_a_later_webhook_added() {
    let spec = MetricsSidecarSpec {
        multiprocess: true,
        native_sidecar: NativeSidecar::Never,
        ..Default::default()
    };
    let sidecars = [Arc::new(MetricsSidecar::fixture("demo", "default", spec))];
    let original = app_pod("true");
    let once = patched(&original, &decide(&original, &sidecars));
    assert_eq!(
        skip_reason(&decide(&once, &sidecars)),
        Some(SkipReason::AlreadyInjected)
    );

    // Another webhook appends a container after us; the apiserver reinvokes us.
    let mut later = once.clone();
    later["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "proxy", "image": "proxy:1"}));
    let d = decide(&later, &sidecars);
    let ops: Vec<String> = d
        .patch()
        .expect("patch")
        .0
        .iter()
        .map(|op| op.path().to_string())
        .collect();
    assert_eq!(
        ops,
        ["/spec/containers/2/env", "/spec/containers/2/volumeMounts"]
    );
    let twice = patched(&later, &d);
    assert_eq!(
        twice["spec"]["containers"].as_array().map(Vec::len),
        Some(3),
        "no second sidecar"
    );
    assert_eq!(
        skip_reason(&decide(&twice, &sidecars)),
        Some(SkipReason::AlreadyInjected)
    );
}

#[test]
fn user_multiproc_env_from_a_reference_or_a_conflicting_mount_is_warned_not_broken() {
    let spec = MetricsSidecarSpec {
        multiprocess: true,
        ..Default::default()
    };
    let sidecars = [Arc::new(MetricsSidecar::fixture("demo", "default", spec))];
    let mut pod = app_pod("true");
    pod["spec"]["containers"] = json!([
        {"name": "from-ref", "image": "a", "env": [{"name": "PROMETHEUS_MULTIPROC_DIR", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
        {"name": "mounted", "image": "b", "env": [{"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/prom/"}],
         "volumeMounts": [{"name": "mine", "mountPath": "/prom"}]}
    ]);
    pod["spec"]["volumes"] = json!([{"name": "mine", "emptyDir": {}}]);
    let d = decide(&pod, &sidecars);
    let w = warnings(&d);
    assert_eq!(w.len(), 2, "{w:?}");
    let out = patched(&pod, &d);
    assert_eq!(
        out["spec"]["containers"][0]["env"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(out["spec"]["containers"][0].get("volumeMounts").is_none());
    assert_eq!(
        out["spec"]["containers"][1]["volumeMounts"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "no duplicate mountPath"
    );
}

#[test]
fn prometheus_scrape_false_is_respected() {
    let mut pod = app_pod("true");
    pod["metadata"]["annotations"]["prometheus.io/scrape"] = json!("false");
    pod["metadata"]["annotations"]["prometheus.io/port"] = json!("8080");
    let out = patched(
        &pod,
        &decide(
            &pod,
            &[Arc::new(MetricsSidecar::fixture(
                "demo",
                "default",
                Default::default(),
            ))],
        ),
    );
    assert_eq!(
        out["metadata"]["annotations"]["prometheus.io/scrape"],
        "false"
    );
    assert_eq!(out["metadata"]["annotations"]["prometheus.io/port"], "8080");
}

#[test]
fn prometheus_annotations_off_touches_no_prometheus_key() {
    let mut pod = app_pod("true");
    pod["metadata"]["annotations"]["prometheus.io/port"] = json!("8080");
    let spec = MetricsSidecarSpec {
        prometheus_annotations: false,
        ..Default::default()
    };
    let out = patched(
        &pod,
        &decide(
            &pod,
            &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
        ),
    );
    assert_eq!(out["metadata"]["annotations"]["prometheus.io/port"], "8080");
    assert!(
        out["metadata"]["annotations"]
            .get("prometheus.io/scrape")
            .is_none()
    );
}

#[test]
fn loopback_metrics_listener_gets_no_probes_and_a_warning() {
    let mut spec = MetricsSidecarSpec::default();
    spec.config.listen.metrics = "127.0.0.1:9102".into();
    let pod = app_pod("true");
    let d = decide(
        &pod,
        &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
    );
    assert_eq!(warnings(&d).len(), 1);
    let out = patched(&pod, &d);
    let sidecar = &out["spec"]["containers"][1];
    assert_eq!(sidecar["name"], "monasca-sidecar");
    assert!(sidecar.get("livenessProbe").is_none() && sidecar.get("startupProbe").is_none());
}

#[test]
fn external_listeners_get_named_ports() {
    let mut spec = MetricsSidecarSpec::default();
    spec.config.listen.ingest = "0.0.0.0:9091".into();
    spec.config.listen.statsd = "0.0.0.0:8125".into();
    let pod = app_pod("true");
    let out = patched(
        &pod,
        &decide(
            &pod,
            &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
        ),
    );
    assert_eq!(
        out["spec"]["containers"][1]["ports"],
        json!([
            {"name": "sidecar-metrics", "containerPort": 9102, "protocol": "TCP"},
            {"name": "sidecar-ingest", "containerPort": 9091, "protocol": "TCP"},
            {"name": "sidecar-statsd", "containerPort": 8125, "protocol": "UDP"}
        ])
    );
}

#[test]
fn pod_problems_are_warned() {
    let mut pod = app_pod("true");
    pod["spec"]["restartPolicy"] = json!("Never");
    let spec = MetricsSidecarSpec {
        native_sidecar: NativeSidecar::Never,
        ..Default::default()
    };
    let w = warnings(&decide(
        &pod,
        &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
    ));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("will not complete"), "{w:?}");
}

#[test]
fn unusable_sidecars_are_skipped_with_a_warning() {
    let long = "x".repeat(64);
    let pod = app_pod(&long);
    let d = decide(
        &pod,
        &[Arc::new(MetricsSidecar::fixture(
            "demo",
            &long,
            Default::default(),
        ))],
    );
    assert_eq!(skip_reason(&d), Some(SkipReason::InvalidSidecar));
    assert_eq!(warnings(&d).len(), 1);

    let mut spec = MetricsSidecarSpec::default();
    spec.config.listen.metrics = "localhost:9102".into();
    let d = decide(
        &app_pod("true"),
        &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
    );
    assert_eq!(skip_reason(&d), Some(SkipReason::InvalidSidecar));
}

#[test]
fn user_managed_sidecar_in_init_containers_is_respected() {
    let mut pod = app_pod("true");
    pod["spec"]["initContainers"] =
        json!([{"name": "monasca-sidecar", "image": "mine", "restartPolicy": "Always"}]);
    assert_eq!(
        skip_reason(&decide(
            &pod,
            &[Arc::new(MetricsSidecar::fixture(
                "demo",
                "default",
                Default::default()
            ))]
        )),
        Some(SkipReason::HasContainer)
    );
}

#[test]
fn excluded_namespaces() {
    let pod = app_pod("true");
    for ns in ["kube-system", "monasca-system"] {
        assert_eq!(
            skip_reason(&decide_in(ns, &pod, None, &[])),
            Some(SkipReason::ExcludedNamespace)
        );
    }
}

#[test]
fn requested_sidecar_agrees_with_the_webhook() {
    // The controller counts uninjected pods with `requested_sidecar`; for every annotation the
    // webhook would inject, it must name the same sidecar, and none when the webhook would not.
    let one = [Arc::new(MetricsSidecar::fixture(
        "demo",
        "only",
        MetricsSidecarSpec::default(),
    ))];
    let two = [
        Arc::new(MetricsSidecar::fixture(
            "demo",
            "default",
            MetricsSidecarSpec::default(),
        )),
        Arc::new(MetricsSidecar::fixture(
            "demo",
            "other",
            MetricsSidecarSpec::default(),
        )),
    ];
    let two_no_default = [
        Arc::new(MetricsSidecar::fixture(
            "demo",
            "a",
            MetricsSidecarSpec::default(),
        )),
        Arc::new(MetricsSidecar::fixture(
            "demo",
            "b",
            MetricsSidecarSpec::default(),
        )),
    ];
    let ns_true = BTreeMap::from([(ANNOTATION_INJECT.to_string(), "true".to_string())]);
    for sidecars in [&one[..], &two[..], &two_no_default[..], &[]] {
        for namespace in ["demo", "kube-system", "monasca-system"] {
            for ns_annotations in [None, Some(&ns_true)] {
                for value in [
                    None,
                    Some("true"),
                    Some("True"),
                    Some("false"),
                    Some("other"),
                    Some("only"),
                    Some("nope"),
                    Some("Not_A_Name"),
                ] {
                    let pod_json = match value {
                        Some(v) => app_pod(v),
                        None => json!({"metadata": {"generateName": "app-"},
                                       "spec": {"containers": [{"name": "app", "image": "a"}]}}),
                    };
                    let decision = decide_in(namespace, &pod_json, ns_annotations, sidecars);
                    let injected = match &decision {
                        Decision::Patch { sidecar, .. } => Some(sidecar.clone()),
                        Decision::Skip { .. } | Decision::Conflict { .. } => None,
                    };
                    let pod = pod(pod_json);
                    let requested = requested_sidecar(
                        namespace,
                        pod.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ANNOTATION_INJECT))
                            .map(String::as_str),
                        ns_annotations,
                        sidecars,
                        &Settings::fixture(NativeSidecars::Available),
                    )
                    .and_then(|s| s.metadata.name.clone());
                    assert_eq!(
                        requested,
                        injected,
                        "namespace {namespace}, pod annotation {value:?}, namespace annotation \
                         {ns_annotations:?}, {} sidecars",
                        sidecars.len()
                    );
                }
            }
        }
    }
}

#[test]
fn otlp_inject_env_points_app_containers_at_the_sidecar() {
    let mut spec = MetricsSidecarSpec {
        multiprocess: true,
        ..Default::default()
    };
    spec.otlp.inject_env = true;
    spec.config.listen.otlp = "0.0.0.0:4400".into();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"monasca.openstack.org/inject": "true"}},
        "spec": {"containers": [
            // No env at all: the multiprocess step creates the array, OTLP appends to it.
            {"name": "app", "image": "app:1"},
            // Sets its own endpoint: kept; only the protocol is added.
            {"name": "other", "image": "other:1", "env": [
                {"name": "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "value": "http://collector:4318/v1/metrics"}
            ]}
        ]}
    });
    let d = decide(
        &pod,
        &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
    );
    let out = patched(&pod, &d);
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!([
            {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/var/run/prometheus-multiproc"},
            {"name": "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "value": "http://127.0.0.1:4400/v1/metrics"},
            {"name": "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "value": "http/protobuf"}
        ])
    );
    assert_eq!(
        out["spec"]["containers"][1]["env"],
        json!([
            {"name": "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "value": "http://collector:4318/v1/metrics"},
            {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/var/run/prometheus-multiproc"},
            {"name": "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "value": "http/protobuf"}
        ])
    );
    // The sidecar container itself gets none of it, and declares the non-loopback OTLP port.
    let sidecar_env = out["spec"]["containers"][2]["env"].to_string();
    assert!(!sidecar_env.contains("OTEL_"), "{sidecar_env}");
    let ports = &out["spec"]["containers"][2]["ports"];
    assert!(
        ports
            .as_array()
            .expect("ports")
            .contains(&json!({"name": "sidecar-otlp", "containerPort": 4400, "protocol": "TCP"})),
        "{ports}"
    );
}

#[test]
fn otlp_inject_env_is_off_by_default_and_warns_when_the_receiver_is_off() {
    let pod = app_pod("true");
    let d = decide(
        &pod,
        &[Arc::new(MetricsSidecar::fixture(
            "demo",
            "default",
            MetricsSidecarSpec::default(),
        ))],
    );
    assert!(!patched(&pod, &d).to_string().contains("OTEL_"));
    let mut spec = MetricsSidecarSpec::default();
    spec.otlp.inject_env = true;
    spec.config.otlp.enabled = false;
    let d = decide(
        &pod,
        &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
    );
    assert!(!patched(&pod, &d).to_string().contains("OTEL_"));
    let w = warnings(&d);
    assert!(w.iter().any(|w| w.contains("otlp.enabled: false")), "{w:?}");
}

/// `config.stateDir` is backed by an emptyDir in the sidecar container: its own volume, or,
/// with multiprocess, the multiprocess emptyDir (one volume, mounted at both paths unless
/// they are the same).
#[test]
fn state_dir_is_an_emptydir_in_the_sidecar_shared_with_multiprocess() {
    let with = |multiprocess: bool, state_dir: &str| {
        let mut spec = MetricsSidecarSpec {
            multiprocess,
            ..Default::default()
        };
        spec.config.state_dir = Some(state_dir.to_string());
        let pod = app_pod("true");
        patched(
            &pod,
            &decide(
                &pod,
                &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
            ),
        )
    };
    // The sidecar is the last app container (`nativeSidecar: auto` on a long-running pod).
    let mounts = |out: &Value| {
        let containers = out["spec"]["containers"].as_array().expect("containers");
        let sidecar = containers.last().expect("the sidecar container");
        assert_eq!(sidecar["name"], SIDECAR_CONTAINER_NAME, "{out}");
        sidecar["volumeMounts"].clone()
    };

    let out = with(false, "/var/lib/monasca-sidecar");
    assert!(
        out["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .contains(&json!({"name": STATE_VOLUME, "emptyDir": {}})),
        "{out}"
    );
    assert!(
        mounts(&out)
            .as_array()
            .expect("mounts")
            .contains(&json!({"name": STATE_VOLUME, "mountPath": "/var/lib/monasca-sidecar"})),
        "{out}"
    );

    let out = with(true, "/var/lib/monasca-sidecar");
    let volumes = out["spec"]["volumes"].to_string();
    assert!(!volumes.contains(STATE_VOLUME), "{volumes}");
    assert!(
        mounts(&out)
            .as_array()
            .expect("mounts")
            .contains(&json!({"name": MULTIPROC_VOLUME, "mountPath": "/var/lib/monasca-sidecar"})),
        "{out}"
    );

    let out = with(true, DEFAULT_MULTIPROC_DIR);
    let same = mounts(&out)
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| m["name"] == MULTIPROC_VOLUME)
        .count();
    assert_eq!(same, 1, "one mount for both: {out}");
}

#[test]
fn state_dir_over_the_config_mount_is_refused() {
    let mut spec = MetricsSidecarSpec::default();
    spec.config.state_dir = Some(CONFIG_MOUNT_PATH.to_string());
    let d = decide(
        &app_pod("true"),
        &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
    );
    assert_eq!(skip_reason(&d), Some(SkipReason::InvalidSidecar));
}

#[test]
fn ports_clash_by_number_and_protocol_whatever_the_listen_address() {
    let with_port = |port: Value| {
        let mut pod = app_pod("true");
        pod["spec"]["containers"][0]["ports"] = json!([port]);
        pod
    };
    let default = || {
        [Arc::new(MetricsSidecar::fixture(
            "demo",
            "default",
            MetricsSidecarSpec::default(),
        ))]
    };
    // Loopback ingest (9091) still clashes: the pod has one network namespace.
    let d = decide(&with_port(json!({"containerPort": 9091})), &default());
    assert_eq!(skip_reason(&d), Some(SkipReason::PortConflict));
    assert!(matches!(&d, Decision::Conflict { sidecar, .. } if sidecar == "default"));
    // StatsD binds UDP and TCP 8125.
    let d = decide(
        &with_port(json!({"containerPort": 8125, "protocol": "UDP"})),
        &default(),
    );
    assert_eq!(skip_reason(&d), Some(SkipReason::PortConflict));
    // Without StatsD over TCP, an app's TCP 8125 is fine; a UDP 9102 never clashes.
    let mut spec = MetricsSidecarSpec::default();
    spec.config.statsd.tcp = false;
    let d = decide(
        &with_port(json!({"containerPort": 8125})),
        &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
    );
    assert_eq!(skip_reason(&d), None, "{:?}", warnings(&d));
    let d = decide(
        &with_port(json!({"containerPort": 9102, "protocol": "UDP"})),
        &default(),
    );
    assert_eq!(skip_reason(&d), None);
    // A listener turned off binds nothing.
    let mut spec = MetricsSidecarSpec::default();
    spec.config.otlp.enabled = false;
    let d = decide(
        &with_port(json!({"containerPort": 4318})),
        &[Arc::new(MetricsSidecar::fixture("demo", "default", spec))],
    );
    assert_eq!(skip_reason(&d), None);
}

#[test]
fn native_support_reports_each_change_once_and_is_shared_by_its_clones() {
    use futures::{FutureExt, StreamExt};
    let support = NativeSupport::new(NativeSidecars::Unknown);
    let reader = support.clone();
    let mut changes = std::pin::pin!(support.changes());
    assert!(support.set(NativeSidecars::Unavailable));
    assert!(!support.set(NativeSidecars::Unavailable), "no change");
    assert_eq!(reader.get(), NativeSidecars::Unavailable);
    let first = futures::executor::block_on(changes.next());
    assert_eq!(first, Some(()));
    // Nothing more until the next real change.
    assert!(changes.next().now_or_never().is_none());
    assert!(support.set(NativeSidecars::Available));
    assert_eq!(futures::executor::block_on(changes.next()), Some(()));
    assert_eq!(reader.get(), NativeSidecars::Available);
}
