//! The `MutatingWebhookConfiguration`: how the apiserver reaches the webhook
//! ([`WebhookClient`]), which pods and namespaces it sends ([`webhook_configuration`]), and
//! the server-side apply that keeps its `caBundle` and `clientConfig` right
//! ([`sync_webhook_configuration`]).

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookClient {
    /// In-cluster: through a Service in the operator's namespace.
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
    /// Out-of-cluster (development, tests): a URL such as `https://127.0.0.1:8443/mutate`.
    Url(String),
}

impl WebhookClient {
    /// The DNS names (and IPs) the serving certificate must cover.
    pub fn names(&self) -> Vec<String> {
        match self {
            WebhookClient::Service {
                namespace, name, ..
            } => vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
            ],
            WebhookClient::Url(url) => url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
                .into_iter()
                .collect(),
        }
    }

    fn client_config(&self, ca_bundle: Option<&str>) -> WebhookClientConfig {
        let ca_bundle = ca_bundle.map(|pem| ByteString(pem.as_bytes().to_vec()));
        match self {
            WebhookClient::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                ca_bundle,
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(WEBHOOK_PATH.into()),
                    port: Some(*port),
                }),
                url: None,
            },
            WebhookClient::Url(url) => WebhookClientConfig {
                ca_bundle,
                service: None,
                url: Some(url.clone()),
            },
        }
    }
}

/// The label (and annotation) key pods and namespaces opt in with.
const INJECT_KEY: &str = monasca_crds::ANNOTATION_INJECT;

/// The CEL condition of the pod webhook: the pod's own annotation asks for injection.
pub fn pod_opt_in_condition() -> String {
    format!(
        "has(object.metadata.annotations) && '{INJECT_KEY}' in object.metadata.annotations && \
         object.metadata.annotations['{INJECT_KEY}'] != 'false'"
    )
}

/// The CEL condition of the namespace webhook: the pod says nothing itself (the pod webhook
/// handles pods that do, and a pod's `"false"` wins over its namespace).
pub fn pod_silent_condition() -> String {
    format!("!has(object.metadata.annotations) || !('{INJECT_KEY}' in object.metadata.annotations)")
}

/// The webhook configuration the operator creates when it is absent (out-of-cluster, or
/// deleted), the same as `manifests/base/mutatingwebhookconfiguration.yaml`. Two webhooks, so
/// that the apiserver calls the operator only for pods that opted in: one matched by the pod
/// annotation (`matchConditions`), one by the namespace label (`namespaceSelector`). Neither is
/// called for `kube-system` or the operator's namespace. `ca_bundle` is `None` in cert-manager
/// mode (cert-manager's CA injector owns it).
pub fn webhook_configuration(
    client: &WebhookClient,
    ca_bundle: Option<&str>,
    operator_namespace: &str,
) -> MutatingWebhookConfiguration {
    use k8s_openapi::api::admissionregistration::v1::MatchCondition;
    let excluded = LabelSelectorRequirement {
        key: "kubernetes.io/metadata.name".into(),
        operator: "NotIn".into(),
        values: Some(vec![
            crate::inject::KUBE_SYSTEM.to_string(),
            operator_namespace.to_string(),
        ]),
    };
    let webhook =
        |name: &str, selector: Vec<LabelSelectorRequirement>, condition: (&str, String)| {
            MutatingWebhook {
                name: name.into(),
                admission_review_versions: vec!["v1".into()],
                client_config: client.client_config(ca_bundle),
                failure_policy: Some("Ignore".into()),
                side_effects: "None".into(),
                reinvocation_policy: Some("IfNeeded".into()),
                // Admission answers in microseconds from memory; 3 s covers a cold connection. A
                // replica that cannot answer sheds at once (see `server::Limits`), so this bounds
                // only a dead endpoint's cost to pod creation.
                timeout_seconds: Some(3),
                match_policy: Some("Equivalent".into()),
                namespace_selector: Some(LabelSelector {
                    match_expressions: Some(selector),
                    match_labels: None,
                }),
                match_conditions: Some(vec![MatchCondition {
                    name: condition.0.into(),
                    expression: condition.1,
                }]),
                rules: Some(vec![RuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".into()]),
                    operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                    resources: Some(vec!["pods".into()]),
                    scope: Some("Namespaced".into()),
                }]),
                ..MutatingWebhook::default()
            }
        };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(WEBHOOK_CONFIGURATION_NAME.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                FIELD_MANAGER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            webhook(
                WEBHOOK_NAME,
                vec![excluded.clone()],
                ("pod-opted-in", pod_opt_in_condition()),
            ),
            webhook(
                NAMESPACE_WEBHOOK_NAME,
                vec![
                    excluded,
                    LabelSelectorRequirement {
                        key: INJECT_KEY.into(),
                        operator: "Exists".into(),
                        values: None,
                    },
                    LabelSelectorRequirement {
                        key: INJECT_KEY.into(),
                        operator: "NotIn".into(),
                        values: Some(vec![monasca_crds::INJECT_FALSE.into()]),
                    },
                ],
                ("pod-silent", pod_silent_condition()),
            ),
        ]),
    }
}

/// What the operator applies to an existing webhook configuration: for each of its webhooks
/// present there (an admin may have removed one), the `clientConfig` alone, or nothing when it
/// is already right.
pub fn client_config_patch(
    existing: &MutatingWebhookConfiguration,
    client: &WebhookClient,
    ca_bundle: Option<&str>,
) -> Option<serde_json::Value> {
    let desired = client.client_config(ca_bundle);
    let ours: Vec<&MutatingWebhook> = existing
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.name == WEBHOOK_NAME || w.name == NAMESPACE_WEBHOOK_NAME)
        .collect();
    let right = |w: &MutatingWebhook| {
        w.client_config.service == desired.service
            && w.client_config.url == desired.url
            && (ca_bundle.is_none() || w.client_config.ca_bundle == desired.ca_bundle)
    };
    if ours.iter().all(|w| right(w)) {
        return None;
    }
    let webhooks: Vec<serde_json::Value> = ours
        .iter()
        .map(|w| serde_json::json!({"name": w.name, "clientConfig": desired}))
        .collect();
    Some(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION_NAME},
        "webhooks": webhooks,
    }))
}

/// A JSON patch that switches our webhooks between Service and URL registration (removing the
/// other field, which another manager may own, so server-side apply alone cannot: both would
/// remain and the object would be invalid). `None` when no webhook needs the switch.
pub fn registration_switch(
    existing: &MutatingWebhookConfiguration,
    client: &WebhookClient,
) -> Option<serde_json::Value> {
    let desired = client.client_config(None);
    let mut ops = Vec::new();
    for (i, hook) in existing.webhooks.iter().flatten().enumerate() {
        let ours = hook.name == WEBHOOK_NAME || hook.name == NAMESPACE_WEBHOOK_NAME;
        let (has_service, has_url) = (
            hook.client_config.service.is_some(),
            hook.client_config.url.is_some(),
        );
        if !ours || (has_service == desired.service.is_some() && has_url == desired.url.is_some()) {
            continue;
        }
        let at = format!("/webhooks/{i}/clientConfig");
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": hook.name}));
        if has_service {
            ops.push(serde_json::json!({"op": "remove", "path": format!("{at}/service")}));
        }
        if has_url {
            ops.push(serde_json::json!({"op": "remove", "path": format!("{at}/url")}));
        }
        match (&desired.service, &desired.url) {
            (Some(service), _) => ops.push(
                serde_json::json!({"op": "add", "path": format!("{at}/service"), "value": service}),
            ),
            (_, Some(url)) => ops
                .push(serde_json::json!({"op": "add", "path": format!("{at}/url"), "value": url})),
            _ => {}
        }
    }
    (!ops.is_empty()).then_some(serde_json::Value::Array(ops))
}

/// Keeps the webhook configuration's `clientConfig` (and `caBundle`) right: creates the whole
/// object when it is absent, else server-side applies only those fields with its own field
/// manager ([`WEBHOOK_FIELD_MANAGER`]), never reverting an admin's edits of selectors,
/// conditions, timeouts or policies. Returns the `caBundle` PEM it found there before.
pub async fn sync_webhook_configuration(
    manager: &Manager,
    ca_bundle: Option<&str>,
) -> Result<Option<String>> {
    let api = Api::<MutatingWebhookConfiguration>::all(manager.client.clone());
    let Some(existing) = api.get_opt(WEBHOOK_CONFIGURATION_NAME).await? else {
        tracing::info!("creating the webhook configuration {WEBHOOK_CONFIGURATION_NAME}");
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let created = api
            .create(
                &params,
                &webhook_configuration(&manager.webhook, ca_bundle, &manager.namespace),
            )
            .await;
        match created {
            Ok(_) => {
                manager.missing.found(&manager.metrics);
                tracing::info!("recreated the webhook configuration {WEBHOOK_CONFIGURATION_NAME}");
            }
            // The default RBAC grants no `create` here (the manifests ship the object): report
            // it, and go on with the Secret; the watch wakes us when someone re-applies it.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                if manager.missing.first_report(&manager.metrics) {
                    report_missing_webhook_configuration(manager).await;
                }
            }
            Err(e) => return Err(e.into()),
        }
        return Ok(None);
    };
    manager.missing.found(&manager.metrics);
    let before = existing
        .webhooks
        .iter()
        .flatten()
        .find_map(|w| w.client_config.ca_bundle.as_ref())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    if let Some(switch) = registration_switch(&existing, &manager.webhook) {
        tracing::info!("switching the webhook registration between Service and URL");
        let patch: json_patch::Patch = serde_json::from_value(switch).map_err(Error::Json)?;
        api.patch(
            WEBHOOK_CONFIGURATION_NAME,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?;
    }
    if let Some(patch) = client_config_patch(&existing, &manager.webhook, ca_bundle) {
        tracing::info!("updating the webhook configuration's clientConfig");
        api.patch(
            WEBHOOK_CONFIGURATION_NAME,
            &PatchParams::apply(WEBHOOK_FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    Ok(before)
}
