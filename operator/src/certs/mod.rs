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
//!
//! Rooms: `bundle` (the certificate material and renewal decisions), `webhook_config` (the
//! webhook configuration and its sync), `replicas` (which CA each replica serves), this file
//! (the leader's loop and the watches).

use crate::leader::Leadership;
use crate::tls::CertResolver;
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

pub use crate::identity::FIELD_MANAGER;
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

mod bundle;
mod webhook_config;

pub use bundle::*;
pub use webhook_config::*;

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
    let recorder = Recorder::new(manager.client.clone(), crate::identity::reporter());
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
