//! Property: for random pods and random `MetricsSidecar`s, a patch always applies, the result is
//! always a Pod that Kubernetes would accept structurally (unique container and volume names,
//! unique mount paths, mounts of existing volumes), the patch only adds, and injecting the
//! result again yields no patch.

mod common;

use common::undo;
use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::Operation;
use monasca_crds::{MetricsSidecar, MetricsSidecarSpec, NativeSidecar, ShareProcessNamespace};
use monasca_operator::inject::{
    Decision, NativeSidecars, PodRequest, Settings, SkipReason, inject,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

const NAMESPACE: &str = "demo";

fn annotation_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("monasca.openstack.org/injected".to_string()),
        Just("prometheus.io/scrape".to_string()),
        Just("prometheus.io/port".to_string()),
        Just("prometheus.io/path".to_string()),
        Just("prometheus.io/scheme".to_string()),
        "[a-z]{1,6}(\\.[a-z]{1,4})?/[a-z~]{1,6}",
        "[a-z~]{1,8}",
    ]
}

fn annotation_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_string()),
        Just("false".to_string()),
        Just("9102".to_string()),
        Just("8080".to_string()),
        Just("/metrics".to_string()),
        Just("https".to_string()),
        "[ -~]{0,12}",
    ]
}

fn inject_value() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            4 => Just("true".to_string()),
            2 => Just("default".to_string()),
            2 => Just("workers".to_string()),
            1 => Just("false".to_string()),
            1 => Just("missing".to_string()),
            1 => "[ -~]{0,8}",
        ],
    )
}

fn string_map(
    keys: impl Strategy<Value = String>,
    values: impl Strategy<Value = String>,
) -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    prop::option::of(prop::collection::btree_map(keys, values, 0..5))
}

fn mount_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/var/run/prometheus-multiproc".to_string()),
        Just("/var/run/prom".to_string()),
        Just("/var/run/prom/".to_string()),
        Just("/etc/monasca-sidecar".to_string()),
        "/[a-z]{1,5}(/[a-z]{1,5})?",
    ]
}

/// One container, with a name from `name`, optional env (maybe PROMETHEUS_MULTIPROC_DIR),
/// optional mounts with unique paths, optional ports.
fn container(name: String) -> impl Strategy<Value = Value> {
    let env = prop::option::of(prop::collection::vec(
        prop_oneof![
            mount_path().prop_map(|p| json!({"name": "PROMETHEUS_MULTIPROC_DIR", "value": p})),
            Just(json!({"name": "PROMETHEUS_MULTIPROC_DIR", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})),
            Just(json!({"name": "PROMETHEUS_MULTIPROC_DIR", "value": ""})),
            "[A-Z]{1,6}".prop_map(|n| json!({"name": n, "value": "x"})),
        ],
        0..3,
    ))
    .prop_map(|env| {
        // At most one PROMETHEUS_MULTIPROC_DIR, like a sane pod.
        env.map(|vars| {
            let mut seen = HashSet::new();
            vars.into_iter().filter(|v| seen.insert(v["name"].clone())).collect::<Vec<_>>()
        })
    });
    let mounts = prop::option::of(prop::collection::vec(
        (
            prop_oneof![
                Just("data"),
                Just("monasca-sidecar-multiproc"),
                Just("token")
            ],
            mount_path(),
        ),
        0..3,
    ))
    .prop_map(|mounts| {
        mounts.map(|ms| {
            let mut seen = HashSet::new();
            ms.into_iter()
                .filter(|(_, p)| seen.insert(p.trim_end_matches('/').to_string()))
                .map(|(n, p)| json!({"name": n, "mountPath": p}))
                .collect::<Vec<_>>()
        })
    });
    // The sidecar's default ports (metrics 9102, ingest 9091, StatsD 8125, OTLP 4318), with
    // either protocol, and others.
    let ports = prop::option::of(prop::collection::vec(
        (
            prop_oneof![
                Just(9102),
                Just(9091),
                Just(8125),
                Just(4318),
                Just(8080),
                1024u16..2000
            ],
            prop_oneof![Just(None), Just(Some("TCP")), Just(Some("UDP"))],
        ),
        0..2,
    ));
    (env, mounts, ports).prop_map(move |(env, mounts, ports)| {
        let mut c = Map::new();
        c.insert("name".into(), json!(name));
        c.insert("image".into(), json!("app:1"));
        if let Some(env) = env {
            c.insert("env".into(), Value::Array(env));
        }
        if let Some(mounts) = mounts {
            c.insert("volumeMounts".into(), Value::Array(mounts));
        }
        if let Some(ports) = ports {
            let unique: BTreeMap<u16, Option<&str>> = ports.into_iter().collect();
            c.insert(
                "ports".into(),
                unique
                    .into_iter()
                    .map(|(p, proto)| match proto {
                        Some(proto) => json!({"containerPort": p, "protocol": proto}),
                        None => json!({"containerPort": p}),
                    })
                    .collect(),
            );
        }
        Value::Object(c)
    })
}

fn containers(prefix: &'static str, min: usize) -> impl Strategy<Value = Vec<Value>> {
    (min..4usize).prop_flat_map(move |n| {
        (0..n)
            .map(|i| container(format!("{prefix}{i}")).boxed())
            .collect::<Vec<_>>()
    })
}

fn pod() -> impl Strategy<Value = Value> {
    let metadata = (
        string_map(annotation_key(), annotation_value()),
        inject_value(),
        string_map("[a-z]{1,5}(/[a-z]{1,3})?", "[a-z0-9]{0,5}"),
        any::<bool>(),
    );
    let spec = (
        containers("app", 1),
        prop::option::of(containers("init", 0)),
        prop::option::of(prop::collection::btree_set(
            prop_oneof![
                Just("data"),
                Just("token"),
                Just("monasca-sidecar-multiproc"),
                Just("monasca-sidecar-config")
            ],
            0..3,
        )),
        prop::option::weighted(0.1, Just(true)),
        prop::option::of(prop_oneof![
            Just("Always"),
            Just("Never"),
            Just("OnFailure")
        ]),
        prop::bool::weighted(0.05),
        prop::option::of(any::<bool>()),
    );
    (metadata, spec).prop_map(
        |(
            (annotations, inject, labels, named),
            (mut app, init, volumes, host_network, restart, has_sidecar, share_pids),
        )| {
            let mut annotations = annotations;
            if let Some(v) = inject {
                annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert("monasca.openstack.org/inject".into(), v);
            }
            if has_sidecar {
                app.push(json!({"name": "monasca-sidecar", "image": "theirs"}));
            }
            let mut meta = Map::new();
            if named {
                meta.insert("name".into(), json!("p"));
            } else {
                meta.insert("generateName".into(), json!("p-"));
            }
            if let Some(a) = annotations {
                meta.insert("annotations".into(), json!(a));
            }
            if let Some(l) = labels {
                meta.insert("labels".into(), json!(l));
            }
            let mut spec = Map::new();
            spec.insert("containers".into(), Value::Array(app));
            if let Some(init) = init {
                spec.insert("initContainers".into(), Value::Array(init));
            }
            // Every volume a container mounts exists (a valid input pod).
            let mut names: std::collections::BTreeSet<String> =
                volumes.into_iter().flatten().map(String::from).collect();
            for c in spec["containers"].as_array().into_iter().flatten().chain(
                spec.get("initContainers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten(),
            ) {
                for m in c["volumeMounts"].as_array().into_iter().flatten() {
                    if let Some(n) = m["name"].as_str() {
                        names.insert(n.to_string());
                    }
                }
            }
            if !names.is_empty() {
                spec.insert(
                    "volumes".into(),
                    names
                        .into_iter()
                        .map(|n| json!({"name": n, "emptyDir": {}}))
                        .collect(),
                );
            }
            if let Some(h) = host_network {
                spec.insert("hostNetwork".into(), json!(h));
            }
            if let Some(r) = restart {
                spec.insert("restartPolicy".into(), json!(r));
            }
            if let Some(shared) = share_pids {
                spec.insert("shareProcessNamespace".into(), json!(shared));
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
        },
    )
}

fn sidecar_spec() -> impl Strategy<Value = MetricsSidecarSpec> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(NativeSidecar::Auto),
            Just(NativeSidecar::Always),
            Just(NativeSidecar::Never)
        ],
        prop_oneof![
            Just("0.0.0.0:9102"),
            Just("127.0.0.1:9102"),
            Just("[::]:9300"),
            Just("0.0.0.0:8080")
        ],
        prop_oneof![
            Just("127.0.0.1:9091"),
            Just("0.0.0.0:9091"),
            Just("0.0.0.0:9102")
        ],
        prop::option::of(mount_path()),
        prop::option::of(Just("example/sidecar:1".to_string())),
        prop_oneof![
            Just(ShareProcessNamespace::Auto),
            Just(ShareProcessNamespace::Always),
            Just(ShareProcessNamespace::Never)
        ],
    )
        .prop_map(
            |(
                multiprocess,
                prometheus_annotations,
                native_sidecar,
                metrics,
                ingest,
                dir,
                image,
                share_process_namespace,
            )| {
                let mut spec = MetricsSidecarSpec {
                    multiprocess,
                    prometheus_annotations,
                    native_sidecar,
                    image,
                    share_process_namespace,
                    ..MetricsSidecarSpec::default()
                };
                spec.config.listen.metrics = metrics.into();
                spec.config.listen.ingest = ingest.into();
                spec.config.multiprocess_dir = dir;
                spec
            },
        )
}

fn sidecars() -> impl Strategy<Value = Vec<Arc<MetricsSidecar>>> {
    (sidecar_spec(), prop::option::of(sidecar_spec())).prop_map(|(first, second)| {
        let mut out = Vec::new();
        let mut s = MetricsSidecar::new("default", first);
        s.metadata.namespace = Some(NAMESPACE.into());
        out.push(Arc::new(s));
        if let Some(spec) = second {
            let mut s = MetricsSidecar::new("workers", spec);
            s.metadata.namespace = Some(NAMESPACE.into());
            out.push(Arc::new(s));
        }
        out
    })
}

fn settings() -> impl Strategy<Value = Settings> {
    prop::sample::select(vec![
        NativeSidecars::Available,
        NativeSidecars::Unavailable,
        NativeSidecars::Unknown,
    ])
    .prop_map(|native| Settings {
        operator_namespace: "monasca-system".into(),
        sidecar_image: "monasca/monasca-sidecar:test".into(),
        native_sidecars: native.into(),
        sidecar_checks: Default::default(),
    })
}

fn decide(pod_json: &Value, sidecars: &[Arc<MetricsSidecar>], settings: &Settings) -> Decision {
    let pod: Pod = serde_json::from_value(pod_json.clone()).expect("generated pod is a Pod");
    inject(
        &PodRequest {
            operation: &Operation::Create,
            namespace: NAMESPACE,
            pod: &pod,
        },
        None,
        sidecars,
        settings,
    )
}

/// The structural rules of Pod validation that an additive patch could break.
fn assert_structurally_valid(pod: &Value) {
    let spec = &pod["spec"];
    let all: Vec<&Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .collect();
    let mut names = HashSet::new();
    for c in &all {
        assert!(
            names.insert(c["name"].as_str()),
            "duplicate container {}",
            c["name"]
        );
    }
    let volumes: HashSet<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(
        volumes.len(),
        spec["volumes"].as_array().map_or(0, Vec::len),
        "duplicate volume"
    );
    for c in &all {
        let mut paths = HashSet::new();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let path = m["mountPath"].as_str().unwrap_or_default();
            assert!(
                paths.insert(path.trim_end_matches('/')),
                "duplicate mountPath {path} in {}",
                c["name"]
            );
            assert!(
                volumes.contains(m["name"].as_str().unwrap_or_default()),
                "mount of a missing volume {}",
                m["name"]
            );
        }
        let env: Vec<&str> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        let unique: HashSet<&&str> = env.iter().collect();
        assert_eq!(unique.len(), env.len(), "duplicate env in {}", c["name"]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn patch_applies_yields_a_valid_pod_and_is_idempotent(pod_json in pod(), sidecars in sidecars(), settings in settings()) {
        let decision = decide(&pod_json, &sidecars, &settings);
        let Some(patch) = decision.patch() else { return Ok(()); };
        let patch: &Patch = patch;
        let mut patched = pod_json.clone();
        json_patch::patch(&mut patched, patch).map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
        let typed: Result<Pod, _> = serde_json::from_value(patched.clone());
        prop_assert!(typed.is_ok(), "patched object is not a Pod: {:?}", typed.err());
        assert_structurally_valid(&patched);
        prop_assert_eq!(undo(&patched, patch, &pod_json), pod_json.clone(), "the patch only adds");
        let again = decide(&patched, &sidecars, &settings);
        prop_assert!(again.patch().is_none(), "re-injection yielded a patch: {:?}", again);
    }

    #[test]
    fn the_sidecar_never_gates_the_app_and_conflicts_are_skipped(pod_json in pod(), sidecars in sidecars(), settings in settings()) {
        // First injections only (a reinvocation keeps the container it finds).
        let has_sidecar = pod_json["spec"]["containers"].as_array().into_iter().flatten().any(|c| c["name"] == "monasca-sidecar");
        prop_assume!(!has_sidecar);
        let decision = decide(&pod_json, &sidecars, &settings);
        let declared = declared_ports(&pod_json);
        match &decision {
            Decision::Patch { patch, sidecar, .. } => {
                let spec = &sidecars.iter().find(|s| s.metadata.name.as_deref() == Some(sidecar.as_str())).expect("the chosen sidecar").spec;
                let mut patched = pod_json.clone();
                json_patch::patch(&mut patched, patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let pod_spec = &patched["spec"];
                let injected = pod_spec["containers"].as_array().into_iter().flatten()
                    .chain(pod_spec["initContainers"].as_array().into_iter().flatten())
                    .find(|c| c["name"] == "monasca-sidecar")
                    .expect("the sidecar container");
                prop_assert!(injected.get("readinessProbe").is_none(), "a readinessProbe gates the app");
                prop_assert!(injected.get("startupProbe").is_none(), "a startupProbe holds the app back");
                // Native only when asked for, or for pods that run to completion.
                if injected.get("restartPolicy").is_some() {
                    let completes = matches!(pod_spec["restartPolicy"].as_str(), Some("Never" | "OnFailure"));
                    prop_assert!(spec.native_sidecar == NativeSidecar::Always || completes);
                }
                // The liveness rendered for the sidecar matches the pod as patched.
                let liveness = injected["env"].as_array().into_iter().flatten()
                    .find(|e| e["name"] == "MONASCA_SIDECAR_MULTIPROCESS_LIVENESS")
                    .and_then(|e| e["value"].as_str());
                let shared = pod_spec["shareProcessNamespace"].as_bool().unwrap_or(false);
                if spec.multiprocess {
                    prop_assert_eq!(liveness, Some(if shared { "proc" } else { "mtime" }));
                    let pod_said = pod_json["spec"]["shareProcessNamespace"].as_bool();
                    let expected = match spec.share_process_namespace {
                        ShareProcessNamespace::Always => true,
                        ShareProcessNamespace::Auto => pod_said != Some(false),
                        ShareProcessNamespace::Never => pod_said == Some(true),
                    };
                    prop_assert_eq!(shared, expected);
                } else {
                    prop_assert_eq!(liveness, None);
                    prop_assert_eq!(&pod_spec["shareProcessNamespace"], &pod_json["spec"]["shareProcessNamespace"]);
                }
                // Never injected next to a container that declares a port a listener binds.
                for bound in bound_ports(spec) {
                    prop_assert!(!declared.contains(&bound), "injected although a container declares {:?}", bound);
                }
            }
            Decision::Conflict { reason, sidecar, .. } => {
                let spec = &sidecars.iter().find(|s| s.metadata.name.as_deref() == Some(sidecar.as_str())).expect("the chosen sidecar").spec;
                match reason {
                    SkipReason::PortConflict => prop_assert!(
                        bound_ports(spec).iter().any(|p| declared.contains(p)),
                        "port_conflict without a clash"
                    ),
                    SkipReason::NameConflict => {}
                    other => prop_assert!(false, "a conflict with reason {:?}", other),
                }
            }
            Decision::Skip { reason, .. } => prop_assert!(
                !matches!(reason, SkipReason::PortConflict | SkipReason::NameConflict),
                "a conflict without the MetricsSidecar's name"
            ),
        }
    }
}

/// Every (port, protocol) a container of the pod declares.
fn declared_ports(pod: &Value) -> HashSet<(u16, String)> {
    let spec = &pod["spec"];
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .filter(|c| c["name"] != "monasca-sidecar")
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| {
            let port = u16::try_from(p["containerPort"].as_u64()?).ok()?;
            Some((port, p["protocol"].as_str().unwrap_or("TCP").to_string()))
        })
        .collect()
}

/// What the sidecar with this spec binds, written from the contract (DESIGN.md listeners), not
/// from the operator's code.
fn bound_ports(spec: &MetricsSidecarSpec) -> Vec<(u16, String)> {
    let listen = &spec.config.listen;
    let port = |a: &str| a.parse::<SocketAddr>().map(|a| a.port()).ok();
    let mut out = Vec::new();
    out.extend(port(&listen.metrics).map(|p| (p, "TCP".to_string())));
    out.extend(port(&listen.ingest).map(|p| (p, "TCP".to_string())));
    out.extend(port(&listen.otlp).map(|p| (p, "TCP".to_string())));
    if let Some(p) = port(&listen.statsd) {
        out.push((p, "UDP".to_string()));
        out.push((p, "TCP".to_string()));
    }
    out
}

/// A CRD `pattern` as a generator: proptest's regex strategies have no anchors, and these
/// patterns use `^`/`$` only as anchors.
fn matching(pattern: &str) -> impl Strategy<Value = String> + use<> {
    proptest::string::string_regex(&pattern.replace(['^', '$'], ""))
        .expect("the pattern is a supported regex")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// The CRD schema and the parser agree on durations: whatever the apiserver admits
    /// (`pattern` and `maxLength`), the operator and the sidecar can read. `300000d` once passed
    /// the schema but not the parser, and made the whole MetricsSidecar unreadable.
    #[test]
    fn every_duration_the_schema_admits_parses(
        text in matching(monasca_crds::config::DURATION_PATTERN)
            .prop_filter("maxLength", |s| s.len() as u64 <= monasca_crds::config::DURATION_MAX_LENGTH)
    ) {
        let parsed = monasca_crds::config::Duration::parse(&text);
        prop_assert!(parsed.is_ok(), "{text:?} passes the schema but not the parser");
        let parsed = parsed.expect("checked");
        // And it is written back as something that reads the same.
        prop_assert_eq!(monasca_crds::config::Duration::parse(&parsed.to_string()).ok(), Some(parsed));
    }

    /// The same for listen addresses: octets, ports and IPv6 forms the schema admits parse as a
    /// `SocketAddr`, the type the sidecar binds.
    #[test]
    fn every_listen_address_the_schema_admits_parses(text in matching(monasca_crds::SOCKET_ADDR)) {
        prop_assert!(
            text.parse::<std::net::SocketAddr>().is_ok(),
            "{text:?} passes the schema but not the parser"
        );
    }
}

#[test]
fn the_schema_still_refuses_what_the_parsers_refuse() {
    // Not vacuous: the patterns are anchored and bounded.
    let duration = matcher(monasca_crds::config::DURATION_PATTERN);
    let address = matcher(monasca_crds::SOCKET_ADDR);
    for bad in ["", "5 m", "1x", "9999999999999d", "-1s", "1.5"] {
        assert!(!duration(bad), "{bad:?}");
    }
    for ok in ["300000d", "1h30m", "500ms", "1.5s", "60"] {
        assert!(duration(ok), "{ok:?}");
    }
    for bad in [
        "256.1.1.1:80",
        "1.2.3.4:65536",
        "01.2.3.4:80",
        "[:::]:80",
        "host:80",
        "[::1]",
    ] {
        assert!(!address(bad), "{bad:?}");
    }
    for ok in [
        "0.0.0.0:9102",
        "[::]:9102",
        "[::1]:0",
        "[fd00::7]:65535",
        "[1:2:3:4:5:6:7:8]:1",
    ] {
        assert!(address(ok), "{ok:?}");
    }
}

/// Whether `text` matches the CRD `pattern` (Go's RE2 and Rust's `regex` agree on these
/// constructs).
fn matcher(pattern: &'static str) -> impl Fn(&str) -> bool {
    let regex = regex::Regex::new(pattern).expect("the pattern compiles");
    move |text: &str| regex.is_match(text)
}

/// Any JSON value, biased toward the densest shapes (one-digit numbers, empty containers,
/// empty keys) since those hold the most values per byte.
fn dense_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!(0)),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!("")),
        Just(json!([])),
        Just(json!({})),
        any::<i64>().prop_map(Value::from),
        "[a-z\"\\\\]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 200, 12, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,2}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// The webhook skips counting values for small bodies (`review::SMALL_REVIEW_BYTES`): that
    /// is only sound if no body within the byte bound can exceed the value bound. Checked with
    /// small limits, where random documents reach both sides of the bound.
    #[test]
    fn a_body_within_the_byte_bound_never_exceeds_the_value_bound(value in dense_json(), limit in 1usize..64, pretty in any::<bool>()) {
        use monasca_operator::webhook::review::{exceeds_json_values, too_short_to_exceed};
        let body = if pretty { serde_json::to_vec_pretty(&value) } else { serde_json::to_vec(&value) }
            .expect("json");
        if too_short_to_exceed(body.len(), limit) {
            prop_assert!(!exceeds_json_values(&body, limit), "{} bytes over {limit} values: {}", body.len(), String::from_utf8_lossy(&body));
        }
    }
}

#[test]
fn the_byte_bound_is_tight() {
    use monasca_operator::webhook::review::{exceeds_json_values, too_short_to_exceed};
    // `[0,0,...,0]` with `limit` zeros holds `limit + 1` values in `2 * limit + 1` bytes: one
    // byte more than the bound, and over the limit.
    for limit in 1..50 {
        let body = format!("[{}]", vec!["0"; limit].join(","));
        assert_eq!(body.len(), 2 * limit + 1);
        assert!(!too_short_to_exceed(body.len(), limit));
        assert!(exceeds_json_values(body.as_bytes(), limit), "{body}");
    }
}
