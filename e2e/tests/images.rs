//! The published Dockerfiles and the images ci/images.sh builds locally (the ones the real-pod
//! e2e test runs) have the same runtime content: base, user, entrypoint, exposed ports and files.
//! Neither is built here; both are parsed.

use monasca_e2e::cluster::repo_root;
use monasca_e2e::dockerfile::{RuntimeStage, runtime_stage};

fn stage(path: &str) -> RuntimeStage {
    let file = repo_root().join(path);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    runtime_stage(&text).unwrap_or_else(|| panic!("{path} has no FROM"))
}

fn check_in_step(binary: &str) {
    let published = stage(&format!("Dockerfile.{binary}"));
    let local = stage(&format!("ci/images/{binary}.Containerfile"));
    let program = format!("/usr/local/bin/monasca-{binary}");
    assert_eq!(published.base, "scratch");
    assert_eq!(local.base, published.base, "base");
    assert_eq!(local.user, published.user, "USER");
    assert_eq!(published.user.as_deref(), Some("65532:65532"));
    assert_eq!(local.entrypoint, published.entrypoint, "ENTRYPOINT");
    assert_eq!(
        published.entrypoint.as_deref(),
        Some(format!("[\"{program}\"]").as_str())
    );
    assert_eq!(local.cmd, published.cmd, "CMD");
    assert_eq!(local.exposed, published.exposed, "EXPOSE");
    assert_eq!(local.files, published.files, "the files in the image");
    for file in [
        "/etc/passwd",
        "/etc/group",
        "/etc/ssl/certs/ca-certificates.crt",
        &program,
    ] {
        assert!(published.files.contains(file), "{file} in the image");
    }
    // Files from the build context: the Dockerfile's (repository root) and the local image's
    // (ci/images/, what ci/images.sh copies into its context) exist, and the user is in passwd.
    for source in &published.context_sources {
        assert!(repo_root().join(source).is_file(), "{source} exists");
    }
    for source in local
        .context_sources
        .iter()
        .filter(|s| s.starts_with("rootfs/"))
    {
        assert!(
            published
                .context_sources
                .contains(&format!("ci/images/{source}")),
            "{source}: the same file in both"
        );
    }
    let passwd =
        std::fs::read_to_string(repo_root().join("ci/images/rootfs/etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some("65532") && l.split(':').nth(3) == Some("65532")),
        "uid 65532 in passwd:\n{passwd}"
    );
}

#[test]
fn sidecar_dockerfile_and_local_image_are_in_step() {
    check_in_step("sidecar");
}

#[test]
fn operator_dockerfile_and_local_image_are_in_step() {
    check_in_step("operator");
}
