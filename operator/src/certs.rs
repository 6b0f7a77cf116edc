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

/// Secret keys. `tls.crt`/`tls.key` make it a valid `kubernetes.io/tls` Secret; the CA's key
/// stays beside them so that any future leader can renew the serving certificate.
pub const KEY_CA_CERT: &str = "ca.crt";
pub const KEY_CA_KEY: &str = "ca.key";
pub const KEY_TLS_CERT: &str = "tls.crt";
pub const KEY_TLS_KEY: &str = "tls.key";

/// The field manager of every write the operator makes (server-side apply and patches).
pub const FIELD_MANAGER: &str = "monasca-operator";
/// The name of the one webhook inside the configuration.
pub const WEBHOOK_NAME: &str = "inject.monasca.openstack.org";

/// CA lifetime: long, because replacing the CA briefly breaks trust (see [`Plan::NewCa`]).
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Serving certificate lifetime; renewed after two thirds (60 days), a month before expiry.
const SERVING_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates start this long in the past, for apiservers whose clock is behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// How often the leader re-checks the Secret and the webhook configuration even without a
/// renewal due (someone may have edited or deleted them).
const RECHECK: Duration = Duration::from_secs(10 * 60);
const CA_COMMON_NAME: &str = "monasca-sidecar-webhook-ca";

/// The PEM texts kept in the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
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
    /// The CA itself is unusable or near expiry: start over. Trust breaks for the seconds
    /// between the webhook configuration update and the replicas loading the new certificate;
    /// with `failurePolicy: Ignore` pods are admitted uninjected meanwhile (and counted in
    /// `uninjectedPods`). Once in about seven years.
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
        Ok(_) if KeyPair::from_pem(&bundle.key).is_err() => {
            Plan::RenewServing(RenewReason::Invalid)
        }
        Ok(_) => Plan::Keep,
    }
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
    Ok(Some(Bundle {
        ca_cert,
        ca_key,
        cert,
        key,
    }))
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
        })
    }

    /// The Secret holding this bundle.
    pub fn to_secret(&self, namespace: &str) -> Secret {
        let data = [
            (KEY_CA_CERT, &self.ca_cert),
            (KEY_CA_KEY, &self.ca_key),
            (KEY_TLS_CERT, &self.cert),
            (KEY_TLS_KEY, &self.key),
        ]
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

/// The webhook configuration the operator keeps applied. `ca_bundle` is `None` in cert-manager
/// mode: the operator then does not own `caBundle`, so cert-manager's CA injector (annotation
/// `cert-manager.io/inject-ca-from`) can manage it without the two fighting.
pub fn webhook_configuration(
    client: &WebhookClient,
    ca_bundle: Option<&str>,
    operator_namespace: &str,
) -> MutatingWebhookConfiguration {
    let excluded = vec![
        crate::inject::KUBE_SYSTEM.to_string(),
        operator_namespace.to_string(),
    ];
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(WEBHOOK_CONFIGURATION_NAME.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                FIELD_MANAGER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: client.client_config(ca_bundle),
            failure_policy: Some("Ignore".into()),
            side_effects: "None".into(),
            reinvocation_policy: Some("IfNeeded".into()),
            timeout_seconds: Some(5),
            match_policy: Some("Equivalent".into()),
            // The apiserver does not even call us for these namespaces (the webhook also skips
            // them, for configurations edited by hand).
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "NotIn".into(),
                    values: Some(excluded),
                }]),
                match_labels: None,
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            ..MutatingWebhook::default()
        }]),
    }
}

/// Server-side applies the webhook configuration (creating it when absent). Fields the operator
/// does not set (an `objectSelector` a user added) are left alone.
pub async fn apply_webhook_configuration(
    client: &Client,
    configuration: &MutatingWebhookConfiguration,
) -> Result<()> {
    let mut value = serde_json::to_value(configuration).map_err(Error::Json)?;
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "apiVersion".into(),
            "admissionregistration.k8s.io/v1".into(),
        );
        object.insert("kind".into(), "MutatingWebhookConfiguration".into());
    }
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            WEBHOOK_CONFIGURATION_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(value),
        )
        .await?;
    Ok(())
}

/// What the leader needs to keep certificates and the webhook configuration right.
#[derive(Clone)]
pub struct Manager {
    pub client: Client,
    pub namespace: String,
    pub webhook: WebhookClient,
    /// `false` in cert-manager mode: no Secret, no `caBundle`.
    pub self_managed: bool,
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// One pass of the leader's duties. Creates or renews the Secret as [`plan`] says and applies
/// the webhook configuration with its CA. Returns the bundle now in the Secret.
pub async fn ensure(manager: &Manager, leadership: &Leadership) -> Result<Option<Bundle>> {
    if !manager.self_managed {
        if leadership.is_leader() {
            let config = webhook_configuration(&manager.webhook, None, &manager.namespace);
            apply_webhook_configuration(&manager.client, &config).await?;
        }
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(manager.client.clone(), &manager.namespace);
    let existing = secrets.get_opt(WEBHOOK_TLS_SECRET_NAME).await?;
    let bundle = existing.as_ref().and_then(Bundle::from_secret);
    let names = manager.webhook.names();
    let now = now_unix();
    let decision = plan(bundle.as_ref(), &names, now);
    let current = match execute(decision, bundle.as_ref(), &names, now)? {
        None => bundle,
        Some(_) if !leadership.is_leader() => return Err(Error::NotLeader),
        Some(new) => {
            tracing::info!(plan = ?decision, "writing the webhook certificate Secret");
            let mut secret = new.to_secret(&manager.namespace);
            match existing {
                None => {
                    secrets.create(&PostParams::default(), &secret).await?;
                }
                Some(old) => {
                    // Replace with the resourceVersion read above: if another writer got there
                    // first, this fails with 409 and the next pass starts from their Secret.
                    secret.metadata.resource_version = old.metadata.resource_version;
                    secrets
                        .replace(WEBHOOK_TLS_SECRET_NAME, &PostParams::default(), &secret)
                        .await?;
                }
            }
            Some(new)
        }
    };
    if let Some(bundle) = &current
        && leadership.is_leader()
    {
        let config =
            webhook_configuration(&manager.webhook, Some(&bundle.ca_cert), &manager.namespace);
        apply_webhook_configuration(&manager.client, &config).await?;
    }
    Ok(current)
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
    until_renewal.min(RECHECK)
}

/// The leader's certificate loop: runs [`ensure`] on becoming leader, at each renewal time and
/// every ten minutes; idles while this replica is a follower. Ends when the lease manager is
/// gone.
pub async fn run(manager: Manager, leadership: Leadership) {
    loop {
        if !leadership.acquired().await {
            return;
        }
        let wait = match ensure(&manager, &leadership).await {
            Ok(bundle) => next_check(bundle.as_ref(), now_unix()),
            Err(Error::NotLeader) => continue,
            Err(e) => {
                tracing::warn!(error = %e, reason = e.metric_label(), "cannot ensure the webhook certificate; retrying");
                Duration::from_secs(10)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = leadership.lost() => {}
        }
    }
}

/// Every replica: watches the Secret and loads each new serving certificate into `resolver`.
pub async fn watch_secret(client: Client, namespace: String, resolver: Arc<CertResolver>) {
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={WEBHOOK_TLS_SECRET_NAME}"));
    let mut stream = std::pin::pin!(watcher(secrets, config).default_backoff().applied_objects());
    while let Some(item) = stream.next().await {
        match item {
            Ok(secret) => match apply_secret(&resolver, &secret) {
                Ok(true) => tracing::info!("serving certificate loaded from the Secret"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the webhook Secret holds no usable certificate")
                }
            },
            Err(e) => tracing::warn!(error = %e, "watching the webhook Secret; retrying"),
        }
    }
}

#[cfg(test)]
mod tests;
