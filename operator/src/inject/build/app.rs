//! What the patch changes in the app's own containers and annotations: `prometheus.io/*`
//! pointed at the sidecar, the multiprocess directory, the OTLP exporter endpoint.

use super::*;

/// Points the `prometheus.io/*` annotations at the sidecar. When they pointed at the app, the
/// app's port and path become the sidecar's scrape target (through its env) so that nothing
/// Prometheus used to collect is lost, except with multiprocess, where the workers' files
/// already carry those samples. `prometheus.io/scrape: "false"` is left alone.
pub(super) fn prometheus_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    plan: &Plan<'_>,
    wanted: &mut BTreeMap<String, String>,
    scrape_env: &mut Vec<EnvVar>,
    warnings: &mut Vec<String>,
) {
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    if get(PROMETHEUS_SCRAPE).is_some_and(|v| v.eq_ignore_ascii_case("false")) {
        return;
    }
    let port = plan.metrics.port().to_string();
    if let Some(old_port) = get(PROMETHEUS_PORT).filter(|p| *p != port) {
        let scheme = get(PROMETHEUS_SCHEME).unwrap_or("http");
        match old_port.parse::<u16>() {
            // With multiprocess the sidecar reads the workers' files directly; the app's own
            // endpoint serves the same samples (prometheus_client's MultiProcessCollector), so
            // scraping it too would count every sample twice.
            Ok(_) if plan.multiproc_dir.is_some() => warnings.push(format!(
                "{PROMETHEUS_PORT}={old_port:?} not added as a monasca-sidecar scrape target: with \
                 multiprocess the sidecar reads the workers' files, and scraping both would count \
                 every sample twice"
            )),
            Ok(old_port) if old_port != 0 && scheme.eq_ignore_ascii_case("http") => {
                let path = get(PROMETHEUS_PATH).filter(|p| p.starts_with('/')).unwrap_or(METRICS_PATH);
                scrape_env.push(env(ENV_SCRAPE_TARGETS, &format!("127.0.0.1:{old_port}")));
                scrape_env.push(env(ENV_SCRAPE_PATH, path));
            }
            _ => warnings.push(format!(
                "{PROMETHEUS_PORT}={old_port:?} ({PROMETHEUS_SCHEME}={scheme:?}) cannot be scraped by \
                 the monasca-sidecar; it now points at the sidecar"
            )),
        }
    }
    wanted.insert(PROMETHEUS_SCRAPE.into(), "true".into());
    wanted.insert(PROMETHEUS_PORT.into(), port);
    wanted.insert(PROMETHEUS_PATH.into(), METRICS_PATH.into());
    if get(PROMETHEUS_SCHEME).is_some() {
        wanted.insert(PROMETHEUS_SCHEME.into(), "http".into());
    }
}

/// Gives one app container the shared multiprocess directory: `PROMETHEUS_MULTIPROC_DIR` (unless
/// the user set it, whose value is kept) and a mount of the shared volume at that path.
pub(super) fn multiprocess_app_container(
    index: usize,
    container: &Container,
    default_dir: &str,
    ops: &mut Ops,
    warnings: &mut Vec<String>,
) -> Result<(), serde_json::Error> {
    let index = index.to_string();
    let base = ["spec", "containers", index.as_str()];
    let user = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == ENV_MULTIPROC_DIR);
    let path = match user {
        Some(EnvVar { value: Some(v), .. }) if v.starts_with('/') => v.clone(),
        Some(_) => {
            warnings.push(format!(
                "container {:?} sets {ENV_MULTIPROC_DIR} to something other than an absolute path; \
                 its multiprocess files are not shared with the monasca-sidecar",
                container.name
            ));
            return Ok(());
        }
        None => {
            ops.append(
                &[&base[..], &["env"]].concat(),
                container.env.is_some(),
                vec![env(ENV_MULTIPROC_DIR, default_dir)],
            )?;
            default_dir.to_string()
        }
    };
    match container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| same_path(&m.mount_path, &path))
    {
        Some(m) if m.name == MULTIPROC_VOLUME => {}
        Some(m) => warnings.push(format!(
            "container {:?} already mounts volume {:?} at {path}; its multiprocess files are not \
             shared with the monasca-sidecar",
            container.name, m.name
        )),
        None => ops.append(
            &[&base[..], &["volumeMounts"]].concat(),
            container.volume_mounts.is_some(),
            vec![VolumeMount {
                name: MULTIPROC_VOLUME.into(),
                mount_path: path,
                ..VolumeMount::default()
            }],
        )?,
    }
    Ok(())
}

/// The URL app containers reach the sidecar's OTLP/HTTP receiver at: the pod shares one
/// network namespace, so loopback (or the listener's own address when it names one).
pub(super) fn otlp_endpoint(plan: &Plan<'_>) -> Result<String, String> {
    let config = &plan.spec.config;
    if !config.otlp.enabled {
        return Err(format!(
            "MetricsSidecar {:?} sets otlp.injectEnv but its config turns the OTLP receiver off              (otlp.enabled: false); no OTEL_* variables were set",
            plan.name
        ));
    }
    let addr: SocketAddr = config.listen.otlp.parse().map_err(|_| {
        format!(
            "MetricsSidecar {:?} has an invalid listen.otlp {:?}; no OTEL_* variables were set",
            plan.name, config.listen.otlp
        )
    })?;
    let ip = addr.ip();
    let host = if ip.is_unspecified() || ip.is_loopback() {
        "127.0.0.1".to_string()
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Ok(format!("http://{host}:{}/v1/metrics", addr.port()))
}

/// Sets the OTLP metrics endpoint and protocol in one app container, each only when the
/// container does not set it (its own value wins).
pub(super) fn otlp_app_container(
    index: usize,
    container: &Container,
    endpoint: &str,
    ops: &mut Ops,
) -> Result<(), serde_json::Error> {
    let index = index.to_string();
    let path = ["spec", "containers", index.as_str(), "env"];
    let has = |name: &str| container.env.iter().flatten().any(|e| e.name == name);
    let mut vars = Vec::new();
    if !has(ENV_OTLP_METRICS_ENDPOINT) {
        vars.push(env(ENV_OTLP_METRICS_ENDPOINT, endpoint));
    }
    if !has(ENV_OTLP_METRICS_PROTOCOL) {
        vars.push(env(ENV_OTLP_METRICS_PROTOCOL, "http/protobuf"));
    }
    // The multiprocess step may have created the array in this patch already.
    let exists = container.env.is_some() || ops.adds(&path);
    ops.append(&path, exists, vars)
}

pub(super) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}
