//! Which serving certificate each replica serves, so that the leader ends a CA overlap (old and
//! new CA both in `caBundle`) only once **every** replica serves a certificate from the new CA,
//! not after a fixed time: a replica whose Secret watch lags, or that was partitioned from the
//! apiserver, keeps the old CA trusted for as long as it serves a certificate from it.
//!
//! Each replica keeps a Lease of its own in the operator's namespace,
//! `monasca-operator-replica-<identity>` (label [`REPLICA_LABEL`]), renewed every
//! [`REPORT_EVERY`] and at once when its served certificate changes, whose annotation
//! [`SERVING_ANNOTATION`] is the SHA-256 of the leaf certificate it serves. The leader lists them
//! and compares with the Secret's `tls.crt` ([`overlap`]). Least privilege: Leases in its own
//! namespace are what the Role already grants for leader election; no Pod patch, no reads of
//! EndpointSlices, no connections to other replicas. A replica deletes its Lease when it shuts
//! down; one that died stops counting once its report is [`STALE_AFTER`] old.

use crate::tls::CertResolver;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The label of every replica's report Lease.
pub const REPLICA_LABEL: &str = "monasca.openstack.org/webhook-replica";
/// The SHA-256 (hex) of the leaf certificate the replica serves; absent while it serves none.
pub const SERVING_ANNOTATION: &str = "monasca.openstack.org/serving-certificate-sha256";
/// Name prefix of the report Leases (the leader-election Lease is `monasca-operator`).
const NAME_PREFIX: &str = "monasca-operator-replica-";
/// Field manager of the report writes.
const FIELD_MANAGER: &str = "monasca-operator-replica";
/// How often a replica renews its report when nothing changed.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often a replica compares the certificate it serves with the one it last reported.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A report older than this (by its renewTime, on the leader's clock) is from a replica that is
/// gone: it no longer holds the overlap open. Six renewals, so a minute of clock skew between
/// nodes or a slow apiserver never drops a live replica.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// What one replica reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub identity: String,
    /// SHA-256 (hex) of the served leaf, if it serves one.
    pub serving: Option<String>,
    /// When it last renewed the report (Unix seconds).
    pub renewed: Option<i64>,
}

/// Whether the CA overlap may end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// Every live replica serves the Secret's certificate: drop the old CAs.
    End,
    /// Keep the old CAs; these replicas serve something else (or nothing), or none reported.
    Keep { waiting: Vec<String> },
}

/// Decides the overlap: `current` is the SHA-256 of the Secret's serving certificate. Reports
/// older than [`STALE_AFTER`] at `now` are ignored (replicas that died without deleting them).
/// With no live report at all, nothing proves that any replica switched, so the overlap stays.
pub fn overlap(current: &str, reports: &[Report], now: i64) -> Overlap {
    let stale = STALE_AFTER.as_secs() as i64;
    let live: Vec<&Report> = reports
        .iter()
        .filter(|r| r.renewed.is_some_and(|t| now.saturating_sub(t) <= stale))
        .collect();
    let waiting: Vec<String> = live
        .iter()
        .filter(|r| r.serving.as_deref() != Some(current))
        .map(|r| r.identity.clone())
        .collect();
    if live.is_empty() || !waiting.is_empty() {
        Overlap::Keep { waiting }
    } else {
        Overlap::End
    }
}

/// SHA-256 (lowercase hex) of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of the first certificate of a PEM chain (the leaf), if it parses.
pub fn pem_fingerprint(pem: &str) -> Option<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    Some(fingerprint(leaf.as_ref()))
}

/// The report Lease's name for `identity`: a DNS subdomain whatever the identity (a pod name
/// already is one; out of cluster it is `host-pid`, whose host may not be).
pub fn lease_name(identity: &str) -> String {
    let mut name: String = identity
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    name.truncate(253 - NAME_PREFIX.len());
    let name = name.trim_matches(['-', '.']);
    format!(
        "{NAME_PREFIX}{}",
        if name.is_empty() { "unnamed" } else { name }
    )
}

/// The report as read back from a Lease.
fn read(lease: &Lease) -> Report {
    let spec = lease.spec.as_ref();
    Report {
        identity: spec
            .and_then(|s| s.holder_identity.clone())
            .or_else(|| lease.metadata.name.clone())
            .unwrap_or_default(),
        serving: lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SERVING_ANNOTATION).cloned()),
        renewed: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_second()),
    }
}

/// Every replica's report in `namespace`.
pub async fn list(client: &Client, namespace: &str) -> crate::Result<Vec<Report>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let listed = leases
        .list(&ListParams::default().labels(REPLICA_LABEL))
        .await?;
    Ok(listed.items.iter().map(read).collect())
}

/// Every replica: reports the certificate it serves until `stop` becomes true, then deletes its
/// report. Failures are logged and retried at the next tick (the apiserver may be away; the
/// overlap then simply stays open).
pub async fn run(
    client: Client,
    namespace: String,
    identity: String,
    certs: Arc<CertResolver>,
    mut stop: watch::Receiver<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let name = lease_name(&identity);
    let mut reported: Option<Option<String>> = None;
    let mut last_write = tokio::time::Instant::now();
    loop {
        let serving = certs
            .current()
            .and_then(|c| c.cert.first().map(|leaf| fingerprint(leaf.as_ref())));
        if reported.as_ref() != Some(&serving) || last_write.elapsed() >= REPORT_EVERY {
            last_write = tokio::time::Instant::now();
            match write(&leases, &name, &identity, serving.as_deref()).await {
                Ok(()) => reported = Some(serving),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot report the served certificate; retrying")
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                if let Err(e) = leases.delete(&name, &DeleteParams::default()).await {
                    tracing::debug!(error = %e, "cannot delete this replica's report; it goes stale");
                }
                return;
            }
        }
    }
}

async fn write(
    leases: &Api<Lease>,
    name: &str,
    identity: &str,
    serving: Option<&str>,
) -> crate::Result<()> {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let patch = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "labels": {
                REPLICA_LABEL: "true",
                "app.kubernetes.io/managed-by": super::FIELD_MANAGER,
            },
            "annotations": { SERVING_ANNOTATION: serving },
        },
        "spec": {
            "holderIdentity": identity,
            "renewTime": now,
            "leaseDurationSeconds": STALE_AFTER.as_secs(),
        },
    });
    leases
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_900_000_000;

    fn report(identity: &str, serving: Option<&str>, age: i64) -> Report {
        Report {
            identity: identity.into(),
            serving: serving.map(String::from),
            renewed: Some(NOW - age),
        }
    }

    #[test]
    fn the_overlap_ends_only_when_every_live_replica_serves_the_new_certificate() {
        let both_new = [report("a", Some("new"), 1), report("b", Some("new"), 9)];
        assert_eq!(overlap("new", &both_new, NOW), Overlap::End);
        let one_old = [report("a", Some("new"), 1), report("b", Some("old"), 1)];
        assert_eq!(
            overlap("new", &one_old, NOW),
            Overlap::Keep {
                waiting: vec!["b".into()]
            }
        );
        // A replica serving nothing yet is not serving the new certificate.
        let none = [report("a", Some("new"), 1), report("b", None, 1)];
        assert_eq!(
            overlap("new", &none, NOW),
            Overlap::Keep {
                waiting: vec!["b".into()]
            }
        );
    }

    #[test]
    fn a_replica_gone_for_longer_than_the_stale_time_no_longer_holds_the_overlap() {
        let stale = STALE_AFTER.as_secs() as i64;
        let dead = [
            report("a", Some("new"), 1),
            report("b", Some("old"), stale + 1),
        ];
        assert_eq!(overlap("new", &dead, NOW), Overlap::End);
        // At the limit it still counts (a slow renewal is not a death).
        let slow = [report("a", Some("new"), 1), report("b", Some("old"), stale)];
        assert!(matches!(overlap("new", &slow, NOW), Overlap::Keep { .. }));
        // A report from the future (clock skew) counts as live.
        let ahead = [report("a", Some("new"), 1), report("b", Some("old"), -30)];
        assert!(matches!(overlap("new", &ahead, NOW), Overlap::Keep { .. }));
        // No renewTime at all: not evidence of anything.
        let mut unknown = report("b", Some("old"), 0);
        unknown.renewed = None;
        assert_eq!(
            overlap("new", &[report("a", Some("new"), 1), unknown], NOW),
            Overlap::End
        );
    }

    #[test]
    fn without_any_live_report_the_overlap_stays() {
        assert_eq!(overlap("new", &[], NOW), Overlap::Keep { waiting: vec![] });
        let stale = STALE_AFTER.as_secs() as i64;
        let all_dead = [report("a", Some("new"), stale + 1)];
        assert!(matches!(
            overlap("new", &all_dead, NOW),
            Overlap::Keep { .. }
        ));
    }

    #[test]
    fn lease_names_are_dns_subdomains_for_any_identity() {
        assert_eq!(
            lease_name("monasca-operator-7d9f-abcde"),
            "monasca-operator-replica-monasca-operator-7d9f-abcde"
        );
        assert_eq!(
            lease_name("My_Host.local-4242"),
            "monasca-operator-replica-my-host.local-4242"
        );
        assert_eq!(lease_name("__"), "monasca-operator-replica-unnamed");
        let long = lease_name(&"x".repeat(400));
        assert!(long.len() <= 253, "{}", long.len());
    }

    #[test]
    fn the_fingerprint_is_of_the_leaf_of_a_chain() {
        let ca = crate::certs::generate_ca(NOW).expect("CA");
        let (leaf, _) = crate::certs::issue_serving(&ca.0, &ca.1, &["a.example".to_string()], NOW)
            .expect("leaf");
        let chain = format!("{leaf}{}", ca.0);
        assert_eq!(pem_fingerprint(&chain), pem_fingerprint(&leaf));
        assert_ne!(pem_fingerprint(&leaf), pem_fingerprint(&ca.0));
        assert_eq!(pem_fingerprint("not PEM"), None);
        assert_eq!(pem_fingerprint(&leaf).map(|f| f.len()), Some(64));
    }
}
