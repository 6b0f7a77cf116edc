//! `monasca-operator`: argument parsing and wiring only; the behaviour lives in the library.

use anyhow::{Context as _, Result};
use clap::Parser;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use monasca_crds::{DEFAULT_OPERATOR_NAMESPACE, MetricsSidecar};
use monasca_operator::certs::{self, WebhookClient};
use monasca_operator::inject::{NativeSidecars, NativeSupport, Settings};
use monasca_operator::leader::{self, Leadership};
use monasca_operator::webhook::tls::CertResolver;
use monasca_operator::{Error, admin, controller, features, watch, webhook};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch as signal_watch;

/// Injects monasca-sidecar into annotated pods and reconciles MetricsSidecar resources.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Kubeconfig file, for running outside the cluster (default: in-cluster, then ~/.kube/config).
    #[arg(long, env = "MONASCA_OPERATOR_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Register the webhook by this URL instead of by Service (development and tests), e.g.
    /// https://127.0.0.1:8443/mutate.
    #[arg(long, env = "MONASCA_OPERATOR_WEBHOOK_URL")]
    webhook_url: Option<String>,

    /// The Service (in the operator's namespace) the apiserver reaches the webhook through.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_WEBHOOK_SERVICE",
        default_value = "monasca-operator"
    )]
    webhook_service: String,

    /// The port of that Service.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_WEBHOOK_SERVICE_PORT",
        default_value_t = 443
    )]
    webhook_service_port: i32,

    /// Compete for the Lease and write only while holding it. Turn off only for a single
    /// replica in development.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    leader_election: bool,

    /// Lease duration in seconds (30-60). This replica writes only until the start of its last
    /// successful renewal plus this minus a third of it; another replica takes over once the
    /// Lease has not changed for this long.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_LEASE_DURATION",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(30..=60)
    )]
    lease_duration: u64,

    /// The operator's namespace (never injected; home of its Secret). Default: $POD_NAMESPACE,
    /// else monasca-system.
    #[arg(long, env = "MONASCA_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// Serving certificate (PEM chain), reloaded when it changes. With --tls-key: cert-manager
    /// mode (no operator-managed Secret or CA; annotate the webhook configuration with
    /// cert-manager.io/inject-ca-from for its caBundle).
    #[arg(long, env = "MONASCA_OPERATOR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// Serving private key (PEM), reloaded when it changes. With --tls-cert.
    #[arg(long, env = "MONASCA_OPERATOR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// The operator's own webhook Secret mounted as a directory (self-managed mode): its
    /// tls.crt/tls.key are served from the start, even while the apiserver is unreachable, and
    /// reloaded when they change; the Secret watch still delivers changes sooner. Ignored with
    /// --tls-cert/--tls-key (cert-manager mode).
    #[arg(long, env = "MONASCA_OPERATOR_TLS_DIR")]
    tls_dir: Option<PathBuf>,

    /// Sidecar image for MetricsSidecars that do not name one.
    #[arg(long, env = "MONASCA_OPERATOR_SIDECAR_IMAGE", default_value = concat!("monasca/monasca-sidecar:", env!("CARGO_PKG_VERSION")))]
    sidecar_image: String,

    /// Webhook listener (HTTPS).
    #[arg(
        long,
        env = "MONASCA_OPERATOR_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    webhook_listen: SocketAddr,

    /// Admin listener (HTTP): /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    admin_listen: SocketAddr,

    /// How long to keep serving admission after SIGTERM (reporting not ready) before closing the
    /// listeners: the time for the Service's endpoints to drop this replica everywhere. Keep it
    /// below the pod's terminationGracePeriodSeconds minus the preStop sleep.
    #[arg(long, env = "MONASCA_OPERATOR_SHUTDOWN_DELAY", default_value_t = 5)]
    shutdown_delay_seconds: u64,

    /// Log format.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

/// How long a start-up question to the apiserver (CRD installed? native sidecars?) may take before the
/// operator starts without the answer.
const STARTUP_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> Result<()> {
    // One crypto provider for every rustls user in the process (kube's client and our server).
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let args = Args::parse();
    monasca_runtime::logging::init_tracing(match args.log_format {
        LogFormat::Text => monasca_runtime::logging::LogFormat::Text,
        LogFormat::Json => monasca_runtime::logging::LogFormat::Json,
    });

    let namespace = args
        .namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_OPERATOR_NAMESPACE.to_string());

    let client = client(args.kubeconfig.as_deref()).await?;
    // Nothing below waits for the apiserver: the operator starts, and serves admission with the
    // certificate it has (or reads later), while the apiserver is unreachable. Only a definite
    // answer that the CRD is missing stops it. Metadata only: one MetricsSidecar that does not
    // parse must not stop the operator.
    match tokio::time::timeout(
        STARTUP_PROBE_TIMEOUT,
        Api::<MetricsSidecar>::all(client.clone()).list_metadata(&ListParams::default().limit(1)),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => anyhow::bail!(
            "the MetricsSidecar CRD is not installed (kubectl apply -k manifests/): {}",
            status.message
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot list MetricsSidecars yet (apiserver reachable? RBAC?); starting anyway, the watches retry");
        }
        Err(_) => {
            tracing::warn!("the apiserver did not answer; starting anyway, the watches retry")
        }
    }
    // Native sidecars: detected from what the apiserver runs (its feature gates), once before
    // serving and then on a timer; until an answer, `always` is honoured and `auto` is regular.
    let native_sidecars = NativeSupport::new(NativeSidecars::Unknown);
    match tokio::time::timeout(
        STARTUP_PROBE_TIMEOUT,
        features::refresh(&client, &native_sidecars),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the apiserver's /metrics yet to detect native sidecars; retrying")
        }
        Err(_) => tracing::warn!(
            "the apiserver did not answer the native sidecar detection; retrying in the background"
        ),
    }
    tokio::spawn(features::run(client.clone(), native_sidecars.clone()));
    tracing::info!(native_sidecars = ?native_sidecars.get(), %namespace, image = %args.sidecar_image, "starting");

    let (stop_tx, stop_rx) = signal_watch::channel(false);
    let stopped = |mut rx: signal_watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // Leadership first: the stores and the controller read it.
    let identity = identity();
    let (leadership, lease_task) = if args.leader_election {
        let timing = leader::LeaseTiming::new(args.lease_duration)?;
        let elector = leader::Elector::new(client.clone(), &namespace, &identity, timing);
        let (state_tx, state_rx) = signal_watch::channel(None);
        tracing::info!(%identity, lease = leader::LEASE_NAME, ?timing, "competing for the Lease");
        let task = tokio::spawn(leader::run_lease(elector, state_tx, stop_rx.clone()));
        (Leadership::from_receiver(state_rx), Some(task))
    } else {
        tracing::warn!("leader election off: this replica always writes");
        (Leadership::standalone(), None)
    };

    let ctx = watch::start(
        client.clone(),
        Settings {
            operator_namespace: namespace.clone(),
            sidecar_image: args.sidecar_image.clone(),
            native_sidecars,
        },
        leadership.clone(),
    );

    let self_managed = args.tls_cert.is_none();
    let certs = Arc::new(match (&args.tls_cert, &args.tls_key, &args.tls_dir) {
        (Some(cert), Some(key), _) => {
            CertResolver::from_files(cert.clone(), key.clone(), Some(ctx.metrics.clone()))
                .context("loading the webhook serving certificate")?
        }
        (_, _, Some(dir)) => CertResolver::from_mounted_secret(
            dir.join(certs::KEY_TLS_CERT),
            dir.join(certs::KEY_TLS_KEY),
            Some(ctx.metrics.clone()),
        ),
        _ => CertResolver::empty(Some(ctx.metrics.clone())),
    });
    ctx.set_certs(certs.clone());
    // Deleting or editing the Secret or the webhook configuration wakes the leader at once.
    let recheck = Arc::new(tokio::sync::Notify::new());
    // Each replica reports the certificate it serves, so that a CA overlap ends only when every
    // replica switched (see certs::replicas).
    let report_task = self_managed.then(|| {
        tokio::spawn(certs::replicas::run(
            client.clone(),
            namespace.clone(),
            identity.clone(),
            certs.clone(),
            stop_rx.clone(),
        ))
    });
    if self_managed {
        tokio::spawn(certs::watch_secret(
            client.clone(),
            namespace.clone(),
            certs.clone(),
            recheck.clone(),
        ));
    }
    tokio::spawn(certs::watch_webhook_configuration(
        client.clone(),
        recheck.clone(),
        ctx.metrics.clone(),
    ));
    let webhook_client = match &args.webhook_url {
        Some(url) => WebhookClient::Url(url.clone()),
        None => WebhookClient::Service {
            namespace: namespace.clone(),
            name: args.webhook_service.clone(),
            port: args.webhook_service_port,
        },
    };
    tokio::spawn(certs::run(
        certs::Manager {
            client: client.clone(),
            namespace: namespace.clone(),
            webhook: webhook_client,
            self_managed,
            metrics: ctx.metrics.clone(),
            missing: Default::default(),
        },
        leadership.clone(),
        recheck,
    ));

    if let Some(queue) = ctx.admission_events.channel() {
        tokio::spawn(webhook::events::run(client.clone(), ctx.clone(), queue));
    }
    let pod_monitors = tokio::time::timeout(STARTUP_PROBE_TIMEOUT, pod_monitors_installed(&client))
        .await
        .unwrap_or(false);
    let controller_ctx = Arc::new(controller::Context::new(client, ctx.clone(), pod_monitors));
    let controller_task = tokio::spawn(controller::run(controller_ctx, stopped(stop_rx.clone())));

    let webhook_listener = bind(args.webhook_listen).await?;
    let admin_listener = bind(args.admin_listen).await?;
    tracing::info!(webhook = %args.webhook_listen, admin = %args.admin_listen, "listening");

    let webhook_task = tokio::spawn(webhook::serve(
        webhook_listener,
        certs,
        ctx.clone(),
        stopped(stop_rx.clone()),
    ));
    let admin_task = tokio::spawn(admin::serve(admin_listener, ctx.clone(), stopped(stop_rx)));

    monasca_runtime::shutdown_signal().await;
    // Keep serving while the endpoint removal propagates (kube-proxy, the apiserver's endpoint
    // cache): reviews still arrive here for a few seconds after SIGTERM. /readyz says not ready
    // meanwhile, so nothing new is routed here.
    ctx.start_draining();
    tracing::info!(
        seconds = args.shutdown_delay_seconds,
        "SIGTERM: still serving during the shutdown delay"
    );
    tokio::time::sleep(std::time::Duration::from_secs(args.shutdown_delay_seconds)).await;
    tracing::info!("shutting down: draining in-flight admissions");
    let _ = stop_tx.send(true);
    let finish = async {
        webhook_task.await.context("webhook task")??;
        admin_task.await.context("admin task")?;
        controller_task.await.context("controller task")?;
        if let Some(task) = lease_task {
            task.await.context("lease task")?;
        }
        if let Some(task) = report_task {
            task.await.context("certificate report task")?;
        }
        Ok(())
    };
    // Whatever a task is doing (a reconcile waiting on the apiserver, a watch retrying), the
    // process ends within the deadline: a rollout of the operator never waits for the kill.
    match tokio::time::timeout(SHUTDOWN_DEADLINE, finish).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                deadline = ?SHUTDOWN_DEADLINE,
                "shutdown: tasks still running at the deadline; exiting without them"
            );
            // Not a return: dropping the runtime would wait for any blocking task still running.
            std::process::exit(0);
        }
    }
}

/// How long the tasks get to finish after the stop signal (well within Kubernetes' default
/// 30 s grace period).
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// This replica's Lease identity: the pod name in-cluster, else host and process.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
            format!("{host}-{}", std::process::id())
        })
}

/// Whether the Prometheus Operator's PodMonitor API is served (checked once at start).
async fn pod_monitors_installed(client: &Client) -> bool {
    match client
        .list_api_group_resources("monitoring.coreos.com/v1")
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == "podmonitors"),
        Err(_) => false,
    }
}

async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using {}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no in-cluster config and no kubeconfig")?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
        .map_err(Into::into)
}
