//! Apiserver-side validation of the embedded sidecar configuration.
//!
//! `monasca_config::SidecarConfig` belongs to a crate without Kubernetes knowledge (the sidecar
//! links it), so its derived schema only knows types. Here the CRD's copy of that schema is
//! tightened with the checks `SidecarConfig::validate` does at run time, so that `kubectl apply`
//! rejects a bad config instead of the sidecar logging it later. Every constraint is also checked
//! by `validate`, never stricter, except for the size caps that keep CEL cost estimates bounded.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Value, json};

/// `SocketAddr` syntax: an IPv4 or bracketed IPv6 literal and a port (no host names: the
/// sidecar binds, it does not resolve). Octets 0-255 without leading zeros and ports 0-65535, so that every match parses as a
/// `SocketAddr` (a property test checks it); IPv6 literals are checked by the same test for the
/// forms written in practice (`[::]`, `[::1]`, full and compressed).
pub const SOCKET_ADDR: &str = concat!(
    r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    r"|\[(",
    r"([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}",
    r"|([0-9a-fA-F]{1,4}:){1,7}:",
    r"|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}",
    r"|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}",
    r"|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}",
    r"|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}",
    r"|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}",
    r"|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}",
    r"|:((:[0-9a-fA-F]{1,4}){1,7}|:)",
    r")\]):",
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)$",
);
/// A Prometheus label name.
const LABEL_NAME: &str = r"^[a-zA-Z_][a-zA-Z0-9_]*$";
/// `host:port`, `host:first-last` or `unix:/absolute/path` (see `ScrapeTarget::parse`).
const SCRAPE_TARGET: &str = r"^(unix:/.+|.+:[0-9]{1,5}(-[0-9]{1,5})?)$";

/// Pointer (below the config schema) -> keywords to add there.
fn constraints() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/properties/listen/properties/metrics",
            json!({"pattern": SOCKET_ADDR, "maxLength": 64}),
        ),
        (
            "/properties/listen/properties/ingest",
            json!({"pattern": SOCKET_ADDR, "maxLength": 64}),
        ),
        (
            "/properties/listen/properties/statsd",
            json!({"pattern": SOCKET_ADDR, "maxLength": 64}),
        ),
        (
            "/properties/listen/properties/otlp",
            json!({"pattern": SOCKET_ADDR, "maxLength": 64}),
        ),
        (
            "/properties/otlp/properties/workerAttributes",
            json!({"maxItems": 64}),
        ),
        (
            "/properties/otlp/properties/maxAttributes",
            json!({"minimum": 1}),
        ),
        ("/properties/workerLabels", json!({"maxItems": 64})),
        (
            "/properties/workerLabels/items",
            json!({"pattern": LABEL_NAME, "maxLength": 128}),
        ),
        (
            "/properties/multiprocessDir",
            json!({"pattern": "^/", "maxLength": 4096}),
        ),
        (
            "/properties/scrape/properties/targets",
            json!({"maxItems": 256}),
        ),
        (
            "/properties/scrape/properties/targets/items",
            json!({"pattern": SCRAPE_TARGET, "maxLength": 512}),
        ),
        (
            "/properties/scrape/properties/path",
            json!({"pattern": "^/", "maxLength": 1024}),
        ),
        (
            "/properties/aggregation/properties/rules/items/properties/match",
            json!({"minLength": 1}),
        ),
        (
            "/properties/statsd/properties/mappings/items/properties/match",
            json!({"minLength": 1}),
        ),
        (
            "/properties/limits/properties/maxBodyBytes",
            json!({"minimum": 1}),
        ),
        (
            "/properties/limits/properties/maxSeriesPerWorker",
            json!({"minimum": 1}),
        ),
    ]
}

/// CEL rules over the whole config (the apiserver has applied defaults before it runs them).
fn rules() -> Value {
    json!([{
        "rule": "!has(self.listen) || !has(self.listen.metrics) || !has(self.listen.ingest) \
                 || self.listen.metrics != self.listen.ingest",
        "message": "listen.metrics and listen.ingest must be different addresses",
    }])
}

/// `schema_with` for `MetricsSidecarSpec.config`: the derived `SidecarConfig` schema plus the
/// constraints above. A pointer that no longer resolves (the config type changed) is reported by
/// the `config_schema_has_every_constraint` test rather than silently dropped in production.
pub(crate) fn sidecar_config(generator: &mut SchemaGenerator) -> Schema {
    let mut value: Value = monasca_config::SidecarConfig::json_schema(generator).into();
    for (pointer, keywords) in constraints() {
        if let (Some(Value::Object(target)), Value::Object(keywords)) =
            (value.pointer_mut(pointer), keywords)
        {
            target.extend(keywords);
        }
    }
    if let Value::Object(object) = &mut value {
        object.insert("x-kubernetes-validations".into(), rules());
    }
    Schema::try_from(value).unwrap_or_else(|_| Schema::from(true))
}

/// Removes `null` from every `enum` list in a schema tree (see [`crate::crd`]).
pub(crate) fn strip_null_enum_values(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Array(values)) = object.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            object.values_mut().for_each(strip_null_enum_values);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null_enum_values),
        _ => {}
    }
}

/// The pointers [`sidecar_config`] must find, for the test that guards against config drift.
#[cfg(test)]
pub(crate) fn constraint_pointers() -> Vec<&'static str> {
    constraints().into_iter().map(|(p, _)| p).collect()
}
