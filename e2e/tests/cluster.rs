//! The operator against a real apiserver: any cluster named by `KUBECONFIG` (kind, k3d, ...).
//! No pod needs to run: the test only reads what the apiserver stores.
//!
//! 1. Install the CRD (and the ClusterRole, when `manifests/` has one) from the committed YAML.
//! 2. Run `monasca-operator` out-of-cluster, registering its webhook by URL.
//! 3. Create a `MetricsSidecar` and an annotated pod: the pod is injected, the ConfigMap holds
//!    the rendered configuration, the status counts the pod.
//! 4. Stop the operator and create another annotated pod: admitted uninjected
//!    (`failurePolicy: Ignore`). Start the operator again: `uninjectedPods` counts the pod and an
//!    Event names it; the webhook CA is the one from before the restart (same Secret).
//!
//! Without `KUBECONFIG` it prints one line saying so and passes. It owns the cluster-wide
//! `MutatingWebhookConfiguration` `monasca-sidecar-injector` while it runs: use a disposable
//! cluster. See e2e/README.md.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use monasca_crds::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_INJECT, CONFIG_MAP_KEY, LABEL_SIDECAR, MetricsSidecar,
    MetricsSidecarSpec, SIDECAR_CONTAINER_NAME, WEBHOOK_CONFIGURATION_NAME,
    WEBHOOK_TLS_SECRET_NAME, config_map_name,
};
use monasca_e2e::cluster::{self, Operator, eventually};
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// The test's names, unique per run so reruns do not collide with a namespace still
/// terminating.
struct Names {
    operator_namespace: String,
    app_namespace: String,
}

impl Names {
    fn new() -> Names {
        let run = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() % 100_000)
                .unwrap_or_default()
        );
        Names {
            operator_namespace: format!("monasca-e2e-op-{run}"),
            app_namespace: format!("monasca-e2e-app-{run}"),
        }
    }
}

#[test]
fn operator_injects_reconciles_and_catches_pods_admitted_while_it_was_down() {
    let Some(kubeconfig) = cluster::kubeconfig() else {
        // Written to the stderr handle directly, not with eprintln!: libtest captures the
        // print macros, and this line must show in CI logs.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "cluster e2e skipped: KUBECONFIG is not set (point it at a disposable cluster, e.g. \
             `kind create cluster`; see e2e/README.md)"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let client = cluster::client().await;
        let names = Names::new();
        // The scenario runs in its own task so that cleanup runs even when it panics.
        let scenario = tokio::spawn(scenario(client.clone(), kubeconfig, names_clone(&names)));
        let outcome = scenario.await;
        cleanup(&client, &names).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    });
}

fn names_clone(names: &Names) -> Names {
    Names {
        operator_namespace: names.operator_namespace.clone(),
        app_namespace: names.app_namespace.clone(),
    }
}

async fn scenario(client: Client, kubeconfig: std::path::PathBuf, names: Names) {
    install(&client).await;
    for namespace in [&names.operator_namespace, &names.app_namespace] {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
            )
            .await
            .expect("create namespace");
    }

    // The apiserver must reach the webhook on this host: 127.0.0.1 works when the apiserver
    // runs on this machine; for kind/k3d set MONASCA_E2E_WEBHOOK_HOST to the Docker network's
    // gateway (see e2e/README.md).
    let host = std::env::var("MONASCA_E2E_WEBHOOK_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let webhook_port = monasca_e2e::free_port();
    let admin_port = monasca_e2e::free_port();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let args: Vec<String> = vec![
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--namespace".into(),
        names.operator_namespace.clone(),
        "--webhook-url".into(),
        format!("https://{host}:{webhook_port}/mutate"),
        "--webhook-listen".into(),
        format!("0.0.0.0:{webhook_port}"),
        "--admin-listen".into(),
        admin.to_string(),
        "--sidecar-image".into(),
        "monasca/monasca-sidecar:e2e".into(),
    ];

    let operator = Operator::start(&args);
    wait_ready(admin).await;
    let ca_before = webhook_ca(&client, &names.operator_namespace).await;

    // A MetricsSidecar, then an annotated pod: injected.
    let sidecars: Api<MetricsSidecar> = Api::namespaced(client.clone(), &names.app_namespace);
    let spec = MetricsSidecarSpec::default();
    let created = sidecars
        .create(
            &PostParams::default(),
            &MetricsSidecar::new("default", spec.clone()),
        )
        .await
        .expect("create MetricsSidecar");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &names.app_namespace);
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
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CONFIG_HASH)),
        Some(&hash)
    );

    // The ConfigMap holds the rendered configuration.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &names.app_namespace);
    let config_map = eventually("the ConfigMap", WAIT, || async {
        config_maps
            .get_opt(&config_map_name("default"))
            .await
            .ok()
            .flatten()
    })
    .await;
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

    // The status counts it.
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
    let operator = Operator::start(&args);
    wait_ready(admin).await;
    wait_status(&sidecars, "uninjectedPods 1", |s| {
        s.injected_pods == 1 && s.uninjected_pods == 1
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &names.app_namespace);
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
        webhook_ca(&client, &names.operator_namespace).await,
        ca_before,
        "the webhook CA survives a restart (one Secret)"
    );
    operator.stop();
}

/// The CRD (and the ClusterRole, to check that the committed RBAC is valid for this cluster).
async fn install(client: &Client) {
    let root = cluster::repo_root();
    cluster::apply_yaml(
        client,
        &root.join("manifests/crds/metricssidecars.yaml"),
        None,
    )
    .await;
    let cluster_role = root.join("manifests/base/clusterrole.yaml");
    if cluster_role.exists() {
        cluster::apply_yaml(client, &cluster_role, None).await;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually("the CRD to be established", WAIT, || async {
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

async fn wait_ready(admin: SocketAddr) {
    eventually("the operator's /readyz", WAIT, || async move {
        tokio::task::spawn_blocking(move || {
            monasca_e2e::http::request(admin, "GET", "/readyz", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
                .map(drop)
        })
        .await
        .ok()
        .flatten()
    })
    .await;
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

fn annotated_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "annotations": {ANNOTATION_INJECT: "true"},
            "labels": {"app": "e2e"},
        },
        "spec": {
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
            // Never scheduled anywhere real: the test reads the stored object only.
            "nodeSelector": {"monasca.openstack.org/e2e": "no-such-node"},
        },
    }))
    .expect("pod")
}

fn has_sidecar(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == SIDECAR_CONTAINER_NAME)
    })
}

async fn cleanup(client: &Client, names: &Names) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for namespace in [&names.operator_namespace, &names.app_namespace] {
        let _ = namespaces.delete(namespace, &DeleteParams::default()).await;
    }
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(WEBHOOK_CONFIGURATION_NAME, &DeleteParams::default())
        .await;
}
