//! Loading the config file and reloading it when it changes.
//!
//! The file is polled (content compared, not only mtime) because Kubernetes updates mounted
//! ConfigMaps by swapping a symlink, which inotify on the file itself does not see. A bad file
//! is reported (log line and `monasca_sidecar_config_reload_errors_total`) and the last good
//! configuration stays in force.

use crate::app::App;
use crate::component::SelfMetrics;
use crate::lifecycle::Handle;
use crate::self_metrics::{Counter, Gauge, Registry};
use crate::sources::SourceContext;
use monasca_config::{ConfigError, MultiprocessLiveness, SidecarConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the sidecar cannot start with its config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Invalid { path: String, source: ConfigError },
    #[error("environment variable {name}: {reason}")]
    Env { name: &'static str, reason: String },
}

/// Reads and validates the config file, then applies the environment:
///
/// - `DECAY_SECONDS` (the original monasca-sidecar's setting) becomes `staleAfter` unless the
///   file sets `staleAfter` itself;
/// - `MONASCA_SIDECAR_SCRAPE_TARGETS` (comma-separated) adds scrape targets and
///   `MONASCA_SIDECAR_SCRAPE_PATH` sets their path: the operator sets them per pod from the
///   pod's own `prometheus.io/*` annotations, since the ConfigMap is shared by all pods;
/// - `MONASCA_SIDECAR_MULTIPROCESS_LIVENESS` (`proc` or `mtime`) sets `multiprocessLiveness`
///   when the file leaves it at `auto`: the operator sets it per pod from whether the pod
///   shares its process namespace (the sidecar can see the workers in `/proc`) or not.
///
/// Defaults are used when `path` is `None`, and also when the file does not exist yet: the
/// operator mounts its ConfigMap as optional, and the watcher picks the file up when it
/// appears.
pub fn load_config(path: Option<&Path>) -> Result<SidecarConfig, ConfigFileError> {
    let text = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %p.display(), "config file not found; running on defaults until it appears");
                String::new()
            }
            Err(source) => {
                return Err(ConfigFileError::Read {
                    path: p.display().to_string(),
                    source,
                });
            }
        },
        None => String::new(),
    };
    parse_with_env(&text, |name| std::env::var(name).ok()).map_err(|e| match e {
        EnvOrConfig::Config(source) => ConfigFileError::Invalid {
            path: path.map_or("<defaults>".into(), |p| p.display().to_string()),
            source,
        },
        EnvOrConfig::Env(name, reason) => ConfigFileError::Env { name, reason },
    })
}

enum EnvOrConfig {
    Config(ConfigError),
    Env(&'static str, String),
}

fn parse_with_env(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<SidecarConfig, EnvOrConfig> {
    let mut config = SidecarConfig::from_yaml(text).map_err(EnvOrConfig::Config)?;
    if let Some(decay) = env("DECAY_SECONDS")
        && !text.contains("staleAfter")
    {
        // Python float() syntax, as the original read it: "60", "90.5", "1e2".
        config.stale_after = crate::sources::json::parse_decay_seconds(&decay)
            .map_err(|reason| EnvOrConfig::Env("DECAY_SECONDS", reason))?;
        if config.forget_after < config.stale_after {
            config.forget_after = config.stale_after;
        }
    }
    if let Some(targets) = env("MONASCA_SIDECAR_SCRAPE_TARGETS") {
        for target in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            monasca_config::ScrapeTarget::parse(target)
                .map_err(|reason| EnvOrConfig::Env("MONASCA_SIDECAR_SCRAPE_TARGETS", reason))?;
            if !config.scrape.targets.iter().any(|t| t == target) {
                config.scrape.targets.push(target.to_string());
            }
        }
    }
    if let Some(path) = env("MONASCA_SIDECAR_SCRAPE_PATH") {
        if !path.starts_with('/') {
            return Err(EnvOrConfig::Env(
                "MONASCA_SIDECAR_SCRAPE_PATH",
                format!("{path:?} must start with '/'"),
            ));
        }
        config.scrape.path = path;
    }
    if let Some(liveness) = env("MONASCA_SIDECAR_MULTIPROCESS_LIVENESS")
        && config.multiprocess_liveness == MultiprocessLiveness::Auto
    {
        config.multiprocess_liveness = match liveness.trim() {
            "proc" => MultiprocessLiveness::Proc,
            "mtime" => MultiprocessLiveness::Mtime,
            "auto" | "" => MultiprocessLiveness::Auto,
            other => {
                return Err(EnvOrConfig::Env(
                    "MONASCA_SIDECAR_MULTIPROCESS_LIVENESS",
                    format!("{other:?} is not proc, mtime or auto"),
                ));
            }
        };
    }
    check_components(&config).map_err(EnvOrConfig::Config)?;
    Ok(config)
}

/// What the components compile from the config, compiled once here so that a file is
/// applied whole or not at all: a StatsD mapping that cannot be used rejects the file (at
/// start-up with the same one-line error as on reload), instead of being skipped after the
/// rest was installed.
fn check_components(config: &SidecarConfig) -> Result<(), ConfigError> {
    crate::sources::statsd::Mapper::new(&config.statsd)
        .map(drop)
        .map_err(|e| ConfigError::invalid("statsd.mappings", e.to_string()))
}

/// Polls the config file and installs valid changes.
pub struct ConfigWatcher {
    path: PathBuf,
    last_text: Option<String>,
    current: SidecarConfig,
    stats: Arc<ReloadStats>,
}

/// Reload outcomes, as self-metrics.
#[derive(Default)]
pub struct ReloadStats {
    reloads: Counter,
    errors: Counter,
    last_ok: Gauge,
}

impl SelfMetrics for ReloadStats {
    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.register(
            "config_reloads",
            "Configuration changes applied",
            self.reloads.clone(),
        );
        registry.register(
            "config_reload_errors",
            "Configuration changes refused (the last good configuration stays in force)",
            self.errors.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 if the config file in place is the one in force",
            self.last_ok.clone(),
        );
    }
}

impl ConfigWatcher {
    pub fn new(path: PathBuf, current: SidecarConfig) -> Self {
        let last_text = std::fs::read_to_string(&path).ok();
        let stats = Arc::new(ReloadStats::default());
        stats.last_ok.set(1);
        ConfigWatcher {
            path,
            last_text,
            current,
            stats,
        }
    }

    /// Checks the file every second as a component of `ctx`, until its handle is stopped.
    pub fn spawn(self, ctx: &SourceContext) -> Handle {
        let mut handle = Handle::new("config watcher", ctx.child_token());
        handle.spawn(self.run(ctx.app().clone()));
        handle
    }

    /// Checks the file every second until the task is dropped.
    pub async fn run(mut self, app: Arc<App>) {
        app.register(self.stats.clone());
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            self.check(&app);
        }
    }

    /// One check: reload if the content changed.
    pub fn check(&mut self, app: &App) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                if self.last_text.is_some() {
                    tracing::warn!(path = %self.path.display(), error = %e, "config file unreadable; keeping the last good configuration");
                    self.last_text = None;
                }
                return;
            }
        };
        if self.last_text.as_deref() == Some(text.as_str()) {
            return;
        }
        self.last_text = Some(text.clone());
        match parse_with_env(&text, |name| std::env::var(name).ok()) {
            Ok(config) => {
                if config.listen != self.current.listen {
                    tracing::warn!("listen addresses changed: they take effect on restart");
                }
                tracing::info!(path = %self.path.display(), "configuration reloaded");
                self.current = config.clone();
                app.set_config(config);
                self.stats.reloads.inc();
                self.stats.last_ok.set(1);
            }
            Err(EnvOrConfig::Config(e)) => {
                tracing::error!(path = %self.path.display(), error = %e, "config file rejected; keeping the last good configuration");
                self.stats.errors.inc();
                self.stats.last_ok.set(0);
            }
            Err(EnvOrConfig::Env(name, reason)) => {
                tracing::error!(variable = name, %reason, "environment rejected; keeping the last good configuration");
                self.stats.errors.inc();
                self.stats.last_ok.set(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monasca_config::Duration;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn decay_seconds_sets_stale_after_unless_the_file_does() {
        let c = parse_with_env("", env(&[("DECAY_SECONDS", "30")]))
            .ok()
            .unwrap();
        assert_eq!(c.stale_after, Duration::from_secs(30));
        let c = parse_with_env("staleAfter: 5s", env(&[("DECAY_SECONDS", "30")]))
            .ok()
            .unwrap();
        assert_eq!(c.stale_after, Duration::from_secs(5));
        let c = parse_with_env("", env(&[])).ok().unwrap();
        assert_eq!(c.stale_after, Duration::from_secs(60));
        assert!(parse_with_env("", env(&[("DECAY_SECONDS", "soon")])).is_err());
        assert!(parse_with_env("", env(&[("DECAY_SECONDS", "0")])).is_err());
        let c = parse_with_env("", env(&[("DECAY_SECONDS", "1.5")]))
            .ok()
            .unwrap();
        assert_eq!(c.stale_after, Duration::from_millis(1500));
    }

    #[test]
    fn scrape_targets_from_the_environment_are_added() {
        let e = env(&[
            (
                "MONASCA_SIDECAR_SCRAPE_TARGETS",
                "127.0.0.1:8000, 127.0.0.1:8001-8002,",
            ),
            ("MONASCA_SIDECAR_SCRAPE_PATH", "/stats"),
        ]);
        let c = parse_with_env("scrape: {targets: ['127.0.0.1:8000']}", e)
            .ok()
            .unwrap();
        assert_eq!(c.scrape.targets, ["127.0.0.1:8000", "127.0.0.1:8001-8002"]);
        assert_eq!(c.scrape.path, "/stats");
        let bad = env(&[("MONASCA_SIDECAR_SCRAPE_TARGETS", "nohost")]);
        assert!(parse_with_env("", bad).is_err());
        let bad = env(&[("MONASCA_SIDECAR_SCRAPE_PATH", "stats")]);
        assert!(parse_with_env("", bad).is_err());
    }

    #[test]
    fn the_pods_liveness_from_the_environment_applies_when_the_file_says_auto() {
        let e = || env(&[("MONASCA_SIDECAR_MULTIPROCESS_LIVENESS", "proc")]);
        let c = parse_with_env("", e()).ok().unwrap();
        assert_eq!(c.multiprocess_liveness, MultiprocessLiveness::Proc);
        let c = parse_with_env("multiprocessLiveness: mtime", e())
            .ok()
            .unwrap();
        assert_eq!(
            c.multiprocess_liveness,
            MultiprocessLiveness::Mtime,
            "the file's explicit choice wins"
        );
        let c = parse_with_env(
            "",
            env(&[("MONASCA_SIDECAR_MULTIPROCESS_LIVENESS", "mtime")]),
        )
        .ok()
        .unwrap();
        assert_eq!(c.multiprocess_liveness, MultiprocessLiveness::Mtime);
        let bad = env(&[("MONASCA_SIDECAR_MULTIPROCESS_LIVENESS", "sometimes")]);
        assert!(parse_with_env("", bad).is_err());
    }

    #[test]
    fn missing_config_file_means_defaults_then_it_is_picked_up() {
        let dir = std::env::temp_dir().join(format!("msc-missing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        let _ = std::fs::remove_file(&path);
        let first = load_config(Some(&path)).unwrap();
        assert_eq!(first, SidecarConfig::default());
        let app = App::new(first.clone());
        let mut w = ConfigWatcher::new(path.clone(), first);
        std::fs::write(&path, "staleAfter: 7s\n").unwrap();
        w.check(&app);
        assert_eq!(app.config().stale_after, Duration::from_secs(7));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A config file with `staleAfter: 10s` in a scratch directory named by `tag`, the app
    /// started from it, and its watcher.
    fn watched(tag: &str) -> (PathBuf, PathBuf, Arc<App>, ConfigWatcher) {
        let dir = std::env::temp_dir().join(format!("msc-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, "staleAfter: 10s\n").unwrap();
        let first = load_config(Some(&path)).unwrap();
        let app = App::new(first.clone());
        let w = ConfigWatcher::new(path.clone(), first);
        (dir, path, app, w)
    }

    #[test]
    fn reload_keeps_last_good_config() {
        let (dir, path, app, mut w) = watched("reload");
        std::fs::write(&path, "staleAfter: 20s\n").unwrap();
        w.check(&app);
        assert_eq!(app.config().stale_after, Duration::from_secs(20));
        std::fs::write(&path, "staleAfter: [broken\n").unwrap();
        w.check(&app);
        assert_eq!(app.config().stale_after, Duration::from_secs(20));
        assert_eq!(w.stats.errors.get(), 1);
        std::fs::write(&path, "staleAfter: 30s\n").unwrap();
        w.check(&app);
        assert_eq!(app.config().stale_after, Duration::from_secs(30));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_with_an_unusable_statsd_mapping_is_applied_not_at_all() {
        let (dir, path, app, mut w) = watched("atomic");
        let bad = "staleAfter: 20s\nstatsd:\n  mappings:\n    - {match: \"a.*\", name: \"a\", labels: {\"bad-name\": \"$1\"}}\n";
        std::fs::write(&path, bad).unwrap();
        w.check(&app);
        assert_eq!(
            app.config().stale_after,
            Duration::from_secs(10),
            "nothing of the file applied"
        );
        assert_eq!(w.stats.errors.get(), 1);
        assert_eq!(w.stats.reloads.get(), 0);
        // The same file at start-up: the same one-line error.
        let err = load_config(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("statsd.mappings"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
