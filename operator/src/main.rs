//! `monasca-operator`: argument parsing and wiring only; the behaviour lives in the library.

use anyhow::{Context as _, Result};
use clap::Parser;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use monasca_crds::{DEFAULT_OPERATOR_NAMESPACE, MetricsSidecar};
use monasca_operator::inject::{ServerVersion, Settings};
use monasca_operator::webhook::tls::CertResolver;
use monasca_operator::{Error, admin, watch, webhook};
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
    /// https://127.0.0.1:8443/mutate. Used by the controller (next release).
    #[arg(long, env = "MONASCA_OPERATOR_WEBHOOK_URL")]
    webhook_url: Option<String>,

    /// The operator's namespace (never injected; home of its Secret). Default: $POD_NAMESPACE,
    /// else monasca-system.
    #[arg(long, env = "MONASCA_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// Serving certificate (PEM chain), reloaded when it changes. With --tls-key.
    #[arg(long, env = "MONASCA_OPERATOR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// Serving private key (PEM), reloaded when it changes. With --tls-cert.
    #[arg(long, env = "MONASCA_OPERATOR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

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

    /// Log format.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

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
    init_tracing(args.log_format);

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
    // Fail fast, with a clear message, when the CRD is missing (instead of a watch that retries
    // forever and a webhook that never becomes ready).
    Api::<MetricsSidecar>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context(
            "cannot list MetricsSidecars: is the CRD installed (kubectl apply -k manifests/)?",
        )?;
    let server_version = match client.apiserver_version().await {
        Ok(info) => ServerVersion::parse(&info.major, &info.minor),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the apiserver version; nativeSidecar: auto will use regular containers");
            None
        }
    };
    tracing::info!(?server_version, %namespace, image = %args.sidecar_image, "starting");

    let ctx = watch::start(
        client,
        Settings {
            operator_namespace: namespace.clone(),
            sidecar_image: args.sidecar_image.clone(),
            server_version,
        },
    );

    let certs = Arc::new(match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            CertResolver::from_files(cert.clone(), key.clone(), Some(ctx.metrics.clone()))
                .context("loading the webhook serving certificate")?
        }
        _ => {
            tracing::warn!(
                "no --tls-cert/--tls-key: serving a self-signed in-memory certificate; \
                 operator-managed certificates come with the controller"
            );
            CertResolver::self_signed(self_signed_names(&namespace, args.webhook_url.as_deref()))
                .context("generating a self-signed certificate")?
        }
    });
    if let Some(url) = &args.webhook_url {
        tracing::info!(%url, "webhook URL noted; registration comes with the controller");
    }

    let webhook_listener = bind(args.webhook_listen).await?;
    let admin_listener = bind(args.admin_listen).await?;
    tracing::info!(webhook = %args.webhook_listen, admin = %args.admin_listen, "listening");

    let (stop_tx, stop_rx) = signal_watch::channel(false);
    let stopped = |mut rx: signal_watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let webhook_task = tokio::spawn(webhook::serve(
        webhook_listener,
        certs,
        ctx.clone(),
        stopped(stop_rx.clone()),
    ));
    let admin_task = tokio::spawn(admin::serve(admin_listener, ctx, stopped(stop_rx)));

    shutdown_signal().await;
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    webhook_task.await.context("webhook task")??;
    admin_task.await.context("admin task")?;
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
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

/// The names a self-signed certificate covers: the conventional Service names in the operator's
/// namespace, the host of `--webhook-url`, and loopback.
fn self_signed_names(namespace: &str, webhook_url: Option<&str>) -> Vec<String> {
    let mut names = vec![
        format!("monasca-operator.{namespace}.svc"),
        format!("monasca-operator.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    if let Some(host) = webhook_url
        .and_then(|u| u.parse::<http::Uri>().ok())
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
        && !names.contains(&host)
    {
        names.push(host);
    }
    names
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the operator");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
