//! A real Prometheus server (Debian package `prometheus`), started on loopback by a test with a
//! generated config, and queried through its HTTP API.

use crate::http::{encode, request};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (host:port of sidecars) every second.
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        let binary = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let dir = crate::scratch_dir("prometheus");
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: sidecar\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let port = crate::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}); install it with `apt-get install prometheus` (.ci/run does)")
            });
        let p = Prometheus { child, addr, dir };
        let ready = wait(Duration::from_secs(60), || {
            request(p.addr, "GET", "/-/ready", &[], b"").is_ok_and(|r| r.status == 200)
        });
        assert!(ready, "prometheus not ready:\n{}", p.log());
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; returns the result vector (`[{metric, value}]`).
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        self.query_at(promql, None)
    }

    /// Runs an instant query evaluated at `time` (Unix seconds), or now.
    pub fn query_at(&self, promql: &str, time: Option<f64>) -> Vec<serde_json::Value> {
        let mut path = format!("/api/v1/query?query={}", encode(promql));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        let r = request(self.addr, "GET", &path, &[], b"").expect("query prometheus");
        let json: serde_json::Value = serde_json::from_slice(&r.body).expect("prometheus JSON");
        assert_eq!(json["status"], "success", "{promql}: {json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of a query that must return one series (None when it returns none).
    pub fn value(&self, promql: &str) -> Option<f64> {
        self.value_at(promql, None)
    }

    /// [`Prometheus::value`] evaluated at `time` (Unix seconds).
    pub fn value_at(&self, promql: &str, time: Option<f64>) -> Option<f64> {
        let result = self.query_at(promql, time);
        assert!(
            result.len() <= 1,
            "{promql} returned {} series: {result:?}",
            result.len()
        );
        result
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until all targets have been scraped successfully at least `scrapes` times.
    pub fn wait_for_scrapes(&self, scrapes: u32) {
        let ok = wait(Duration::from_secs(60), || {
            self.value("min(count_over_time(up[10m]))")
                .is_some_and(|n| n >= f64::from(scrapes))
                && self.value("min(up)") == Some(1.0)
        });
        assert!(ok, "targets not scraped:\n{}", self.log());
    }

    /// Asserts `promql == expected`, waiting up to `timeout` for the scrapes to catch up, and
    /// prints the check with expected and actual values.
    pub fn check(&self, promql: &str, expected: f64, timeout: Duration) {
        let mut actual = None;
        let ok = wait(timeout, || {
            actual = self.value(promql);
            actual.is_some_and(|a| (a - expected).abs() < 1e-9)
        });
        println!(
            "PromQL check: {promql}  expected={expected}  actual={}  {}",
            actual.map_or("none".to_string(), |a| a.to_string()),
            if ok { "OK" } else { "FAIL" }
        );
        assert!(ok, "{promql}: expected {expected}, got {actual:?}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 200 ms until it is true or `timeout` passes.
pub fn wait(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The current Unix time in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
