//! `monasca-sidecar`: the aggregating metrics server. Thin: flags, config, wiring.

use anyhow::Context as _;
use clap::Parser;
use monasca_runtime::logging::LogFormat;
use monasca_sidecar::app::App;
use monasca_sidecar::config_file::{ConfigWatcher, load_config};
use monasca_sidecar::server::{self, Role, ServerStats};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Aggregating metrics sidecar: every worker of a pod as one clean Prometheus target.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// YAML (or JSON) config file, same schema as MetricsSidecar.spec.config. Reloaded on
    /// change. Without it, every setting has its default.
    #[arg(long, env = "MONASCA_SIDECAR_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "MONASCA_SIDECAR_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// How long to keep serving in-flight requests after SIGTERM.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    drain_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    one_malloc_arena();
    let args = Args::parse();
    monasca_runtime::logging::init_tracing(if args.log_format == "json" {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

/// glibc gives each thread that allocates a malloc arena of its own and hands little of their
/// free memory back: over thousands of worker lifetimes (files read, folded, dropped by the
/// reader thread, renders on the runtime's threads) the sidecar's RSS crept up by about 20%
/// while its live data stayed flat; with one arena it stays within 2% (the soak in
/// `tests/multiprocess_pod.rs`). The sidecar's few threads do not contend for it. Called
/// before any thread starts. The release image is built for musl, whose allocator has no
/// per-thread arenas.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref())?;
    let app = App::new(config.clone());
    // Persisted state first: it must be in place before any listener accepts data.
    let persister = config.state_dir.as_ref().map(|dir| {
        let dir = PathBuf::from(dir);
        let outcome = monasca_sidecar::state::load(&app, &dir);
        let persister = monasca_sidecar::state::Persister::new(&app, dir, outcome);
        app.set_persister(persister.clone());
        app.register(persister.clone());
        persister
    });
    let stats = ServerStats::new(&app);
    app.register(stats.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let drain = Duration::from_secs(args.drain_seconds);

    app.register(app.otlp.clone());
    // StatsD first: restored StatsD values reach the store before `/metrics` can be read.
    let statsd = monasca_sidecar::sources::statsd::spawn(app.clone())
        .await
        .context("cannot start the StatsD listener")?;
    let mut tasks = Vec::new();
    let mut listeners = vec![
        (Role::Metrics, &config.listen.metrics),
        (Role::Ingest, &config.listen.ingest),
    ];
    // OTLP/HTTP; the listener follows the config at start (like the others).
    if config.otlp.enabled {
        listeners.push((Role::Otlp, &config.listen.otlp));
    }
    for (role, addr) in listeners {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({} listener)", role.as_str()))?;
        let local = listener.local_addr()?;
        tracing::info!(listener = %role.as_str(), addr = %local, "listening");
        tasks.push(tokio::spawn(server::serve(
            listener,
            app.clone(),
            stats.clone(),
            role,
            shutdown_rx.clone(),
            drain,
        )));
    }

    // Every listener is bound (StatsD above, HTTP here): `/readyz` may say so.
    app.mark_listening();

    // prometheus_client multiprocess files (config `multiprocessDir` or PROMETHEUS_MULTIPROC_DIR)
    // and scrape-mode workers; both idle until configured and follow config reloads.
    let multiprocess = monasca_sidecar::sources::multiprocess::spawn(app.clone());
    let scraper = monasca_sidecar::sources::scrape::spawn(app.clone());

    // Forget workers not seen for `forgetAfter`, retiring their counters.
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let now = app.now();
                let gone = app.store.write().sweep(now);
                for id in gone {
                    tracing::info!(worker = %id, "worker expired; its counters are retired");
                }
            }
        })
    };

    let writer = persister.clone().map(|p| tokio::spawn(p.run(app.clone())));

    let watcher = args.config.clone().map(|path| {
        let app = app.clone();
        tokio::spawn(ConfigWatcher::new(path, config).run(app))
    });

    monasca_runtime::shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    statsd.flush();
    drop(statsd);
    drop(scraper);
    multiprocess.stop();
    sweeper.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(w) = writer {
        w.abort();
    }
    if let Some(p) = persister {
        p.write(&app).await;
        tracing::info!(dir = %p.dir().display(), "state written");
    }
    Ok(())
}
