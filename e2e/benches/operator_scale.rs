//! The operator at scale against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager from `ci/control-plane/install.sh`, started on loopback by
//! [`ControlPlane`]; no kubelet): idle RSS, RSS per watched pod with `PODS` injected pods stored,
//! `/discovery/targets` latency at that size, admission latency (a dry-run pod create through
//! the apiserver, which calls the webhook) idle and while the informers hold the pods, and how
//! many pod watches the operator opens. A benchmark, not a test: it prints one JSON object
//! (`bench/run.py` renders it) and exits non-zero when something fails.
//!
//! ```text
//! cargo bench -p monasca-e2e --bench operator_scale      # PODS=10000 by default
//! ```
//!
//! The operator binary is the release one next to this bench (`target/release/monasca-operator`,
//! or `MONASCA_OPERATOR_BIN`).

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use monasca_crds::{ANNOTATION_INJECT, MetricsSidecar, MetricsSidecarSpec, SIDECAR_CONTAINER_NAME};
use monasca_e2e::cluster::{self, Operator, eventually};
use monasca_e2e::control_plane::{Binaries, ControlPlane};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);
const NAMESPACE: &str = "monasca-bench-app";
const OPERATOR_NAMESPACE: &str = "monasca-bench-op";
/// Concurrent pod creations (each a create, through the webhook, then a status patch).
const CREATORS: usize = 16;
/// Dry-run creates per admission measurement.
const ADMISSIONS: usize = 400;
/// GETs of `/discovery/targets` per measurement.
const DISCOVERY_GETS: usize = 30;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `--list` and `--test` (cargo test --benches) get nothing.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let binaries = Binaries::locate().unwrap_or_else(|e| fail(&e));
    let plane = ControlPlane::start(&binaries).unwrap_or_else(|e| fail(&e));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let report = runtime.block_on(run(&plane, env_usize("PODS", 10_000)));
    println!("{report}");
}

fn fail(message: &str) -> ! {
    eprintln!("operator_scale: {message}");
    std::process::exit(1)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Median of three RSS readings a second apart (the allocator settles after a burst).
async fn settled_rss_kib(pid: u32) -> u64 {
    let mut readings = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        readings.push(rss_kib(pid));
    }
    readings.sort_unstable();
    readings[1]
}

/// Open WATCH requests on pods at the apiserver (`apiserver_longrunning_requests`).
async fn pod_watches(client: &Client) -> u64 {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap_or_else(|e| fail(&e.to_string()));
    let text = client
        .request_text(request)
        .await
        .unwrap_or_else(|e| fail(&format!("apiserver /metrics: {e}")));
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_longrunning_requests{")
                && l.contains("resource=\"pods\"")
                && l.contains("verb=\"WATCH\"")
                && l.contains("subresource=\"\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn admin_get(addr: SocketAddr, path: &'static str) -> Option<(u16, Vec<u8>)> {
    tokio::task::spawn_blocking(move || {
        monasca_e2e::http::request(addr, "GET", path, &[], b"")
            .ok()
            .map(|r| (r.status, r.body))
    })
    .await
    .ok()
    .flatten()
}

fn annotated_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "annotations": {ANNOTATION_INJECT: "true"},
            "labels": {"app": "bench", "app.kubernetes.io/name": "bench"},
        },
        "spec": {
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                            "ports": [{"containerPort": 8000}]}],
            "nodeSelector": {"monasca.openstack.org/e2e": "no-such-node"},
        },
    }))
    .unwrap_or_else(|e| fail(&e.to_string()))
}

fn injected(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == SIDECAR_CONTAINER_NAME)
    })
}

/// Latencies (seconds) of `n` sequential dry-run pod creates through the apiserver, each one
/// admitted (injected) by the operator's webhook.
async fn admission_latencies(pods: &Api<Pod>, n: usize) -> Vec<f64> {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let pod = annotated_pod("admission-probe");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let created = pods
            .create(&dry_run, &pod)
            .await
            .unwrap_or_else(|e| fail(&format!("dry-run create: {e}")));
        out.push(start.elapsed().as_secs_f64());
        if !injected(&created) {
            fail("a dry-run pod came back without the sidecar");
        }
    }
    out
}

/// Latencies (seconds) of `n` GETs of `/discovery/targets`, checking each lists `pods` targets;
/// and the body size.
async fn discovery_latencies(admin: SocketAddr, n: usize, pods: usize) -> (Vec<f64>, usize) {
    let mut out = Vec::with_capacity(n);
    let mut size = 0;
    for _ in 0..n {
        let start = Instant::now();
        let (status, body) = admin_get(admin, "/discovery/targets")
            .await
            .unwrap_or_else(|| fail("GET /discovery/targets failed"));
        out.push(start.elapsed().as_secs_f64());
        let groups: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| fail(&e.to_string()));
        let count = groups.as_array().map_or(0, Vec::len);
        if status != 200 || count != pods {
            fail(&format!(
                "/discovery/targets: {status}, {count} targets, want {pods}"
            ));
        }
        size = body.len();
    }
    (out, size)
}

async fn install(client: &Client) {
    cluster::install_crd(client, WAIT).await;
    for name in [OPERATOR_NAMESPACE, NAMESPACE] {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| fail(&format!("create namespace {name}: {e}")));
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        eventually("the default ServiceAccount", WAIT, || async {
            accounts.get_opt("default").await.ok().flatten().map(drop)
        })
        .await;
    }
    Api::<MetricsSidecar>::namespaced(client.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &MetricsSidecar::new("default", MetricsSidecarSpec::default()),
        )
        .await
        .unwrap_or_else(|e| fail(&format!("create MetricsSidecar: {e}")));
}

fn start_operator(kubeconfig: &Path) -> (Operator, SocketAddr) {
    let webhook_port = monasca_e2e::free_port();
    let admin: SocketAddr = ([127, 0, 0, 1], monasca_e2e::free_port()).into();
    let args: Vec<String> = vec![
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--namespace".into(),
        OPERATOR_NAMESPACE.into(),
        "--webhook-url".into(),
        format!("https://127.0.0.1:{webhook_port}/mutate"),
        "--webhook-listen".into(),
        format!("127.0.0.1:{webhook_port}"),
        "--admin-listen".into(),
        admin.to_string(),
        "--sidecar-image".into(),
        "monasca/monasca-sidecar:bench".into(),
    ];
    (Operator::start(&args), admin)
}

/// Creates `n` injected pods (through the webhook) and gives each a Running status with an IP,
/// as a kubelet would, so discovery lists it.
async fn create_pods(pods: &Api<Pod>, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for creator in 0..CREATORS {
        let pods = pods.clone();
        tasks.spawn(async move {
            for i in (creator..n).step_by(CREATORS) {
                let name = format!("bench-{i}");
                let created = pods
                    .create(&PostParams::default(), &annotated_pod(&name))
                    .await
                    .map_err(|e| format!("create {name}: {e}"))?;
                if !injected(&created) {
                    return Err(format!("{name} was not injected"));
                }
                let ip = format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256);
                let status = serde_json::json!({"status": {
                    "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                }});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .map_err(|e| format!("status of {name}: {e}"))?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result.unwrap_or_else(|e| Err(e.to_string())) {
            fail(&e);
        }
    }
}

async fn run(plane: &ControlPlane, n_pods: usize) -> serde_json::Value {
    let client = cluster::client(plane.kubeconfig()).await;
    install(&client).await;
    let watches_before = pod_watches(&client).await;

    let (mut operator, admin) = start_operator(plane.kubeconfig());
    eventually("the operator's /readyz", WAIT, || {
        let running = operator.is_running();
        async move {
            if !running {
                fail("monasca-operator exited during start-up");
            }
            admin_get(admin, "/readyz")
                .await
                .filter(|(s, _)| *s == 200)
                .map(drop)
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually("the webhook to inject", WAIT, || async {
        let pod = pods.create(&dry_run, &annotated_pod("probe")).await.ok()?;
        injected(&pod).then_some(())
    })
    .await;
    let pid = operator.pid();
    let idle_rss = settled_rss_kib(pid).await;
    let operator_watches = pod_watches(&client).await.saturating_sub(watches_before);
    let admission_idle = admission_latencies(&pods, ADMISSIONS).await;

    let start = Instant::now();
    create_pods(&pods, n_pods).await;
    let create_seconds = start.elapsed().as_secs_f64();
    eventually("discovery to list every pod", WAIT, || async {
        let (_, body) = admin_get(admin, "/discovery/targets").await?;
        let groups: serde_json::Value = serde_json::from_slice(&body).ok()?;
        (groups.as_array()?.len() == n_pods).then_some(())
    })
    .await;
    let loaded_rss = settled_rss_kib(pid).await;
    let (discovery, discovery_bytes) = discovery_latencies(admin, DISCOVERY_GETS, n_pods).await;
    let admission_loaded = admission_latencies(&pods, ADMISSIONS).await;
    let rss_after = rss_kib(pid);
    if !operator.is_running() {
        fail("monasca-operator exited during the benchmark");
    }
    operator.stop();

    serde_json::json!({
        "kubernetes": plane.version(),
        "pods": n_pods,
        "create_seconds": create_seconds,
        "idle_rss_kib": idle_rss,
        "loaded_rss_kib": loaded_rss,
        "rss_after_admissions_kib": rss_after,
        "operator_pod_watches": operator_watches,
        "admission_idle_seconds": admission_idle,
        "admission_loaded_seconds": admission_loaded,
        "discovery_seconds": discovery,
        "discovery_bytes": discovery_bytes,
    })
}
