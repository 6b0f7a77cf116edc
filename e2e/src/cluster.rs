//! Helpers for the cluster end-to-end tests (`tests/cluster/`): a kube client for the cluster
//! (named by `KUBECONFIG`, or started by [`crate::control_plane`]), applying the committed YAML,
//! polling, a kubeconfig for a ServiceAccount token, and running the operator binary
//! out-of-cluster.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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

/// A client for the cluster of a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Client {
    crate::control_plane::client_for(kubeconfig)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Writes a kubeconfig for the same cluster (and CA) as `kubeconfig`'s current context that
/// authenticates with a bearer `token` instead (a ServiceAccount's, from the TokenRequest API).
pub fn token_kubeconfig(kubeconfig: &Path, token: &str, out: &Path) {
    let text = std::fs::read_to_string(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let config: serde_json::Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", kubeconfig.display()));
    let named = |list: &str, name: &str| {
        config[list]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{}: no {list} entry {name}", kubeconfig.display()))
    };
    let context = config["current-context"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no current-context", kubeconfig.display()));
    let context = named("contexts", context);
    let cluster_name = context["context"]["cluster"].as_str().unwrap_or_default();
    let mut cluster = named("clusters", cluster_name)["cluster"].clone();
    // A relative certificate-authority path is relative to the kubeconfig's directory.
    if let Some(ca) = cluster["certificate-authority"].as_str() {
        let base = kubeconfig.parent().unwrap_or(Path::new("."));
        cluster["certificate-authority"] = base.join(ca).display().to_string().into();
    }
    let token_config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": "cluster", "user": "token"}}],
        "current-context": "token",
    });
    std::fs::write(out, token_config.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// The value of one sample (`name{labels}` exactly as exposed) in a Prometheus text exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
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
        // The namespace asked for, else the object's own, else the kubeconfig's default.
        let namespace = namespace.or(object.metadata.namespace.as_deref());
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

/// Applies the committed `MetricsSidecar` CRD and waits until the apiserver serves it
/// (`Established`), as the cluster tests and the operator bench both need first.
pub async fn install_crd(client: &Client, timeout: Duration) {
    apply_yaml(
        client,
        &repo_root().join("manifests/crds/metricssidecars.yaml"),
        None,
    )
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually("the CRD to be established", timeout, || async {
        let crd = crds
            .get("metricssidecars.monasca.openstack.org")
            .await
            .ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
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

/// The operator binary, running out-of-cluster; stopped (SIGTERM, then SIGKILL) on drop. Its
/// logs go to a file, printed when the test fails (so they do not interleave with the test
/// runner's lines).
pub struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    /// Starts `monasca-operator` with `args`.
    pub fn start(args: &[String]) -> Operator {
        let binary = crate::workspace_binary("monasca-operator", "monasca-operator");
        let log = crate::scratch_dir("operator").join("operator.log");
        let out = std::fs::File::create(&log).expect("operator log file");
        let err = out.try_clone().expect("operator log file");
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start monasca-operator");
        Operator { child, log }
    }

    /// Its process id (to read `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (a start-up error makes it exit).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit by itself: its exit
    /// status, or `None` when it is still running (it is then killed on drop). `within` is a
    /// bound on a hang, not a speed measurement.
    pub fn sigterm_and_wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The operator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        if !std::thread::panicking() {
            if let Some(dir) = self.log.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        } else {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            // The stderr handle directly: libtest-mimic does not capture, but keep it one block.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "--- monasca-operator log ({}), last 60 lines:\n{tail}",
                self.log.display()
            );
        }
    }
}
