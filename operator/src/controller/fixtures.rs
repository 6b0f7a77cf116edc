//! Test fixtures: builders for sidecars and pods, stores fed by hand, and an
//! `ApiServerVerifier` (controller-rs style) that plays the apiserver through `tower_test`,
//! asserting the exact method, URI (with query) and body of each expected request, in order.

use super::Context;
use crate::inject::Settings;
use crate::leader::Leadership;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use kube::{Client, Resource};
use monasca_crds::MetricsSidecar;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub const NAMESPACE: &str = "monasca";
pub const UID: &str = "5b4c3d2e-0000-4000-8000-000000000001";
/// The fixed clock of the tests: 2027-01-15T08:00:00Z.
pub const NOW_SECONDS: i64 = 1_800_000_000;

pub fn now() -> Timestamp {
    Timestamp::from_second(NOW_SECONDS).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The RFC 3339 spelling of [`now`], as the apiserver (and our status) writes it.
pub fn now_text() -> String {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", now()).expect("formats")
}

/// A Running pod (as the census store keeps it) with labels, annotations and an optional
/// controller owner `(kind, name)`.
pub fn pod(
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    owner: Option<(&str, &str)>,
) -> Pod {
    let map = |kv: &[(&str, &str)]| -> Option<BTreeMap<String, String>> {
        (!kv.is_empty()).then(|| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    };
    let metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NAMESPACE.into()),
        labels: map(labels),
        annotations: map(annotations),
        owner_references: owner.map(|(kind, owner)| {
            vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: owner.into(),
                uid: format!("uid-{owner}"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]
        }),
        ..ObjectMeta::default()
    };
    Pod {
        metadata,
        spec: None,
        status: Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        }),
    }
}

/// `pod` in another phase.
pub fn in_phase(mut pod: Pod, phase: &str) -> Pod {
    pod.status.get_or_insert_default().phase = Some(phase.into());
    pod
}

/// The owner reference the controller puts on what it creates.
pub fn owner() -> Value {
    json!({
        "apiVersion": "monasca.openstack.org/v1alpha1",
        "kind": "MetricsSidecar",
        "name": "default",
        "uid": UID,
        "controller": true,
    })
}

/// How a request body is checked.
pub enum BodyCheck {
    /// Equal to this JSON.
    Exact(Value),
    /// Contains these fields with these values (for Events, whose name and time vary).
    Subset(Value),
    /// Not checked (GET).
    None,
}

/// One request the apiserver expects, and its answer.
pub struct Expect {
    pub method: Method,
    pub uri: String,
    pub body: BodyCheck,
    pub status: StatusCode,
    pub response: Value,
}

impl Expect {
    pub fn new(method: Method, uri: impl Into<String>, body: BodyCheck, response: Value) -> Self {
        Expect {
            method,
            uri: uri.into(),
            body,
            status: StatusCode::OK,
            response,
        }
    }

    /// Answers with an API error `Status`.
    pub fn failing(mut self, status: StatusCode, reason: &str) -> Self {
        self.status = status;
        self.response = json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": format!("injected failure: {reason}"),
            "reason": reason, "code": status.as_u16(),
        });
        self
    }
}

fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        _ => actual == expected,
    }
}

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Plays the apiserver for one scenario.
pub struct ApiServerVerifier(ApiServerHandle);

impl ApiServerVerifier {
    /// Answers `expected` in order, then asserts that no other request comes before the client
    /// is dropped.
    pub fn run(mut self, expected: Vec<Expect>) -> JoinHandle<()> {
        tokio::spawn(async move {
            for (i, expect) in expected.into_iter().enumerate() {
                let (request, send) = self.0.next_request().await.unwrap_or_else(|| {
                    panic!("request {i} ({} {}) never made", expect.method, expect.uri)
                });
                assert_eq!(request.method(), expect.method, "request {i} method");
                assert_eq!(request.uri().to_string(), expect.uri, "request {i} URI");
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .expect("request body");
                match &expect.body {
                    BodyCheck::Exact(want) => {
                        let got: Value = serde_json::from_slice(&bytes).expect("JSON body");
                        assert_eq!(&got, want, "request {i} body");
                    }
                    BodyCheck::Subset(want) => {
                        let got: Value = serde_json::from_slice(&bytes).expect("JSON body");
                        assert!(
                            contains(&got, want),
                            "request {i} body {got:#} lacks {want:#}"
                        );
                    }
                    BodyCheck::None => {}
                }
                // A null response echoes the request (what an apply or create returns).
                let body = if expect.response.is_null() {
                    bytes.to_vec()
                } else {
                    serde_json::to_vec(&expect.response).expect("response JSON")
                };
                let response = Response::builder()
                    .status(expect.status)
                    .body(Body::from(body))
                    .expect("response");
                send.send_response(response);
            }
            if let Some((request, _)) = self.0.next_request().await {
                panic!("unexpected request {} {}", request.method(), request.uri());
            }
        })
    }
}

/// A client talking to a fresh mock apiserver.
pub fn mock_client() -> (Client, ApiServerVerifier) {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(mock, "default"), ApiServerVerifier(handle))
}

/// The in-memory cluster a reconcile reads, and the mock apiserver it writes to.
pub struct Harness {
    pub ctx: Arc<Context>,
    pub verifier: Option<ApiServerVerifier>,
    sidecars: Writer<MetricsSidecar>,
    pods: Writer<crate::pod_entry::PodEntry>,
    _namespaces: Writer<PartialObjectMeta<Namespace>>,
}

impl Harness {
    /// A leader (or follower) with empty stores, all synced.
    pub fn new(leader: bool) -> Harness {
        let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(mock, "default");
        let sidecars: Writer<MetricsSidecar> = Writer::default();
        let namespaces: Writer<PartialObjectMeta<Namespace>> = Writer::default();
        let pods: Writer<crate::pod_entry::PodEntry> = Writer::default();
        let (tx, leadership) = Leadership::channel(leader);
        // The sender is not needed: leadership stays fixed for a test.
        std::mem::forget(tx);
        let shared = crate::Context::new(
            Settings {
                operator_namespace: "monasca-system".into(),
                sidecar_image: "monasca/monasca-sidecar:test".into(),
                native_sidecars: crate::inject::NativeSidecars::Unknown.into(),
                sidecar_checks: Default::default(),
            },
            sidecars.as_reader(),
            namespaces.as_reader(),
        )
        .with_pods(pods.as_reader())
        .with_leadership(leadership);
        shared.mark_pods_synced();
        let mut ctx = Context::new(client, Arc::new(shared), false);
        ctx.now = now;
        Harness {
            ctx: Arc::new(ctx),
            verifier: Some(ApiServerVerifier(handle)),
            sidecars,
            pods,
            _namespaces: namespaces,
        }
    }

    pub fn with_sidecar(mut self, sidecar: &MetricsSidecar) -> Harness {
        self.sidecars
            .apply_watcher_event(&Event::Apply(sidecar.clone()));
        self
    }

    pub fn with_pod(mut self, pod: Pod) -> Harness {
        self.pods
            .apply_watcher_event(&Event::Apply(crate::pod_entry::PodEntry::from_pod(&pod)));
        self
    }

    /// Reconciles `sidecar` against the expected requests; returns the reconcile's result and
    /// the context (for metrics and error policy checks).
    pub async fn reconcile(
        mut self,
        sidecar: MetricsSidecar,
        expected: Vec<Expect>,
    ) -> (
        crate::Result<kube::runtime::controller::Action>,
        Arc<Context>,
    ) {
        let verifier = self.verifier.take().expect("one reconcile per harness");
        let apiserver = verifier.run(expected);
        let ctx = self.ctx.clone();
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            super::reconcile(
                Arc::new(kube::core::error_boundary::DeserializeGuard(Ok(sidecar))),
                ctx.clone(),
            ),
        )
        .await
        .expect("reconcile finished in time");
        // Dropping every client lets the verifier see that no further request comes.
        let kept = Harness::detach(ctx);
        drop(self);
        tokio::time::timeout(Duration::from_secs(5), apiserver)
            .await
            .expect("apiserver scenario finished in time")
            .expect("apiserver scenario passed");
        (result, kept)
    }

    /// A copy of the context without the mock client (so that the verifier can finish), for
    /// inspecting metrics and the error policy.
    fn detach(ctx: Arc<Context>) -> Arc<Context> {
        let (mock, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(mock, "default");
        let failures = std::mem::take(
            &mut *ctx
                .failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let detached = Context::new(client, ctx.shared.clone(), ctx.pod_monitors);
        *detached
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = failures;
        Arc::new(detached)
    }
}

/// The JSON the apiserver returns for a `MetricsSidecar` (status patches answer with it).
pub fn sidecar_json(sidecar: &MetricsSidecar) -> Value {
    let mut value = serde_json::to_value(sidecar).expect("serializes");
    value["apiVersion"] = json!(MetricsSidecar::api_version(&()));
    value["kind"] = json!("MetricsSidecar");
    value
}
