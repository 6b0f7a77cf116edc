//! Real pods (issue 17): the pod the webhook produced, exactly as the apiserver stored it, run
//! by `podman kube play` with the images `ci/images.sh` built here (no registry), with the
//! ConfigMap the controller rendered. Then real traffic into a real gunicorn app and the
//! sidecar's `/metrics` read over the pod's network.
//!
//! Needs podman (with runc and catatonit) and the images `localhost/monasca-sidecar:ci` and
//! `localhost/monasca-test-app:ci` (`bash ci/images.sh`). Without them the scenarios are
//! reported ignored with podman's error, and fail with it under `CI=true`.

use super::*;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

pub(super) const SCENARIOS: &[(&str, Scenario)] = &[(
    "real_pod_multiprocess_gunicorn_under_podman_aggregates_exactly",
    |env| Box::pin(multiprocess_gunicorn(env)),
)];

/// The locally built images, and the names the pod carries before they are swapped in.
const SIDECAR_IMAGE: &str = "localhost/monasca-sidecar:ci";
const APP_IMAGE: &str = "localhost/monasca-test-app:ci";
/// The app image the pod names in the apiserver (a registry image, as in a real cluster).
const APP_IMAGE_IN_CLUSTER: &str = "registry.example.invalid/monasca-test-app:1";
/// The app runs under another uid than the sidecar (65532).
const APP_UID: i64 = 1000;
const APP_PORT: u16 = 8000;
const METRICS_PORT: u16 = 9102;
const WORKERS: usize = 4;
/// Requests before and after one worker is SIGKILLed.
const REQUESTS_BEFORE_KILL: usize = 120;
const REQUESTS_AFTER_KILL: usize = 80;

/// Why a scenario of this module cannot run here (podman missing or an image not built), with
/// podman's own words; `None` when it can (or `name` is not one of this module's scenarios).
pub(super) fn unmet_requirement(name: &str) -> Option<String> {
    if !SCENARIOS.iter().any(|(n, _)| *n == name) {
        return None;
    }
    for image in [SIDECAR_IMAGE, APP_IMAGE] {
        if let Err(e) = podman(&["image", "inspect", "--format", "{{.Id}}", image]) {
            return Some(format!(
                "cannot run real pods: image {image} ({e}); build the images with \
                 `bash ci/images.sh`"
            ));
        }
    }
    None
}

/// Install, run the operator, a multiprocess MetricsSidecar and an annotated gunicorn pod; run
/// the stored pod under podman; 4 workers, traffic, one worker SIGKILLed, more traffic; the
/// sidecar's `/metrics` counts every request exactly, with no `pid` label. The sidecar runs
/// as 65532 with a read-only root and no capabilities; `/healthz` answers on the pod's
/// network; the app keeps serving when the sidecar is killed.
async fn multiprocess_gunicorn(env: Env) {
    let Started {
        app_namespace,
        operator,
        ..
    } = env.start_operator().await;
    let sidecars: Api<MetricsSidecar> = Api::namespaced(env.client.clone(), &app_namespace);
    let spec = MetricsSidecarSpec {
        multiprocess: true,
        // podman 4.3 runs init containers to completion before the app: a native sidecar
        // (restartPolicy: Always) would hold the pod forever, so a regular container.
        native_sidecar: NativeSidecar::Never,
        ..MetricsSidecarSpec::default()
    };
    create_sidecar(&sidecars, "default", spec).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &app_namespace);
    wait_until_injecting(&pods).await;
    let config_map = wait_config_map(&env.client, &app_namespace, "default").await;

    let name = format!("real-{}", env.run);
    let created = pods
        .create(&PostParams::default(), &gunicorn_pod(&name))
        .await
        .expect("create pod");
    assert!(has_sidecar(&created), "injected: {:?}", created.spec);
    // Exactly as stored (the apiserver's defaults and admission plugins included).
    let stored = pods.get(&name).await.expect("get the stored pod");
    operator.stop();

    let stored = serde_json::to_value(&stored).expect("pod as JSON");
    let config_map = serde_json::to_value(&config_map).expect("ConfigMap as JSON");
    let outcome =
        tokio::task::spawn_blocking(move || run_under_podman(&name, stored, config_map)).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The app: gunicorn with 4 workers of sidecar/tests/py/gunicorn_app.py (baked into the app
/// image), under uid 1000. No service account token: podman cannot mount projected volumes.
fn gunicorn_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "annotations": {ANNOTATION_INJECT: "true"},
            "labels": {"app": "e2e-real"},
        },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "app",
                "image": APP_IMAGE_IN_CLUSTER,
                "command": ["gunicorn", "--workers", WORKERS.to_string(),
                            "--bind", format!("0.0.0.0:{APP_PORT}"),
                            "--worker-tmp-dir", "/dev/shm", "--chdir", "/app",
                            "gunicorn_app:app"],
                "ports": [{"name": "http", "containerPort": APP_PORT}],
                "securityContext": {"runAsUser": APP_UID, "runAsGroup": APP_UID},
            }],
            "nodeSelector": {"monasca.openstack.org/e2e": "no-such-node"},
        },
    }))
    .expect("pod")
}

/// Swaps the in-cluster image names for the local ones; nothing else of the stored pod changes.
fn with_local_images(mut pod: serde_json::Value) -> serde_json::Value {
    let spec = &mut pod["spec"];
    for list in ["initContainers", "containers"] {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            let local = if container["name"] == SIDECAR_CONTAINER_NAME {
                SIDECAR_IMAGE
            } else {
                APP_IMAGE
            };
            container["image"] = local.into();
        }
    }
    pod
}

/// Removes the podman pod (its containers) and the volumes made for it when the scenario
/// ends, even on a panic.
struct PlayedPod {
    name: String,
    volumes: Vec<String>,
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        if let Err(e) = podman(&["pod", "rm", "--force", "--time", "0", &self.name]) {
            say(&format!("cleanup: podman pod rm {}: {e}", self.name));
        }
        for volume in &self.volumes {
            let _ = podman(&["volume", "rm", "--force", volume]);
        }
    }
}

/// The podman volumes `kube play` backs the pod's emptyDir and configMap volumes with (named
/// after them). podman 4.3 makes an emptyDir a volume owned by the user of whichever container
/// mounts it last, mode 0755, so an app and a sidecar under different uids cannot both use it;
/// the kubelet makes every emptyDir a fresh directory with mode 0777. So, as the kubelet would:
/// each emptyDir is created here, fresh, with mode 0777. Returns every volume name to remove.
fn prepare_volumes(pod: &serde_json::Value) -> Vec<String> {
    let mut names = Vec::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(name) = volume["name"].as_str() else {
            continue;
        };
        if volume.get("emptyDir").is_some() {
            let _ = podman(&["volume", "rm", "--force", name]);
            podman(&["volume", "create", name]).expect("podman volume create");
            let dir = podman(&["volume", "inspect", "--format", "{{.Mountpoint}}", name])
                .expect("podman volume inspect");
            std::fs::set_permissions(dir.trim(), std::fs::Permissions::from_mode(0o777))
                .unwrap_or_else(|e| panic!("chmod 0777 {}: {e}", dir.trim()));
            names.push(name.to_string());
        }
        if let Some(config_map) = volume["configMap"]["name"].as_str() {
            names.push(config_map.to_string());
        }
    }
    names
}

fn run_under_podman(name: &str, stored: serde_json::Value, config_map: serde_json::Value) {
    let dir = monasca_e2e::scratch_dir("real-pod");
    let pod_file = dir.join("pod.json");
    let config_map_file = dir.join("configmap.json");
    let pod = with_local_images(stored);
    std::fs::write(&pod_file, pod.to_string()).expect("write pod.json");
    std::fs::write(&config_map_file, config_map.to_string()).expect("write configmap.json");
    for image in [SIDECAR_IMAGE, APP_IMAGE] {
        let bytes = podman(&["image", "inspect", "--format", "{{.Size}}", image])
            .unwrap_or_else(|e| panic!("image {image}: {e}"));
        say(&format!("real pod: image {image}: {} bytes", bytes.trim()));
    }

    let _played = PlayedPod {
        name: name.into(),
        volumes: prepare_volumes(&pod),
    };
    let played = podman(&[
        "kube",
        "play",
        "--configmap",
        &config_map_file.display().to_string(),
        &pod_file.display().to_string(),
    ]);
    if let Err(e) = played {
        panic!("podman kube play of the stored pod failed: {e}\npod: {pod:#}");
    }
    let sidecar = format!("{name}-{SIDECAR_CONTAINER_NAME}");
    let app = format!("{name}-app");
    let ip = pod_ip(name);
    let app_addr = SocketAddr::new(ip, APP_PORT);
    let metrics_addr = SocketAddr::new(ip, METRICS_PORT);
    say(&format!("real pod: {name} at {ip}"));

    // Each container's user, as the kernel sees it.
    let sidecar_pid = container_pid(&sidecar);
    let app_pid = container_pid(&app);
    let sidecar_status = proc_status(sidecar_pid);
    let app_status = proc_status(app_pid);
    say(&format!(
        "real pod: {sidecar} uid {}, {app} uid {}",
        status_field(&sidecar_status, "Uid"),
        status_field(&app_status, "Uid")
    ));
    assert_eq!(
        status_field(&sidecar_status, "Uid"),
        "65532\t65532\t65532\t65532",
        "the sidecar runs as 65532"
    );
    assert_eq!(
        status_field(&sidecar_status, "Gid"),
        "65532\t65532\t65532\t65532"
    );
    assert_eq!(
        status_field(&sidecar_status, "CapEff"),
        "0000000000000000",
        "the sidecar holds no capabilities"
    );
    assert_eq!(
        status_field(&app_status, "Uid"),
        format!("{APP_UID}\t{APP_UID}\t{APP_UID}\t{APP_UID}"),
        "the app runs under its own uid"
    );
    assert!(
        root_is_read_only(sidecar_pid),
        "the sidecar's root filesystem is mounted read-only"
    );
    assert_eq!(
        podman(&[
            "inspect",
            "--format",
            "{{.HostConfig.ReadonlyRootfs}}",
            &sidecar
        ])
        .expect("podman inspect")
        .trim(),
        "true"
    );

    // Liveness and readiness over the pod's network, and from inside the pod.
    let healthz = wait_http(metrics_addr, "/healthz");
    assert_eq!(healthz.status, 200, "/healthz: {}", healthz.text());
    let inside = podman(&[
        "exec",
        &app,
        "python3",
        "-c",
        &format!(
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/healthz').status)"
        ),
    ])
    .expect("/healthz from the app container");
    assert_eq!(inside.trim(), "200", "/healthz from inside the pod");

    // Traffic into every worker, one SIGKILL, more traffic.
    wait_http(app_addr, "/pid");
    for _ in 0..REQUESTS_BEFORE_KILL {
        assert_eq!(get_ok(app_addr, "/hello"), "hello\n");
    }
    let counting = worker_pids_with_files(&app);
    assert!(!counting.is_empty(), "the workers wrote multiprocess files");
    let victim = counting[0];
    let kill = format!("import os, signal; os.kill({victim}, signal.SIGKILL)");
    podman(&["exec", &app, "python3", "-c", &kill])
        .unwrap_or_else(|e| panic!("SIGKILL worker {victim}: {e}"));
    say(&format!("real pod: SIGKILLed gunicorn worker {victim}"));
    for _ in 0..REQUESTS_AFTER_KILL {
        assert_eq!(get_ok(app_addr, "/hello"), "hello\n");
    }
    let served_by: std::collections::BTreeSet<u32> = (0..40)
        .map(|_| get_ok(app_addr, "/pid").trim().parse().expect("a pid"))
        .collect();
    assert!(
        !served_by.contains(&victim),
        "worker {victim} is dead, yet served"
    );

    // Exact: every request once, the dead worker's included, no per-worker series.
    let total = (REQUESTS_BEFORE_KILL + REQUESTS_AFTER_KILL) as f64;
    let series = "app_requests_total{path=\"/hello\"}";
    let body = wait_metrics(metrics_addr, series, total);
    assert_eq!(monasca_e2e::cluster::sample(&body, series), Some(total));
    assert_eq!(
        monasca_e2e::cluster::sample(&body, "app_request_seconds_count{path=\"/hello\"}"),
        Some(total),
        "histogram count:\n{body}"
    );
    assert!(!body.contains("pid=\""), "no pid label:\n{body}");
    monasca_e2e::exposition::assert_valid_exposition(body.as_bytes(), false);
    say(&format!(
        "real pod: {series} = {total} after {} requests and one SIGKILL",
        REQUESTS_BEFORE_KILL + REQUESTS_AFTER_KILL
    ));

    // The app does not depend on the sidecar.
    podman(&["kill", "--signal", "KILL", &sidecar]).expect("kill the sidecar container");
    for _ in 0..20 {
        assert_eq!(get_ok(app_addr, "/hello"), "hello\n");
    }
    say("real pod: the app kept serving with the sidecar container killed");
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs podman; its stdout, or its exit status and stderr.
fn podman(args: &[&str]) -> Result<String, String> {
    let out = Command::new("podman")
        .args(args)
        .output()
        .map_err(|e| format!("podman {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "podman {} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The pod's IP on podman's network: its infra container's, whose network namespace every
/// container of the pod joins (as in Kubernetes).
fn pod_ip(pod: &str) -> IpAddr {
    let infra = podman(&["pod", "inspect", "--format", "{{.InfraContainerID}}", pod])
        .expect("podman pod inspect");
    let out = podman(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        infra.trim(),
    ])
    .expect("podman inspect");
    out.split_whitespace()
        .find_map(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no IP for pod {pod}: {out:?}"))
}

fn container_pid(container: &str) -> u32 {
    let out = podman(&["inspect", "--format", "{{.State.Pid}}", container]).expect("inspect");
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid of {container}: {out:?}"))
}

fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"))
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
}

/// Whether the process's `/` is mounted read-only (its mount options, field 6 of mountinfo).
fn root_is_read_only(pid: u32) -> bool {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/mountinfo: {e}"));
    info.lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .and_then(|f| f.get(5).map(|opts| opts.split(',').any(|o| o == "ro")))
        .unwrap_or_else(|| panic!("no / in /proc/{pid}/mountinfo:\n{info}"))
}

/// The pids (in the pod's view) of the workers that wrote prometheus_client files.
fn worker_pids_with_files(app: &str) -> Vec<u32> {
    let dir = podman(&["exec", app, "printenv", "PROMETHEUS_MULTIPROC_DIR"])
        .expect("PROMETHEUS_MULTIPROC_DIR in the app container");
    let listing = podman(&["exec", app, "ls", dir.trim()]).expect("ls the multiprocess dir");
    let mut pids: Vec<u32> = listing
        .split_whitespace()
        .filter_map(|f| {
            f.strip_prefix("counter_")?
                .strip_suffix(".db")?
                .parse()
                .ok()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Waits (at most `WAIT`) for `path` to answer at all: the containers are starting.
fn wait_http(addr: SocketAddr, path: &str) -> monasca_e2e::http::Response {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match monasca_e2e::http::request(addr, "GET", path, &[], b"") {
            Ok(response) => return response,
            Err(e) if std::time::Instant::now() >= deadline => {
                panic!("GET http://{addr}{path} after {WAIT:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn get_ok(addr: SocketAddr, path: &str) -> String {
    let response = monasca_e2e::http::request(addr, "GET", path, &[], b"")
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    response.text()
}

/// The sidecar's `/metrics` once `series` reached `want` (it reads the files every interval),
/// or the last body after `WAIT`.
fn wait_metrics(addr: SocketAddr, series: &str, want: f64) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let body = wait_http(addr, "/metrics").text();
        let value = monasca_e2e::cluster::sample(&body, series);
        if value == Some(want) || std::time::Instant::now() >= deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
