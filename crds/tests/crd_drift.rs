//! The committed CRD must be exactly what the Rust types generate: a hand edit, or a type change
//! without `crdgen --write`, fails here (and so in CI) instead of in a cluster.

use std::path::PathBuf;

#[test]
fn committed_crd_matches_the_types() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds/metricssidecars.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let generated = monasca_crds::crd_yaml().expect("CRD renders");
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}:\n  committed: {a}\n  generated: {b}", i + 1))
            .unwrap_or_else(|| "one file is a prefix of the other".into());
        panic!(
            "{} is out of date ({first_difference}).\nRun: cargo run -p monasca-crds --bin crdgen -- --write",
            path.display()
        );
    }
}

#[test]
fn committed_crd_is_valid_yaml_of_the_right_resource() {
    let generated = monasca_crds::crd_yaml().expect("CRD renders");
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_saphyr::from_str(&generated).expect("generated YAML parses back");
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("metricssidecars.monasca.openstack.org")
    );
}
