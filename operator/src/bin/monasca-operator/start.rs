//! Start-up questions to the apiserver. None of them waits longer than
//! [`STARTUP_PROBE_TIMEOUT`]: the operator starts, and serves admission with the certificate it
//! has (or reads later), while the apiserver is unreachable. Only a definite answer that the
//! CRD is missing stops it.

use anyhow::{Context as _, Result};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use monasca_crds::MetricsSidecar;
use monasca_operator::features;
use monasca_operator::inject::{NativeSidecars, NativeSupport};
use std::path::Path;
use std::time::Duration;

/// How long a start-up question to the apiserver (CRD installed? native sidecars?) may take
/// before the operator starts without the answer.
const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The Kubernetes client: from `kubeconfig` when given, else in-cluster, else `~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client> {
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

/// Fails only when the apiserver says the MetricsSidecar CRD is not installed. Metadata only:
/// one MetricsSidecar that does not parse must not stop the operator.
pub async fn require_crd(client: &Client) -> Result<()> {
    let api = Api::<MetricsSidecar>::all(client.clone());
    let params = ListParams::default().limit(1);
    match tokio::time::timeout(STARTUP_PROBE_TIMEOUT, api.list_metadata(&params)).await {
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
    Ok(())
}

/// Native sidecars: detected from what the apiserver runs (its feature gates), once before
/// serving and then on a timer; until an answer, `always` is honoured and `auto` is regular.
pub async fn native_sidecars(client: &Client) -> NativeSupport {
    let support = NativeSupport::new(NativeSidecars::Unknown);
    match tokio::time::timeout(STARTUP_PROBE_TIMEOUT, features::refresh(client, &support)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the apiserver's /metrics yet to detect native sidecars; retrying")
        }
        Err(_) => tracing::warn!(
            "the apiserver did not answer the native sidecar detection; retrying in the background"
        ),
    }
    tokio::spawn(features::run(client.clone(), support.clone()));
    support
}

/// Whether the Prometheus Operator's PodMonitor API is served (asked once at start).
pub async fn pod_monitors_installed(client: &Client) -> bool {
    let resources = client.list_api_group_resources("monitoring.coreos.com/v1");
    match tokio::time::timeout(STARTUP_PROBE_TIMEOUT, resources).await {
        Ok(Ok(list)) => list.resources.iter().any(|r| r.name == "podmonitors"),
        Ok(Err(_)) | Err(_) => false,
    }
}
