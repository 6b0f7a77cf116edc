//! Self-managed webhook certificates and the `MutatingWebhookConfiguration` that trusts them.
//!
//! One CA and one serving certificate live in Secret `monasca-sidecar-webhook-tls` in the
//! operator's namespace: the single source of truth for every replica. A CA per replica (the
//! stackable pitfall) would make replicas overwrite each other's `caBundle` and fail every other
//! handshake. The leader creates the Secret when it is absent, renews the serving certificate at
//! two thirds of its lifetime (a month before it expires), and keeps the webhook configuration's
//! `caBundle` and `clientConfig` right. Every replica watches the Secret and swaps the new
//! certificate into its [`CertResolver`] for new handshakes, without a restart.
//!
//! The decisions ([`plan`], [`renewal_due`], [`webhook_configuration`]) are pure and tested by
//! feeding values in; [`ensure`] and [`watch_secret`] are the I/O around them.

use crate::leader::Leadership;
use crate::webhook::tls::CertResolver;
use crate::{Error, Result};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use monasca_crds::{WEBHOOK_CONFIGURATION_NAME, WEBHOOK_PATH, WEBHOOK_TLS_SECRET_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// Secret keys. `tls.crt`/`tls.key` make it a valid `kubernetes.io/tls` Secret; the CA's key
/// stays beside them so that any future leader can renew the serving certificate.
pub const KEY_CA_CERT: &str = "ca.crt";
pub const KEY_CA_KEY: &str = "ca.key";
pub const KEY_TLS_CERT: &str = "tls.crt";
pub const KEY_TLS_KEY: &str = "tls.key";
/// The CAs replaced by the last CA change, trusted until every replica serves a certificate
/// from the new one (see [`replicas`]).
pub const KEY_PREVIOUS_CA: &str = "ca.previous.crt";

/// The field manager of every write the operator makes (server-side apply and patches).
pub const FIELD_MANAGER: &str = "monasca-operator";
/// The webhook for pods that opt in by their own annotation.
pub const WEBHOOK_NAME: &str = "inject.monasca.openstack.org";
/// The webhook for pods in namespaces that opt in by label (and say nothing themselves).
pub const NAMESPACE_WEBHOOK_NAME: &str = "namespace.inject.monasca.openstack.org";
/// The field manager of the webhook configuration's `clientConfig` (and `caBundle`): the only
/// fields the operator applies, so an admin's edits of any other field stay. A manager of its
/// own: releases that applied the whole object as `monasca-operator` keep that (dormant)
/// ownership, which never reverts anything since that manager no longer applies.
pub const WEBHOOK_FIELD_MANAGER: &str = "monasca-operator-webhook-ca";
/// How often the leader looks at the replicas' reports while old CAs are still trusted: the
/// overlap ends within this of the last replica switching.
const OVERLAP_CHECK: Duration = Duration::from_secs(3);
/// Between trusting a new CA in `caBundle` and serving a certificate from it: the apiserver's
/// webhook configuration cache must have the new bundle before any replica switches.
const CA_PROPAGATION: Duration = Duration::from_secs(2);

/// CA lifetime: long, because replacing the CA briefly breaks trust (see [`Plan::NewCa`]).
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Serving certificate lifetime; renewed after two thirds (60 days), a month before expiry.
const SERVING_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates start this long in the past, for apiservers whose clock is behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// How often the leader re-checks the Secret and the webhook configuration even without a
/// renewal due (someone may have edited or deleted them).
const RECHECK: Duration = Duration::from_secs(10 * 60);
/// How often the leader retries while the webhook configuration is missing and it may not
/// create it (someone may bind the opt-in role meanwhile).
const MISSING_RETRY: Duration = Duration::from_secs(15);
const CA_COMMON_NAME: &str = "monasca-sidecar-webhook-ca";

/// The PEM texts kept in the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
    /// CAs replaced by `ca_cert` (PEM, possibly several; empty when none), still trusted in
    /// `caBundle` so that replicas serving a certificate from them keep working while they
    /// switch. The leader empties it once every replica serves the new certificate
    /// ([`replicas::overlap`]).
    pub previous_cas: String,
}

impl Bundle {
    /// The `caBundle`: the CA, and the previous ones during the overlap.
    pub fn ca_bundle(&self) -> String {
        if !self.previous_cas.trim().is_empty() {
            format!("{}{}", self.ca_cert, self.previous_cas)
        } else {
            self.ca_cert.clone()
        }
    }
}

/// The validity window of a certificate, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// The validity window and the DNS/IP names of the first certificate of a PEM text.
    fn of(pem: &str) -> Result<(Validity, Vec<String>)> {
        use x509_parser::extensions::GeneralName;
        let invalid = |reason: String| Error::Pem {
            path: "<certificate>".into(),
            reason,
        };
        let (_, block) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let cert = block.parse_x509().map_err(|e| invalid(e.to_string()))?;
        let validity = cert.validity();
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.push(dns.to_string()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            names.push(std::net::IpAddr::from(v4).to_string());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            names.push(std::net::IpAddr::from(v6).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok((
            Validity {
                not_before: validity.not_before.timestamp(),
                not_after: validity.not_after.timestamp(),
            },
            names,
        ))
    }
}

/// Whether a certificate valid over `validity` should be replaced at `now`: after two thirds
/// of its lifetime, or when it is not valid at all (expired, or from the future).
pub fn renewal_due(validity: Validity, now: i64) -> bool {
    let lifetime = validity.not_after.saturating_sub(validity.not_before);
    let renew_at = validity.not_before.saturating_add(lifetime / 3 * 2);
    now >= renew_at || now < validity.not_before || lifetime <= 0
}

/// Why the serving certificate is reissued (for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewReason {
    /// Past two thirds of its lifetime.
    Expiring,
    /// It does not cover the names the webhook is reached by (the Service or URL changed).
    Names,
    /// It does not parse or does not match its key or CA.
    Invalid,
}

/// What the leader must do with the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: the Secret is good. Followers and second instances always end here when the
    /// Secret exists and is valid: they never generate their own CA.
    Keep,
    /// No Secret: create a CA and a serving certificate.
    Create,
    /// Issue a new serving certificate from the existing CA.
    RenewServing(RenewReason),
    /// The CA itself is unusable or near expiry: start over. Trust does not break: the old CA
    /// stays in `caBundle` beside the new one until every replica serves the new certificate
    /// (see [`Bundle::ca_bundle`]). Once in about seven years.
    NewCa,
}

/// Decides what to do with the Secret's `bundle` (None: absent) so that it serves `names`.
pub fn plan(bundle: Option<&Bundle>, names: &[String], now: i64) -> Plan {
    let Some(bundle) = bundle else {
        return Plan::Create;
    };
    let ca_ok = Validity::of(&bundle.ca_cert)
        .ok()
        .filter(|(v, _)| !renewal_due(*v, now))
        .is_some()
        && KeyPair::from_pem(&bundle.ca_key).is_ok();
    if !ca_ok {
        return Plan::NewCa;
    }
    match Validity::of(&bundle.cert) {
        Err(_) => Plan::RenewServing(RenewReason::Invalid),
        Ok((validity, _)) if renewal_due(validity, now) => {
            Plan::RenewServing(RenewReason::Expiring)
        }
        Ok((_, covered)) if !names.iter().all(|n| covered.contains(n)) => {
            Plan::RenewServing(RenewReason::Names)
        }
        Ok(_) if !serving_matches(bundle, names, now) => Plan::RenewServing(RenewReason::Invalid),
        Ok(_) => Plan::Keep,
    }
}

/// Whether the serving certificate is usable as the Secret stands: `tls.key` is the key of
/// `tls.crt`, and `tls.crt` chains to `ca.crt` for the first name at `now` (what the apiserver
/// will check, done with the same WebPKI rules).
pub fn serving_matches(bundle: &Bundle, names: &[String], now: i64) -> bool {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    let provider = crate::webhook::tls::provider();
    let Ok(chain) = CertificateDer::pem_slice_iter(bundle.cert.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
    else {
        return false;
    };
    let (Some(leaf), Ok(key), Ok(ca)) = (
        chain.first(),
        PrivateKeyDer::from_pem_slice(bundle.key.as_bytes()),
        CertificateDer::from_pem_slice(bundle.ca_cert.as_bytes()),
    ) else {
        return false;
    };
    if rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider).is_err() {
        return false;
    }
    let mut roots = rustls::RootCertStore::empty();
    let (Ok(()), Some(name), Ok(now)) = (
        roots.add(ca),
        names
            .first()
            .and_then(|n| ServerName::try_from(n.clone()).ok()),
        u64::try_from(now),
    ) else {
        return false;
    };
    let Ok(verifier) =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()
    else {
        return false;
    };
    verifier
        .verify_server_cert(
            leaf,
            &chain[1..],
            &name,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(now)),
        )
        .is_ok()
}

fn at(unix: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| Error::CertTime(e.to_string()))
}

fn window(now: i64, lifetime: Duration) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let start = now.saturating_sub(BACKDATE.as_secs() as i64);
    let end = now.saturating_add(lifetime.as_secs() as i64);
    Ok((at(start)?, at(end)?))
}

/// A new CA (PEM certificate, PEM key).
pub fn generate_ca(now: i64) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = window(now, CA_LIFETIME)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `names` signed by the CA (PEM certificate, PEM key).
pub fn issue_serving(
    ca_cert: &str,
    ca_key: &str,
    names: &[String],
    now: i64,
) -> Result<(String, String)> {
    let issuer = Issuer::from_ca_cert_pem(ca_cert, KeyPair::from_pem(ca_key)?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names
            .first()
            .map(String::as_str)
            .unwrap_or("monasca-operator"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = window(now, SERVING_LIFETIME)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Carries out `plan` on `existing`; `None` when there is nothing to write.
pub fn execute(
    plan: Plan,
    existing: Option<&Bundle>,
    names: &[String],
    now: i64,
) -> Result<Option<Bundle>> {
    let (ca_cert, ca_key) = match (plan, existing) {
        (Plan::Keep, _) => return Ok(None),
        (Plan::RenewServing(_), Some(b)) => (b.ca_cert.clone(), b.ca_key.clone()),
        _ => generate_ca(now)?,
    };
    let (cert, key) = issue_serving(&ca_cert, &ca_key, names, now)?;
    let previous_cas = existing.map(|b| b.previous_cas.clone()).unwrap_or_default();
    Ok(Some(Bundle {
        ca_cert,
        ca_key,
        cert,
        key,
        previous_cas,
    }))
}

/// The CA certificates (PEM blocks) of a `caBundle`.
pub fn pem_blocks(pem: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") {
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END") {
            blocks.push(std::mem::take(&mut current));
        }
    }
    blocks
}

/// The CAs to keep trusting after the CA changes to `new_ca`: those trusted until now (the
/// webhook configuration's bundle, the Secret's old CA) that still parse and are valid at `now`,
/// without duplicates and without `new_ca`.
pub fn previous_cas(trusted: &[String], new_ca: &str, now: i64) -> String {
    let mut kept: Vec<String> = Vec::new();
    for block in trusted.iter().flat_map(|pem| pem_blocks(pem)) {
        let valid =
            Validity::of(&block).is_ok_and(|(v, _)| v.not_before <= now && now < v.not_after);
        if valid && block.trim() != new_ca.trim() && !kept.contains(&block) {
            kept.push(block);
        }
    }
    kept.concat()
}

impl Bundle {
    /// Reads the bundle out of the Secret; `None` when a key is missing or not UTF-8.
    pub fn from_secret(secret: &Secret) -> Option<Bundle> {
        let data = secret.data.as_ref()?;
        let get = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        Some(Bundle {
            ca_cert: get(KEY_CA_CERT)?,
            ca_key: get(KEY_CA_KEY)?,
            cert: get(KEY_TLS_CERT)?,
            key: get(KEY_TLS_KEY)?,
            previous_cas: get(KEY_PREVIOUS_CA).unwrap_or_default(),
        })
    }

    /// The Secret holding this bundle.
    pub fn to_secret(&self, namespace: &str) -> Secret {
        let mut entries = vec![
            (KEY_CA_CERT, &self.ca_cert),
            (KEY_CA_KEY, &self.ca_key),
            (KEY_TLS_CERT, &self.cert),
            (KEY_TLS_KEY, &self.key),
        ];
        if !self.previous_cas.is_empty() {
            entries.push((KEY_PREVIOUS_CA, &self.previous_cas));
        }
        let data = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(WEBHOOK_TLS_SECRET_NAME.into()),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    FIELD_MANAGER.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Secret::default()
        }
    }
}

/// Swaps the Secret's serving certificate into `resolver`: the one code path by which every
/// replica picks up a new certificate. Returns whether the served certificate changed.
pub fn apply_secret(resolver: &CertResolver, secret: &Secret) -> Result<bool> {
    let data = secret.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|v| v.0.as_slice());
    match (get(KEY_TLS_CERT), get(KEY_TLS_KEY)) {
        (Some(cert), Some(key)) => resolver.load_pem(cert, key),
        _ => Err(Error::Pem {
            path: WEBHOOK_TLS_SECRET_NAME.into(),
            reason: format!("Secret lacks {KEY_TLS_CERT} or {KEY_TLS_KEY}"),
        }),
    }
}

/// How the apiserver reaches the webhook.
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

/// What the leader needs to keep certificates and the webhook configuration right.
#[derive(Clone)]
pub struct Manager {
    pub client: Client,
    pub namespace: String,
    pub webhook: WebhookClient,
    /// `false` in cert-manager mode: no Secret, no `caBundle`.
    pub self_managed: bool,
    /// The gauge `monasca_operator_webhook_configuration_missing`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the missing webhook configuration was reported (one Event per deletion).
    pub missing: MissingReport,
}

/// Remembers that a missing webhook configuration was reported, so that the retries while it
/// stays missing add no Event.
#[derive(Clone, Debug, Default)]
pub struct MissingReport(Arc<std::sync::atomic::AtomicBool>);

impl MissingReport {
    /// The configuration is missing: true the first time (report it now).
    fn first_report(&self, metrics: &crate::metrics::Metrics) -> bool {
        metrics.set_webhook_configuration_missing(true);
        !self.0.swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// The configuration exists (again).
    fn found(&self, metrics: &crate::metrics::Metrics) {
        metrics.set_webhook_configuration_missing(false);
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }

    /// Whether it is missing as last seen by the leader.
    pub fn is_missing(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// What to run when the webhook configuration is gone and this operator may not create it. The
/// commands are the install's own (a test checks that the paths exist).
pub fn missing_webhook_configuration_note() -> String {
    format!(
        "MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION_NAME} was deleted and this operator \
         may not create it (no create permission): pods are admitted WITHOUT the sidecar until it \
         is back. Re-apply it: `kubectl apply -f manifests/base/mutatingwebhookconfiguration.yaml` \
         (Helm: `helm upgrade <release> charts/monasca-operator --reuse-values`), or let the \
         operator recreate it: `kubectl apply -k manifests/optional/webhook-recreate/` (Helm: \
         `--set rbac.webhookRecreate=true`)"
    )
}

/// A Warning Event (about the configuration itself, so in namespace `default`) and a log line
/// saying how to restore it. Best effort.
async fn report_missing_webhook_configuration(manager: &Manager) {
    let note = missing_webhook_configuration_note();
    tracing::error!("{note}");
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("admissionregistration.k8s.io/v1".into()),
        kind: Some("MutatingWebhookConfiguration".into()),
        name: Some(WEBHOOK_CONFIGURATION_NAME.into()),
        ..Default::default()
    };
    publish_warning(
        manager,
        &reference,
        "WebhookConfigurationMissing",
        "RecreateWebhookConfiguration",
        note,
    )
    .await;
}

/// Publishes a Warning Event about `reference`. Best effort: a failure is logged.
async fn publish_warning(
    manager: &Manager,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    reason: &str,
    action: &str,
    note: String,
) {
    use kube::runtime::events::{Event, EventType, Recorder};
    let recorder = Recorder::new(manager.client.clone(), crate::controller::reporter());
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason, "cannot publish an Event");
    }
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The CAs the webhook configuration trusts now (PEM), if it exists.
async fn trusted_now(manager: &Manager) -> Result<Option<String>> {
    let api = Api::<MutatingWebhookConfiguration>::all(manager.client.clone());
    Ok(api
        .get_opt(WEBHOOK_CONFIGURATION_NAME)
        .await?
        .and_then(|c| {
            c.webhooks?
                .into_iter()
                .find_map(|w| w.client_config.ca_bundle)
        })
        .map(|b| String::from_utf8_lossy(&b.0).into_owned()))
}

/// One pass of the leader's duties. Creates or renews the Secret as [`plan`] says and keeps the
/// webhook configuration trusting its CA. Returns the bundle now in the Secret.
///
/// A new CA (first start, a deleted Secret, an expiring CA) is trusted in `caBundle` beside the
/// CAs trusted so far **before** the Secret with the certificate it signed is written, so that no
/// replica serves a certificate the apiserver does not trust at any moment.
pub async fn ensure(manager: &Manager, leadership: &Leadership) -> Result<Option<Bundle>> {
    if !manager.self_managed {
        if leadership.is_leader() {
            sync_webhook_configuration(manager, None).await?;
        }
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(manager.client.clone(), &manager.namespace);
    let existing = secrets.get_opt(WEBHOOK_TLS_SECRET_NAME).await?;
    let resource_version = existing
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone());
    let bundle = existing.as_ref().and_then(Bundle::from_secret);
    let names = manager.webhook.names();
    let now = now_unix();
    let decision = plan(bundle.as_ref(), &names, now);
    let mut synced = false;
    let current = match execute(decision, bundle.as_ref(), &names, now)? {
        None => bundle,
        Some(_) if !leadership.is_leader() => return Err(Error::NotLeader),
        Some(mut new) => {
            let ca_changed = bundle.as_ref().is_none_or(|b| b.ca_cert != new.ca_cert);
            let mut reissued_after_loss = false;
            if ca_changed {
                let mut trusted: Vec<String> = trusted_now(manager).await?.into_iter().collect();
                trusted.extend(bundle.as_ref().map(|b| b.ca_cert.clone()));
                new.previous_cas = previous_cas(&trusted, &new.ca_cert, now);
                reissued_after_loss = existing.is_none() && !new.previous_cas.is_empty();
                sync_webhook_configuration(manager, Some(&new.ca_bundle())).await?;
                synced = true;
                if !new.previous_cas.is_empty() {
                    tokio::time::sleep(CA_PROPAGATION).await;
                }
            }
            tracing::info!(plan = ?decision, "writing the webhook certificate Secret");
            let mut secret = new.to_secret(&manager.namespace);
            let written = match existing {
                None => secrets.create(&PostParams::default(), &secret).await?,
                Some(old) => {
                    // Replace with the resourceVersion read above: if another writer got there
                    // first, this fails with 409 and the next pass starts from their Secret.
                    secret.metadata.resource_version = old.metadata.resource_version;
                    secrets
                        .replace(WEBHOOK_TLS_SECRET_NAME, &PostParams::default(), &secret)
                        .await?
                }
            };
            if reissued_after_loss {
                report_new_ca(manager, &written).await;
            }
            Some(new)
        }
    };
    let current = match current {
        Some(bundle)
            if decision == Plan::Keep
                && !bundle.previous_cas.is_empty()
                && leadership.is_leader() =>
        {
            Some(end_overlap_when_switched(manager, &secrets, bundle, resource_version).await?)
        }
        other => other,
    };
    if let Some(bundle) = &current
        && leadership.is_leader()
        && !synced
    {
        sync_webhook_configuration(manager, Some(&bundle.ca_bundle())).await?;
    }
    Ok(current)
}

/// During a CA overlap: once every replica reports serving the Secret's certificate (see
/// [`replicas`]), writes the Secret without the previous CAs (the caller then applies the
/// `caBundle` of the new CA alone). Otherwise changes nothing. Returns the bundle now in force.
async fn end_overlap_when_switched(
    manager: &Manager,
    secrets: &Api<Secret>,
    bundle: Bundle,
    resource_version: Option<String>,
) -> Result<Bundle> {
    let Some(serving) = replicas::pem_fingerprint(&bundle.cert) else {
        return Ok(bundle);
    };
    let reports = replicas::list(&manager.client, &manager.namespace).await?;
    match replicas::overlap(&serving, &reports, now_unix()) {
        replicas::Overlap::Keep { waiting } => {
            tracing::debug!(
                ?waiting,
                "keeping the previous CA in caBundle until every replica serves the new certificate"
            );
            Ok(bundle)
        }
        replicas::Overlap::End => {
            let ended = Bundle {
                previous_cas: String::new(),
                ..bundle
            };
            let mut secret = ended.to_secret(&manager.namespace);
            // A concurrent writer makes this fail (409); the next pass starts from theirs.
            secret.metadata.resource_version = resource_version;
            secrets
                .replace(WEBHOOK_TLS_SECRET_NAME, &PostParams::default(), &secret)
                .await?;
            tracing::info!(
                replicas = reports.len(),
                "every replica serves the new certificate: the previous CA leaves caBundle"
            );
            Ok(ended)
        }
    }
}

/// A Warning Event on the new Secret: the old one was deleted, so its CA (and key) are gone and
/// a new CA was issued. Best effort.
async fn report_new_ca(manager: &Manager, secret: &Secret) {
    use kube::Resource;
    let note = format!(
        "Secret {WEBHOOK_TLS_SECRET_NAME} was deleted: its CA cannot be recovered, so a new webhook \
         CA was issued; caBundle trusts the old and new CAs until every replica serves the new \
         certificate"
    );
    tracing::warn!("{note}");
    publish_warning(
        manager,
        &secret.object_ref(&()),
        "WebhookCAReissued",
        "IssueCertificate",
        note,
    )
    .await;
}

/// How long the leader may sleep before the next [`ensure`].
fn next_check(bundle: Option<&Bundle>, now: i64) -> Duration {
    let until_renewal = bundle
        .and_then(|b| Validity::of(&b.cert).ok())
        .map(|(v, _)| {
            let lifetime = v.not_after - v.not_before;
            let renew_at = v.not_before + lifetime / 3 * 2;
            Duration::from_secs(renew_at.saturating_sub(now).max(1) as u64)
        })
        .unwrap_or(RECHECK);
    let until_overlap_ends = bundle
        .filter(|b| !b.previous_cas.is_empty())
        .map_or(RECHECK, |_| OVERLAP_CHECK);
    until_renewal.min(until_overlap_ends).min(RECHECK)
}

/// The leader's certificate loop: runs [`ensure`] on becoming leader, at each renewal time,
/// every ten minutes, and at once when `recheck` is notified (the Secret or the webhook
/// configuration was deleted or changed: see [`watch_secret`] and
/// [`watch_webhook_configuration`]); idles while this replica is a follower. Ends when the
/// elector is gone.
pub async fn run(manager: Manager, leadership: Leadership, recheck: Arc<Notify>) {
    loop {
        if !leadership.acquired().await {
            return;
        }
        let wait = match ensure(&manager, &leadership).await {
            // Missing and not ours to create: try again soon (the opt-in role may be bound
            // meanwhile; a re-apply wakes us through the watch at once).
            Ok(bundle) if manager.missing.is_missing() => {
                next_check(bundle.as_ref(), now_unix()).min(MISSING_RETRY)
            }
            Ok(bundle) => next_check(bundle.as_ref(), now_unix()),
            Err(Error::NotLeader) => continue,
            Err(e) => {
                tracing::warn!(error = %e, reason = e.metric_label(), "cannot ensure the webhook certificate; retrying");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = recheck.notified() => {}
            _ = leadership.lost() => {}
        }
    }
}

/// Every replica: watches the Secret and loads each new serving certificate into `resolver`.
/// A deletion keeps the certificate being served (the leader writes a new Secret) and wakes the
/// leader through `recheck`, as does any change.
pub async fn watch_secret(
    client: Client,
    namespace: String,
    resolver: Arc<CertResolver>,
    recheck: Arc<Notify>,
) {
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={WEBHOOK_TLS_SECRET_NAME}"));
    let mut stream = std::pin::pin!(watcher(secrets, config).default_backoff());
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                match apply_secret(&resolver, &secret) {
                    Ok(true) => tracing::info!("serving certificate loaded from the Secret"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the webhook Secret holds no usable certificate")
                    }
                }
                recheck.notify_one();
            }
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!(
                    "the webhook Secret was deleted; still serving the certificate loaded"
                );
                recheck.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching the webhook Secret; retrying"),
        }
    }
}

/// Every replica: wakes the leader through `recheck` when the webhook configuration is deleted
/// or changed, so that it is recreated (or reported, without the opt-in `create` permission) or
/// its `clientConfig` restored within seconds, and keeps the gauge
/// `monasca_operator_webhook_configuration_missing` true to what the apiserver has. A metadata
/// watch of the one named object: the same `list`/`watch` on that name the RBAC grants, and no
/// webhook bodies on the wire.
pub async fn watch_webhook_configuration(
    client: Client,
    recheck: Arc<Notify>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let api: Api<kube::core::PartialObjectMeta<MutatingWebhookConfiguration>> = Api::all(client);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={WEBHOOK_CONFIGURATION_NAME}"));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    let mut listed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Delete(_)) => {
                metrics.set_webhook_configuration_missing(true);
                tracing::warn!(
                    "the webhook configuration {WEBHOOK_CONFIGURATION_NAME} was deleted"
                );
                recheck.notify_one();
            }
            Ok(watcher::Event::Apply(_)) => {
                metrics.set_webhook_configuration_missing(false);
                recheck.notify_one();
            }
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitApply(_)) => listed = true,
            Ok(watcher::Event::InitDone) => {
                metrics.set_webhook_configuration_missing(!listed);
                if !listed {
                    tracing::warn!(
                        "the webhook configuration {WEBHOOK_CONFIGURATION_NAME} does not exist"
                    );
                    recheck.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching the webhook configuration; retrying"),
        }
    }
}

pub mod replicas;

#[cfg(test)]
mod tests;
