//! The operator under attack and failure: bounded admission, opt-in filtering by the apiserver,
//! least privilege, and repairs of its own objects without a failed handshake (issue 13, and
//! item 8 of issue 21).

use super::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub(super) const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "hostile_admission_reviews_are_answered_or_closed_and_operator_memory_stays_bounded",
        |env| Box::pin(hostile_reviews(env)),
    ),
    (
        "only_opted_in_pods_reach_the_webhook_and_a_labelled_namespace_opts_in",
        |env| Box::pin(opt_in_filtering(env)),
    ),
    (
        "operator_service_account_is_refused_other_config_maps_webhooks_and_workload_changes",
        |env| Box::pin(least_privilege(env)),
    ),
    (
        "deleted_secret_and_webhook_configuration_are_repaired_with_zero_failed_handshakes",
        |env| Box::pin(repairs_without_failed_handshakes(env)),
    ),
];

/// The webhook's listen address, from the operator's arguments.
fn webhook_addr(args: &OperatorArgs) -> SocketAddr {
    let listen = args
        .args
        .iter()
        .position(|a| a == "--webhook-listen")
        .and_then(|i| args.args.get(i + 1))
        .expect("--webhook-listen");
    let port = listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    ([127, 0, 0, 1], port).into()
}

/// A TLS client that trusts exactly the CAs of `ca_bundle` (what the apiserver does).
fn trusting(ca_bundle: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle) {
        roots.add(cert.expect("PEM")).expect("CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A completed TLS handshake with the webhook at `addr`, or why it failed.
fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let connection = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(stream)
}

/// Writes `head` and `body`, then reads until the server closes; returns what it sent.
fn exchange(
    mut stream: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    head: &str,
    body: &[u8],
) -> String {
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A review of a pod with `containers` empty containers, in namespace `namespace`.
fn review_with_containers(namespace: &str, containers: usize) -> Vec<u8> {
    let list: Vec<serde_json::Value> = (0..containers).map(|_| serde_json::json!({})).collect();
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-4000-8000-000000000013",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "attacker"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "big", "annotations": {ANNOTATION_INJECT: "true"}},
                       "spec": {"containers": list}},
        }
    }))
    .expect("json")
}

/// Hostile clients straight at the operator's webhook port (any pod in the cluster can reach
/// it): a review of 200,000 tiny containers, bodies over the cap, a body that never finishes,
/// and a connection flood. Each is answered or closed (the request deadline bounds the slow
/// one), injection keeps working, and the operator process's peak RSS (VmHWM in
/// /proc/<pid>/status) stays under 100 MiB.
async fn hostile_reviews(env: Env) {
    let Started {
        operator_namespace,
        app_namespace,
        operator_args: args,
        operator,
    } = env.start_operator().await;
    let sidecars = Api::<MetricsSidecar>::namespaced(env.client.clone(), &app_namespace);
    create_sidecar(&sidecars, "default", MetricsSidecarSpec::default()).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;
    let config = trusting(&webhook_ca(&env.client, &operator_namespace).await);
    let addr = webhook_addr(&args);
    let pid = operator.pid();
    let before = peak_rss_kib(pid);

    let app = app_namespace.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let post = |len: usize| {
            format!("POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {len}\r\n\r\n")
        };
        let mut answers = Vec::new();
        // Three at once, on separate connections: a tiny-container review under the cap...
        let big = review_with_containers(&app, 300_000);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (config, body, head) = (config.clone(), big.clone(), post(big.len()));
                std::thread::spawn(move || {
                    exchange(handshake(addr, config).expect("handshake"), &head, &body)
                })
            })
            .collect();
        for t in threads {
            answers.push(("tiny containers", t.join().expect("thread")));
        }
        // ...a body over the cap, sent in full...
        let huge = vec![b' '; 5 * 1024 * 1024];
        answers.push((
            "oversized",
            exchange(handshake(addr, config.clone()).expect("handshake"), &post(huge.len()), &huge),
        ));
        // ...and a body that never finishes (the deadline answers or closes it).
        answers.push((
            "slow",
            exchange(handshake(addr, config.clone()).expect("handshake"), &post(1000), b"{"),
        ));
        // A connection flood: more idle connections than the cap; the operator closes the
        // surplus at once and keeps serving once they go.
        let flood: Vec<_> = (0..400)
            .filter_map(|_| std::net::TcpStream::connect(addr).ok())
            .collect();
        drop(flood);
        answers
    })
    .await
    .expect("hostile clients");
    for (what, answer) in &answers {
        let status = answer.split(' ').nth(1).unwrap_or("closed");
        match *what {
            "tiny containers" => {
                assert_eq!(status, "200", "{what}: {answer:.300}");
                assert!(
                    answer.contains("not injected"),
                    "{what}: warned: {answer:.300}"
                );
                assert!(!answer.contains("\"patch\""), "{what}: not injected");
            }
            // 413 at once; the client, still writing, may see the reset before the answer.
            "oversized" => assert!(
                status == "413" || answer.is_empty(),
                "{what}: {answer:.300}"
            ),
            _ => assert!(
                status == "408" || answer.is_empty(),
                "{what}: {answer:.300}"
            ),
        }
    }
    let metrics = args.metrics().await;
    assert!(
        cluster::sample(
            &metrics,
            "monasca_operator_admission_shed_total{reason=\"connections\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "the connection flood was shed:\n{metrics}"
    );
    // Still injecting through the apiserver.
    let pod = pods
        .create(&PostParams::default(), &annotated_pod("after-attack"))
        .await
        .expect("create pod");
    assert!(has_sidecar(&pod), "injection survived the attack");
    let peak = peak_rss_kib(pid);
    say(&format!(
        "operator peak RSS: {} KiB before the attack, {} KiB after",
        before, peak
    ));
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB is over 100 MiB");
    assert!(operator_is_running(operator));
}

fn operator_is_running(mut operator: Operator) -> bool {
    let running = operator.is_running();
    operator.stop();
    running
}

/// Pods that did not opt in never reach the webhook (matchConditions), and a namespace LABEL
/// opts its pods in (namespaceSelector); the pod's own "false" still wins there.
async fn opt_in_filtering(env: Env) {
    let Started {
        app_namespace,
        operator_args: args,
        operator,
        ..
    } = env.start_operator().await;
    let labelled = env.namespace("labelled").await;
    for namespace in [&app_namespace, &labelled] {
        let sidecars = Api::<MetricsSidecar>::namespaced(env.client.clone(), namespace);
        create_sidecar(&sidecars, "default", MetricsSidecarSpec::default()).await;
    }
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &labelled,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {ANNOTATION_INJECT: "true"}}})),
        )
        .await
        .expect("label the namespace");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;
    let reviews = |metrics: &str| {
        ["injected", "skipped", "invalid", "too_large", "timeout"]
            .iter()
            .filter_map(|o| {
                cluster::sample(
                    metrics,
                    &format!("monasca_operator_admission_reviews_total{{outcome=\"{o}\"}}"),
                )
            })
            .sum::<f64>()
    };
    let plain = |name: &str, inject: Option<&str>| {
        let mut pod = annotated_pod(name);
        pod.metadata.annotations =
            inject.map(|v| [(ANNOTATION_INJECT.to_string(), v.to_string())].into());
        pod
    };

    // Not opted in, or opted out: the apiserver does not call the webhook at all.
    let before = reviews(&args.metrics().await);
    for (name, inject) in [("plain", None), ("opted-out", Some("false"))] {
        let pod = pods
            .create(&PostParams::default(), &plain(name, inject))
            .await
            .expect("create pod");
        assert!(!has_sidecar(&pod), "{name} is not injected");
    }
    assert_eq!(
        reviews(&args.metrics().await),
        before,
        "no review for pods that did not opt in"
    );

    // A labelled namespace: its silent pods are injected; a pod saying "false" is not sent.
    let labelled_pods: Api<Pod> = Api::namespaced(env.client.clone(), &labelled);
    let pod = eventually(
        "a pod in the labelled namespace to be injected",
        WAIT,
        || async {
            let dry_run = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            let pod = labelled_pods
                .create(&dry_run, &plain("probe", None))
                .await
                .ok()?;
            has_sidecar(&pod).then_some(pod)
        },
    )
    .await;
    assert!(has_sidecar(&pod));
    let before = reviews(&args.metrics().await);
    let pod = labelled_pods
        .create(&PostParams::default(), &plain("opted-out", Some("false")))
        .await
        .expect("create pod");
    assert!(
        !has_sidecar(&pod),
        "the pod's own false wins over the namespace label"
    );
    assert_eq!(
        reviews(&args.metrics().await),
        before,
        "and it was not sent"
    );
    operator.stop();
}

/// The shipped RBAC and ValidatingAdmissionPolicy against the real apiserver, as the operator's
/// ServiceAccount (a TokenRequest token): a ConfigMap of another name, another webhook
/// configuration and a workload change beyond the restart annotation are refused (403), while
/// what the operator does is allowed.
async fn least_privilege(env: Env) {
    install(&env.client).await;
    let root = cluster::repo_root();
    let base = root.join("manifests/base");
    for file in [
        "namespace.yaml",
        "serviceaccount.yaml",
        "clusterrole.yaml",
        "clusterrolebinding.yaml",
        "role.yaml",
        "rolebinding.yaml",
    ] {
        cluster::apply_yaml(&env.client, &base.join(file), None).await;
    }
    cluster::apply_yaml(
        &env.client,
        &root.join("manifests/policy/validatingadmissionpolicy.yaml"),
        None,
    )
    .await;
    cluster::apply_yaml(
        &env.client,
        &root.join("manifests/optional/restart-on-change/clusterrole.yaml"),
        None,
    )
    .await;
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(env.client.clone());
    for name in POLICIES {
        eventually(
            &format!("policy {name} to be type-checked"),
            WAIT,
            || async {
                let policy = policies.get(name).await.ok()?;
                let status = policy.status?;
                let warnings = status
                    .type_checking
                    .as_ref()
                    .and_then(|t| t.expression_warnings.clone())
                    .unwrap_or_default();
                assert!(
                    warnings.is_empty(),
                    "{name}: the CEL type-checks: {warnings:?}"
                );
                (status.observed_generation == policy.metadata.generation).then_some(())
            },
        )
        .await;
    }
    let app_namespace = env.namespace("app").await;
    let (as_operator, _, dir) = env.as_operator_service_account().await;

    let config_map = |name: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}}))
            .expect("ConfigMap")
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(as_operator.clone(), &app_namespace);
    let kube_system: Api<ConfigMap> = Api::namespaced(as_operator.clone(), "kube-system");
    // The policy takes effect once the apiserver loaded it: retry the first refusal.
    let refusal = eventually(
        "the ConfigMap write to another name to be refused",
        WAIT,
        || async {
            match config_maps
                .create(&PostParams::default(), &config_map("app-settings"))
                .await
            {
                Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
                Ok(_) => {
                    let _ = config_maps
                        .delete("app-settings", &DeleteParams::default())
                        .await;
                    None
                }
                Err(_) => None,
            }
        },
    )
    .await;
    assert!(
        refusal.contains("monasca-sidecar"),
        "the policy's message: {refusal}"
    );
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &app_namespace);
    deployments
        .create(&PostParams::default(), &deployment("app"))
        .await
        .expect("create Deployment");
    let as_operator_deployments: Api<Deployment> =
        Api::namespaced(as_operator.clone(), &app_namespace);
    let merge = |value: serde_json::Value| Patch::Merge(value);
    let refused = [
        (
            "a ConfigMap in kube-system",
            kube_system
                .create(&PostParams::default(), &config_map("coredns-evil"))
                .await
                .map(drop),
        ),
        (
            "another webhook configuration",
            Api::<MutatingWebhookConfiguration>::all(as_operator.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(serde_json::json!({"metadata": {"name": "evil"}}))
                        .expect("MWC"),
                )
                .await
                .map(drop),
        ),
        (
            "a workload's image",
            as_operator_deployments
                .patch(
                    "app",
                    &PatchParams::default(),
                    &merge(
                        serde_json::json!({"spec": {"template": {"spec": {"containers": [
                        {"name": "app", "image": "evil:latest"}]}}}}),
                    ),
                )
                .await
                .map(drop),
        ),
        (
            "a workload's other annotation",
            as_operator_deployments
                .patch(
                    "app",
                    &PatchParams::default(),
                    &merge(
                        serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
                        "other": "x"}}}}}),
                    ),
                )
                .await
                .map(drop),
        ),
    ];
    for (what, result) in refused {
        match result {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{what}: refused with 403, got {status:?}")
            }
            other => panic!("{what}: expected 403, got {other:?}"),
        }
    }
    // What the operator does is allowed.
    config_maps
        .create(
            &PostParams::default(),
            &config_map("default-monasca-sidecar"),
        )
        .await
        .expect("its own ConfigMap");
    config_maps
        .delete("default-monasca-sidecar", &DeleteParams::default())
        .await
        .expect("deleting its own ConfigMap");
    as_operator_deployments
        .patch(
            "app",
            &PatchParams::default(),
            &merge(
                serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
                ANNOTATION_CONFIG_HASH: "abc"}}}}}),
            ),
        )
        .await
        .expect("the restart annotation patch");
    let _ = std::fs::remove_dir_all(dir);
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(env.client.clone())
        .delete(
            "monasca-operator-restart-on-change",
            &DeleteParams::default(),
        )
        .await;
    for name in POLICIES {
        let _ = policies.delete(name, &DeleteParams::default()).await;
        let _ = Api::<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>::all(
            env.client.clone(),
        )
        .delete(name, &DeleteParams::default())
        .await;
    }
}

/// The shipped ValidatingAdmissionPolicies (and their bindings, of the same names).
const POLICIES: [&str; 2] = [
    "monasca-operator-own-objects",
    "monasca-operator-restart-only",
];

/// A client that trusts the webhook configuration's caBundle (re-read for every connection,
/// as the apiserver does) connects to the webhook throughout: the Secret is deleted (a new CA
/// is issued, announced by an Event, old and new CAs trusted together), then the configuration
/// is deleted (recreated), then an admin edits its timeout (kept). Not one handshake fails,
/// and each repair happens without restarting the operator.
async fn repairs_without_failed_handshakes(env: Env) {
    install(&env.client).await;
    let operator_namespace = env.namespace("op").await;
    let args = env.operator_args(&env.kubeconfig, &operator_namespace);
    let operator = args.start().await;
    let first_ca = webhook_ca(&env.client, &operator_namespace).await;
    let addr = webhook_addr(&args);
    let configs: Api<MutatingWebhookConfiguration> = Api::all(env.client.clone());
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &operator_namespace);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client_loop = {
        let (stop, ok, failed, configs) =
            (stop.clone(), ok.clone(), failed.clone(), configs.clone());
        tokio::spawn(async move {
            let mut bundle = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(config)) = configs.get_opt(WEBHOOK_CONFIGURATION_NAME).await
                    && let Some(ca) = config
                        .webhooks
                        .and_then(|w| w.into_iter().next())
                        .and_then(|w| w.client_config.ca_bundle)
                {
                    bundle = ca.0;
                }
                let config = trusting(&bundle);
                let result = tokio::task::spawn_blocking(move || handshake(addr, config).map(drop))
                    .await
                    .expect("handshake task");
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        say(&format!("handshake failed: {e}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // 1. The Secret is deleted: a new CA within seconds, both CAs trusted meanwhile, an Event.
    secrets
        .delete(WEBHOOK_TLS_SECRET_NAME, &DeleteParams::default())
        .await
        .expect("delete the Secret");
    let new_ca = eventually("a new Secret with a new CA", WAIT, || async {
        let secret = secrets.get_opt(WEBHOOK_TLS_SECRET_NAME).await.ok()??;
        let ca = secret.data?.get("ca.crt")?.0.clone();
        (ca != first_ca).then_some(ca)
    })
    .await;
    let bundle = eventually("caBundle to trust the new CA", WAIT, || async {
        let config = configs.get_opt(WEBHOOK_CONFIGURATION_NAME).await.ok()??;
        let bundle = config.webhooks?.first()?.client_config.ca_bundle.clone()?.0;
        let text = String::from_utf8_lossy(&bundle).into_owned();
        text.contains(String::from_utf8_lossy(&new_ca).trim())
            .then_some(text)
    })
    .await;
    assert!(
        bundle.contains(String::from_utf8_lossy(&first_ca).trim()),
        "the old CA stays trusted during the overlap"
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), &operator_namespace);
    let note = eventually("the WebhookCAReissued Event", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("WebhookCAReissued"))
            .and_then(|e| e.note)
    })
    .await;
    assert!(
        note.contains("deleted") && note.contains("new webhook CA"),
        "{note}"
    );
    // The operator serves a certificate from the new CA.
    let only_new = trusting(&new_ca);
    eventually(
        "the served certificate to chain to the new CA",
        WAIT,
        || async {
            let config = only_new.clone();
            tokio::task::spawn_blocking(move || handshake(addr, config).ok().map(drop))
                .await
                .ok()
                .flatten()
        },
    )
    .await;

    // 2. The webhook configuration is deleted: recreated within seconds, trusting the CA.
    configs
        .delete(WEBHOOK_CONFIGURATION_NAME, &DeleteParams::default())
        .await
        .expect("delete the webhook configuration");
    eventually(
        "the webhook configuration to be recreated",
        WAIT,
        || async {
            let config = configs.get_opt(WEBHOOK_CONFIGURATION_NAME).await.ok()??;
            let bundle = config.webhooks?.first()?.client_config.ca_bundle.clone()?.0;
            String::from_utf8_lossy(&bundle)
                .contains(String::from_utf8_lossy(&new_ca).trim())
                .then_some(())
        },
    )
    .await;

    // 3. An admin's edit of another field stays, while the operator re-syncs (the Secret's
    // serving certificate is corrupted to make it write and re-apply).
    configs
        .patch(
            WEBHOOK_CONFIGURATION_NAME,
            &PatchParams::default(),
            &Patch::Json::<()>(json_patch_replace_timeout()),
        )
        .await
        .expect("the admin's edit");
    let mut secret = secrets.get(WEBHOOK_TLS_SECRET_NAME).await.expect("Secret");
    let other = monasca_operator::certs::execute(
        monasca_operator::certs::Plan::Create,
        None,
        &["127.0.0.1".to_string()],
        unix_now(),
    )
    .expect("a foreign bundle")
    .expect("bundle");
    if let Some(data) = secret.data.as_mut() {
        data.insert(
            "tls.key".into(),
            k8s_openapi::ByteString(other.key.into_bytes()),
        );
    }
    secret.metadata.managed_fields = None;
    secrets
        .replace(WEBHOOK_TLS_SECRET_NAME, &PostParams::default(), &secret)
        .await
        .expect("corrupt tls.key");
    eventually("the mismatched key to be replaced", WAIT, || async {
        let secret = secrets.get_opt(WEBHOOK_TLS_SECRET_NAME).await.ok()??;
        let bundle = monasca_operator::certs::Bundle::from_secret(&secret)?;
        monasca_operator::certs::serving_matches(&bundle, &["127.0.0.1".to_string()], unix_now())
            .then_some(())
    })
    .await;
    let config = configs
        .get(WEBHOOK_CONFIGURATION_NAME)
        .await
        .expect("config");
    let hooks = config.webhooks.expect("webhooks");
    assert_eq!(
        hooks[0].timeout_seconds,
        Some(7),
        "the admin's timeout is kept"
    );

    stop.store(true, Ordering::Relaxed);
    client_loop.await.expect("client loop");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    say(&format!(
        "handshakes during the repairs: {ok} ok, {failed} failed"
    ));
    assert!(ok > 10, "the client kept connecting ({ok})");
    assert_eq!(failed, 0, "no handshake failed");
    let metrics = args.metrics().await;
    assert_eq!(
        cluster::sample(
            &metrics,
            "monasca_operator_tls_handshake_failures_total{reason=\"certificate_rejected\"}"
        ),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        cluster::sample(
            &metrics,
            "monasca_operator_certificate_expiry_timestamp_seconds"
        )
        .is_some_and(|t| t > 0.0),
        "{metrics}"
    );
    operator.stop();
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn json_patch_replace_timeout() -> json_patch::Patch {
    serde_json::from_value(serde_json::json!([
        {"op": "replace", "path": "/webhooks/0/timeoutSeconds", "value": 7}
    ]))
    .expect("patch")
}
