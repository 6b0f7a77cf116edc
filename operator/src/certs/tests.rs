use super::*;

const DAY: i64 = 24 * 3600;
const NOW: i64 = 1_800_000_000;

fn names() -> Vec<String> {
    WebhookClient::Service {
        namespace: "monasca-system".into(),
        name: "monasca-operator".into(),
        port: 443,
    }
    .names()
}

fn fresh() -> Bundle {
    execute(Plan::Create, None, &names(), NOW)
        .expect("generates")
        .expect("a bundle")
}

#[test]
fn renewal_is_due_after_two_thirds_of_the_lifetime() {
    let v = Validity {
        not_before: 0,
        not_after: 90 * DAY,
    };
    assert!(!renewal_due(v, 0));
    assert!(!renewal_due(v, 59 * DAY));
    assert!(renewal_due(v, 60 * DAY));
    assert!(renewal_due(v, 100 * DAY), "expired");
    assert!(renewal_due(v, -1), "not yet valid");
}

#[test]
fn missing_secret_is_created_and_a_valid_one_is_kept() {
    assert_eq!(plan(None, &names(), NOW), Plan::Create);
    let bundle = fresh();
    assert_eq!(plan(Some(&bundle), &names(), NOW), Plan::Keep);
    assert_eq!(plan(Some(&bundle), &names(), NOW + 59 * DAY), Plan::Keep);
}

#[test]
fn serving_certificate_is_renewed_from_the_same_ca() {
    let bundle = fresh();
    let later = NOW + 61 * DAY;
    let decision = plan(Some(&bundle), &names(), later);
    assert_eq!(decision, Plan::RenewServing(RenewReason::Expiring));
    let renewed = execute(decision, Some(&bundle), &names(), later)
        .expect("renews")
        .expect("a bundle");
    assert_eq!(renewed.ca_cert, bundle.ca_cert, "the CA is kept");
    assert_ne!(renewed.cert, bundle.cert);
    assert_eq!(plan(Some(&renewed), &names(), later), Plan::Keep);
}

#[test]
fn new_names_reissue_the_serving_certificate() {
    let bundle = fresh();
    let url = WebhookClient::Url("https://127.0.0.1:8443/mutate".into());
    assert_eq!(url.names(), vec!["127.0.0.1".to_string()]);
    assert_eq!(
        plan(Some(&bundle), &url.names(), NOW),
        Plan::RenewServing(RenewReason::Names)
    );
}

#[test]
fn url_mode_certificate_covers_an_ip_host() {
    let url = WebhookClient::Url("https://172.18.0.1:9443/mutate".into());
    let bundle = execute(Plan::Create, None, &url.names(), NOW)
        .expect("generates")
        .expect("bundle");
    let (_, covered) = Validity::of(&bundle.cert).expect("parses");
    assert_eq!(covered, vec!["172.18.0.1".to_string()]);
    assert_eq!(plan(Some(&bundle), &url.names(), NOW), Plan::Keep);
}

#[test]
fn broken_or_expiring_ca_starts_over() {
    let mut bundle = fresh();
    assert_eq!(plan(Some(&bundle), &names(), NOW + 3000 * DAY), Plan::NewCa);
    bundle.ca_key = "garbage".into();
    assert_eq!(plan(Some(&bundle), &names(), NOW), Plan::NewCa);
}

#[test]
fn a_key_that_is_not_the_certificates_or_a_certificate_from_another_ca_is_reissued() {
    let bundle = fresh();
    let other = fresh();
    let mut wrong_key = bundle.clone();
    wrong_key.key = other.key.clone();
    assert_eq!(
        plan(Some(&wrong_key), &names(), NOW),
        Plan::RenewServing(RenewReason::Invalid)
    );
    let mut foreign = bundle.clone();
    foreign.cert = other.cert.clone();
    foreign.key = other.key.clone();
    assert_eq!(
        plan(Some(&foreign), &names(), NOW),
        Plan::RenewServing(RenewReason::Invalid),
        "tls.crt does not chain to ca.crt"
    );
    let reissued = execute(
        plan(Some(&foreign), &names(), NOW),
        Some(&foreign),
        &names(),
        NOW,
    )
    .expect("issues")
    .expect("bundle");
    assert!(serving_matches(&reissued, &names(), NOW));
    assert_eq!(plan(Some(&reissued), &names(), NOW), Plan::Keep);
}

#[test]
fn ca_bundle_keeps_previous_cas_until_they_are_emptied() {
    let old = fresh();
    let mut new = fresh();
    let previous = previous_cas(
        &[
            format!("{}{}", old.ca_cert, new.ca_cert),
            old.ca_cert.clone(),
            "garbage".into(),
        ],
        &new.ca_cert,
        NOW,
    );
    assert_eq!(
        pem_blocks(&previous),
        vec![old.ca_cert.clone()],
        "deduplicated, new CA and garbage dropped"
    );
    new.previous_cas = previous;
    assert_eq!(
        pem_blocks(&new.ca_bundle()),
        vec![new.ca_cert.clone(), old.ca_cert.clone()]
    );
    let secret = new.to_secret("monasca-system");
    assert_eq!(
        Bundle::from_secret(&secret),
        Some(new.clone()),
        "the overlap survives a restart"
    );
    // The overlap ends by emptying the previous CAs (once every replica switched: see
    // `replicas::overlap`), never by a clock.
    new.previous_cas.clear();
    assert_eq!(new.ca_bundle(), new.ca_cert);
    assert!(
        !new.to_secret("monasca-system")
            .data
            .expect("data")
            .contains_key(KEY_PREVIOUS_CA)
    );
}

#[test]
fn only_a_wrong_client_config_is_applied_and_nothing_else() {
    let client = WebhookClient::Url("https://127.0.0.1:8443/mutate".into());
    let mut existing = webhook_configuration(&client, Some("PEM"), "ops");
    assert_eq!(
        client_config_patch(&existing, &client, Some("PEM")),
        None,
        "already right"
    );
    // An admin's edits elsewhere are not ours to revert.
    if let Some(hooks) = existing.webhooks.as_mut() {
        hooks[0].timeout_seconds = Some(10);
        hooks[0].object_selector = Some(Default::default());
        hooks.truncate(1);
    }
    assert_eq!(client_config_patch(&existing, &client, Some("PEM")), None);
    let patch = client_config_patch(&existing, &client, Some("NEW")).expect("caBundle changed");
    assert_eq!(
        patch["webhooks"],
        serde_json::json!([{"name": WEBHOOK_NAME,
            "clientConfig": {"url": "https://127.0.0.1:8443/mutate", "caBundle": "TkVX"}}]),
        "only clientConfig, only for the webhooks still there"
    );
}

#[test]
fn switching_from_service_to_url_removes_the_service() {
    let service = WebhookClient::Service {
        namespace: "monasca-system".into(),
        name: "monasca-operator".into(),
        port: 443,
    };
    let url = WebhookClient::Url("https://127.0.0.1:8443/mutate".into());
    let shipped = webhook_configuration(&service, None, "monasca-system");
    assert_eq!(registration_switch(&shipped, &service), None);
    let patch = registration_switch(&shipped, &url).expect("a switch");
    let mut value = serde_json::to_value(&shipped).expect("json");
    let patch: json_patch::Patch = serde_json::from_value(patch).expect("patch");
    json_patch::patch(&mut value, &patch).expect("applies");
    for hook in value["webhooks"].as_array().expect("webhooks") {
        assert_eq!(
            hook["clientConfig"],
            serde_json::json!({"url": "https://127.0.0.1:8443/mutate"})
        );
    }
}

#[test]
fn secret_round_trips_the_bundle() {
    let bundle = fresh();
    let secret = bundle.to_secret("monasca-system");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some(WEBHOOK_TLS_SECRET_NAME)
    );
    assert_eq!(Bundle::from_secret(&secret), Some(bundle));
}

#[test]
fn webhook_configuration_in_cluster_uses_the_service() {
    let client = WebhookClient::Service {
        namespace: "monasca-system".into(),
        name: "monasca-operator".into(),
        port: 443,
    };
    let config = webhook_configuration(&client, Some("PEM"), "monasca-system");
    let value = serde_json::to_value(&config).expect("serializes");
    assert_eq!(value["metadata"]["name"], "monasca-sidecar-injector");
    let hook = &value["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
    assert_eq!(hook["timeoutSeconds"], 3);
    assert_eq!(
        hook["matchConditions"][0]["expression"],
        pod_opt_in_condition()
    );
    let namespace_hook = &value["webhooks"][1];
    assert_eq!(namespace_hook["name"], NAMESPACE_WEBHOOK_NAME);
    assert_eq!(
        namespace_hook["namespaceSelector"]["matchExpressions"][1],
        serde_json::json!({"key": "monasca.openstack.org/inject", "operator": "Exists"})
    );
    assert_eq!(namespace_hook["clientConfig"], hook["clientConfig"]);
    assert_eq!(
        hook["rules"][0]["operations"],
        serde_json::json!(["CREATE", "UPDATE"])
    );
    assert_eq!(hook["rules"][0]["resources"], serde_json::json!(["pods"]));
    assert_eq!(
        hook["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["kube-system", "monasca-system"])
    );
    assert_eq!(
        hook["clientConfig"]["service"],
        serde_json::json!({"namespace": "monasca-system", "name": "monasca-operator",
                           "path": "/mutate", "port": 443})
    );
    assert!(hook["clientConfig"].get("url").is_none());
    // caBundle is []byte: base64 on the wire.
    assert_eq!(hook["clientConfig"]["caBundle"], "UEVN");
    assert!(hook.get("objectSelector").is_none(), "left to the user");
}

#[test]
fn webhook_configuration_out_of_cluster_uses_the_url_and_cert_manager_mode_owns_no_ca() {
    let client = WebhookClient::Url("https://127.0.0.1:8443/mutate".into());
    let value = serde_json::to_value(webhook_configuration(&client, None, "ops")).expect("json");
    let cc = &value["webhooks"][0]["clientConfig"];
    assert_eq!(cc["url"], "https://127.0.0.1:8443/mutate");
    assert!(cc.get("service").is_none());
    assert!(cc.get("caBundle").is_none());
}

#[test]
fn apply_secret_swaps_only_new_certificates() {
    let bundle = fresh();
    let resolver = CertResolver::empty(None);
    assert!(!resolver.is_loaded());
    let secret = bundle.to_secret("ns");
    assert!(apply_secret(&resolver, &secret).expect("loads"));
    assert!(resolver.is_loaded());
    assert!(!apply_secret(&resolver, &secret).expect("same"), "no-op");
    let mut broken = secret.clone();
    broken.data.as_mut().map(|d| d.remove(KEY_TLS_KEY));
    assert!(apply_secret(&resolver, &broken).is_err());
    assert!(resolver.is_loaded(), "the previous certificate stays");
}

mod api {
    use super::*;
    use crate::controller::fixtures::{BodyCheck, Expect, mock_client};
    use http::{Method, StatusCode};
    use serde_json::{Value, json};

    const SECRET_URI: &str =
        "/api/v1/namespaces/monasca-system/secrets/monasca-sidecar-webhook-tls";
    const WEBHOOK_GET: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/monasca-sidecar-injector";
    const WEBHOOK_APPLY: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/monasca-sidecar-injector?&force=true&fieldManager=monasca-operator-webhook-ca";
    const WEBHOOK_CREATE: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations?&fieldManager=monasca-operator";

    fn service() -> WebhookClient {
        WebhookClient::Service {
            namespace: "monasca-system".into(),
            name: "monasca-operator".into(),
            port: 443,
        }
    }

    fn secret_json(bundle: &Bundle) -> Value {
        let mut value = serde_json::to_value(bundle.to_secret("monasca-system")).expect("json");
        value["apiVersion"] = json!("v1");
        value["kind"] = json!("Secret");
        value["metadata"]["resourceVersion"] = json!("7");
        value
    }

    fn webhook_body(ca: &str) -> Value {
        let mut value = serde_json::to_value(webhook_configuration(
            &service(),
            Some(ca),
            "monasca-system",
        ))
        .expect("json");
        value["apiVersion"] = json!("admissionregistration.k8s.io/v1");
        value["kind"] = json!("MutatingWebhookConfiguration");
        value
    }

    async fn run(leader: bool, expected: Vec<Expect>) -> Result<Option<Bundle>> {
        run_with(leader, expected, Arc::default(), MissingReport::default()).await
    }

    /// [`run`] with the gauge and report state kept by the caller across runs.
    async fn run_with(
        leader: bool,
        expected: Vec<Expect>,
        metrics: Arc<crate::metrics::Metrics>,
        missing: MissingReport,
    ) -> Result<Option<Bundle>> {
        let (client, verifier) = mock_client();
        let apiserver = verifier.run(expected);
        let manager = Manager {
            client,
            namespace: "monasca-system".into(),
            webhook: service(),
            self_managed: true,
            metrics,
            missing,
        };
        let (tx, leadership) = Leadership::channel(leader);
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ensure(&manager, &leadership),
        )
        .await
        .expect("in time");
        drop((manager, tx));
        apiserver.await.expect("apiserver scenario passed");
        result
    }

    #[tokio::test]
    async fn existing_secret_is_used_and_only_the_webhook_configuration_applied() {
        // A second instance (or a restarted leader) finds the Secret: no new CA, no write to
        // the Secret, and the caBundle is that Secret's CA.
        let bundle = execute(Plan::Create, None, &service().names(), now_unix())
            .expect("generates")
            .expect("bundle");
        let client_config = webhook_body(&bundle.ca_cert)["webhooks"][0]["clientConfig"].clone();
        let result = run(
            true,
            vec![
                Expect::new(
                    Method::GET,
                    SECRET_URI,
                    BodyCheck::None,
                    secret_json(&bundle),
                ),
                // The configuration trusts an old CA: only clientConfig is applied.
                Expect::new(
                    Method::GET,
                    WEBHOOK_GET,
                    BodyCheck::None,
                    webhook_body("OLD"),
                ),
                Expect::new(
                    Method::PATCH,
                    WEBHOOK_APPLY,
                    BodyCheck::Exact(json!({
                        "apiVersion": "admissionregistration.k8s.io/v1",
                        "kind": "MutatingWebhookConfiguration",
                        "metadata": {"name": "monasca-sidecar-injector"},
                        "webhooks": [
                            {"name": WEBHOOK_NAME, "clientConfig": client_config.clone()},
                            {"name": NAMESPACE_WEBHOOK_NAME, "clientConfig": client_config},
                        ],
                    })),
                    Value::Null,
                ),
            ],
        )
        .await;
        assert_eq!(result.expect("ensured"), Some(bundle));
    }

    #[tokio::test]
    async fn follower_reads_but_never_writes() {
        let bundle = execute(Plan::Create, None, &service().names(), now_unix())
            .expect("generates")
            .expect("bundle");
        let result = run(
            false,
            vec![Expect::new(
                Method::GET,
                SECRET_URI,
                BodyCheck::None,
                secret_json(&bundle),
            )],
        )
        .await;
        assert_eq!(result.expect("read"), Some(bundle));
    }

    #[tokio::test]
    async fn missing_secret_is_created_then_trusted_by_the_webhook_configuration() {
        let result = run(
            true,
            vec![
                Expect::new(Method::GET, SECRET_URI, BodyCheck::None, Value::Null)
                    .failing(StatusCode::NOT_FOUND, "NotFound"),
                // Nothing was trusted before: nothing to keep in the bundle. The configuration
                // is absent: created whole (before the Secret), then found right.
                Expect::new(Method::GET, WEBHOOK_GET, BodyCheck::None, Value::Null)
                    .failing(StatusCode::NOT_FOUND, "NotFound"),
                Expect::new(Method::GET, WEBHOOK_GET, BodyCheck::None, Value::Null)
                    .failing(StatusCode::NOT_FOUND, "NotFound"),
                Expect::new(
                    Method::POST,
                    WEBHOOK_CREATE,
                    BodyCheck::Subset(json!({
                        "metadata": {"name": "monasca-sidecar-injector"},
                    })),
                    Value::Null,
                ),
                Expect::new(
                    Method::POST,
                    "/api/v1/namespaces/monasca-system/secrets?",
                    BodyCheck::Subset(json!({
                        "metadata": {"name": "monasca-sidecar-webhook-tls",
                                     "namespace": "monasca-system"},
                        "type": "kubernetes.io/tls",
                    })),
                    Value::Null,
                ),
            ],
        )
        .await;
        let bundle = result.expect("created").expect("bundle");
        assert_eq!(
            plan(Some(&bundle), &service().names(), now_unix()),
            Plan::Keep
        );
    }

    /// The default RBAC: the configuration is gone and `create` is refused. The leader keeps the
    /// Secret, reports once (a Warning Event about the configuration, the gauge), and the
    /// retries while it stays missing report nothing more.
    #[tokio::test]
    async fn a_missing_webhook_configuration_it_may_not_create_is_reported_once() {
        let bundle = execute(Plan::Create, None, &service().names(), now_unix())
            .expect("generates")
            .expect("bundle");
        let attempt = |event: bool| {
            let mut expected = vec![
                Expect::new(
                    Method::GET,
                    SECRET_URI,
                    BodyCheck::None,
                    secret_json(&bundle),
                ),
                Expect::new(Method::GET, WEBHOOK_GET, BodyCheck::None, Value::Null)
                    .failing(StatusCode::NOT_FOUND, "NotFound"),
                Expect::new(
                    Method::POST,
                    WEBHOOK_CREATE,
                    BodyCheck::Subset(json!({"metadata": {"name": "monasca-sidecar-injector"}})),
                    Value::Null,
                )
                .failing(StatusCode::FORBIDDEN, "Forbidden"),
            ];
            if event {
                expected.push(Expect::new(
                    Method::POST,
                    "/apis/events.k8s.io/v1/namespaces/default/events?",
                    BodyCheck::Subset(json!({
                        "type": "Warning",
                        "reason": "WebhookConfigurationMissing",
                        "regarding": {"kind": "MutatingWebhookConfiguration",
                                      "name": "monasca-sidecar-injector"},
                    })),
                    Value::Null,
                ));
            }
            expected
        };
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let missing = MissingReport::default();
        for event in [true, false] {
            let result = run_with(true, attempt(event), metrics.clone(), missing.clone()).await;
            assert_eq!(result.expect("not an error"), Some(bundle.clone()));
            assert!(missing.is_missing());
            assert!(
                metrics
                    .render()
                    .contains("\nmonasca_operator_webhook_configuration_missing 1\n")
            );
        }
    }
}

#[test]
fn shipped_webhook_configuration_matches_the_one_the_operator_creates() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/base/mutatingwebhookconfiguration.yaml"
    );
    let text = std::fs::read_to_string(path).expect("manifest");
    let shipped: MutatingWebhookConfiguration = serde_saphyr::from_str(&text).expect("parses");
    let client = WebhookClient::Service {
        namespace: "monasca-system".into(),
        name: "monasca-operator".into(),
        port: 443,
    };
    let created = webhook_configuration(&client, None, "monasca-system");
    assert_eq!(shipped.webhooks, created.webhooks);
}

#[test]
fn the_missing_webhook_advice_names_files_of_this_repository() {
    let note = missing_webhook_configuration_note();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for path in [
        "manifests/base/mutatingwebhookconfiguration.yaml",
        "manifests/optional/webhook-recreate/kustomization.yaml",
        "charts/monasca-operator/Chart.yaml",
    ] {
        assert!(
            std::path::Path::new(root).join(path).is_file(),
            "{path} exists"
        );
    }
    for command in [
        "kubectl apply -f manifests/base/mutatingwebhookconfiguration.yaml",
        "kubectl apply -k manifests/optional/webhook-recreate/",
        "rbac.webhookRecreate=true",
    ] {
        assert!(note.contains(command), "{note}");
    }
    let values = std::fs::read_to_string(format!("{root}/charts/monasca-operator/values.yaml"))
        .expect("values.yaml");
    assert!(
        values.contains("webhookRecreate: false"),
        "the chart value exists, off"
    );
}
