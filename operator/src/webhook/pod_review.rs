//! The typed parse of a Pod's AdmissionReview without `metadata.managedFields`: in a real pod
//! it is most of the metadata (the field managers' JSON trees, which k8s-openapi parses into
//! `serde_json::Value`s, only for the webhook to drop them again), and nothing the webhook
//! decides or patches reads it. Skipping it took a fifth of a review's instructions off
//! (callgrind, recorded ReplicaSet pod).
//!
//! Everything else is k8s-openapi's own parse (ObjectMeta's included, through a map access that
//! only hides the one key), so the pod is the `Pod` kube would give, with `managed_fields: None`.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer, StrDeserializer};
use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, de};
use std::borrow::Cow;
use std::fmt;

/// The metadata key [`AdmittedPod`] skips.
const MANAGED_FIELDS: &str = "managedFields";

/// A Pod as the webhook reads it: k8s-openapi's `Pod` with `metadata.managedFields` left out
/// (always `None`). Its own `apiVersion`/`kind`, when present, must be `v1`/`Pod`, as in
/// k8s-openapi's parse.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdmittedPod(pub Pod);

impl k8s_openapi::Resource for AdmittedPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = NamespaceResourceScope;
}

impl k8s_openapi::Metadata for AdmittedPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// Parses a Pod review (kube's `AdmissionReview` of [`AdmittedPod`]s). `Ok(None)` is a review
/// without a request (kube's `TryInto` error).
pub fn parse(body: &[u8]) -> serde_json::Result<Option<AdmissionRequest<AdmittedPod>>> {
    let review: AdmissionReview<AdmittedPod> = serde_json::from_slice(body)?;
    Ok(review.try_into().ok())
}

impl<'de> Deserialize<'de> for AdmittedPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PodVisitor)
    }
}

struct PodVisitor;

impl<'de> Visitor<'de> for PodVisitor {
    type Value = AdmittedPod;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pod")
    }

    /// k8s-openapi's `Pod` visitor, with the metadata read by [`MetadataWithoutManagedFields`].
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AdmittedPod, A::Error> {
        let mut metadata: Option<MetadataWithoutManagedFields> = None;
        let mut spec: Option<PodSpec> = None;
        let mut status: Option<PodStatus> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key.0.as_ref() {
                "apiVersion" => expect(&mut map, <Pod as k8s_openapi::Resource>::API_VERSION)?,
                "kind" => expect(&mut map, <Pod as k8s_openapi::Resource>::KIND)?,
                "metadata" => metadata = map.next_value()?,
                "spec" => spec = map.next_value()?,
                "status" => status = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(AdmittedPod(Pod {
            metadata: metadata.map(|m| m.0).unwrap_or_default(),
            spec,
            status,
        }))
    }
}

/// Reads a string value that must equal `wanted` (k8s-openapi's `apiVersion`/`kind` check).
fn expect<'de, A: MapAccess<'de>>(map: &mut A, wanted: &'static str) -> Result<(), A::Error> {
    let value: Key<'de> = map.next_value()?;
    if value.0 != wanted {
        return Err(A::Error::invalid_value(
            de::Unexpected::Str(&value.0),
            &wanted,
        ));
    }
    Ok(())
}

/// `ObjectMeta` parsed by k8s-openapi through a map access that hides `managedFields`.
struct MetadataWithoutManagedFields(ObjectMeta);

impl<'de> Deserialize<'de> for MetadataWithoutManagedFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MetadataVisitor)
    }
}

struct MetadataVisitor;

impl<'de> Visitor<'de> for MetadataVisitor {
    type Value = MetadataWithoutManagedFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObjectMeta")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let filtered = MapAccessDeserializer::new(WithoutManagedFields(map));
        ObjectMeta::deserialize(filtered).map(MetadataWithoutManagedFields)
    }
}

/// A map access that skips the `managedFields` entry (its value unparsed) and passes every other
/// entry on.
struct WithoutManagedFields<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WithoutManagedFields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.0.next_key::<Key<'de>>()? {
            if key.0 == MANAGED_FIELDS {
                self.0.next_value::<IgnoredAny>()?;
                continue;
            }
            return match key.0 {
                Cow::Borrowed(k) => seed.deserialize(BorrowedStrDeserializer::new(k)),
                Cow::Owned(k) => seed.deserialize(StrDeserializer::new(&k)),
            }
            .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

/// A string borrowed from the body when it holds no escapes (map keys, mostly).
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::TypeMeta;
    use serde_json::{Value, json};

    /// Every real AdmissionReview captured from a kube-apiserver
    /// ([`crate::admission_fixtures_dir`]), by file name.
    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = crate::admission_fixtures_dir();
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy().into();
                (name, std::fs::read(&p).expect("fixture"))
            })
            .collect();
        out.sort();
        assert!(out.len() >= 5, "fixtures missing in {}", dir.display());
        out
    }

    /// kube's parse, as the webhook did it before: the request of an `AdmissionReview<Pod>`.
    fn kube_parse(body: &[u8]) -> Option<AdmissionRequest<Pod>> {
        let review: AdmissionReview<Pod> = serde_json::from_slice(body).ok()?;
        review.try_into().ok()
    }

    /// A request as JSON (every field but `types`, which serde skips) with its pods'
    /// managedFields removed, plus `types`: what the two parses must agree on.
    fn comparable(request: AdmissionRequest<Pod>) -> (Value, TypeMeta) {
        let types = request.types.clone();
        let mut value = serde_json::to_value(&request).expect("serializable");
        for pod in ["object", "oldObject"] {
            if let Some(meta) = value[pod]
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
            {
                meta.remove(MANAGED_FIELDS);
            }
        }
        (value, types)
    }

    fn ours(body: &[u8]) -> serde_json::Result<Option<AdmissionRequest<Pod>>> {
        Ok(parse(body)?.map(|r| AdmissionRequest {
            types: r.types,
            uid: r.uid,
            kind: r.kind,
            resource: r.resource,
            sub_resource: r.sub_resource,
            request_kind: r.request_kind,
            request_resource: r.request_resource,
            request_sub_resource: r.request_sub_resource,
            name: r.name,
            namespace: r.namespace,
            operation: r.operation,
            user_info: r.user_info,
            object: r.object.map(|p| p.0),
            old_object: r.old_object.map(|p| p.0),
            dry_run: r.dry_run,
            options: r.options,
        }))
    }

    #[test]
    fn every_recorded_review_parses_as_kube_parses_it_without_managed_fields() {
        let mut with_managed_fields = 0;
        for (name, body) in fixtures() {
            let kube = kube_parse(&body).unwrap_or_else(|| panic!("{name}: kube's parse"));
            let had = kube
                .object
                .as_ref()
                .and_then(|p| p.metadata.managed_fields.as_ref())
                .is_some_and(|m| !m.is_empty());
            with_managed_fields += usize::from(had);
            let ours = ours(&body)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .unwrap_or_else(|| panic!("{name}: no request"));
            for pod in [&ours.object, &ours.old_object].into_iter().flatten() {
                assert_eq!(pod.metadata.managed_fields, None, "{name}");
            }
            assert_eq!(comparable(ours), comparable(kube), "{name}");
        }
        assert!(
            with_managed_fields >= 3,
            "the fixtures must exercise the skip"
        );
    }

    /// Fuzz-style: thousands of corruptions of the recorded reviews (bytes replaced by JSON
    /// punctuation, deleted, cut). Whatever kube's parse accepts ours accepts, with the same
    /// request; ours may accept more only through the skipped managedFields.
    #[test]
    fn corrupted_reviews_parse_as_kube_parses_them() {
        const PUNCTUATION: &[u8] = b"{}[]\":,\\ 0a-.e";
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let (mut both_ok, mut both_err, mut only_ours) = (0, 0, 0);
        for (name, body) in fixtures() {
            for round in 0..400 {
                let mut bad = body.clone();
                let at = next(bad.len());
                match round % 3 {
                    0 => bad[at] = PUNCTUATION[next(PUNCTUATION.len())],
                    1 => {
                        bad.remove(at);
                    }
                    _ => bad.truncate(at),
                }
                match (kube_parse(&bad), ours(&bad)) {
                    (Some(kube), Ok(Some(ours))) => {
                        both_ok += 1;
                        assert_eq!(comparable(ours), comparable(kube), "{name} round {round}");
                    }
                    (Some(_), other) => {
                        panic!("{name} round {round}: kube parses it, ours gives {other:?}")
                    }
                    (None, Ok(Some(_))) => {
                        only_ours += 1;
                        let text = String::from_utf8_lossy(&bad);
                        let managed = text.find(MANAGED_FIELDS).expect("managedFields");
                        let end = text[managed..]
                            .find("\"name\"")
                            .map_or(text.len(), |e| managed + e);
                        assert!(
                            (managed..end).contains(&at),
                            "{name} round {round}: only ours accepts a change at byte {at} \
                             outside managedFields"
                        );
                    }
                    (None, _) => both_err += 1,
                }
            }
        }
        assert!(
            both_ok > 100 && both_err > 100,
            "{both_ok} {both_err} {only_ours}"
        );
    }

    #[test]
    fn the_pod_keeps_k8s_openapi_rules_for_what_it_reads() {
        let review = |pod: Value| {
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}, "object": pod}})
            .to_string()
        };
        let pod = |body: String| -> serde_json::Result<Pod> {
            let request = parse(body.as_bytes())?.expect("a request");
            Ok(request.object.expect("an object").0)
        };
        // Escaped keys (no borrowed text) are read too; a repeated key keeps its last value, as
        // in k8s-openapi's parse.
        let escaped = review(json!({"metadata": {"NAME": "x", "labels": {"a": "1"}}}))
            .replace("NAME", "n\\u0061me");
        let parsed = pod(escaped).expect("parses");
        assert_eq!(parsed.metadata.name.as_deref(), Some("x"));
        let twice = review(json!({"metadata": {"name": "a"}})).replace(
            r#""name":"a""#,
            r#""name":"a","managedFields":[{"manager":"m"}],"name":"b""#,
        );
        let parsed = pod(twice).expect("parses");
        assert_eq!(parsed.metadata.name.as_deref(), Some("b"));
        assert_eq!(parsed.metadata.managed_fields, None);
        // Null metadata is an empty one; a wrong apiVersion or kind, or a mistyped field, fails.
        assert_eq!(
            pod(review(json!({"metadata": null}))).expect("parses"),
            Pod::default()
        );
        assert!(pod(review(json!({"apiVersion": "v2"}))).is_err());
        assert!(pod(review(json!({"kind": "Deployment"}))).is_err());
        assert!(pod(review(json!({"metadata": {"labels": "x"}}))).is_err());
        assert!(pod(review(json!({"metadata": []}))).is_err());
        // Like kube's review: apiVersion and kind are needed; no request is `None`.
        assert!(parse(br#"{"kind": "AdmissionReview", "request": null}"#).is_err());
        assert!(
            parse(br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#)
                .expect("parses")
                .is_none()
        );
    }
}
