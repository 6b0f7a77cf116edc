use super::*;
use serde_json::json;

fn spec_schema() -> serde_json::Value {
    let crd = serde_json::to_value(crd().expect("CRD builds")).expect("CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn crd_names_match_the_contract() {
    let crd = crd().expect("CRD builds");
    assert_eq!(crd.spec.group, "monasca.openstack.org");
    assert_eq!(crd.spec.names.kind, "MetricsSidecar");
    assert_eq!(crd.spec.names.plural, "metricssidecars");
    assert_eq!(crd.spec.names.short_names, Some(vec!["msc".to_string()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Injected", "Uninjected", "Ready", "Age"]);
}

#[test]
fn empty_spec_gets_the_documented_defaults() {
    let spec: MetricsSidecarSpec = serde_json::from_value(json!({})).expect("empty spec is valid");
    assert_eq!(spec, MetricsSidecarSpec::default());
    assert_eq!(spec.native_sidecar, NativeSidecar::Auto);
    assert!(spec.prometheus_annotations);
    assert!(!spec.multiprocess && !spec.restart_on_change);
    assert_eq!(spec.resources, default_resources());
}

#[test]
fn schema_defaults_agree_with_serde_defaults() {
    // The apiserver applies the schema defaults; the operator applies serde's. They must agree,
    // or an object would mean different things depending on who read it.
    let schema = spec_schema();
    let props = &schema["properties"];
    let from_schema = json!({
        "nativeSidecar": props["nativeSidecar"]["default"],
        "multiprocess": props["multiprocess"]["default"],
        "prometheusAnnotations": props["prometheusAnnotations"]["default"],
        "restartOnChange": props["restartOnChange"]["default"],
        "resources": props["resources"]["default"],
        "config": props["config"]["default"],
    });
    let spec: MetricsSidecarSpec = serde_json::from_value(from_schema).expect("defaults parse");
    assert_eq!(spec, MetricsSidecarSpec::default());
}

#[test]
fn enums_are_validated_by_the_apiserver() {
    let props = &spec_schema()["properties"];
    assert_eq!(
        props["nativeSidecar"]["enum"],
        json!(["auto", "always", "never"])
    );
    assert_eq!(
        props["imagePullPolicy"]["enum"],
        json!(["Always", "IfNotPresent", "Never"])
    );
    assert_eq!(props["imagePullPolicy"]["nullable"], json!(true));
}

#[test]
fn config_schema_has_every_constraint() {
    let config = &spec_schema()["properties"]["config"];
    for pointer in schema::constraint_pointers() {
        let node = config
            .pointer(pointer)
            .unwrap_or_else(|| panic!("config schema has no {pointer}: did SidecarConfig change?"));
        let constrained = ["pattern", "minimum", "minLength", "maxItems"]
            .iter()
            .any(|k| node.get(k).is_some());
        assert!(constrained, "{pointer} carries no constraint: {node}");
    }
    assert!(config["x-kubernetes-validations"].is_array());
}

#[test]
fn name_length_is_enforced_at_the_root() {
    let crd = serde_json::to_value(crd().expect("CRD builds")).expect("serializes");
    let rules =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"];
    assert_eq!(rules[0]["rule"], json!("size(self.metadata.name) <= 63"));
}

#[test]
fn config_patterns_accept_what_the_sidecar_accepts() {
    // The apiserver patterns must never reject a config that SidecarConfig::validate accepts.
    let config = &spec_schema()["properties"]["config"];
    let pattern = |pointer: &str| {
        let p = config
            .pointer(pointer)
            .and_then(|n| n["pattern"].as_str())
            .expect("pattern");
        regex_lite(p)
    };
    let addr = pattern("/properties/listen/properties/metrics");
    for ok in ["0.0.0.0:9102", "127.0.0.1:9091", "[::]:9102", "[::1]:8125"] {
        assert!(addr(ok), "{ok}");
        assert!(ok.parse::<std::net::SocketAddr>().is_ok());
    }
    for bad in ["localhost:9102", "0.0.0.0", ":9102"] {
        assert!(!addr(bad), "{bad}");
    }
    let target = pattern("/properties/scrape/properties/targets/items");
    for ok in [
        "127.0.0.1:8001-8004",
        "unix:/run/app/*.sock",
        "[::1]:9000",
        "app:80",
    ] {
        assert!(target(ok), "{ok}");
        assert!(config::ScrapeTarget::parse(ok).is_ok(), "{ok}");
    }
}

/// The schema patterns are RE2-compatible (what the apiserver uses); the `regex` crate reads them
/// the same way.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool + use<> {
    let re = regex::Regex::new(pattern).expect("pattern compiles");
    move |s: &str| re.is_match(s)
}

#[test]
fn config_hash_is_stable_and_sensitive() {
    let base = MetricsSidecarSpec::default();
    let hash = base.config_hash().expect("hash");
    assert_eq!(hash.len(), 16);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        hash,
        base.clone().config_hash().expect("hash"),
        "deterministic"
    );

    // A round trip through JSON (what the reflector store sees) does not change it.
    let round: MetricsSidecarSpec =
        serde_json::from_value(serde_json::to_value(&base).expect("json")).expect("parse");
    assert_eq!(round.config_hash().expect("hash"), hash);

    let mut changed = base.clone();
    changed.config.stale_after = config::Duration::from_secs(90);
    assert_ne!(
        changed.config_hash().expect("hash"),
        hash,
        "config changes the hash"
    );

    let mut changed = base.clone();
    changed.multiprocess = true;
    assert_ne!(
        changed.config_hash().expect("hash"),
        hash,
        "pod shape changes the hash"
    );

    let mut changed = base.clone();
    changed.image = Some("monasca/sidecar:2".into());
    assert_ne!(
        changed.config_hash().expect("hash"),
        hash,
        "image changes the hash"
    );

    let mut same = base.clone();
    same.restart_on_change = true;
    assert_eq!(
        same.config_hash().expect("hash"),
        hash,
        "restartOnChange is not pod-affecting"
    );
}

#[test]
fn keys_are_the_contract() {
    assert_eq!(ANNOTATION_INJECT, "monasca.openstack.org/inject");
    assert_eq!(ANNOTATION_INJECTED, "monasca.openstack.org/injected");
    assert_eq!(ANNOTATION_CONFIG_HASH, "monasca.openstack.org/config-hash");
    assert_eq!(LABEL_SIDECAR, "monasca.openstack.org/sidecar");
    assert_eq!(SIDECAR_CONTAINER_NAME, "monasca-sidecar");
    assert_eq!(config_map_name("default"), "default-monasca-sidecar");
}

#[test]
fn pod_template_hash_ignores_config_only_changes() {
    let base = MetricsSidecarSpec::default();
    let hash = base.pod_template_hash().expect("hash");
    let mut config_only = base.clone();
    config_only.config.stale_after = config::Duration::from_secs(90);
    assert_eq!(config_only.pod_template_hash().expect("hash"), hash);
    let mut pod_shape = base.clone();
    pod_shape.image = Some("monasca/sidecar:2".into());
    assert_ne!(pod_shape.pod_template_hash().expect("hash"), hash);
    let mut monitor = base.clone();
    monitor.pod_monitor = true;
    assert_eq!(
        monitor.config_hash().expect("hash"),
        base.config_hash().expect("hash")
    );
}
