//! Helpers for the cluster end-to-end test (`tests/cluster.rs`): a kube client for the cluster
//! named by `KUBECONFIG`, applying the committed YAML, polling, and running the operator binary
//! out-of-cluster.

use kube::api::{Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{self, Scope};
use kube::{Api, Client};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The field manager of everything the test applies.
pub const TEST_MANAGER: &str = "monasca-e2e";

/// The kubeconfig the test runs against: the first path of `KUBECONFIG`, or `None` (skip).
pub fn kubeconfig() -> Option<PathBuf> {
    let value = std::env::var_os("KUBECONFIG")?;
    std::env::split_paths(&value).find(|p| !p.as_os_str().is_empty())
}

/// A client for that cluster.
pub async fn client() -> Client {
    // kube's TLS (rustls) needs the process-wide provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default()
        .await
        .expect("a client for the cluster named by KUBECONFIG")
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

/// Server-side applies every document of a YAML file (any kind the cluster serves).
pub async fn apply_yaml(client: &Client, path: &Path, namespace: Option<&str>) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    for document in documents.into_iter().filter(|d| d.is_object()) {
        let object: DynamicObject = serde_json::from_value(document)
            .unwrap_or_else(|e| panic!("{}: not a Kubernetes object: {e}", path.display()));
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("apiVersion");
        let (resource, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("the cluster does not serve {gvk:?}: {e}"));
        let api: Api<DynamicObject> = match (caps.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let name = object.metadata.name.clone().expect("metadata.name");
        api.patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", types.kind));
    }
}

/// Polls `check` every 250 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The operator binary, running out-of-cluster; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Operator {
    child: Child,
}

impl Operator {
    /// Starts `monasca-operator` with `args`, its logs going to the test's stderr.
    pub fn start(args: &[String]) -> Operator {
        let binary = crate::workspace_binary("monasca-operator", "monasca-operator");
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start monasca-operator");
        Operator { child }
    }

    /// Stops it as Kubernetes would (SIGTERM: drain, release the Lease) and waits.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.terminate();
    }
}
