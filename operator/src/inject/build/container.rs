//! The sidecar container itself: its ports, probes, environment and mounts.

use super::*;

/// Every port a sidecar listener binds: (listener, port, protocol).
pub(super) fn bound_ports(plan: &Plan<'_>) -> Vec<(&'static str, u16, &'static str)> {
    let config = &plan.spec.config;
    let port = |addr: &str| addr.parse::<SocketAddr>().ok().map(|a| a.port());
    let mut ports = vec![("metrics", plan.metrics.port(), "TCP")];
    ports.extend(port(&config.listen.ingest).map(|p| ("ingest", p, "TCP")));
    if config.otlp.enabled {
        ports.extend(port(&config.listen.otlp).map(|p| ("otlp", p, "TCP")));
    }
    if config.statsd.enabled
        && let Some(p) = port(&config.listen.statsd)
    {
        ports.push(("statsd", p, "UDP"));
        if config.statsd.tcp {
            ports.push(("statsd", p, "TCP"));
        }
    }
    // Port 0 asks the kernel for any free port: it cannot clash.
    ports.retain(|(_, p, _)| *p != 0);
    ports
}

/// Only listeners reachable from outside the pod get a declared port: declaring a loopback
/// listener would advertise something nobody can reach.
pub(super) fn sidecar_ports(plan: &Plan<'_>) -> Vec<ContainerPort> {
    let mut ports = vec![ContainerPort {
        name: Some(PORT_METRICS.into()),
        container_port: plan.metrics.port().into(),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }];
    let listen = &plan.spec.config.listen;
    let external = |addr: &str| {
        addr.parse::<SocketAddr>()
            .ok()
            .filter(|a| !a.ip().is_loopback())
    };
    if let Some(addr) = external(&listen.ingest).filter(|a| a.port() != plan.metrics.port()) {
        ports.push(ContainerPort {
            name: Some(PORT_INGEST.into()),
            container_port: addr.port().into(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        });
    }
    if plan.spec.config.statsd.enabled
        && let Some(addr) = external(&listen.statsd)
    {
        ports.push(ContainerPort {
            name: Some(PORT_STATSD.into()),
            container_port: addr.port().into(),
            protocol: Some("UDP".into()),
            ..ContainerPort::default()
        });
    }
    if plan.spec.config.otlp.enabled
        && let Some(addr) = external(&listen.otlp).filter(|a| a.port() != plan.metrics.port())
    {
        ports.push(ContainerPort {
            name: Some(PORT_OTLP.into()),
            container_port: addr.port().into(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        });
    }
    ports
}

pub(super) fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(PORT_METRICS.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The `monasca-sidecar` container.
pub(super) fn sidecar_container(
    plan: &Plan<'_>,
    settings: &Settings,
    scrape_env: Vec<EnvVar>,
    warnings: &mut Vec<String>,
) -> Container {
    let spec = plan.spec;
    let mut env_vars = Vec::new();
    let mut mounts = vec![VolumeMount {
        name: CONFIG_VOLUME.into(),
        mount_path: CONFIG_MOUNT_PATH.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    if let Some(dir) = &plan.multiproc_dir {
        env_vars.push(env(ENV_MULTIPROC_DIR, dir));
        // What this pod lets the sidecar see; it applies when the config says `auto`.
        if let Some(pids) = plan.shared_pids
            && spec.config.multiprocess_liveness == MultiprocessLiveness::Auto
        {
            let liveness = if pids.shared { "proc" } else { "mtime" };
            env_vars.push(env(ENV_MULTIPROCESS_LIVENESS, liveness));
        }
        mounts.push(VolumeMount {
            name: MULTIPROC_VOLUME.into(),
            mount_path: dir.clone(),
            ..VolumeMount::default()
        });
    }
    if let Some(dir) = &plan.state_dir
        && !plan
            .multiproc_dir
            .as_deref()
            .is_some_and(|m| same_path(m, dir))
    {
        let volume = if plan.multiproc_dir.is_some() {
            MULTIPROC_VOLUME
        } else {
            STATE_VOLUME
        };
        mounts.push(VolumeMount {
            name: volume.into(),
            mount_path: dir.clone(),
            ..VolumeMount::default()
        });
    }
    env_vars.extend(scrape_env);

    // The kubelet probes the pod IP: a loopback-only metrics listener cannot be probed.
    let probed = !plan.metrics.ip().is_loopback();
    if !probed {
        warnings.push(format!(
            "MetricsSidecar {:?} listens for metrics on loopback {}: no probes, and Prometheus \
             cannot scrape it",
            plan.name, plan.metrics
        ));
    }
    let resources = &spec.resources;
    let has_resources =
        resources.requests.is_some() || resources.limits.is_some() || resources.claims.is_some();
    Container {
        name: SIDECAR_CONTAINER_NAME.into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| settings.sidecar_image.clone()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().into()),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_MOUNT_PATH}/{CONFIG_MAP_KEY}"),
        ]),
        env: (!env_vars.is_empty()).then_some(env_vars),
        ports: Some(sidecar_ports(plan)),
        // The sidecar never gates the app: no readiness probe (it would count toward the pod's
        // readiness, so a failing sidecar would take the app out of its Service), and no
        // startup probe (with a native sidecar it would hold the app containers back until it
        // passed). The liveness probe restarts only the sidecar.
        readiness_probe: None,
        liveness_probe: probed.then(|| probe("/healthz", 20, 3)),
        startup_probe: None,
        restart_policy: plan.native.then(|| "Always".into()),
        resources: has_resources.then(|| resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_UID),
            run_as_group: Some(SIDECAR_GID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}
