//! The command line (every flag also read from a `MONASCA_OPERATOR_*` variable) and what is
//! derived from it alone.

use clap::Parser;
use monasca_crds::DEFAULT_OPERATOR_NAMESPACE;
use monasca_operator::certs::WebhookClient;
use monasca_runtime::logging::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Injects monasca-sidecar into annotated pods and reconciles MetricsSidecar resources.
#[derive(Debug, Parser)]
#[command(name = "monasca-operator", version, about)]
pub struct Args {
    /// Kubeconfig file, for running outside the cluster (default: in-cluster, then ~/.kube/config).
    #[arg(long, env = "MONASCA_OPERATOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Register the webhook by this URL instead of by Service (development and tests), e.g.
    /// https://127.0.0.1:8443/mutate.
    #[arg(long, env = "MONASCA_OPERATOR_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// The Service (in the operator's namespace) the apiserver reaches the webhook through.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_WEBHOOK_SERVICE",
        default_value = "monasca-operator"
    )]
    pub webhook_service: String,

    /// The port of that Service.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_WEBHOOK_SERVICE_PORT",
        default_value_t = 443
    )]
    pub webhook_service_port: i32,

    /// Compete for the Lease and write only while holding it. Turn off only for a single
    /// replica in development.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub leader_election: bool,

    /// Lease duration in seconds (30-60). This replica writes only until the start of its last
    /// successful renewal plus this minus a third of it; another replica takes over once the
    /// Lease has not changed for this long.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_LEASE_DURATION",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(30..=60)
    )]
    pub lease_duration: u64,

    /// The operator's namespace (never injected; home of its Secret). Default: $POD_NAMESPACE,
    /// else monasca-system.
    #[arg(long, env = "MONASCA_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// Serving certificate (PEM chain), reloaded when it changes. With --tls-key: cert-manager
    /// mode (no operator-managed Secret or CA; annotate the webhook configuration with
    /// cert-manager.io/inject-ca-from for its caBundle).
    #[arg(long, env = "MONASCA_OPERATOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Serving private key (PEM), reloaded when it changes. With --tls-cert.
    #[arg(long, env = "MONASCA_OPERATOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The operator's own webhook Secret mounted as a directory (self-managed mode): its
    /// tls.crt/tls.key are served from the start, even while the apiserver is unreachable, and
    /// reloaded when they change; the Secret watch still delivers changes sooner. Ignored with
    /// --tls-cert/--tls-key (cert-manager mode).
    #[arg(long, env = "MONASCA_OPERATOR_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,

    /// Sidecar image for MetricsSidecars that do not name one.
    #[arg(long, env = "MONASCA_OPERATOR_SIDECAR_IMAGE", default_value = concat!("monasca/monasca-sidecar:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,

    /// Webhook listener (HTTPS).
    #[arg(
        long,
        env = "MONASCA_OPERATOR_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub webhook_listen: SocketAddr,

    /// Admin listener (HTTP): /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: SocketAddr,

    /// How long to keep serving admission after SIGTERM (reporting not ready) before closing the
    /// listeners: the time for the Service's endpoints to drop this replica everywhere. Keep it
    /// below the pod's terminationGracePeriodSeconds minus the preStop sleep.
    #[arg(long, env = "MONASCA_OPERATOR_SHUTDOWN_DELAY", default_value_t = 5)]
    pub shutdown_delay_seconds: u64,

    /// Log format.
    #[arg(
        long,
        env = "MONASCA_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormatArg,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> LogFormat {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

impl Args {
    /// The operator's namespace: the flag, else `$POD_NAMESPACE`, else the default.
    pub fn namespace(&self) -> String {
        self.namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_OPERATOR_NAMESPACE.to_string())
    }

    /// Self-managed certificates (operator's CA in a Secret) unless cert-manager files are given.
    pub fn self_managed_certs(&self) -> bool {
        self.tls_cert.is_none()
    }

    /// How the apiserver reaches the webhook.
    pub fn webhook_client(&self, namespace: &str) -> WebhookClient {
        match &self.webhook_url {
            Some(url) => WebhookClient::Url(url.clone()),
            None => WebhookClient::Service {
                namespace: namespace.to_string(),
                name: self.webhook_service.clone(),
                port: self.webhook_service_port,
            },
        }
    }
}

/// This replica's Lease identity: the pod name in-cluster, else host and process.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
            format!("{host}-{}", std::process::id())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_the_lease_duration_is_bounded() {
        <Args as clap::CommandFactory>::command().debug_assert();
        let args = Args::try_parse_from([
            "monasca-operator",
            "--namespace",
            "ops",
            "--webhook-url",
            "https://127.0.0.1:8443/mutate",
        ])
        .expect("valid flags");
        assert_eq!(args.namespace(), "ops");
        assert!(args.self_managed_certs());
        assert!(
            matches!(args.webhook_client("ops"), WebhookClient::Url(u) if u.ends_with("/mutate"))
        );
        assert!(Args::try_parse_from(["monasca-operator", "--lease-duration", "29"]).is_err());
        assert!(Args::try_parse_from(["monasca-operator", "--tls-cert", "c.pem"]).is_err());
    }
}
