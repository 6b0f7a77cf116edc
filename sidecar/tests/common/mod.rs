//! Test harness: runs the real `monasca-sidecar` binary on loopback ports chosen by the OS and
//! talks to it over real sockets with a minimal HTTP/1.1 client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running sidecar; killed on drop.
pub struct Sidecar {
    child: Child,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub addrs: HashMap<String, SocketAddr>,
    pub log: Arc<Mutex<String>>,
}

/// A unique scratch directory under the target dir's tmp.
pub fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "monasca-sidecar-test-{}-{}-{}",
        name,
        std::process::id(),
        n
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

impl Sidecar {
    /// Starts the sidecar with `config` (YAML) on ephemeral loopback ports, unless the config
    /// sets `listen` itself.
    pub fn start(config: &str) -> Sidecar {
        Sidecar::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Sidecar {
        let dir = scratch_dir("sidecar");
        let config_path = dir.join("config.yaml");
        let mut text = String::new();
        if !config.contains("listen:") {
            text.push_str(
                "listen: {metrics: \"127.0.0.1:0\", ingest: \"127.0.0.1:0\", statsd: \"127.0.0.1:0\"}\n",
            );
        }
        text.push_str(config);
        std::fs::write(&config_path, text).expect("write config");
        Sidecar::spawn(dir, config_path, env)
    }

    /// Starts another sidecar process over the same directory and config (a restart).
    pub fn restart(mut self) -> Sidecar {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.clone();
        let config_path = self.config_path.clone();
        std::mem::forget(self);
        Sidecar::spawn(dir, config_path, &[])
    }

    fn spawn(dir: PathBuf, config_path: PathBuf, env: &[(&str, &str)]) -> Sidecar {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_monasca-sidecar"));
        cmd.arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env_remove("PROMETHEUS_MULTIPROC_DIR")
            .env_remove("DECAY_SECONDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start monasca-sidecar");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<(String, SocketAddr)>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("listening") {
                        let field = |name: &str| {
                            line.split_whitespace()
                                .find_map(|w| w.strip_prefix(name))
                                .map(|v| v.trim_matches('"').to_string())
                        };
                        if let (Some(l), Some(a)) = (field("listener="), field("addr="))
                            && let Ok(addr) = a.parse()
                        {
                            let _ = tx.send((l, addr));
                        }
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut addrs = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(addrs.contains_key("metrics") && addrs.contains_key("ingest")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((l, a)) => {
                    addrs.insert(l, a);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("sidecar did not start; log:\n{}", log.lock().unwrap());
                }
            }
        }
        // Other listeners (statsd) announce right after; give them a moment.
        while let Ok((l, a)) = rx.recv_timeout(Duration::from_millis(300)) {
            addrs.insert(l, a);
        }
        std::thread::spawn(move || for (_l, _a) in rx {});
        Sidecar {
            child,
            dir,
            config_path,
            addrs,
            log,
        }
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.addrs["metrics"]
    }

    pub fn ingest_addr(&self) -> SocketAddr {
        self.addrs["ingest"]
    }

    pub fn ingest_url(&self) -> String {
        format!("http://{}", self.ingest_addr())
    }

    /// `GET /metrics` (text 0.0.4) as a string; panics on non-200.
    pub fn metrics(&self) -> String {
        let r = http(self.metrics_addr(), "GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }

    /// The value of the sample `name{labels}` as printed (labels exactly as rendered, sorted).
    pub fn value(&self, series: &str) -> Option<f64> {
        sample_value(&self.metrics(), series)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sidecar did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Finds `series` (e.g. `requests_total{path="/a"}` or `up`) in an exposition and parses its
/// value.
pub fn sample_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        let value = value.split_whitespace().next()?;
        Some(match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().ok()?,
        })
    })
}

/// A response from [`http`].
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

/// Waits until `check` returns true, polling every 50 ms, for at most `timeout`.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// `python3`, after checking that the given modules import; panics with the pip command that
/// installs them otherwise (the tests need the real clients, never a stand-in).
pub fn python(modules: &[&str]) -> Command {
    let check = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let out = Command::new("python3")
        .arg("-c")
        .arg(&check)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "python modules {modules:?} are missing ({}); run .ci/run or `pip install -r sidecar/tests/requirements.txt`",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Command::new("python3")
}

/// Runs a python script with arguments; panics with its stderr on failure.
pub fn run_python(modules: &[&str], script: &str, args: &[&str]) -> String {
    let out = python(modules)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shared fixtures directory (`../shared/fixtures` beside the repository).
pub fn fixtures() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for candidate in [
        repo.join("../shared/fixtures"),
        repo.join("shared/fixtures"),
    ] {
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!("shared fixtures not found beside {}", repo.display());
}
