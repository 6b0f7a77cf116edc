//! Task supervision: every long-running task is started here with the one stop signal, and
//! [`Running::shutdown`] ends them in order within [`SHUTDOWN_DEADLINE`].

use crate::cli::{self, Args};
use anyhow::{Context as _, Result};
use kube::Client;
use monasca_operator::certs;
use monasca_operator::inject::{NativeSupport, Settings};
use monasca_operator::leader::{self, Leadership};
use monasca_operator::tls::CertResolver;
use monasca_operator::{Context, Error, admin, controller, watch, webhook};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch as signal_watch;
use tokio::task::JoinHandle;

/// How long the tasks get to finish after the stop signal (well within Kubernetes' default
/// 30 s grace period).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The running operator: the shared context and the tasks that must end on shutdown.
pub struct Running {
    ctx: Arc<Context>,
    stop: signal_watch::Sender<bool>,
    /// Awaited in this order on shutdown, each named for the error message.
    tasks: Vec<(&'static str, JoinHandle<Result<()>>)>,
}

impl Running {
    /// Starts leadership, the reflector stores, certificate management, the controller and
    /// both listeners. Background loops that only read (feature detection, watches) end with
    /// the process.
    pub async fn start(
        args: &Args,
        client: Client,
        namespace: String,
        native_sidecars: NativeSupport,
        pod_monitors: bool,
    ) -> Result<Running> {
        let (stop, stop_rx) = signal_watch::channel(false);
        let stopped = || stopped(stop_rx.clone());
        let mut background = Vec::new();

        // Leadership first: the stores and the controller read it.
        let identity = cli::identity();
        let leadership = if args.leader_election {
            let timing = leader::LeaseTiming::new(args.lease_duration)?;
            let elector = leader::Elector::new(client.clone(), &namespace, &identity, timing);
            let (state_tx, state_rx) = signal_watch::channel(None);
            tracing::info!(%identity, lease = leader::LEASE_NAME, ?timing, "competing for the Lease");
            background.push(supervised(
                "lease task",
                leader::run_lease(elector, state_tx, stop_rx.clone()),
            ));
            Leadership::from_receiver(state_rx)
        } else {
            tracing::warn!("leader election off: this replica always writes");
            Leadership::standalone()
        };

        let settings = Settings {
            operator_namespace: namespace.clone(),
            sidecar_image: args.sidecar_image.clone(),
            native_sidecars,
            sidecar_checks: Default::default(),
        };
        let ctx = watch::start(client.clone(), settings, leadership.clone());

        let certs = Arc::new(cert_resolver(args, &ctx)?);
        ctx.set_certs(certs.clone());
        let self_managed = args.self_managed_certs();
        // Deleting or editing the Secret or the webhook configuration wakes the leader at once.
        let recheck = Arc::new(tokio::sync::Notify::new());
        if self_managed {
            // Each replica reports the certificate it serves, so that a CA overlap ends only
            // when every replica switched (see certs::replicas).
            let report = certs::replicas::run(
                client.clone(),
                namespace.clone(),
                identity,
                certs.clone(),
                stop_rx.clone(),
            );
            background.push(supervised("certificate report task", report));
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
        let manager = certs::Manager {
            client: client.clone(),
            webhook: args.webhook_client(&namespace),
            namespace,
            self_managed,
            metrics: ctx.metrics.clone(),
            missing: Default::default(),
        };
        tokio::spawn(certs::run(manager, leadership, recheck));

        if let Some(queue) = ctx.admission_events.channel() {
            tokio::spawn(webhook::events::run(client.clone(), ctx.clone(), queue));
        }
        let controller_ctx = Arc::new(controller::Context::new(client, ctx.clone(), pod_monitors));
        let controller = supervised(
            "controller task",
            controller::run(controller_ctx, stopped()),
        );

        let webhook_listener = bind(args.webhook_listen).await?;
        let admin_listener = bind(args.admin_listen).await?;
        tracing::info!(webhook = %args.webhook_listen, admin = %args.admin_listen, "listening");
        let webhook = webhook::serve(webhook_listener, certs, ctx.clone(), stopped());
        let admin = admin::serve(admin_listener, ctx.clone(), stopped());
        // Shutdown order: the listeners first (they drain in-flight admissions), then the
        // controller, then the Lease (released last, so no other replica writes while this one
        // might still), then the certificate report.
        let mut tasks = vec![
            (
                "webhook task",
                tokio::spawn(async move { Ok(webhook.await?) }),
            ),
            supervised("admin task", admin),
            controller,
        ];
        tasks.extend(background);
        Ok(Running { ctx, stop, tasks })
    }

    /// Keeps serving for `delay` while reporting not ready (the endpoint removal propagates:
    /// kube-proxy, the apiserver's endpoint cache), then stops every task and waits for them
    /// up to [`SHUTDOWN_DEADLINE`]; past it the process exits without them, so a rollout of
    /// the operator never waits for the kill.
    pub async fn shutdown(self, delay: Duration) -> Result<()> {
        self.ctx.start_draining();
        tracing::info!(
            seconds = delay.as_secs(),
            "SIGTERM: still serving during the shutdown delay"
        );
        tokio::time::sleep(delay).await;
        tracing::info!("shutting down: draining in-flight admissions");
        let _ = self.stop.send(true);
        let finish = async {
            for (name, task) in self.tasks {
                task.await.context(name)?.context(name)?;
            }
            Ok(())
        };
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
}

/// The serving certificate source: cert-manager files, the mounted Secret, or nothing yet
/// (the Secret watch fills it).
fn cert_resolver(args: &Args, ctx: &Context) -> Result<CertResolver> {
    let metrics = Some(ctx.metrics.clone());
    Ok(match (&args.tls_cert, &args.tls_key, &args.tls_dir) {
        (Some(cert), Some(key), _) => CertResolver::from_files(cert.clone(), key.clone(), metrics)
            .context("loading the webhook serving certificate")?,
        (_, _, Some(dir)) => CertResolver::from_mounted_secret(
            dir.join(certs::KEY_TLS_CERT),
            dir.join(certs::KEY_TLS_KEY),
            metrics,
        ),
        _ => CertResolver::empty(metrics),
    })
}

/// Resolves once the stop signal is sent.
async fn stopped(mut rx: signal_watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A task that ends without a result, spawned to be awaited on shutdown under `name`.
fn supervised(
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
) -> (&'static str, JoinHandle<Result<()>>) {
    (
        name,
        tokio::spawn(async move {
            task.await;
            Ok(())
        }),
    )
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
        .map_err(Into::into)
}
