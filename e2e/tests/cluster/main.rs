//! The operator against a real apiserver. The cluster is, in order:
//!
//! 1. the one named by `KUBECONFIG` (kind, k3d, ...: a disposable one);
//! 2. else a control plane this binary starts on loopback (etcd, kube-apiserver,
//!    kube-controller-manager from `ci/control-plane/install.sh`; see
//!    `monasca_e2e::control_plane`), one for all the tests, stopped at the end;
//! 3. else none: every test is reported **ignored, with the reason** (how to get a cluster),
//!    and with `CI=true` every test **fails** with it instead.
//!
//! A scenario that needs the apiserver configured otherwise (a feature gate off) starts a
//! control plane of its own instead ([`OwnPlane`]), from the cached binaries of a pinned
//! version: ignored without them, failed under `CI=true`.
//!
//! No kubelet is needed: the tests only read what the apiserver stores (pods stay Pending). The
//! tests run one at a time: each owns the cluster-wide `MutatingWebhookConfiguration`
//! `monasca-sidecar-injector` while it runs. The operator runs out-of-cluster and registers its
//! webhook by URL (`--webhook-url https://127.0.0.1:PORT/mutate`). See e2e/README.md.
//!
//! `harness = false` (libtest-mimic): libtest cannot decide at run time that a test is ignored.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use monasca_crds::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_INJECT, CONFIG_MAP_KEY, LABEL_SIDECAR, MetricsSidecar,
    MetricsSidecarSpec, NativeSidecar, SIDECAR_CONTAINER_NAME, WEBHOOK_CONFIGURATION_NAME,
    WEBHOOK_TLS_SECRET_NAME, config_map_name,
};
use monasca_e2e::cluster::{self, Operator, eventually};
use monasca_e2e::control_plane::{Binaries, ControlPlane};
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

type Scenario = fn(Env) -> Pin<Box<dyn Future<Output = ()> + Send>>;

// Scenarios by theme, each module with its own `SCENARIOS` list; the helpers below (`Env`,
// `install`, `wait_*`, pod builders) are shared through `super::*`.
mod hardening;
mod injected_pod;
mod promises;
mod real_pods;

/// Every test, by name.
fn scenarios() -> impl Iterator<Item = &'static (&'static str, Scenario)> {
    BASICS
        .iter()
        .chain(promises::SCENARIOS)
        .chain(hardening::SCENARIOS)
        .chain(injected_pod::SCENARIOS)
        .chain(real_pods::SCENARIOS)
}

/// A control plane of a scenario's own, for what the shared one cannot be (a feature gate off):
/// the pinned Kubernetes version named by `version_key` in `ci/control-plane/versions.env` and
/// extra kube-apiserver flags. Started for that scenario alone, whatever the shared cluster is,
/// and stopped after it; missing binaries ignore the scenario (fail it under `CI=true`).
struct OwnPlane {
    version_key: &'static str,
    apiserver_flags: &'static [&'static str],
}

/// The scenario's own control plane, if it asks for one.
fn own_plane(name: &str) -> Option<&'static OwnPlane> {
    promises::OWN_PLANES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, plane)| plane)
}

/// Starts `plane` (on the calling thread, which must outlive it) or says why not: `Err(Ok)` when
/// its binaries are missing (ignored outside CI), `Err(Err)` when it failed to start.
fn start_own_plane(plane: &OwnPlane) -> Result<ControlPlane, Result<String, String>> {
    let version = monasca_e2e::control_plane::pinned(plane.version_key)
        .ok_or_else(|| Err(format!("{} is not in versions.env", plane.version_key)))?;
    let binaries = Binaries::locate_version(version).map_err(Ok)?;
    let started = std::time::Instant::now();
    let control_plane = ControlPlane::start_with(&binaries, plane.apiserver_flags)
        .map_err(|e| Err(format!("the scenario's control plane did not start: {e}")))?;
    say(&format!(
        "cluster e2e: the scenario's own control plane {version} {:?} at {} in {:.1}s",
        plane.apiserver_flags,
        control_plane.server(),
        started.elapsed().as_secs_f64()
    ));
    Ok(control_plane)
}

/// The first scenarios: injection, rollout, RBAC, opt-in and garbage collection.
const BASICS: &[(&str, Scenario)] = &[
    (
        "operator_injects_reconciles_and_catches_pods_admitted_while_it_was_down",
        |env| Box::pin(injects_reconciles_and_catches_up(env)),
    ),
    (
        "native_sidecar_auto_is_native_only_for_pods_that_run_to_completion",
        |env| Box::pin(native_sidecar(env)),
    ),
    (
        "deployment_pods_are_injected_and_restart_on_change_rolls_the_deployment",
        |env| Box::pin(deployment_rollout(env)),
    ),
    (
        "shipped_rbac_is_sufficient_and_forbidden_writes_are_refused",
        |env| Box::pin(shipped_rbac(env)),
    ),
    (
        "webhook_skips_pods_not_opted_in_and_excluded_namespaces",
        |env| Box::pin(webhook_skips(env)),
    ),
    (
        "deleting_a_metrics_sidecar_garbage_collects_its_config_map",
        |env| Box::pin(garbage_collection(env)),
    ),
];

/// The cluster the tests run against, decided once per test binary.
enum Target {
    Cluster {
        kubeconfig: PathBuf,
        /// The control plane this binary started (stopped when the last test is done); the
        /// scenarios that stop and restart its apiserver need it.
        control_plane: Option<Arc<Mutex<ControlPlane>>>,
    },
    /// No cluster, outside CI: the tests are ignored with this reason.
    Ignored(String),
    /// The tests fail with this message (CI without a cluster, or a control plane that did not
    /// start).
    Failed(String),
}

/// Written to the stderr handle directly: it must show whatever libtest-mimic prints.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn target() -> Target {
    if let Some(kubeconfig) = cluster::kubeconfig() {
        say(&format!(
            "cluster e2e: the cluster named by KUBECONFIG ({})",
            kubeconfig.display()
        ));
        return Target::Cluster {
            kubeconfig,
            control_plane: None,
        };
    }
    match Binaries::locate() {
        Ok(binaries) => {
            let started = std::time::Instant::now();
            match ControlPlane::start(&binaries) {
                Ok(plane) => {
                    say(&format!(
                        "cluster e2e: started etcd + kube-apiserver + kube-controller-manager {} \
                         at {} in {:.1}s",
                        plane.version(),
                        plane.server(),
                        started.elapsed().as_secs_f64()
                    ));
                    Target::Cluster {
                        kubeconfig: plane.kubeconfig().to_path_buf(),
                        control_plane: Some(Arc::new(Mutex::new(plane))),
                    }
                }
                Err(e) => Target::Failed(format!("the control plane did not start: {e}")),
            }
        }
        Err(reason) if in_ci() => Target::Failed(format!(
            "CI=true and no cluster (KUBECONFIG unset): {reason}"
        )),
        Err(reason) => {
            say(&format!(
                "cluster e2e ignored: KUBECONFIG is unset and {reason}"
            ));
            Target::Ignored(format!(
                "no cluster: KUBECONFIG unset, control plane {} not installed \
                 (ci/control-plane/install.sh)",
                monasca_e2e::control_plane::kubernetes_version()
            ))
        }
    }
}

/// `CI=true`: what cannot run fails instead of being ignored.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // One at a time: each test owns the cluster-wide webhook configuration.
    args.test_threads = Some(1);
    let probes: Vec<Trial> = scenarios()
        .map(|(name, _)| Trial::test(*name, || Ok(())))
        .collect();
    // Scenarios with a control plane of their own do not need the shared one.
    let any_runs = probes
        .iter()
        .any(|t| !args.is_ignored(t) && !args.is_filtered_out(t) && own_plane(t.name()).is_none());
    // Start a control plane only when a test will use it (not for --list or a filter that
    // selects none). The tests run on this (main) thread, which outlives the control plane.
    let target = Arc::new(if args.list || !any_runs {
        Target::Ignored("not selected".into())
    } else {
        target()
    });
    let trials = scenarios()
        .map(|&(name, scenario)| {
            let target = target.clone();
            Trial::ignorable_test(name, move || match (&*target, own_plane(name)) {
                (_, Some(plane)) => match start_own_plane(plane) {
                    Ok(control_plane) => {
                        let kubeconfig = control_plane.kubeconfig().to_path_buf();
                        let control_plane = Arc::new(Mutex::new(control_plane));
                        run(&kubeconfig, Some(control_plane.clone()), name, scenario);
                        drop(control_plane);
                        Ok(Completion::Completed)
                    }
                    Err(Ok(missing)) if !in_ci() => Ok(Completion::ignored_with(missing)),
                    Err(Ok(reason) | Err(reason)) => Err(Failed::from(reason)),
                },
                (Target::Ignored(reason), None) => Ok(Completion::ignored_with(reason)),
                (Target::Failed(message), None) => Err(Failed::from(message.as_str())),
                (
                    Target::Cluster {
                        kubeconfig,
                        control_plane,
                    },
                    None,
                ) => {
                    // A scenario that needs more than the cluster (real_pods: podman and the
                    // local images): ignored with the reason, failed with it under CI.
                    if let Some(reason) = real_pods::unmet_requirement(name) {
                        if in_ci() {
                            return Err(Failed::from(reason));
                        }
                        return Ok(Completion::ignored_with(reason));
                    }
                    if control_plane.is_none() && hardening::NEEDS_OWN_CONTROL_PLANE.contains(&name)
                    {
                        let reason = "stops and restarts kube-apiserver: needs the control plane \
                                      this binary starts (KUBECONFIG names an outside cluster)";
                        if in_ci() {
                            return Err(Failed::from(reason));
                        }
                        return Ok(Completion::ignored_with(reason));
                    }
                    run(kubeconfig, control_plane.clone(), name, scenario);
                    Ok(Completion::Completed)
                }
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Stops the control plane (every test closure, holding the other references, has run).
    drop(target);
    conclusion.exit_code()
}

/// What a scenario gets: an admin client, the kubeconfig, unique names, and a list of what to
/// delete afterwards (run even when the scenario panics).
#[derive(Clone)]
struct Env {
    client: Client,
    kubeconfig: PathBuf,
    /// The control plane this binary started, if it did (see [`Env::stop_apiserver`]).
    control_plane: Option<Arc<Mutex<ControlPlane>>>,
    run: String,
    cleanup: Arc<Mutex<Vec<Cleanup>>>,
}

enum Cleanup {
    Namespace(String),
    Pod(String, String),
    Sidecar(String, String),
    /// Cluster-wide, so it would outlive the scenario: an opt-in role binding.
    ClusterRoleBinding(String),
    /// A ValidatingAdmissionPolicy and its binding of the same name.
    AdmissionPolicy(String),
}

fn run(
    kubeconfig: &Path,
    control_plane: Option<Arc<Mutex<ControlPlane>>>,
    name: &str,
    scenario: Scenario,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let client = cluster::client(kubeconfig).await;
        let env = Env {
            client: client.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
            control_plane,
            run: run_id(name),
            cleanup: Arc::default(),
        };
        // The scenario runs in its own task so that cleanup runs even when it panics.
        let outcome = tokio::spawn(scenario(env.clone())).await;
        // A scenario that failed during an apiserver outage leaves the apiserver running.
        if env.control_plane.is_some() {
            env.start_apiserver().await;
        }
        cleanup(&env).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    });
}

/// Unique per test and run, so reruns do not collide with a namespace still terminating.
fn run_id(name: &str) -> String {
    let initials: String = name.split('_').filter_map(|w| w.chars().next()).collect();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 10_000_000)
        .unwrap_or_default();
    format!("{}-{stamp}", &initials[..initials.len().min(8)])
}

async fn cleanup(env: &Env) {
    let items = std::mem::take(&mut *env.cleanup.lock().expect("cleanup list"));
    let deleted_namespaces: Vec<String> = items
        .iter()
        .filter_map(|item| match item {
            Cleanup::Namespace(ns) => Some(ns.clone()),
            _ => None,
        })
        .collect();
    for item in items.into_iter().rev() {
        let _ = match item {
            Cleanup::Namespace(ns) => Api::<Namespace>::all(env.client.clone())
                .delete(&ns, &DeleteParams::default())
                .await
                .map(drop),
            Cleanup::Pod(ns, name) => Api::<Pod>::namespaced(env.client.clone(), &ns)
                .delete(&name, &DeleteParams::default())
                .await
                .map(drop),
            Cleanup::Sidecar(ns, name) => {
                Api::<MetricsSidecar>::namespaced(env.client.clone(), &ns)
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(drop)
            }
            Cleanup::ClusterRoleBinding(name) => {
                Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(env.client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(drop)
            }
            Cleanup::AdmissionPolicy(name) => {
                use k8s_openapi::api::admissionregistration::v1::{
                    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
                };
                let _ = Api::<ValidatingAdmissionPolicyBinding>::all(env.client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await;
                Api::<ValidatingAdmissionPolicy>::all(env.client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(drop)
            }
        };
    }
    let _ = Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .delete(WEBHOOK_CONFIGURATION_NAME, &DeleteParams::default())
        .await;
    // The next test starts from a clean cluster: its operator (which watches every namespace)
    // must not see this test's MetricsSidecars in namespaces still being deleted.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    for ns in deleted_namespaces {
        let gone = tokio::time::timeout(WAIT, async {
            while !matches!(namespaces.get_opt(&ns).await, Ok(None)) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        if gone.is_err() {
            say(&format!(
                "cleanup: namespace {ns} still there after {WAIT:?}"
            ));
        }
    }
}

impl Env {
    fn defer(&self, item: Cleanup) {
        self.cleanup.lock().expect("cleanup list").push(item);
    }

    /// Stops kube-apiserver (etcd and the controller-manager keep running): an outage. Only
    /// for scenarios listed in `hardening::NEEDS_OWN_CONTROL_PLANE`.
    async fn stop_apiserver(&self) {
        let plane = self
            .control_plane
            .clone()
            .expect("the harness's own control plane");
        tokio::task::spawn_blocking(move || plane.lock().expect("control plane").stop_apiserver())
            .await
            .expect("stopping kube-apiserver");
    }

    /// Starts kube-apiserver again on the same etcd and port and waits until it is ready (a
    /// no-op when it runs).
    async fn start_apiserver(&self) {
        let plane = self
            .control_plane
            .clone()
            .expect("the harness's own control plane");
        tokio::task::spawn_blocking(move || plane.lock().expect("control plane").start_apiserver())
            .await
            .expect("starting kube-apiserver")
            .expect("kube-apiserver restarted");
    }

    /// Creates namespace `monasca-e2e-<role>-<run>` (deleted afterwards) and waits for its
    /// `default` ServiceAccount (pods are refused until the controller-manager made it).
    async fn namespace(&self, role: &str) -> String {
        let name = format!("monasca-e2e-{role}-{}", self.run);
        Api::<Namespace>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
            )
            .await
            .expect("create namespace");
        self.defer(Cleanup::Namespace(name.clone()));
        wait_for_default_service_account(&self.client, &name).await;
        name
    }

    /// The shipped manifests' ServiceAccount `monasca-system/monasca-operator` (applied first),
    /// authenticated by a TokenRequest token: a client, its kubeconfig, and the scratch
    /// directory holding it (remove it when done).
    async fn as_operator_service_account(&self) -> (Client, PathBuf, PathBuf) {
        let accounts: Api<ServiceAccount> = Api::namespaced(
            self.client.clone(),
            monasca_crds::DEFAULT_OPERATOR_NAMESPACE,
        );
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": 3600},
        }))
        .expect("TokenRequest");
        let token: TokenRequest = accounts
            .create_subresource(
                "token",
                "monasca-operator",
                &PostParams::default(),
                &request,
            )
            .await
            .expect("a token for ServiceAccount monasca-system/monasca-operator");
        let token = token.status.expect("TokenRequest status").token;
        let dir = monasca_e2e::scratch_dir("rbac");
        let kubeconfig = dir.join("operator.kubeconfig");
        cluster::token_kubeconfig(&self.kubeconfig, &token, &kubeconfig);
        (cluster::client(&kubeconfig).await, kubeconfig, dir)
    }

    /// The shipped ServiceAccount with the shipped RBAC and webhook configuration (and `extra`
    /// manifests, relative to the repository): the CRD, these objects, and a client and
    /// kubeconfig authenticated as the ServiceAccount (remove the returned scratch directory
    /// when done). The webhook configuration is shipped, so the operator needs no `create` on
    /// it (it repoints clientConfig to its URL).
    async fn as_shipped_service_account(&self, extra: &[&str]) -> (Client, PathBuf, PathBuf) {
        install(&self.client).await;
        let root = cluster::repo_root();
        let shipped = [
            "namespace.yaml",
            "serviceaccount.yaml",
            "clusterrole.yaml",
            "clusterrolebinding.yaml",
            "role.yaml",
            "rolebinding.yaml",
            "mutatingwebhookconfiguration.yaml",
        ]
        .map(|file| root.join("manifests/base").join(file));
        let extra = extra.iter().map(|p| root.join(p));
        for path in shipped.into_iter().chain(extra) {
            cluster::apply_yaml(&self.client, &path, None).await;
        }
        self.as_operator_service_account().await
    }

    /// The CRD installed, the operator's and the app's namespaces, and a ready operator: the
    /// start of most scenarios.
    async fn start_operator(&self) -> Started {
        install(&self.client).await;
        let operator_namespace = self.namespace("op").await;
        let app_namespace = self.namespace("app").await;
        let operator_args = self.operator_args(&self.kubeconfig, &operator_namespace);
        let operator = operator_args.start().await;
        Started {
            operator_namespace,
            app_namespace,
            operator_args,
            operator,
        }
    }

    /// The operator's arguments: out-of-cluster, webhook by URL on a free port.
    fn operator_args(&self, kubeconfig: &Path, operator_namespace: &str) -> OperatorArgs {
        // The apiserver must reach the webhook on this host: 127.0.0.1 works when the
        // apiserver runs on this machine; for kind/k3d set MONASCA_E2E_WEBHOOK_HOST to the
        // Docker network's gateway (see e2e/README.md).
        let host = std::env::var("MONASCA_E2E_WEBHOOK_HOST").unwrap_or_else(|_| "127.0.0.1".into());
        let webhook_port = monasca_e2e::free_port();
        let admin: SocketAddr = ([127, 0, 0, 1], monasca_e2e::free_port()).into();
        OperatorArgs {
            admin,
            args: vec![
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
                "--namespace".into(),
                operator_namespace.to_string(),
                "--webhook-url".into(),
                format!("https://{host}:{webhook_port}/mutate"),
                "--webhook-listen".into(),
                format!("0.0.0.0:{webhook_port}"),
                "--admin-listen".into(),
                admin.to_string(),
                "--sidecar-image".into(),
                "monasca/monasca-sidecar:e2e".into(),
            ],
        }
    }
}

struct OperatorArgs {
    admin: SocketAddr,
    args: Vec<String>,
}

impl OperatorArgs {
    /// Starts the operator and waits until it is ready (caches synced, certificate loaded).
    async fn start(&self) -> Operator {
        let mut operator = Operator::start(&self.args);
        let admin = self.admin;
        eventually("the operator's /readyz", WAIT, || {
            let running = operator.is_running();
            async move {
                assert!(running, "monasca-operator exited during start-up");
                get(admin, "/readyz").await.filter(|(s, _)| *s == 200)
            }
        })
        .await;
        operator
    }

    /// The operator's own metrics (Prometheus text).
    async fn metrics(&self) -> String {
        get(self.admin, "/metrics")
            .await
            .filter(|(s, _)| *s == 200)
            .map(|(_, body)| body)
            .expect("the operator's /metrics")
    }
}

/// What [`Env::start_operator`] set up.
struct Started {
    operator_namespace: String,
    app_namespace: String,
    operator_args: OperatorArgs,
    operator: Operator,
}

/// Creates MetricsSidecar `name` with `spec`.
async fn create_sidecar(
    sidecars: &Api<MetricsSidecar>,
    name: &str,
    spec: MetricsSidecarSpec,
) -> MetricsSidecar {
    sidecars
        .create(&PostParams::default(), &MetricsSidecar::new(name, spec))
        .await
        .unwrap_or_else(|e| panic!("create MetricsSidecar {name}: {e}"))
}

async fn get(addr: SocketAddr, path: &'static str) -> Option<(u16, String)> {
    tokio::task::spawn_blocking(move || {
        monasca_e2e::http::request(addr, "GET", path, &[], b"")
            .ok()
            .map(|r| (r.status, r.text()))
    })
    .await
    .ok()
    .flatten()
}

async fn wait_for_default_service_account(client: &Client, namespace: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("ServiceAccount default in {namespace}"),
        WAIT,
        || async { accounts.get_opt("default").await.ok().flatten().map(drop) },
    )
    .await;
}

// --- scenarios ----------------------------------------------------------------------------

/// Install the CRD (and the ClusterRole); run the operator; a MetricsSidecar and an annotated
/// pod: injected, ConfigMap rendered, status counts it. Stop the operator, create a pod
/// (admitted uninjected: failurePolicy Ignore); start it again: `uninjectedPods` counts the pod,
/// an Event names it, and the webhook CA is the one from before the restart (one Secret).
async fn injects_reconciles_and_catches_up(env: Env) {
    let Started {
        operator_namespace,
        app_namespace,
        operator_args,
        operator,
    } = env.start_operator().await;
    let ca_before = webhook_ca(&env.client, &operator_namespace).await;

    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let spec = MetricsSidecarSpec::default();
    let created = create_sidecar(&sidecars, "default", spec.clone()).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;
    let pod = pods
        .create(&PostParams::default(), &annotated_pod("injected-1"))
        .await
        .expect("create pod");
    assert!(has_sidecar(&pod), "the pod is injected: {:?}", pod.spec);
    assert_eq!(
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SIDECAR))
            .map(String::as_str),
        Some("default")
    );
    let hash = spec.config_hash().expect("hash");
    assert_eq!(
        annotation(&pod.metadata, ANNOTATION_CONFIG_HASH),
        Some(&hash)
    );

    let config_map = wait_config_map(&env.client, &app_namespace, "default").await;
    assert_eq!(
        config_map.data.as_ref().and_then(|d| d.get(CONFIG_MAP_KEY)),
        Some(&spec.rendered_config().expect("renders"))
    );
    assert_eq!(
        config_map
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| o.uid.as_str()),
        created.metadata.uid.as_deref()
    );
    wait_status(&sidecars, "injectedPods 1, uninjectedPods 0", |s| {
        s.injected_pods == 1 && s.uninjected_pods == 0 && s.config_hash.as_ref() == Some(&hash)
    })
    .await;

    // The operator goes away; a pod created meanwhile is admitted without the sidecar.
    operator.stop();
    let late = pods
        .create(&PostParams::default(), &annotated_pod("late-1"))
        .await
        .expect("create pod while the webhook is down (failurePolicy: Ignore)");
    assert!(!has_sidecar(&late), "admitted uninjected");

    // Back up: the late pod is counted and reported; the CA survived.
    let operator = operator_args.start().await;
    wait_status(&sidecars, "uninjectedPods 1", |s| {
        s.injected_pods == 1 && s.uninjected_pods == 1
    })
    .await;
    let events: Api<Event> = Api::namespaced(env.client.clone(), &app_namespace);
    eventually("an UninjectedPods Event naming late-1", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("UninjectedPods")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("default")
                    && e.note.as_deref().is_some_and(|n| n.contains("late-1"))
            })
            .map(drop)
    })
    .await;
    assert_eq!(
        webhook_ca(&env.client, &operator_namespace).await,
        ca_before,
        "the webhook CA survives a restart (one Secret)"
    );
    operator.stop();
}

/// `nativeSidecar: auto` on this (>= 1.29) apiserver: a pod that runs to completion
/// (`restartPolicy: Never`) gets an init container with `restartPolicy: Always`, not a regular
/// container; a long-running pod gets a regular container (a native sidecar that cannot start
/// would keep its app from starting); `never` gives a regular container.
async fn native_sidecar(env: Env) {
    let Started {
        app_namespace,
        operator,
        ..
    } = env.start_operator().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let auto = MetricsSidecarSpec::default();
    assert_eq!(auto.native_sidecar, NativeSidecar::Auto);
    let never = MetricsSidecarSpec {
        native_sidecar: NativeSidecar::Never,
        ..MetricsSidecarSpec::default()
    };
    for (name, spec) in [("default", auto), ("regular", never)] {
        create_sidecar(&sidecars, name, spec).await;
    }
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;

    let pod = pods
        .create(&PostParams::default(), &annotated_pod("service-1"))
        .await
        .expect("create pod");
    assert!(
        has_regular_sidecar(&pod),
        "auto on a long-running pod is a regular container: {:?}",
        pod.spec
    );

    let mut job_pod = annotated_pod("native-1");
    job_pod.spec.get_or_insert_default().restart_policy = Some("Never".into());
    let pod = pods
        .create(&PostParams::default(), &job_pod)
        .await
        .expect("create pod");
    let spec = pod.spec.as_ref().expect("pod spec");
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == SIDECAR_CONTAINER_NAME)
        .unwrap_or_else(|| panic!("a native sidecar is an init container: {spec:?}"));
    assert_eq!(init.restart_policy.as_deref(), Some("Always"));
    assert!(
        spec.containers
            .iter()
            .all(|c| c.name != SIDECAR_CONTAINER_NAME),
        "not also a regular container"
    );
    // The stored pod is what the apiserver validated: re-read it.
    let stored = pods.get("native-1").await.expect("get pod");
    assert_eq!(
        stored
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == SIDECAR_CONTAINER_NAME))
            .and_then(|c| c.restart_policy.as_deref()),
        Some("Always")
    );

    let mut regular = annotated_pod("regular-1");
    regular
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(ANNOTATION_INJECT.into(), "regular".into());
    let pod = pods
        .create(&PostParams::default(), &regular)
        .await
        .expect("create pod");
    assert!(
        has_regular_sidecar(&pod),
        "nativeSidecar: never is a regular container: {:?}",
        pod.spec
    );
    let spec = pod.spec.as_ref().expect("pod spec");
    assert!(
        spec.init_containers
            .iter()
            .flatten()
            .all(|c| c.name != SIDECAR_CONTAINER_NAME)
    );
    operator.stop();
}

/// The real path users take: a Deployment, whose ReplicaSet (created by the controller-manager)
/// creates the pods, which the webhook injects. Then a pod-shaping change with
/// `restartOnChange: true`: the operator patches the Deployment's pod template, the
/// controller-manager rolls out a new ReplicaSet, and its pod carries the new sidecar.
async fn deployment_rollout(env: Env) {
    let Started {
        app_namespace,
        operator,
        ..
    } = env.start_operator().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let spec = MetricsSidecarSpec {
        restart_on_change: true,
        ..MetricsSidecarSpec::default()
    };
    create_sidecar(&sidecars, "default", spec.clone()).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;
    // The roll compares with the ConfigMap the controller wrote for the first spec.
    wait_config_map(&env.client, &app_namespace, "default").await;

    let first = create_deployment_and_its_first_pod(&env.client, &app_namespace, "web").await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &app_namespace);
    let selector = ListParams::default().labels("app=web");
    let first_owner = controller_name(&first.metadata, "ReplicaSet")
        .expect("the pod was created by a ReplicaSet");
    assert!(
        has_sidecar(&first),
        "a ReplicaSet's pod is injected: {:?}",
        first.spec
    );
    assert_eq!(
        annotation(&first.metadata, ANNOTATION_CONFIG_HASH),
        Some(&spec.config_hash().expect("hash"))
    );
    let replica_sets: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &app_namespace);
    let rs = replica_sets
        .get(&first_owner)
        .await
        .expect("the ReplicaSet");
    assert_eq!(
        controller_name(&rs.metadata, "Deployment").as_deref(),
        Some("web")
    );
    wait_status(&sidecars, "injectedPods 1", |s| s.injected_pods == 1).await;

    // A pod-shaping change: a new image.
    let image = "monasca/monasca-sidecar:e2e-rolled";
    let changed = MetricsSidecarSpec {
        image: Some(image.into()),
        ..spec.clone()
    };
    sidecars
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"image": image}})),
        )
        .await
        .expect("patch MetricsSidecar");
    let template_hash = changed.pod_template_hash().expect("hash");
    eventually(
        "the Deployment's pod template to carry the new hash",
        WAIT,
        || async {
            let d = deployments.get("web").await.ok()?;
            let template = d.spec?.template.metadata?;
            (annotation(&template, ANNOTATION_CONFIG_HASH) == Some(&template_hash)).then_some(())
        },
    )
    .await;
    let rolled = eventually(
        "a pod of a new ReplicaSet with the new sidecar image",
        WAIT,
        || async {
            pods.list(&selector)
                .await
                .ok()?
                .items
                .into_iter()
                .find(|p| {
                    controller_name(&p.metadata, "ReplicaSet").is_some_and(|rs| rs != first_owner)
                        && sidecar_image(p).as_deref() == Some(image)
                })
        },
    )
    .await;
    assert_eq!(
        annotation(&rolled.metadata, ANNOTATION_CONFIG_HASH),
        Some(&changed.config_hash().expect("hash"))
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), &app_namespace);
    eventually("a RolloutTriggered Event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("RolloutTriggered")
                    && e.note.as_deref().is_some_and(|n| n.contains("web"))
            })
            .map(drop)
    })
    .await;
    operator.stop();
}

/// The operator runs as ServiceAccount `monasca-system/monasca-operator` with exactly the
/// ClusterRole, Roles and bindings of `manifests/base`, authenticated by a token from the
/// TokenRequest API: it injects, writes the ConfigMap and status without one forbidden call,
/// and the same token is refused (403) writes the manifests do not grant.
async fn shipped_rbac(env: Env) {
    let (as_operator, kubeconfig, token_dir) = env.as_shipped_service_account(&[]).await;
    let operator_namespace = monasca_crds::DEFAULT_OPERATOR_NAMESPACE;
    let app_namespace = env.namespace("app").await;

    // Forbidden writes: refused by the apiserver with 403.
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "not-yours"}, "stringData": {"k": "v"},
    }))
    .expect("secret");
    let refused = [
        (
            "create a Secret outside its namespace",
            Api::<Secret>::namespaced(as_operator.clone(), &app_namespace)
                .create(&PostParams::default(), &secret)
                .await
                .map(drop),
        ),
        (
            "read a Secret it does not own in its namespace",
            Api::<Secret>::namespaced(as_operator.clone(), operator_namespace)
                .get("not-yours")
                .await
                .map(drop),
        ),
        (
            "delete the webhook configuration",
            Api::<MutatingWebhookConfiguration>::all(as_operator.clone())
                .delete(WEBHOOK_CONFIGURATION_NAME, &DeleteParams::default())
                .await
                .map(drop),
        ),
        (
            "create a pod",
            Api::<Pod>::namespaced(as_operator.clone(), &app_namespace)
                .create(&PostParams::default(), &annotated_pod("by-operator"))
                .await
                .map(drop),
        ),
        (
            "write a MetricsSidecar's spec",
            Api::<MetricsSidecar>::namespaced(as_operator.clone(), &app_namespace)
                .create(
                    &PostParams::default(),
                    &MetricsSidecar::new("by-operator", MetricsSidecarSpec::default()),
                )
                .await
                .map(drop),
        ),
    ];
    for (what, result) in refused {
        match result {
            Err(kube::Error::Api(status)) => assert_eq!(
                status.code, 403,
                "{what}: refused with 403 Forbidden, got {status:?}"
            ),
            other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
        }
    }

    // And what it needs works: the full injection path, as the ServiceAccount.
    let operator_args = env.operator_args(&kubeconfig, operator_namespace);
    let operator = operator_args.start().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    sidecars
        .create(
            &PostParams::default(),
            &MetricsSidecar::new("default", MetricsSidecarSpec::default()),
        )
        .await
        .expect("create MetricsSidecar");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;
    let pod = pods
        .create(&PostParams::default(), &annotated_pod("rbac-1"))
        .await
        .expect("create pod");
    assert!(
        has_sidecar(&pod),
        "injected by the ServiceAccount's operator"
    );
    wait_config_map(&env.client, &app_namespace, "default").await;
    wait_status(&sidecars, "injectedPods 1", |s| s.injected_pods == 1).await;
    webhook_ca(&env.client, operator_namespace).await;
    let metrics = operator_args.metrics().await;
    assert_eq!(
        cluster::sample(
            &metrics,
            "monasca_operator_reconcile_errors_total{reason=\"forbidden\"}"
        ),
        Some(0.0),
        "no reconcile was refused by RBAC:\n{metrics}"
    );
    assert!(
        cluster::sample(&metrics, "monasca_operator_reconciles_total{result=\"ok\"}")
            .is_some_and(|n| n >= 1.0),
        "reconciles succeeded:\n{metrics}"
    );
    operator.stop();
    let _ = std::fs::remove_dir_all(token_dir);
}

/// The webhook leaves alone pods that did not opt in, and the apiserver does not even call it for
/// `kube-system` and the operator's namespace (namespaceSelector), even for annotated pods in a
/// namespace with a MetricsSidecar. The operator's admission counters show who was called.
async fn webhook_skips(env: Env) {
    let Started {
        operator_namespace,
        app_namespace,
        operator_args,
        operator,
    } = env.start_operator().await;
    let sidecar_name = format!("e2e-{}", env.run);
    for namespace in [
        app_namespace.as_str(),
        "kube-system",
        operator_namespace.as_str(),
    ] {
        Api::<MetricsSidecar>::namespaced(env.client.clone(), namespace)
            .create(
                &PostParams::default(),
                &MetricsSidecar::new(&sidecar_name, MetricsSidecarSpec::default()),
            )
            .await
            .expect("create MetricsSidecar");
        env.defer(Cleanup::Sidecar(namespace.into(), sidecar_name.clone()));
    }
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    let opted_in = |name: &str| {
        let mut pod = annotated_pod(name);
        pod.metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_INJECT.into(), sidecar_name.clone());
        pod
    };
    eventually("the webhook to inject", WAIT, || async {
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let pod = pods.create(&dry_run, &opted_in("probe")).await.ok()?;
        has_sidecar(&pod).then_some(())
    })
    .await;

    let reviews = |metrics: &str| {
        ["injected", "skipped", "invalid"]
            .iter()
            .map(|o| {
                cluster::sample(
                    metrics,
                    &format!("monasca_operator_admission_reviews_total{{outcome=\"{o}\"}}"),
                )
                .unwrap_or_else(|| panic!("admission_reviews_total{{outcome={o}}} in:\n{metrics}"))
            })
            .sum::<f64>()
    };
    let not_requested = |metrics: &str| {
        cluster::sample(
            metrics,
            "monasca_operator_admission_skips_total{reason=\"not_requested\"}",
        )
        .expect("admission_skips_total{reason=not_requested}")
    };

    // Not opted in: not even sent (the webhook's matchConditions), and left alone.
    let before = operator_args.metrics().await;
    let mut plain = annotated_pod("plain-1");
    plain.metadata.annotations = None;
    let pod = pods
        .create(&PostParams::default(), &plain)
        .await
        .expect("create pod");
    assert!(
        !has_sidecar(&pod),
        "a pod without the annotation is not injected"
    );
    let after = operator_args.metrics().await;
    assert_eq!(not_requested(&after), not_requested(&before));
    assert_eq!(reviews(&after), reviews(&before), "not sent to the webhook");

    // Excluded namespaces: annotated, a MetricsSidecar there, and still never sent to us.
    for namespace in ["kube-system", operator_namespace.as_str()] {
        let before = reviews(&operator_args.metrics().await);
        let name = format!("excluded-{}", env.run);
        let pod = Api::<Pod>::namespaced(env.client.clone(), namespace)
            .create(&PostParams::default(), &opted_in(&name))
            .await
            .unwrap_or_else(|e| panic!("create pod in {namespace}: {e}"));
        env.defer(Cleanup::Pod(namespace.into(), name));
        assert!(!has_sidecar(&pod), "a pod in {namespace} is not injected");
        assert_eq!(
            reviews(&operator_args.metrics().await),
            before,
            "the apiserver did not call the webhook for {namespace}"
        );
    }

    // The control: an opted-in pod in the app namespace is sent and injected.
    let before = operator_args.metrics().await;
    let pod = pods
        .create(&PostParams::default(), &opted_in("opted-in-1"))
        .await
        .expect("create pod");
    assert!(has_sidecar(&pod), "the opted-in pod is injected");
    let after = operator_args.metrics().await;
    // Injected once. (The apiserver then reinvokes the webhook, reinvocationPolicy IfNeeded,
    // because the in-tree ServiceAccount plugin, re-run after a webhook mutation, mounts the
    // token into the new container: that second review is an `already_injected` skip.)
    let injected = |metrics: &str| {
        cluster::sample(
            metrics,
            "monasca_operator_admission_reviews_total{outcome=\"injected\"}",
        )
        .expect("admission_reviews_total{outcome=injected}")
    };
    assert_eq!(injected(&after), injected(&before) + 1.0);
    assert!(reviews(&after) > reviews(&before), "the webhook was called");
    operator.stop();
}

/// The ConfigMap is owned by its MetricsSidecar: deleting the MetricsSidecar deletes it through
/// the controller-manager's garbage collector (the operator is stopped first, so it cannot be
/// the one deleting it).
async fn garbage_collection(env: Env) {
    let Started {
        app_namespace,
        operator,
        ..
    } = env.start_operator().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let created = create_sidecar(&sidecars, "collected", MetricsSidecarSpec::default()).await;
    let config_map = wait_config_map(&env.client, &app_namespace, "collected").await;
    let owner = config_map
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "MetricsSidecar")
        .expect("owned by the MetricsSidecar");
    assert_eq!(Some(&owner.uid), created.metadata.uid.as_ref());
    operator.stop();

    sidecars
        .delete("collected", &DeleteParams::default())
        .await
        .expect("delete MetricsSidecar");
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &app_namespace);
    let name = config_map_name("collected");
    eventually(
        "the garbage collector to delete the ConfigMap",
        WAIT,
        || async { matches!(config_maps.get_opt(&name).await, Ok(None)).then_some(()) },
    )
    .await;
}

// --- helpers ------------------------------------------------------------------------------

/// The CRD (and the ClusterRole, to check that the committed RBAC is valid for this cluster).
async fn install(client: &Client) {
    let root = cluster::repo_root();
    cluster::install_crd(client, WAIT).await;
    let cluster_role = root.join("manifests/base/clusterrole.yaml");
    if cluster_role.exists() {
        cluster::apply_yaml(client, &cluster_role, None).await;
    }
}

/// The CA the webhook configuration trusts, once it matches the Secret's.
async fn webhook_ca(client: &Client, operator_namespace: &str) -> Vec<u8> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), operator_namespace);
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    eventually(
        "the webhook caBundle to match the Secret's CA",
        WAIT,
        || async {
            let secret = secrets.get_opt(WEBHOOK_TLS_SECRET_NAME).await.ok()??;
            let ca = secret.data?.get("ca.crt")?.0.clone();
            let config = configs.get_opt(WEBHOOK_CONFIGURATION_NAME).await.ok()??;
            let bundle = config.webhooks?.first()?.client_config.ca_bundle.clone()?.0;
            (bundle == ca).then_some(ca)
        },
    )
    .await
}

/// Waits until a dry-run pod comes back injected: the webhook is registered, trusted, and knows
/// the MetricsSidecar.
async fn wait_until_injecting(pods: &Api<Pod>) {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually("the webhook to inject", WAIT, || async {
        let pod = pods.create(&dry_run, &annotated_pod("probe")).await.ok()?;
        has_sidecar(&pod).then_some(())
    })
    .await;
}

async fn wait_config_map(client: &Client, namespace: &str, sidecar: &str) -> ConfigMap {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = config_map_name(sidecar);
    eventually(&format!("ConfigMap {name}"), WAIT, || async {
        config_maps.get_opt(&name).await.ok().flatten()
    })
    .await
}

async fn wait_status(
    sidecars: &Api<MetricsSidecar>,
    what: &str,
    check: impl Fn(&monasca_crds::MetricsSidecarStatus) -> bool,
) {
    eventually(&format!("status {what}"), WAIT, || async {
        let sidecar = sidecars.get("default").await.ok()?;
        let status = sidecar.status?;
        (check(&status) && status.observed_generation == sidecar.metadata.generation).then_some(())
    })
    .await;
}

/// A pod that asks for injection and never runs anywhere real (its nodeSelector matches no
/// node; there is no kubelet anyway): the tests read the stored object only.
fn annotated_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "annotations": {ANNOTATION_INJECT: "true"},
            "labels": {"app": "e2e"},
        },
        "spec": {
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
            "nodeSelector": {"monasca.openstack.org/e2e": "no-such-node"},
        },
    }))
    .expect("pod")
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {ANNOTATION_INJECT: "true"},
                },
                "spec": {
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                    "nodeSelector": {"monasca.openstack.org/e2e": "no-such-node"},
                },
            },
        },
    }))
    .expect("deployment")
}

/// Creates [`deployment`] `name` and waits for the first pod its ReplicaSet (the
/// controller-manager) creates.
async fn create_deployment_and_its_first_pod(client: &Client, namespace: &str, name: &str) -> Pod {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment(name))
        .await
        .unwrap_or_else(|e| panic!("create Deployment {name}: {e}"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = ListParams::default().labels(&format!("app={name}"));
    eventually(&format!("a pod of Deployment {name}"), WAIT, || async {
        pods.list(&selector).await.ok()?.items.into_iter().next()
    })
    .await
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a String> {
    meta.annotations.as_ref().and_then(|a| a.get(key))
}

fn controller_name(meta: &ObjectMeta, kind: &str) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| o.name.clone())
}

/// The sidecar is a regular container (not a native sidecar).
fn has_regular_sidecar(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .any(|c| c.name == SIDECAR_CONTAINER_NAME && c.restart_policy.is_none())
    })
}

fn has_sidecar(pod: &Pod) -> bool {
    sidecar_image(pod).is_some()
}

fn sidecar_image(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == SIDECAR_CONTAINER_NAME)
        .map(|c| c.image.clone().unwrap_or_default())
}
