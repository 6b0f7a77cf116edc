//! AdmissionReview in, AdmissionReview out: the part of the webhook between HTTP and
//! [`crate::inject::inject`]. Synchronous and free of network I/O, so tests run it on
//! recorded apiserver requests.

use crate::conflicts::ConflictEvent;
use crate::context::Context;
use crate::inject::{Decision, PodRequest, SkipReason, inject, keep_rewrite};
use crate::metrics::Outcome;
use crate::webhook::pod_review::{self, AdmittedPod};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeMap;

/// The request body is not an AdmissionReview with a request: HTTP 400 with this one-line
/// reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidReview(String);

/// A review answered.
#[derive(Debug)]
pub struct Reviewed {
    /// The serialized response AdmissionReview.
    pub body: Vec<u8>,
    /// For metrics.
    pub outcome: Outcome,
    /// For metrics, when the pod was admitted unchanged.
    pub skip: Option<SkipReason>,
}

/// The audit annotation (the apiserver prefixes it with the webhook's name) that records what
/// the webhook did, so `kubectl get events`/audit logs explain a pod without operator logs.
const AUDIT_DECISION: &str = "decision";

/// Most JSON values (objects, arrays, strings, numbers...) a review may hold before it is parsed
/// into a typed Pod. The typed parse inflates a body of many tiny values a hundredfold (`{}` as a
/// container is 3 bytes of JSON and over a kilobyte of `Container`): without this bound a 3 MiB
/// body of empty containers costs gigabytes. Real pods, even with a service mesh's sidecars and
/// long env lists, hold a few thousand values.
pub const MAX_JSON_VALUES: usize = 20_000;

/// The largest body that cannot hold more than [`MAX_JSON_VALUES`] values, whatever it holds:
/// JSON needs at least `2n - 1` bytes for `n` values (a scalar is at least one byte, a container
/// two, and siblings are separated by a comma; object keys only add bytes), so exceeding the
/// bound takes at least `2 * MAX_JSON_VALUES + 1` bytes. Such a body skips the counting pass and
/// its parse is small enough to run on the thread that read it (see `webhook::handle`); real
/// pods (a Deployment's pod is about 10 KB) are far below it.
pub const SMALL_REVIEW_BYTES: usize = 2 * MAX_JSON_VALUES;

/// Whether `body` is at most [`SMALL_REVIEW_BYTES`]: it cannot exceed [`MAX_JSON_VALUES`].
pub fn is_small(body: &[u8]) -> bool {
    too_short_to_exceed(body.len(), MAX_JSON_VALUES)
}

/// Whether a body of `len` bytes is too short to hold more than `limit` JSON values (the
/// `2n - 1` bound of [`SMALL_REVIEW_BYTES`]), so [`exceeds_json_values`] need not run.
pub const fn too_short_to_exceed(len: usize, limit: usize) -> bool {
    len <= limit.saturating_mul(2)
}

/// Answers one AdmissionReview. Never denies: the webhook only ever adds a sidecar, and a pod
/// it cannot inject is better created without one than not at all. A review with more than
/// [`MAX_JSON_VALUES`] values is admitted unchanged, with a warning, without the typed parse.
pub fn review(body: &[u8], ctx: &Context) -> Result<Reviewed, InvalidReview> {
    if !is_small(body) && exceeds_json_values(body, MAX_JSON_VALUES) {
        return admit_too_large(body);
    }
    // The typed parse is the fast path. When it fails, a generic parse tells a review of
    // something that is not a valid Pod (admit unchanged) from a body that is no review (400).
    let request: AdmissionRequest<AdmittedPod> = match pod_review::parse(body) {
        Ok(Some(request)) => request,
        Ok(None) => return Err(InvalidReview("AdmissionReview has no request".into())),
        Err(pod_error) => return review_not_a_pod(body, &pod_error),
    };

    let Some(AdmittedPod(pod)) = request.object.as_ref() else {
        return respond(
            &request,
            Decision::Skip {
                reason: SkipReason::NotAPod,
                warning: None,
            },
        );
    };
    if request.kind.kind != "Pod" {
        return respond(
            &request,
            Decision::Skip {
                reason: SkipReason::NotAPod,
                warning: None,
            },
        );
    }
    // `request.namespace` is authoritative: on CREATE the object's own namespace may be empty.
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or("default");
    let namespace_meta = ctx.namespace(namespace);
    let sidecars = ctx.sidecars_in(namespace);
    let namespace_opt_in = namespace_opt_in(namespace_meta.as_deref().map(|ns| &ns.metadata));
    let decision = match (&request.operation, request.old_object.as_ref()) {
        // An UPDATE never injects; it only keeps the rewrite of an injected pod.
        (Operation::Update, Some(AdmittedPod(old))) => keep_rewrite(old, pod),
        _ => inject(
            &PodRequest {
                operation: &request.operation,
                namespace,
                pod,
            },
            namespace_opt_in.as_ref(),
            &sidecars,
            &ctx.settings,
        ),
    };
    log_decision(&request, namespace, pod, &decision);
    if let Decision::Conflict {
        reason,
        warning,
        sidecar,
    } = &decision
        && !request.dry_run
    {
        ctx.admission_events.report(ConflictEvent {
            namespace: namespace.to_string(),
            sidecar: sidecar.clone(),
            reason: *reason,
            message: warning.clone(),
        });
    }
    respond(&request, decision)
}

/// The namespace's opt-in as [`inject`] reads it (an annotation map): the namespace **label**
/// `monasca.openstack.org/inject` (what the webhook configuration's `namespaceSelector`
/// matches, so the apiserver calls the webhook for such namespaces' pods), else the older
/// namespace annotation of the same key, which still decides for pods that reach the webhook
/// through their own annotation but no longer makes the apiserver call it by itself.
fn namespace_opt_in(
    meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> Option<BTreeMap<String, String>> {
    let meta = meta?;
    let mut view = meta.annotations.clone().unwrap_or_default();
    if let Some(label) = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(monasca_crds::ANNOTATION_INJECT))
    {
        view.insert(monasca_crds::ANNOTATION_INJECT.to_string(), label.clone());
    }
    Some(view)
}

/// The value of a namespace's `monasca.openstack.org/inject` **annotation** when it opts the
/// namespace in without the label of the same key: since the webhook configuration matches
/// namespaces by label (`namespaceSelector`), the apiserver no longer calls the webhook for
/// such a namespace's pods, so they go uninjected unless they carry the annotation themselves.
/// `"false"` is not reported (it asks for nothing). The fix is the label (see README,
/// "Namespace-wide opt-in").
pub fn annotation_without_label(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&str> {
    let key = monasca_crds::ANNOTATION_INJECT;
    let annotation = meta.annotations.as_ref()?.get(key)?;
    let labelled = meta.labels.as_ref().is_some_and(|l| l.contains_key(key));
    (!labelled && annotation != monasca_crds::INJECT_FALSE).then_some(annotation.as_str())
}

/// Whether `body` holds more than `limit` JSON values. Counts without building anything (keys
/// and strings are borrowed or skipped), so it costs no memory whatever the body holds; a body
/// that is not JSON counts as not exceeding (the typed parse then reports it).
pub fn exceeds_json_values(body: &[u8], limit: usize) -> bool {
    let left = Cell::new(limit);
    let mut de = serde_json::Deserializer::from_slice(body);
    let counted = Count { left: &left }.deserialize(&mut de);
    counted.is_err() && left.get() == 0
}

/// A serde visitor that counts values down from `left` and fails when none are left.
struct Count<'a> {
    left: &'a Cell<usize>,
}

impl Count<'_> {
    fn take<E: serde::de::Error>(&self) -> Result<(), E> {
        match self.left.get() {
            0 => Err(E::custom("too many JSON values")),
            n => {
                self.left.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.take()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        while seq.next_element_seed(Count { left: self.left })?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Count { left: self.left })?;
        }
        Ok(())
    }
}

/// Just enough of a review to answer it: the uid (and the version to answer in).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    api_version: Option<String>,
    request: Option<EnvelopeRequest>,
}

#[derive(Deserialize)]
struct EnvelopeRequest {
    uid: String,
}

/// Admits a review too large to parse safely, unchanged, with a warning the client sees.
fn admit_too_large(body: &[u8]) -> Result<Reviewed, InvalidReview> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        InvalidReview(format!(
            "not an AdmissionReview: {}",
            one_line(&e.to_string())
        ))
    })?;
    let request = envelope
        .request
        .ok_or_else(|| InvalidReview("AdmissionReview has no request".into()))?;
    tracing::warn!(uid = %request.uid, limit = MAX_JSON_VALUES, "admitting a pod too large to inspect unchanged");
    let warnings = [format!(
        "monasca-sidecar: the pod has more than {MAX_JSON_VALUES} JSON values; not injected"
    )];
    let out = ReviewOut {
        api_version: envelope
            .api_version
            .as_deref()
            .unwrap_or(REVIEW_API_VERSION),
        kind: REVIEW_KIND,
        response: ResponseOut {
            uid: &request.uid,
            allowed: true,
            patch_type: None,
            patch: None,
            warnings: &warnings,
            audit_annotations: BTreeMap::from([(AUDIT_DECISION, "too_large")]),
        },
    };
    let body = serde_json::to_vec(&out)
        .map_err(|e| InvalidReview(format!("cannot serialize response: {e}")))?;
    Ok(Reviewed {
        body,
        outcome: Outcome::TooLarge,
        skip: None,
    })
}

/// The body did not parse as a review of a Pod.
fn review_not_a_pod(body: &[u8], pod_error: &serde_json::Error) -> Result<Reviewed, InvalidReview> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| {
        InvalidReview(format!(
            "not an AdmissionReview: {}",
            one_line(&e.to_string())
        ))
    })?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| InvalidReview("AdmissionReview has no request".into()))?;
    tracing::warn!(
        uid = %request.uid,
        kind = %request.kind.kind,
        error = %pod_error,
        "admitting an object that is not a valid Pod unchanged"
    );
    respond(
        &request,
        Decision::Skip {
            reason: SkipReason::NotAPod,
            warning: None,
        },
    )
}

/// The response AdmissionReview as the API documents it. kube's `AdmissionResponse` serializes
/// the patch (`[]byte` in Go) as a JSON array of numbers (kube-rs/kube#1781); the API specifies
/// base64, which is also a third of the size. The request side still uses kube's types.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    audit_annotations: BTreeMap<&'static str, &'a str>,
}

const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

fn respond<K: kube::Resource>(
    request: &AdmissionRequest<K>,
    decision: Decision,
) -> Result<Reviewed, InvalidReview> {
    let api_version = match request.types.api_version.as_str() {
        "" => REVIEW_API_VERSION,
        v => v,
    };
    let (outcome, skip, patch, warnings, audit) = match decision {
        Decision::Skip { reason, warning } => (
            Outcome::Skipped,
            Some(reason),
            None,
            warning.into_iter().collect::<Vec<_>>(),
            reason.label().to_string(),
        ),
        Decision::Conflict {
            reason, warning, ..
        } => (
            Outcome::Skipped,
            Some(reason),
            None,
            vec![warning],
            reason.label().to_string(),
        ),
        Decision::Patch {
            patch,
            warnings,
            sidecar,
        } => {
            let json = serde_json::to_vec(&patch)
                .map_err(|e| InvalidReview(format!("cannot serialize patch: {e}")))?;
            (
                Outcome::Injected,
                None,
                Some(BASE64.encode(json)),
                warnings,
                format!("injected:{sidecar}"),
            )
        }
    };
    let out = ReviewOut {
        api_version,
        kind: REVIEW_KIND,
        response: ResponseOut {
            uid: &request.uid,
            allowed: true,
            patch_type: patch.is_some().then_some("JSONPatch"),
            patch,
            warnings: &warnings,
            audit_annotations: BTreeMap::from([(AUDIT_DECISION, audit.as_str())]),
        },
    };
    let body = serde_json::to_vec(&out)
        .map_err(|e| InvalidReview(format!("cannot serialize response: {e}")))?;
    Ok(Reviewed {
        body,
        outcome,
        skip,
    })
}

fn log_decision(
    request: &AdmissionRequest<AdmittedPod>,
    namespace: &str,
    pod: &Pod,
    decision: &Decision,
) {
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default();
    match decision {
        Decision::Patch {
            sidecar, warnings, ..
        } => tracing::info!(
            uid = %request.uid, namespace, pod = name, sidecar, dry_run = request.dry_run,
            warnings = warnings.len(), "injecting monasca-sidecar"
        ),
        Decision::Conflict {
            reason,
            warning,
            sidecar,
        } => tracing::info!(
            uid = %request.uid, namespace, pod = name, sidecar, reason = reason.label(), warning,
            "not injecting"
        ),
        Decision::Skip {
            reason,
            warning: Some(warning),
        } => tracing::info!(
            uid = %request.uid, namespace, pod = name, reason = reason.label(), warning,
            "not injecting"
        ),
        Decision::Skip {
            reason,
            warning: None,
        } => tracing::debug!(
            uid = %request.uid, namespace, pod = name, reason = reason.label(), "not injecting"
        ),
    }
}

/// Error messages go on one line (HTTP reason bodies, logs).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
