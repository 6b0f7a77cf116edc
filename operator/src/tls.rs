//! The serving certificate: loaded from PEM files and swapped atomically when they change, or
//! generated in memory.
//!
//! Rotation (cert-manager rewriting files, or the operator's own CA updating the Secret that
//! [`crate::certs`] watches and hands to [`CertResolver::load_pem`]) happens while connections
//! are open. The resolver below is consulted by rustls once per TLS handshake: it
//! compares the files' identity (mtime, size, inode) with what it last loaded, reloads on a
//! change, and hands out the current key from an `ArcSwap`. Established connections keep the
//! certificate they negotiated; new ones get the new one; nothing is dropped or restarted. A
//! half-written pair (cert updated, key not yet) fails to load and the previous certificate stays
//! in use until the next handshake retries.

use crate::metrics::{Metrics, ReloadResult};
use crate::{Error, Result};
use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What identifies a version of a file without reading it. A rename-based replace (what
/// Kubernetes Secret volumes and cert-manager do) changes the inode even within one mtime tick.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
    /// The stamps of the pair currently served (or last tried), so each change is read once.
    seen: Mutex<(Option<FileStamp>, Option<FileStamp>)>,
}

/// A `ResolvesServerCert` whose certificate can change under running servers.
pub struct CertResolver {
    /// `None` until a certificate is known (self-managed mode before the Secret is read): the
    /// replica reports not ready meanwhile, so the Service sends it no reviews.
    current: ArcSwapOption<CertifiedKey>,
    files: Option<Files>,
    provider: Arc<CryptoProvider>,
    metrics: Option<Arc<Metrics>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("cert", &self.files.as_ref().map(|f| &f.cert))
            .field("key", &self.files.as_ref().map(|f| &f.key))
            .finish()
    }
}

/// The process-wide crypto provider (`ring`, installed by `main`), or `ring` itself when none
/// is installed (tests, benchmarks).
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    parse_pair(&cert_pem, &key_pem, cert, key, provider)
}

fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(Error::Pem {
            path: cert.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::Pem {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(CertifiedKey::from_der(chain, key_der, provider)?)
}

impl CertResolver {
    /// Serves the PEM pair at `cert`/`key`, reloading it when the files change. Fails when the
    /// pair cannot be loaded now: starting without a certificate would only fail every handshake.
    pub fn from_files(
        cert: PathBuf,
        key: PathBuf,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<CertResolver> {
        let stamps = (stamp(&cert), stamp(&key));
        let loaded = load_pair(&cert, &key, &provider())?;
        Ok(CertResolver::watching(
            cert,
            key,
            stamps,
            Some(loaded),
            metrics,
        ))
    }

    /// Serves the PEM pair at `cert`/`key` when it loads, else nothing yet, reloading it whenever
    /// the files change (appear, are replaced): the operator's own Secret mounted as a volume
    /// (`--tls-dir`). Unlike [`CertResolver::from_files`] a missing or broken pair is not fatal:
    /// the Secret is optional (created after the first start) and [`CertResolver::load_pem`]
    /// (the Secret watch) can fill the resolver too. This is what lets a replica serve admission
    /// at start while the apiserver is unreachable.
    pub fn from_mounted_secret(
        cert: PathBuf,
        key: PathBuf,
        metrics: Option<Arc<Metrics>>,
    ) -> CertResolver {
        let stamps = (stamp(&cert), stamp(&key));
        let loaded = match load_pair(&cert, &key, &provider()) {
            Ok(loaded) => Some(loaded),
            Err(e) => {
                tracing::info!(error = %e, "no certificate in the mounted Secret yet; waiting for it or for the Secret watch");
                None
            }
        };
        CertResolver::watching(cert, key, stamps, loaded, metrics)
    }

    /// A resolver serving `loaded` and watching the files it came from (`stamps`: their
    /// versions as read).
    fn watching(
        cert: PathBuf,
        key: PathBuf,
        stamps: (Option<FileStamp>, Option<FileStamp>),
        loaded: Option<CertifiedKey>,
        metrics: Option<Arc<Metrics>>,
    ) -> CertResolver {
        CertResolver {
            current: ArcSwapOption::new(loaded.map(Arc::new)),
            files: Some(Files {
                cert,
                key,
                seen: Mutex::new(stamps),
            }),
            provider: provider(),
            metrics,
        }
    }

    /// Serves a fixed certificate (DER chain and key).
    pub fn fixed(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<CertResolver> {
        let provider = provider();
        let loaded = CertifiedKey::from_der(chain, key, &provider)?;
        Ok(CertResolver {
            current: ArcSwapOption::from_pointee(loaded),
            files: None,
            provider,
            metrics: None,
        })
    }

    /// A resolver with no certificate yet, filled by [`CertResolver::load_pem`] (self-managed
    /// mode: the certificate comes from the Secret watch).
    pub fn empty(metrics: Option<Arc<Metrics>>) -> CertResolver {
        CertResolver {
            current: ArcSwapOption::empty(),
            files: None,
            provider: provider(),
            metrics,
        }
    }

    /// Whether a certificate is being served (reloading changed files first, so that a
    /// certificate that appeared on disk makes the replica ready before any handshake).
    pub fn is_loaded(&self) -> bool {
        self.reload_if_changed();
        self.current.load().is_some()
    }

    /// Serves the PEM chain and key from now on (new handshakes; open connections keep theirs).
    /// Returns `false`, changing nothing, when the chain is the one already served, so that a
    /// re-delivered Secret is not counted as a rotation. A pair that does not load leaves the
    /// previous certificate in place.
    pub fn load_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool> {
        let origin = Path::new("<secret>");
        let result = parse_pair(cert_pem, key_pem, origin, origin, &self.provider);
        let loaded = match result {
            Ok(loaded) => loaded,
            Err(e) => {
                self.count(ReloadResult::Failed);
                return Err(e);
            }
        };
        if self
            .current
            .load()
            .as_ref()
            .is_some_and(|current| current.cert == loaded.cert)
        {
            return Ok(false);
        }
        self.current.store(Some(Arc::new(loaded)));
        self.count(ReloadResult::Loaded);
        Ok(true)
    }

    /// A self-signed certificate for `names`, generated in memory. For running without
    /// certificate files until the operator manages its own CA (next issue).
    pub fn self_signed(names: Vec<String>) -> Result<CertResolver> {
        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
        let key = PrivateKeyDer::try_from(signing_key.serialize_der()).map_err(|e| Error::Pem {
            path: PathBuf::from("<generated>"),
            reason: e.to_string(),
        })?;
        CertResolver::fixed(vec![cert.der().clone()], key)
    }

    /// When the served certificate expires (Unix seconds), if one is loaded and parses.
    pub fn expiry(&self) -> Option<i64> {
        let current = self.current.load_full()?;
        let leaf = current.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// The certificate chain now being served, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }

    /// Reloads the pair if the files changed since the last attempt. Returns whether a new
    /// certificate is now served.
    pub fn reload_if_changed(&self) -> bool {
        let Some(files) = &self.files else {
            return false;
        };
        let now = (stamp(&files.cert), stamp(&files.key));
        // The lock is held through the reload: a handshake racing with it waits for the new
        // certificate instead of seeing "already checked" and serving the old one.
        // A poisoned lock only means another handshake panicked mid-check; the stamps are still
        // meaningful.
        let mut seen = files.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return false;
        }
        // Recorded even if loading fails, so a bad pair is read once per change, not per
        // handshake; any further change of either file is retried.
        *seen = now;
        match load_pair(&files.cert, &files.key, &self.provider) {
            Ok(loaded) => {
                self.current.store(Some(Arc::new(loaded)));
                self.count(ReloadResult::Loaded);
                tracing::info!(cert = %files.cert.display(), "serving certificate reloaded");
                true
            }
            Err(e) => {
                self.count(ReloadResult::Failed);
                tracing::warn!(error = %e, "serving certificate changed but cannot be loaded; keeping the previous one");
                false
            }
        }
    }

    fn count(&self, result: ReloadResult) {
        if let Some(m) = &self.metrics {
            m.cert_reload(result);
        }
    }

    /// A rustls server configuration that resolves certificates through `self` (HTTP/1.1 only:
    /// the apiserver speaks it, and it keeps one HTTP stack).
    pub fn server_config(self: Arc<Self>) -> Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: a resumed session skips certificate selection, so a client
        // could keep being served a rotated-out certificate's session. Full handshakes are rare
        // anyway (the apiserver keeps connections alive).
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Two stat(2) calls per handshake; handshakes are rare (the apiserver keeps connections
        // alive), and this is what makes a rotated certificate effective immediately.
        self.reload_if_changed();
        self.current.load_full()
    }
}
