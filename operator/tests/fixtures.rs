//! Every recorded apiserver request in `shared/fixtures/admission/` through the webhook's review
//! handler: the patch is applied to `request.object` with json-patch, the result must be a Pod,
//! and exactly the expected things were added (or nothing was).

mod common;

use common::*;
use monasca_crds::{MetricsSidecar, MetricsSidecarSpec, NativeSidecar};
use monasca_operator::inject::{Settings, SkipReason};
use serde_json::{Value, json};

const REPLICASET: &str = "create-replicaset-pod-generatename.json";
const DRY_RUN: &str = "create-dryrun.json";
const PERSISTER: &str = "create-named-initcontainer-prometheus-annotations.json";
const HAS_SIDECAR: &str = "create-already-has-sidecar.json";
const HOST_NETWORK: &str = "create-hostnetwork.json";
const NOT_ANNOTATED: &str = "create-not-annotated.json";
const UPDATE: &str = "update-pod-annotation.json";

fn hash(spec: &MetricsSidecarSpec) -> String {
    spec.config_hash().expect("hash")
}

fn security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsGroup": 65532,
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

fn probe(path: &str, period: i64, failures: i64) -> Value {
    json!({
        "httpGet": {"path": path, "port": "sidecar-metrics"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2
    })
}

/// The sidecar container `default` adds as a regular container.
fn default_container() -> Value {
    json!({
        "name": "monasca-sidecar",
        "image": "monasca/monasca-sidecar:test",
        "args": ["--config", "/etc/monasca-sidecar/config.yaml"],
        "ports": [{"name": "sidecar-metrics", "containerPort": 9102, "protocol": "TCP"}],
        "livenessProbe": probe("/healthz", 20, 3),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "monasca-sidecar-config", "mountPath": "/etc/monasca-sidecar", "readOnly": true}]
    })
}

fn config_volume(sidecar: &str) -> Value {
    json!({"name": "monasca-sidecar-config", "configMap": {"name": format!("{sidecar}-monasca-sidecar"), "optional": true}})
}

fn request_object(review: &Value) -> Value {
    review["request"]["object"].clone()
}

/// Answers a fixture; checks the response envelope, and when there is a patch, that it applies,
/// yields a Pod, only adds, and that feeding the result back yields no patch.
fn run(cluster: &Cluster, name: &str) -> (Answer, Value, Value) {
    let review = fixture(name);
    let body = serde_json::to_vec(&review).expect("json");
    let answer = answer(&cluster.ctx, &body);
    assert_eq!(
        answer.response["uid"], review["request"]["uid"],
        "{name}: uid echoed"
    );
    let original = request_object(&review);
    let patched = match &answer.patch {
        Some(patch) => {
            let patched = apply(&original, patch);
            as_pod(&patched);
            assert_eq!(
                undo(&patched, patch, &original),
                original,
                "{name}: patch only adds"
            );
            // Reinvocation: the apiserver sends the mutated pod back.
            let mut again = review.clone();
            again["request"]["object"] = patched.clone();
            let second = common::answer(&cluster.ctx, &serde_json::to_vec(&again).expect("json"));
            assert!(
                second.patch.is_none(),
                "{name}: re-injection must yield no patch, got {:?}",
                second.patch
            );
            patched
        }
        None => original.clone(),
    };
    (answer, original, patched)
}

fn assert_skipped(answer: &Answer, reason: &str) {
    assert!(
        answer.patch.is_none(),
        "expected no patch, got {:?}",
        answer.patch
    );
    assert_eq!(answer.response["auditAnnotations"]["decision"], reason);
}

#[test]
fn every_fixture_is_covered() {
    let covered = [
        REPLICASET,
        DRY_RUN,
        PERSISTER,
        HAS_SIDECAR,
        HOST_NETWORK,
        NOT_ANNOTATED,
        UPDATE,
    ];
    for name in fixture_names() {
        assert!(
            covered.contains(&name.as_str()),
            "fixture {name} has no test: add one"
        );
    }
    assert_eq!(fixture_names().len(), covered.len());
}

/// Every recorded review is small (`review::is_small`): the webhook answers it without the
/// value-counting pass and on the thread that read it. The pass it skips would have let it
/// through, so the answer is the one the full path gives (the tests below check its content).
#[test]
fn every_fixture_takes_the_small_review_path_and_the_skipped_count_would_pass_it() {
    use monasca_operator::webhook::review::{MAX_JSON_VALUES, exceeds_json_values, is_small};
    for name in fixture_names() {
        let body = fixture_bytes(&name);
        assert!(is_small(&body), "{name}: {} bytes", body.len());
        assert!(!exceeds_json_values(&body, MAX_JSON_VALUES), "{name}");
    }
}

#[test]
fn replicaset_pod_with_generate_name_gets_the_default_sidecar() {
    let cluster = Cluster::fixtures();
    let (answer, original, patched) = run(&cluster, REPLICASET);
    let patch = answer.patch.as_ref().expect("a patch");
    let h = hash(&MetricsSidecarSpec::default());
    assert_eq!(
        ops(patch),
        [
            (
                "add",
                "/metadata/annotations/monasca.openstack.org~1config-hash"
            ),
            (
                "add",
                "/metadata/annotations/monasca.openstack.org~1injected"
            ),
            ("add", "/metadata/annotations/prometheus.io~1path"),
            ("add", "/metadata/annotations/prometheus.io~1port"),
            ("add", "/metadata/annotations/prometheus.io~1scrape"),
            ("add", "/metadata/labels/monasca.openstack.org~1sidecar"),
            ("add", "/spec/volumes/-"),
            ("add", "/spec/containers/-"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let annotations = &patched["metadata"]["annotations"];
    assert_eq!(annotations["monasca.openstack.org/injected"], "default");
    assert_eq!(annotations["monasca.openstack.org/config-hash"], h.as_str());
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9102");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(
        patched["metadata"]["labels"]["monasca.openstack.org/sidecar"],
        "default"
    );
    // generateName is untouched and no name was invented.
    assert_eq!(
        patched["metadata"]["generateName"],
        original["metadata"]["generateName"]
    );
    assert!(patched["metadata"].get("name").is_none());

    let volumes = patched["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 3);
    assert_eq!(volumes[2], config_volume("default"));
    let containers = patched["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 2);
    assert_eq!(
        containers[0], original["spec"]["containers"][0],
        "the app container is untouched"
    );
    assert_eq!(containers[1], default_container());
    assert!(
        patched["spec"].get("initContainers").is_none(),
        "1.24: no native sidecar"
    );
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
}

#[test]
fn dry_run_gets_the_same_patch() {
    let cluster = Cluster::fixtures();
    // The dry-run request is the same pod (but for the token volume's random suffix): dryRun
    // changes nothing, since the webhook has no side effects (`sideEffects: None`).
    let (dry, _, _) = run(&cluster, DRY_RUN);
    let (real, _, _) = run(&cluster, REPLICASET);
    assert_eq!(fixture(DRY_RUN)["request"]["dryRun"], true);
    assert_eq!(dry.patch, real.patch);
}

/// The webhook keeps each `MetricsSidecar`'s check and config hash per object; an edit (a new
/// object from the informer, same name and metadata) is injected with its own hash at once,
/// an edit that makes it invalid stops injection, and the fix brings it back.
#[test]
fn an_edited_sidecar_is_injected_with_its_new_hash_at_once() {
    let mut cluster = Cluster::fixtures();
    let config_hash = |patched: &Value| {
        patched["metadata"]["annotations"]["monasca.openstack.org/config-hash"]
            .as_str()
            .map(str::to_string)
    };
    let (_, _, first) = run(&cluster, REPLICASET);
    assert_eq!(
        config_hash(&first),
        Some(hash(&MetricsSidecarSpec::default()))
    );

    let mut edited = MetricsSidecarSpec::default();
    edited.config.stale_after = monasca_crds::config::Duration::from_secs(90);
    cluster.sidecar(MetricsSidecar::fixture("demo", "default", edited.clone()));
    let (_, _, second) = run(&cluster, REPLICASET);
    assert_eq!(config_hash(&second), Some(hash(&edited)));
    assert_ne!(config_hash(&second), config_hash(&first));

    let mut broken = edited.clone();
    broken.config.listen.metrics = "localhost:9102".into();
    cluster.sidecar(MetricsSidecar::fixture("demo", "default", broken));
    let (third, _, _) = run(&cluster, REPLICASET);
    assert!(third.patch.is_none(), "{:?}", third.patch);
    assert!(
        third.warnings.iter().any(|w| w.contains("\"default\"")),
        "{:?}",
        third.warnings
    );

    cluster.sidecar(MetricsSidecar::fixture("demo", "default", edited.clone()));
    let (_, _, fourth) = run(&cluster, REPLICASET);
    assert_eq!(config_hash(&fourth), Some(hash(&edited)));
}

#[test]
fn named_sidecar_with_multiprocess_native_sidecar_and_prometheus_annotations() {
    // The recorded review, answered as on a server with native sidecars (1.29+); on the
    // recording 1.24 server `always` falls back (the next test).
    let cluster = Cluster::fixtures_on(monasca_operator::inject::NativeSidecars::Available);
    let (answer, original, patched) = run(&cluster, PERSISTER);
    let patch = answer.patch.as_ref().expect("a patch");
    assert_eq!(
        ops(patch),
        [
            (
                "add",
                "/metadata/annotations/monasca.openstack.org~1config-hash"
            ),
            (
                "add",
                "/metadata/annotations/monasca.openstack.org~1injected"
            ),
            // Was 9091 (the app): now the sidecar. Path and scrape were already right.
            ("replace", "/metadata/annotations/prometheus.io~1port"),
            ("add", "/metadata/labels/monasca.openstack.org~1sidecar"),
            ("add", "/spec/volumes/-"),
            ("add", "/spec/volumes/-"),
            // The user's PROMETHEUS_MULTIPROC_DIR is kept: only the shared volume is mounted there.
            ("add", "/spec/containers/0/volumeMounts/-"),
            // Multiprocess: the sidecar sees the workers in /proc and can compact.
            ("add", "/spec/shareProcessNamespace"),
            ("add", "/spec/initContainers/-"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let annotations = &patched["metadata"]["annotations"];
    assert_eq!(
        annotations["monasca.openstack.org/injected"],
        "persister-workers"
    );
    assert_eq!(
        annotations["monasca.openstack.org/config-hash"],
        hash(&persister_workers_spec()).as_str()
    );
    assert_eq!(annotations["prometheus.io/port"], "9102");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        patched["metadata"]["labels"]["monasca.openstack.org/sidecar"],
        "persister-workers"
    );
    assert_eq!(patched["metadata"]["labels"]["app"], "monasca-persister");

    let volumes = patched["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes[1], config_volume("persister-workers"));
    assert_eq!(
        volumes[2],
        json!({"name": "monasca-sidecar-multiproc", "emptyDir": {}})
    );

    let app = &patched["spec"]["containers"][0];
    assert_eq!(
        app["env"], original["spec"]["containers"][0]["env"],
        "user value kept, nothing added"
    );
    assert_eq!(app["env"][0]["value"], "/var/run/prom");
    assert_eq!(
        app["volumeMounts"][1],
        json!({"name": "monasca-sidecar-multiproc", "mountPath": "/var/run/prom"})
    );
    assert_eq!(
        patched["spec"]["containers"].as_array().map(Vec::len),
        Some(1)
    );

    let init = patched["spec"]["initContainers"]
        .as_array()
        .expect("init containers");
    assert_eq!(init.len(), 2);
    assert_eq!(
        init[0], original["spec"]["initContainers"][0],
        "existing init container untouched"
    );
    assert_eq!(patched["spec"]["shareProcessNamespace"], true);
    let mut expected = default_container();
    expected["restartPolicy"] = json!("Always");
    // No startup probe: a native sidecar's would hold the app back until it passed.
    expected["env"] = json!([
        {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/var/run/prometheus-multiproc"},
        {"name": "MONASCA_SIDECAR_MULTIPROCESS_LIVENESS", "value": "proc"}
    ]);
    expected["volumeMounts"] = json!([
        {"name": "monasca-sidecar-config", "mountPath": "/etc/monasca-sidecar", "readOnly": true},
        {"name": "monasca-sidecar-multiproc", "mountPath": "/var/run/prometheus-multiproc"}
    ]);
    assert_eq!(init[1], expected);
    // The app's 9091 endpoint serves the same multiprocess samples: not scraped twice, and the
    // user is told why.
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(
        answer.warnings[0].contains("twice"),
        "{:?}",
        answer.warnings
    );
}

#[test]
fn app_prometheus_annotations_become_sidecar_scrape_targets() {
    // The same pod with a sidecar that does not use multiprocess: the app's endpoint is the only
    // source of its metrics, so the sidecar scrapes it.
    let mut cluster = Cluster::fixtures();
    let mut spec = MetricsSidecarSpec::default();
    spec.config.listen.ingest = "127.0.0.1:9095".into();
    cluster.sidecar(MetricsSidecar::fixture("demo", "persister-workers", spec));
    let (answer, _, patched) = run(&cluster, PERSISTER);
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    assert_eq!(
        patched["metadata"]["annotations"]["prometheus.io/port"],
        "9102"
    );
    let sidecar = &patched["spec"]["containers"][1];
    assert_eq!(sidecar["name"], "monasca-sidecar");
    assert_eq!(
        sidecar["env"],
        json!([
            {"name": "MONASCA_SIDECAR_SCRAPE_TARGETS", "value": "127.0.0.1:9091"},
            {"name": "MONASCA_SIDECAR_SCRAPE_PATH", "value": "/metrics"}
        ])
    );
}

#[test]
fn pod_that_already_has_the_container_is_left_alone() {
    let cluster = Cluster::fixtures();
    let (answer, original, patched) = run(&cluster, HAS_SIDECAR);
    assert_skipped(&answer, "has_container");
    assert_eq!(original, patched);
    assert_eq!(answer.warnings.len(), 1);
}

#[test]
fn host_network_pod_is_not_injected_and_the_user_is_told() {
    let cluster = Cluster::fixtures();
    let (answer, _, _) = run(&cluster, HOST_NETWORK);
    assert_skipped(&answer, "host_network");
    assert!(answer.warnings[0].contains("hostNetwork"));
}

#[test]
fn pod_without_annotation_is_not_injected() {
    let cluster = Cluster::fixtures();
    let (answer, _, _) = run(&cluster, NOT_ANNOTATED);
    assert_skipped(&answer, "not_requested");
    assert!(answer.warnings.is_empty());
}

#[test]
fn namespace_annotation_injects_pods_without_one() {
    let mut cluster = Cluster::fixtures();
    cluster.namespace("demo", &[("monasca.openstack.org/inject", "true")]);
    let (answer, _, patched) = run(&cluster, NOT_ANNOTATED);
    assert!(answer.patch.is_some());
    assert_eq!(
        patched["metadata"]["annotations"]["monasca.openstack.org/injected"],
        "default"
    );
    // ... and the pod's own "false" still wins.
    cluster.namespace(
        "demo",
        &[("monasca.openstack.org/inject", "persister-workers")],
    );
    let mut review = fixture(NOT_ANNOTATED);
    review["request"]["object"]["metadata"]["annotations"]["monasca.openstack.org/inject"] =
        json!("false");
    let answer = answer_json(&cluster, &review);
    assert_skipped(&answer, "disabled");
}

#[test]
fn update_is_a_no_op() {
    let cluster = Cluster::fixtures();
    let (answer, _, _) = run(&cluster, UPDATE);
    assert_eq!(fixture(UPDATE)["request"]["operation"], "UPDATE");
    assert_skipped(&answer, "not_create");
}

#[test]
fn unknown_sidecar_and_bad_annotation_admit_unchanged_with_a_warning() {
    let mut cluster = Cluster::fixtures();
    let mut review = fixture(REPLICASET);
    review["request"]["object"]["metadata"]["annotations"]["monasca.openstack.org/inject"] =
        json!("nope");
    let answer = answer_json(&cluster, &review);
    assert_skipped(&answer, "unknown_sidecar");
    assert!(
        answer.warnings[0].contains("\"nope\""),
        "{:?}",
        answer.warnings
    );

    review["request"]["object"]["metadata"]["annotations"]["monasca.openstack.org/inject"] =
        json!("Yes please");
    let answer = answer_json(&cluster, &review);
    assert_skipped(&answer, "bad_annotation");
    assert_eq!(answer.warnings.len(), 1);

    // "true" with two sidecars and none named default is ambiguous.
    cluster.remove_sidecar(MetricsSidecar::fixture(
        "demo",
        "default",
        MetricsSidecarSpec::default(),
    ));
    cluster.sidecar(MetricsSidecar::fixture(
        "demo",
        "other",
        MetricsSidecarSpec::default(),
    ));
    let answer = answer_json(&cluster, &fixture(REPLICASET));
    assert_skipped(&answer, "no_default_sidecar");
    assert!(
        answer.warnings[0].contains("2 MetricsSidecars"),
        "{:?}",
        answer.warnings
    );
}

#[test]
fn only_sidecar_in_namespace_serves_inject_true() {
    let mut cluster = Cluster::fixtures();
    cluster.remove_sidecar(MetricsSidecar::fixture(
        "demo",
        "default",
        MetricsSidecarSpec::default(),
    ));
    let (answer, _, patched) = run(&cluster, REPLICASET);
    assert!(answer.patch.is_some());
    assert_eq!(
        patched["metadata"]["annotations"]["monasca.openstack.org/injected"],
        "persister-workers"
    );
}

#[test]
fn native_sidecar_always_falls_back_to_a_regular_container_on_an_older_server() {
    // The fixtures' 1.24 apiserver refuses an init container with probes: `always` there must
    // not produce a pod the apiserver rejects.
    let cluster = Cluster::fixtures();
    let (answer, _, patched) = run(&cluster, PERSISTER);
    let ops = ops(answer.patch.as_ref().expect("still injected"));
    assert!(
        ops.contains(&("add".into(), "/spec/containers/-".into())),
        "{ops:?}"
    );
    assert!(
        !ops.iter()
            .any(|(_, path)| path.starts_with("/spec/initContainers")),
        "{ops:?}"
    );
    let sidecar = patched["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "monasca-sidecar"))
        .expect("a regular sidecar container");
    assert!(sidecar.get("restartPolicy").is_none());
    assert!(sidecar.get("startupProbe").is_none());
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w.contains("nativeSidecar: always") && w.contains("SidecarContainers=false")),
        "{:?}",
        answer.warnings
    );
}

#[test]
fn native_sidecar_auto_is_native_only_for_pods_that_complete() {
    use monasca_operator::inject::NativeSidecars;
    let cluster_at = |native| {
        let mut cluster = Cluster::new(Settings::fixture(native));
        cluster.namespace("demo", &[]);
        cluster.sidecar(MetricsSidecar::fixture(
            "demo",
            "default",
            MetricsSidecarSpec {
                native_sidecar: NativeSidecar::Auto,
                ..Default::default()
            },
        ));
        cluster
    };
    // A long-running pod: a regular container, even where native sidecars exist, so an
    // unpullable or crashing sidecar never keeps the app from starting.
    let (_, _, patched) = run(&cluster_at(NativeSidecars::Available), REPLICASET);
    assert!(patched["spec"].get("initContainers").is_none());
    assert_eq!(patched["spec"]["containers"][1]["name"], "monasca-sidecar");

    // A pod that runs to completion: native (a regular sidecar would keep it from completing).
    let mut job = fixture(REPLICASET);
    job["request"]["object"]["spec"]["restartPolicy"] = json!("Never");
    let answer = answer_json(&cluster_at(NativeSidecars::Available), &job);
    let ops = ops(answer.patch.as_ref().expect("patch"));
    // No initContainers in the pod: the array is created whole, once.
    assert!(
        ops.contains(&("add".into(), "/spec/initContainers".into())),
        "{ops:?}"
    );
    let mut patched = request_object(&job);
    json_patch::patch(&mut patched, answer.patch.as_ref().expect("patch")).expect("applies");
    let native = &patched["spec"]["initContainers"][0];
    assert_eq!(native["restartPolicy"], "Always");
    assert!(native.get("startupProbe").is_none() && native.get("readinessProbe").is_none());
    assert_eq!(
        patched["spec"]["containers"].as_array().map(Vec::len),
        Some(1)
    );
    // Native sidecars off on the apiserver: a regular container and a warning.
    let answer = answer_json(&cluster_at(NativeSidecars::Unavailable), &job);
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w.contains("will not complete")),
        "{:?}",
        answer.warnings
    );
}

#[test]
fn excluded_namespaces_are_never_injected() {
    let mut cluster = Cluster::fixtures();
    for namespace in ["kube-system", "monasca-system"] {
        cluster.namespace(namespace, &[]);
        cluster.sidecar(MetricsSidecar::fixture(
            namespace,
            "default",
            MetricsSidecarSpec::default(),
        ));
        let mut review = fixture(REPLICASET);
        review["request"]["namespace"] = json!(namespace);
        assert_skipped(&answer_json(&cluster, &review), "excluded_namespace");
    }
}

#[test]
fn unparseable_reviews_are_rejected_with_a_one_line_reason() {
    let cluster = Cluster::fixtures();
    for body in [
        &b"not json"[..],
        b"{}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        b"[1,2]",
    ] {
        let err =
            monasca_operator::webhook::review::review(body, &cluster.ctx).expect_err("invalid");
        let reason = err.to_string();
        assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
    }
}

#[test]
fn a_review_of_something_that_is_not_a_pod_is_admitted_unchanged() {
    let cluster = Cluster::fixtures();
    let mut review = fixture(REPLICASET);
    review["request"]["kind"]["kind"] = json!("ConfigMap");
    review["request"]["object"] = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}});
    let answer = answer_json(&cluster, &review);
    assert_skipped(&answer, "not_a_pod");
}

/// The persister declares its own metrics port 9091, which the default sidecar config binds for
/// the Pushgateway API: with a native sidecar the app could never bind it. Admitted unchanged,
/// with the warning, the skip reason and an Event for the MetricsSidecar (not for a dry run).
#[test]
fn persister_on_the_pushgateway_port_is_admitted_unchanged_with_a_port_conflict() {
    let mut cluster = Cluster::fixtures();
    let spec = MetricsSidecarSpec {
        multiprocess: true,
        ..Default::default()
    };
    cluster.sidecar(MetricsSidecar::fixture("demo", "persister-workers", spec));
    let mut events = cluster.ctx.admission_events.channel().expect("one queue");
    let (answer, _, _) = run(&cluster, PERSISTER);
    assert_skipped(&answer, "port_conflict");
    assert_eq!(answer.warnings.len(), 1);
    assert!(
        answer.warnings[0].contains("9091/TCP") && answer.warnings[0].contains("ingest"),
        "{:?}",
        answer.warnings
    );
    let event = events.try_recv().expect("an Event queued");
    assert_eq!(event.sidecar, "persister-workers");
    assert_eq!(event.namespace, "demo");
    assert_eq!(event.reason, SkipReason::PortConflict);
    assert_eq!(event.message, answer.warnings[0]);

    let mut dry = fixture(PERSISTER);
    dry["request"]["dryRun"] = json!(true);
    assert_skipped(&answer_json(&cluster, &dry), "port_conflict");
    assert!(events.try_recv().is_err(), "no Event for a dry run");
}

#[test]
fn a_volume_named_like_the_sidecars_for_something_else_is_a_name_conflict() {
    let cluster = Cluster::fixtures();
    let mut review = fixture(REPLICASET);
    let volumes = review["request"]["object"]["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes");
    volumes.push(json!({"name": "monasca-sidecar-config", "emptyDir": {}}));
    let answer = answer_json(&cluster, &review);
    assert_skipped(&answer, "name_conflict");
    assert!(
        answer.warnings[0].contains("monasca-sidecar-config"),
        "{:?}",
        answer.warnings
    );

    // A port named like the sidecar's.
    let mut review = fixture(REPLICASET);
    review["request"]["object"]["spec"]["containers"][0]["ports"] =
        json!([{"name": "sidecar-metrics", "containerPort": 8080}]);
    assert_skipped(&answer_json(&cluster, &review), "name_conflict");
}

#[test]
fn multiprocess_pods_share_their_process_namespace_and_the_sidecar_is_told() {
    use monasca_crds::ShareProcessNamespace;
    let liveness = |patched: &Value| {
        let sidecar = patched["spec"]["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "monasca-sidecar"))
            .cloned()
            .expect("sidecar container");
        sidecar["env"]
            .as_array()
            .and_then(|e| {
                e.iter()
                    .find(|v| v["name"] == "MONASCA_SIDECAR_MULTIPROCESS_LIVENESS")
            })
            .map(|v| v["value"].clone())
    };
    // (choice, the pod's own setting) -> (shared, rendered liveness)
    let table = [
        (ShareProcessNamespace::Auto, None, true, "proc"),
        (ShareProcessNamespace::Auto, Some(false), false, "mtime"),
        (ShareProcessNamespace::Auto, Some(true), true, "proc"),
        (ShareProcessNamespace::Always, Some(false), true, "proc"),
        (ShareProcessNamespace::Never, None, false, "mtime"),
        (ShareProcessNamespace::Never, Some(true), true, "proc"),
    ];
    for (choice, pod_setting, shared, rendered) in table {
        let mut cluster = Cluster::fixtures();
        cluster.sidecar(MetricsSidecar::fixture(
            "demo",
            "default",
            MetricsSidecarSpec {
                multiprocess: true,
                share_process_namespace: choice,
                ..Default::default()
            },
        ));
        let mut review = fixture(REPLICASET);
        if let Some(v) = pod_setting {
            review["request"]["object"]["spec"]["shareProcessNamespace"] = json!(v);
        }
        let answer = answer_json(&cluster, &review);
        let mut patched = request_object(&review);
        json_patch::patch(&mut patched, answer.patch.as_ref().expect("patch")).expect("applies");
        let case = format!("{choice:?} with the pod at {pod_setting:?}");
        assert_eq!(
            patched["spec"]["shareProcessNamespace"]
                .as_bool()
                .unwrap_or(false),
            shared,
            "{case}"
        );
        assert_eq!(liveness(&patched), Some(json!(rendered)), "{case}");
        let sets = ops(answer.patch.as_ref().expect("patch"))
            .iter()
            .any(|(_, path)| path == "/spec/shareProcessNamespace");
        assert_eq!(
            sets,
            shared && pod_setting != Some(true),
            "{case}: only set when needed"
        );
    }
    // Without multiprocess, the pod's namespace is none of the sidecar's business.
    let (_, original, patched) = run(&Cluster::fixtures(), REPLICASET);
    assert_eq!(
        patched["spec"].get("shareProcessNamespace"),
        original["spec"].get("shareProcessNamespace")
    );
    assert_eq!(liveness(&patched), None);
}

fn answer_json(cluster: &Cluster, review: &Value) -> Answer {
    common::answer(&cluster.ctx, &serde_json::to_vec(review).expect("json"))
}
