//! The pure certificate decisions and material: what the Secret holds ([`Bundle`]), when the
//! serving certificate is due ([`renewal_due`], [`plan`]) and how a CA and serving certificate
//! are generated ([`execute`]). No I/O: tested by feeding times and PEM texts in.

use super::*;

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
    pub(super) fn of(pem: &str) -> Result<(Validity, Vec<String>)> {
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
    let provider = crate::tls::provider();
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

pub(super) fn at(unix: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| Error::CertTime(e.to_string()))
}

pub(super) fn window(now: i64, lifetime: Duration) -> Result<(OffsetDateTime, OffsetDateTime)> {
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
