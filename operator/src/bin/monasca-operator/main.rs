//! `monasca-operator`: wiring only. Flags in [`cli`], start-up questions to the apiserver in
//! [`start`], the tasks and their shutdown in [`tasks`]; the behaviour lives in the library.

mod cli;
mod start;
mod tasks;

use anyhow::Result;
use clap::Parser;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<()> {
    // One crypto provider for every rustls user in the process (kube's client and our server).
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let args = cli::Args::parse();
    monasca_runtime::logging::init_tracing(args.log_format.into());
    let namespace = args.namespace();

    let client = start::client(args.kubeconfig.as_deref()).await?;
    start::require_crd(&client).await?;
    let native_sidecars = start::native_sidecars(&client).await;
    tracing::info!(native_sidecars = ?native_sidecars.get(), %namespace, image = %args.sidecar_image, "starting");
    let pod_monitors = start::pod_monitors_installed(&client).await;

    let running =
        tasks::Running::start(&args, client, namespace, native_sidecars, pod_monitors).await?;
    monasca_runtime::shutdown_signal().await;
    running
        .shutdown(Duration::from_secs(args.shutdown_delay_seconds))
        .await
}
