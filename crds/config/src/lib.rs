//! The sidecar configuration: one schema for the `monasca-sidecar --config` YAML file and for
//! `MetricsSidecar.spec.config`. Every field has a default, so an empty document is a valid
//! configuration. This crate deliberately depends on neither `kube` nor `k8s-openapi`, so the
//! sidecar binary stays small.

mod duration;

pub use duration::{DURATION_MAX_LENGTH, DURATION_PATTERN, Duration, DurationError};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Labels that identify a worker rather than a series, removed before aggregation.
pub const DEFAULT_WORKER_LABELS: [&str; 4] = ["instance", "pid", "worker", "_id"];

/// Errors found while loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot parse configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl ConfigError {
    /// A field with an unusable value (also for checks made outside this crate).
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The whole sidecar configuration (camelCase in YAML/JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SidecarConfig {
    /// Listener addresses.
    pub listen: Listen,
    /// Labels that name a worker, removed from series identity before aggregation.
    pub worker_labels: Vec<String>,
    /// A worker not seen for this long stops contributing live gauge values.
    pub stale_after: Duration,
    /// A stale worker is forgotten after this long: its counters are folded into the retired
    /// totals (so they never go backwards) and its memory is released.
    pub forget_after: Duration,
    /// Directory of prometheus_client multiprocess `*.db` files; off when absent (unless the
    /// `PROMETHEUS_MULTIPROC_DIR` environment variable is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiprocess_dir: Option<String>,
    /// Delete dead workers' `*.db` files after folding their values into the sidecar's own
    /// persisted totals, keeping the directory bounded.
    pub multiprocess_compact: bool,
    /// How the multiprocess reader tells live workers from dead ones: `auto` (`/proc` once a
    /// process using the directory is seen there, file changes until then), `proc` (the pod
    /// shares its process namespace, set by the operator), `mtime` (file changes only: never
    /// deletes files).
    pub multiprocess_liveness: MultiprocessLiveness,
    /// Directory where the sidecar persists its state (every worker's last values, retired
    /// totals, StatsD accumulators, OTLP delta totals) so a restarted sidecar continues its
    /// counters; off when absent. `/metrics` shows only values already persisted there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// How often the state is written when something changed (also on shutdown and before
    /// each `/metrics` response that shows unwritten values).
    pub state_interval: Duration,
    /// Pull `/metrics` from worker ports or unix sockets.
    pub scrape: Scrape,
    /// The Pushgateway-compatible and JSON ingest APIs on the ingest listener.
    pub push: Push,
    /// StatsD ingest.
    pub statsd: Statsd,
    /// OTLP metrics ingest (OpenTelemetry SDKs) on `listen.otlp`.
    pub otlp: Otlp,
    /// How series of different workers are combined.
    pub aggregation: Aggregation,
    /// Per-request and per-worker limits that protect the other workers' data.
    pub limits: Limits,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            listen: Listen::default(),
            worker_labels: DEFAULT_WORKER_LABELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            stale_after: Duration::from_secs(60),
            forget_after: Duration::from_secs(3600),
            multiprocess_dir: None,
            multiprocess_compact: true,
            multiprocess_liveness: MultiprocessLiveness::Auto,
            state_dir: None,
            state_interval: Duration::from_secs(5),
            scrape: Scrape::default(),
            push: Push::default(),
            statsd: Statsd::default(),
            otlp: Otlp::default(),
            aggregation: Aggregation::default(),
            limits: Limits::default(),
        }
    }
}

/// Listener addresses (`host:port`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Listen {
    /// `/metrics`, `/healthz`, `/readyz`, `/v1/workers`.
    pub metrics: String,
    /// Pushgateway API and `POST /v1/ingest`.
    pub ingest: String,
    /// StatsD, UDP and TCP.
    pub statsd: String,
    /// OTLP/HTTP (`POST /v1/metrics`).
    pub otlp: String,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            metrics: "0.0.0.0:9102".into(),
            ingest: "127.0.0.1:9091".into(),
            statsd: "127.0.0.1:8125".into(),
            otlp: "127.0.0.1:4318".into(),
        }
    }
}

/// Scrape mode: each target is one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Scrape {
    /// `host:port`, `host:8001-8008` ranges, or `unix:/path/*.sock` globs. Empty: scrape off.
    pub targets: Vec<String>,
    /// HTTP path scraped on every target.
    pub path: String,
    /// Time between scrapes.
    pub interval: Duration,
    /// Per-target scrape timeout.
    pub timeout: Duration,
    /// Every target is one process exposing its own registry (an app worker on its own port),
    /// not an exporter of outside counters: a counter-like value going down, or a
    /// `process_start_time_seconds` more than 2 s later, shows that the process restarted, so
    /// all the counters the target held are retired, also those the new process has already
    /// counted back up to their old value (counting per series would lose those). Off by
    /// default: an exporter's counters may reset one at a time, and a target answered by
    /// several processes in turn (a pre-fork server's workers taking its `/metrics` requests
    /// by turns) changes start times from scrape to scrape.
    pub one_process_per_target: bool,
}

impl Default for Scrape {
    fn default() -> Self {
        Scrape {
            targets: Vec::new(),
            path: "/metrics".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            one_process_per_target: false,
        }
    }
}

/// Push ingest (Pushgateway API and the JSON API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Push {
    /// Serve the Pushgateway API (`/metrics/job/...`).
    pub enabled: bool,
    /// Serve the original monasca-sidecar JSON API (`POST /v1/ingest`, `POST /v1/clear`).
    pub json: bool,
}

impl Default for Push {
    fn default() -> Self {
        Push {
            enabled: true,
            json: true,
        }
    }
}

/// StatsD ingest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Statsd {
    /// Listen for StatsD on UDP (and TCP when `tcp` is true).
    pub enabled: bool,
    /// Also accept newline-separated StatsD over TCP on the same address.
    pub tcp: bool,
    /// Histogram bucket bounds (seconds) for timers and histograms.
    pub buckets: Vec<f64>,
    /// Mapping rules, first match wins.
    pub mappings: Vec<StatsdMapping>,
    /// How a signed gauge value (`-5|g`) is read: `auto` (default) treats lines with
    /// monasca-statsd's dict tags (`|#{'k': 'v'}`) as monasca-statsd, which sends absolute
    /// values, and every other line the etsy way (a signed value adjusts the gauge);
    /// `monasca` reads every line as monasca-statsd (for clients without dimensions, whose
    /// lines carry no tags at all).
    pub dialect: StatsdDialect,
    /// Drop StatsD series not updated for this long from the accumulated state and the
    /// output (counters and histograms are retired first, so they never go backwards; a series
    /// that comes back starts from zero on top of its retired total). Off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<Duration>,
}

impl Default for Statsd {
    fn default() -> Self {
        Statsd {
            enabled: true,
            tcp: true,
            buckets: vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
            mappings: Vec::new(),
            dialect: StatsdDialect::Auto,
            expire_after: None,
        }
    }
}

/// Which StatsD dialect decides how signed gauge values are read (see [`Statsd::dialect`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatsdDialect {
    /// monasca-statsd for lines with dict tags, etsy StatsD for the others.
    #[default]
    Auto,
    /// Every line is monasca-statsd: gauge values are absolute.
    Monasca,
}

/// Resource attributes that name an OpenTelemetry worker (process) by default.
pub const DEFAULT_OTLP_WORKER_ATTRIBUTES: [&str; 3] =
    ["service.instance.id", "process.pid", "worker.id"];

/// OTLP metrics ingest: OpenTelemetry SDK workers become one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Otlp {
    /// Serve OTLP/HTTP `POST /v1/metrics` on `listen.otlp`.
    pub enabled: bool,
    /// Resource attributes that identify a worker: part of its identity, never labels (like
    /// `workerLabels`). Without any of them, a cumulative stream's start time tells workers
    /// with identical resources apart.
    pub worker_attributes: Vec<String>,
    /// Publish the other resource attributes as `target_info` (otherwise they are dropped).
    pub target_info: bool,
    /// Add `otel_scope_name`/`otel_scope_version` labels from the instrumentation scope.
    pub scope_labels: bool,
    /// Most attributes one data point may carry; points with more are rejected.
    pub max_attributes: u32,
}

impl Default for Otlp {
    fn default() -> Self {
        Otlp {
            enabled: true,
            worker_attributes: DEFAULT_OTLP_WORKER_ATTRIBUTES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            target_info: true,
            scope_labels: true,
            max_attributes: 128,
        }
    }
}

/// One StatsD mapping rule (like statsd_exporter's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatsdMapping {
    /// The StatsD name to match: a glob (`*` matches one dot-separated component) unless
    /// `matchType` is `regex`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// `glob` (default) or `regex`.
    #[serde(default)]
    pub match_type: MatchType,
    /// The Prometheus name; `$1`/`${1}` refer to captures. Required unless `action` is `drop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extra labels; values may refer to captures.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Override the metric type: `counter`, `gauge` or `histogram`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<StatsdMetricType>,
    /// `map` (default) or `drop`.
    #[serde(default)]
    pub action: MappingAction,
}

/// How a StatsD mapping's `match` is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    #[default]
    Glob,
    Regex,
}

/// What a StatsD mapping does with a matching line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MappingAction {
    #[default]
    Map,
    Drop,
}

/// A metric type a StatsD mapping can force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatsdMetricType {
    Counter,
    Gauge,
    Histogram,
}

/// How gauges of several workers combine into one value. The `live*` variants forget workers
/// that are dead or stale; the others keep their last value.
/// See [`SidecarConfig::multiprocess_liveness`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MultiprocessLiveness {
    #[default]
    Auto,
    Proc,
    Mtime,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GaugeMode {
    #[default]
    Sum,
    Min,
    Max,
    Mean,
    Mostrecent,
    All,
    Livesum,
    Livemin,
    Livemax,
    Livemean,
    Livemostrecent,
    Liveall,
}

impl GaugeMode {
    /// All modes, for error messages and tests.
    pub const ALL: [GaugeMode; 12] = [
        GaugeMode::Sum,
        GaugeMode::Min,
        GaugeMode::Max,
        GaugeMode::Mean,
        GaugeMode::Mostrecent,
        GaugeMode::All,
        GaugeMode::Livesum,
        GaugeMode::Livemin,
        GaugeMode::Livemax,
        GaugeMode::Livemean,
        GaugeMode::Livemostrecent,
        GaugeMode::Liveall,
    ];

    /// The name used in config, `_aggregate` labels and multiprocess file names.
    pub fn as_str(self) -> &'static str {
        match self {
            GaugeMode::Sum => "sum",
            GaugeMode::Min => "min",
            GaugeMode::Max => "max",
            GaugeMode::Mean => "mean",
            GaugeMode::Mostrecent => "mostrecent",
            GaugeMode::All => "all",
            GaugeMode::Livesum => "livesum",
            GaugeMode::Livemin => "livemin",
            GaugeMode::Livemax => "livemax",
            GaugeMode::Livemean => "livemean",
            GaugeMode::Livemostrecent => "livemostrecent",
            GaugeMode::Liveall => "liveall",
        }
    }

    /// Parses a mode name (case-insensitive).
    pub fn parse(s: &str) -> Option<GaugeMode> {
        GaugeMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    /// True for the variants that forget dead or stale workers.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            GaugeMode::Livesum
                | GaugeMode::Livemin
                | GaugeMode::Livemax
                | GaugeMode::Livemean
                | GaugeMode::Livemostrecent
                | GaugeMode::Liveall
        )
    }

    /// The combining function without the live/non-live distinction.
    pub fn base(self) -> GaugeMode {
        match self {
            GaugeMode::Livesum => GaugeMode::Sum,
            GaugeMode::Livemin => GaugeMode::Min,
            GaugeMode::Livemax => GaugeMode::Max,
            GaugeMode::Livemean => GaugeMode::Mean,
            GaugeMode::Livemostrecent => GaugeMode::Mostrecent,
            GaugeMode::Liveall => GaugeMode::All,
            other => other,
        }
    }
}

/// Aggregation settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Aggregation {
    /// Gauge mode when neither the multiprocess file name, an `_aggregate` label nor a rule
    /// decides.
    pub default_gauge_mode: GaugeMode,
    /// Rules by family name; the first matching rule wins.
    pub rules: Vec<AggregationRule>,
}

/// A gauge mode for the families whose name matches a regular expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AggregationRule {
    /// Regular expression matched against the family name (unanchored unless it uses `^`/`$`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The gauge mode for matching families.
    pub mode: GaugeMode,
}

/// Limits that keep one misbehaving worker from hurting the others.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body, after decompression (413 beyond).
    pub max_body_bytes: u64,
    /// Most series one worker may hold (400 beyond).
    pub max_series_per_worker: u64,
    /// Most worker files of the multiprocess directory that are read (its `*_retired.db`
    /// files not counted). Checked while listing, before a file is opened: files beyond it
    /// are left unread and counted (`monasca_sidecar_multiprocess_skipped_files`), so the
    /// memory the directory costs stays bounded when it cannot be compacted (no shared process
    /// namespace) and dead workers' files pile up.
    pub max_multiprocess_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 * 1024 * 1024,
            max_series_per_worker: 50_000,
            max_multiprocess_files: DEFAULT_MAX_MULTIPROCESS_FILES,
        }
    }
}

/// The default of [`Limits::max_multiprocess_files`]: gunicorn-style apps write 1-4 files per
/// worker, so this is hundreds of worker lifetimes; with ~50 series per file it stays well
/// inside the operator's default 128Mi sidecar memory limit.
pub const DEFAULT_MAX_MULTIPROCESS_FILES: u64 = 4096;

impl SidecarConfig {
    /// Parses a YAML (or JSON) document and validates it.
    pub fn from_yaml(text: &str) -> Result<SidecarConfig, ConfigError> {
        let config: SidecarConfig = if text.trim().is_empty() {
            SidecarConfig::default()
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| ConfigError::Parse(one_line(&e.to_string())))?
        };
        config.validate()?;
        Ok(config)
    }

    /// Renders the configuration as YAML (what the operator writes into the ConfigMap).
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_saphyr::to_string(self).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Checks what the type system cannot: addresses, regexes, durations, target syntax.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, addr) in [
            ("listen.metrics", &self.listen.metrics),
            ("listen.ingest", &self.listen.ingest),
            ("listen.statsd", &self.listen.statsd),
            ("listen.otlp", &self.listen.otlp),
        ] {
            addr.parse::<SocketAddr>()
                .map_err(|e| ConfigError::invalid(field, format!("{addr:?}: {e}")))?;
        }
        self.check_listeners_apart()?;
        for (field, d) in [
            ("staleAfter", self.stale_after),
            ("forgetAfter", self.forget_after),
            ("stateInterval", self.state_interval),
            ("scrape.interval", self.scrape.interval),
            ("scrape.timeout", self.scrape.timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(field, "must be greater than zero"));
            }
        }
        if let Some(dir) = &self.state_dir
            && !dir.starts_with('/')
        {
            return Err(ConfigError::invalid(
                "stateDir",
                format!("{dir:?} must be an absolute path"),
            ));
        }
        for (i, label) in self.worker_labels.iter().enumerate() {
            if !is_label_name(label) {
                return Err(ConfigError::invalid(
                    format!("workerLabels[{i}]"),
                    format!("{label:?} is not a valid label name"),
                ));
            }
        }
        for (i, rule) in self.aggregation.rules.iter().enumerate() {
            regex::Regex::new(&rule.pattern).map_err(|e| {
                ConfigError::invalid(
                    format!("aggregation.rules[{i}].match"),
                    one_line(&e.to_string()),
                )
            })?;
        }
        for (i, target) in self.scrape.targets.iter().enumerate() {
            ScrapeTarget::parse(target)
                .map_err(|reason| ConfigError::invalid(format!("scrape.targets[{i}]"), reason))?;
        }
        if !self.scrape.path.starts_with('/') {
            return Err(ConfigError::invalid("scrape.path", "must start with '/'"));
        }
        let mut previous = f64::NEG_INFINITY;
        for b in &self.statsd.buckets {
            if !b.is_finite() || *b <= previous {
                return Err(ConfigError::invalid(
                    "statsd.buckets",
                    "must be finite and strictly increasing",
                ));
            }
            previous = *b;
        }
        if self.statsd.expire_after.is_some_and(Duration::is_zero) {
            return Err(ConfigError::invalid(
                "statsd.expireAfter",
                "must be longer than zero (leave it out to never expire)",
            ));
        }
        for (i, m) in self.statsd.mappings.iter().enumerate() {
            if m.action == MappingAction::Map && m.name.is_none() {
                return Err(ConfigError::invalid(
                    format!("statsd.mappings[{i}].name"),
                    "required unless action is drop",
                ));
            }
            if m.match_type == MatchType::Regex {
                regex::Regex::new(&m.pattern).map_err(|e| {
                    ConfigError::invalid(
                        format!("statsd.mappings[{i}].match"),
                        one_line(&e.to_string()),
                    )
                })?;
            }
        }
        if self.otlp.max_attributes == 0 {
            return Err(ConfigError::invalid(
                "otlp.maxAttributes",
                "must be greater than zero",
            ));
        }
        if self.limits.max_body_bytes == 0
            || self.limits.max_series_per_worker == 0
            || self.limits.max_multiprocess_files == 0
        {
            return Err(ConfigError::invalid(
                "limits",
                "limits must be greater than zero",
            ));
        }
        Ok(())
    }
}

impl SidecarConfig {
    /// The TCP listeners the sidecar binds, by field name (ingest always; OTLP and StatsD-over-TCP
    /// only when enabled). Addresses that do not parse are left out (reported elsewhere).
    fn tcp_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let listen = &self.listen;
        let mut out = vec![
            ("listen.metrics", listen.metrics.as_str()),
            ("listen.ingest", listen.ingest.as_str()),
        ];
        if self.otlp.enabled {
            out.push(("listen.otlp", listen.otlp.as_str()));
        }
        if self.statsd.enabled && self.statsd.tcp {
            out.push(("listen.statsd", listen.statsd.as_str()));
        }
        out.into_iter()
            .filter_map(|(field, addr)| addr.parse().ok().map(|a| (field, a)))
            .collect()
    }

    /// Two TCP listeners on one port whose addresses overlap (equal, or one is a wildcard that
    /// covers the other) cannot both bind: the sidecar would exit at start. Port 0 (any free
    /// port) never collides.
    fn check_listeners_apart(&self) -> Result<(), ConfigError> {
        let listeners = self.tcp_listeners();
        for (i, (field, a)) in listeners.iter().enumerate() {
            for (other, b) in &listeners[i + 1..] {
                if a.port() != 0 && a.port() == b.port() && overlap(a.ip(), b.ip()) {
                    return Err(ConfigError::invalid(
                        *other,
                        format!(
                            "{b} uses port {} like {field} ({a}): both cannot bind",
                            b.port()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether binding `a` and `b` on one port collide: the same address, or a wildcard covering the
/// other (`0.0.0.0` covers IPv4; `[::]` is dual-stack on Linux and covers both).
fn overlap(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    let covers = |wild: std::net::IpAddr, other: std::net::IpAddr| {
        wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4())
    };
    a == b || covers(a, b) || covers(b, a)
}

/// A parsed scrape target specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScrapeTarget {
    /// `host:first-last`, inclusive (a single port has `first == last`).
    Tcp { host: String, first: u16, last: u16 },
    /// `unix:/path` where the path may contain `*` glob characters.
    Unix { pattern: String },
}

impl ScrapeTarget {
    /// Parses `host:port`, `host:8001-8008`, `[::1]:9000` or `unix:/run/app/*.sock`.
    pub fn parse(spec: &str) -> Result<ScrapeTarget, String> {
        if let Some(path) = spec.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("{spec:?}: unix socket path must be absolute"));
            }
            return Ok(ScrapeTarget::Unix {
                pattern: path.to_string(),
            });
        }
        let (host, ports) = spec
            .rsplit_once(':')
            .ok_or_else(|| format!("{spec:?}: expected host:port or unix:/path"))?;
        if host.is_empty() {
            return Err(format!("{spec:?}: missing host"));
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{spec:?}: {p:?} is not a port"))
        };
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(ports)?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!("{spec:?}: port range is reversed"));
        }
        if usize::from(last - first) >= 1024 {
            return Err(format!("{spec:?}: port range wider than 1024"));
        }
        Ok(ScrapeTarget::Tcp {
            host: host.to_string(),
            first,
            last,
        })
    }
}

/// True for a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// True for a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
