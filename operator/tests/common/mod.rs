//! Helpers shared by the integration tests and the benchmark: fixtures, an in-memory cluster
//! (reflector stores fed by hand), patch application and TLS material.
#![allow(dead_code)]

use json_patch::{Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::core::metadata::PartialObjectMetaExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use monasca_crds::{MetricsSidecar, MetricsSidecarSpec};
use monasca_operator::Context;
use monasca_operator::inject::{NativeSidecars, Settings};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// `../shared/fixtures/admission` beside the repository (override: `MONASCA_FIXTURES_DIR`).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("MONASCA_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/admission")
        })
}

/// Every `*.json` fixture, by file name.
pub fn fixture_names() -> Vec<String> {
    let dir = fixtures_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The raw bytes of a fixture.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A fixture as JSON.
pub fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).expect("fixture is JSON")
}

/// The apiserver that recorded the fixtures (1.24) had no native sidecars: `nativeSidecar:
/// auto` means a regular container there, and `always` falls back to one.
pub const FIXTURE_APISERVER: NativeSidecars = NativeSidecars::Unavailable;

/// The `persister-workers` sidecar the named fixture asks for: multiprocess workers, run as a
/// native sidecar.
pub fn persister_workers_spec() -> MetricsSidecarSpec {
    let mut spec = MetricsSidecarSpec {
        multiprocess: true,
        native_sidecar: monasca_crds::NativeSidecar::Always,
        ..MetricsSidecarSpec::default()
    };
    // The persister declares its own endpoint on 9091, the sidecar's default ingest port.
    spec.config.listen.ingest = "127.0.0.1:9095".into();
    spec
}

/// A context whose stores are fed by hand.
pub struct Cluster {
    pub ctx: Arc<Context>,
    sidecars: Writer<MetricsSidecar>,
    namespaces: Writer<PartialObjectMeta<Namespace>>,
}

impl Cluster {
    pub fn new(settings: Settings) -> Cluster {
        let sidecars = Writer::default();
        let namespaces = Writer::default();
        let ctx = Arc::new(Context::new(
            settings,
            sidecars.as_reader(),
            namespaces.as_reader(),
        ));
        ctx.mark_sidecars_synced();
        ctx.mark_namespaces_synced();
        Cluster {
            ctx,
            sidecars,
            namespaces,
        }
    }

    /// The fixtures' cluster: namespace `demo` (no annotation) with sidecars `default` and
    /// `persister-workers`.
    pub fn fixtures() -> Cluster {
        Cluster::fixtures_on(FIXTURE_APISERVER)
    }

    /// [`Cluster::fixtures`] as if the apiserver's native sidecars were `native`.
    pub fn fixtures_on(native: NativeSidecars) -> Cluster {
        let mut cluster = Cluster::new(Settings::fixture(native));
        cluster.namespace("demo", &[]);
        cluster.sidecar(MetricsSidecar::fixture(
            "demo",
            "default",
            MetricsSidecarSpec::default(),
        ));
        cluster.sidecar(MetricsSidecar::fixture(
            "demo",
            "persister-workers",
            persister_workers_spec(),
        ));
        cluster
    }

    pub fn sidecar(&mut self, sidecar: MetricsSidecar) {
        self.sidecars.apply_watcher_event(&Event::Apply(sidecar));
    }

    pub fn remove_sidecar(&mut self, sidecar: MetricsSidecar) {
        self.sidecars.apply_watcher_event(&Event::Delete(sidecar));
    }

    pub fn namespace(&mut self, name: &str, annotations: &[(&str, &str)]) {
        let meta = ObjectMeta {
            name: Some(name.into()),
            annotations: (!annotations.is_empty()).then(|| {
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            }),
            ..ObjectMeta::default()
        };
        self.namespaces
            .apply_watcher_event(&Event::Apply(meta.into_request_partial::<Namespace>()));
    }
}

/// The decoded response of a review.
pub struct Answer {
    pub response: Value,
    pub patch: Option<Patch>,
    pub warnings: Vec<String>,
}

/// Runs the webhook's review handler on a request body.
pub fn answer(ctx: &Context, body: &[u8]) -> Answer {
    let reviewed = monasca_operator::webhook::review::review(body, ctx).expect("a valid review");
    decode(&reviewed.body)
}

/// Decodes a response AdmissionReview (and its base64 JSON patch).
pub fn decode(body: &[u8]) -> Answer {
    use base64::Engine;
    let review: Value = serde_json::from_slice(body).expect("response is JSON");
    let response = review["response"].clone();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(response["allowed"], true, "the webhook never denies");
    let patch = response["patch"].as_str().map(|b64| {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("patch is base64");
        serde_json::from_slice::<Patch>(&bytes).expect("patch is a JSON patch")
    });
    let warnings = response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Answer {
        response,
        patch,
        warnings,
    }
}

/// Applies a patch the way the apiserver does (all or nothing).
pub fn apply(object: &Value, patch: &Patch) -> Value {
    let mut doc = object.clone();
    json_patch::patch(&mut doc, patch)
        .unwrap_or_else(|e| panic!("patch does not apply: {e}\n{patch:#?}"));
    doc
}

/// Deserializes a patched object as a typed Pod.
pub fn as_pod(object: &Value) -> Pod {
    serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("patched object is not a Pod: {e}"))
}

/// Undoes an additive patch on the patched document: an append is popped, an added key removed,
/// a replaced value restored from `original`. `undo(apply(o, p), p) == o` proves the patch only
/// added (or replaced a map value), never rewrote anything else.
pub fn undo(patched: &Value, patch: &Patch, original: &Value) -> Value {
    let mut doc = patched.clone();
    for op in patch.0.iter().rev() {
        let (parent, last) = split(op.path().as_str());
        match op {
            PatchOperation::Add(_) => {
                let container = doc.pointer_mut(&parent).expect("parent exists");
                match container {
                    Value::Array(items) => {
                        assert_eq!(last, "-", "array insert at {} is not an append", op.path());
                        items.pop();
                    }
                    Value::Object(map) => {
                        let key = unescape(&last);
                        assert!(
                            original.pointer(op.path().as_str()).is_none(),
                            "add of an existing member {}",
                            op.path()
                        );
                        map.remove(&key);
                    }
                    other => panic!("add into a scalar {other}"),
                }
                // A whole new map/array that was added is removed entirely by the key removal.
            }
            PatchOperation::Replace(_) => {
                let before = original
                    .pointer(op.path().as_str())
                    .expect("replaced value existed")
                    .clone();
                assert!(!before.is_array(), "replace of a whole array {}", op.path());
                *doc.pointer_mut(op.path().as_str())
                    .expect("replaced value exists") = before;
            }
            other => panic!("unexpected operation {other:?}"),
        }
    }
    doc
}

fn split(path: &str) -> (String, String) {
    let i = path.rfind('/').expect("pointer has a parent");
    (path[..i].to_string(), path[i + 1..].to_string())
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// `(op, path)` of each operation, for exact assertions.
pub fn ops(patch: &Patch) -> Vec<(String, String)> {
    patch
        .0
        .iter()
        .map(|op| {
            let kind = match op {
                PatchOperation::Add(_) => "add",
                PatchOperation::Remove(_) => "remove",
                PatchOperation::Replace(_) => "replace",
                PatchOperation::Move(_) => "move",
                PatchOperation::Copy(_) => "copy",
                PatchOperation::Test(_) => "test",
            };
            (kind.to_string(), op.path().to_string())
        })
        .collect()
}

/// A CA and a leaf certificate for `127.0.0.1`/`localhost`, as PEM.
pub struct TestPki {
    pub ca_der: Vec<u8>,
    pub leaf_pem: String,
    pub leaf_der: Vec<u8>,
    pub key_pem: String,
}

pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "monasca-operator test CA");
        let cert = params.self_signed(&key).expect("CA cert");
        TestCa {
            ca_der: cert.der().to_vec(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A fresh serving certificate (new key) for loopback.
    pub fn leaf(&self) -> TestPki {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        TestPki {
            ca_der: self.ca_der.clone(),
            leaf_pem: cert.pem(),
            leaf_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A TLS client trusting only `roots`, speaking HTTP/1.1 (what the apiserver does).
pub fn tls_client(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A new keep-alive HTTPS connection to `localhost` at `addr`; returns the sender and the
/// server's leaf certificate, or why the connection failed.
pub async fn connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
        Vec<u8>,
    ),
    String,
> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?,
            tcp,
        )
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((sender, peer))
}

/// One HTTP/1.1 request on an open connection; the status and the whole body.
pub async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    method: http::Method,
    path: &str,
    body: bytes::Bytes,
) -> (http::StatusCode, bytes::Bytes) {
    sender.ready().await.expect("connection ready");
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(body))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}
