//! Runs the real `monasca-sidecar` binary on loopback ports chosen by the OS, for tests that
//! talk to it over real sockets.

pub use crate::http::Response;
pub use crate::scratch_dir;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What [`Sidecar::spawn`] started: the process, its listeners, its log.
type Started = (
    ProcessGroup,
    HashMap<String, SocketAddr>,
    Arc<Mutex<String>>,
);

/// A running sidecar; its process (and whatever a wrapper forked) is killed and reaped on drop,
/// on a restart, and when a start fails half-way.
pub struct Sidecar {
    process: ProcessGroup,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub addrs: HashMap<String, SocketAddr>,
    pub log: Arc<Mutex<String>>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
}

impl Sidecar {
    /// Starts the sidecar with `config` (YAML) on ephemeral loopback ports, unless the config
    /// sets `listen` itself.
    pub fn start(config: &str) -> Sidecar {
        Sidecar::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Sidecar {
        Sidecar::start_wrapped(config, env, &[])
    }

    /// [`Sidecar::start_with_env`] with the binary run through `wrapper` (a command and its
    /// arguments, e.g. `setpriv --reuid 65532 ...` or `unshare --pid --fork --mount-proc`),
    /// as Kubernetes runs it: another uid, another pid namespace.
    pub fn start_wrapped(config: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Sidecar {
        let dir = scratch_dir("sidecar");
        // Until the `Sidecar` exists (and removes it on drop), a start that panics (a stale
        // binary, a process that never listens) removes the directory here.
        let mut dir_guard = RemoveOnDrop(Some(dir.clone()));
        let config_path = dir.join("config.yaml");
        let mut text = String::new();
        if !config.contains("listen:") {
            text.push_str(
                "listen: {metrics: \"127.0.0.1:0\", ingest: \"127.0.0.1:0\", statsd: \"127.0.0.1:0\", otlp: \"127.0.0.1:0\"}\n",
            );
        }
        text.push_str(config);
        std::fs::write(&config_path, text).expect("write config");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let wrapper: Vec<String> = wrapper.iter().map(|w| w.to_string()).collect();
        let (process, addrs, log) = Sidecar::spawn(&config_path, &env, &wrapper);
        dir_guard.0 = None;
        Sidecar {
            process,
            dir,
            config_path,
            addrs,
            log,
            env,
            wrapper,
        }
    }

    /// Starts another sidecar process over the same directory and config, with the same
    /// environment and wrapper (a restart). The old process is SIGKILLed and reaped first.
    pub fn restart(mut self) -> Sidecar {
        self.process.kill();
        // Should the new one fail to start, `self` is dropped while unwinding: the directory
        // goes, and `spawn` has already killed what it started.
        let (process, addrs, log) = Sidecar::spawn(&self.config_path, &self.env, &self.wrapper);
        self.process = process;
        self.addrs = addrs;
        self.log = log;
        self
    }

    /// Spawns the process and waits until it is ready. The [`ProcessGroup`] guard exists from
    /// the moment the process does, so every panic below kills and reaps it.
    fn spawn(config_path: &Path, env: &[(String, String)], wrapper: &[String]) -> Started {
        let binary = crate::workspace_binary("monasca-sidecar", "monasca-sidecar");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.arg("--config")
            .arg(config_path)
            .env("RUST_LOG", "info")
            .env_remove("PROMETHEUS_MULTIPROC_DIR")
            .env_remove("DECAY_SECONDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut process = ProcessGroup::spawn(cmd).expect("start monasca-sidecar");
        let stderr = process.child.stderr.take().expect("stderr");
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
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let log_text = || log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut addrs = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(addrs.contains_key("metrics") && addrs.contains_key("ingest")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((l, a)) => {
                    addrs.insert(l, a);
                }
                Err(_) => {
                    process.kill();
                    panic!("sidecar did not start; log:\n{}", log_text());
                }
            }
        }
        // Other listeners (statsd) announce right after; give them a moment.
        while let Ok((l, a)) = rx.recv_timeout(Duration::from_millis(300)) {
            addrs.insert(l, a);
        }
        std::thread::spawn(move || for (_l, _a) in rx {});
        // Ready (every listener bound) before any test talks to it.
        while http(addrs["metrics"], "GET", "/readyz", &[], b"").status != 200 {
            if Instant::now() > deadline {
                process.kill();
                panic!("sidecar never became ready; log:\n{}", log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (process, addrs, log)
    }

    /// The pid of the `monasca-sidecar` process itself: the child, or the first descendant
    /// running the binary when it was started through a wrapper that forks (`unshare --fork`).
    pub fn process_id(&self) -> Option<u32> {
        let mut pending = vec![self.process.child.id()];
        while let Some(pid) = pending.pop() {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if exe.is_some_and(|e| e.file_name().is_some_and(|n| n == "monasca-sidecar")) {
                return Some(pid);
            }
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            pending.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        None
    }

    /// The sidecar process' resident memory (`VmRSS` of `/proc/<pid>/status`), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process_id()?)).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
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

    /// A Pushgateway request (`PUT`/`POST`/`DELETE` on `path`) with a text 0.0.4 body.
    pub fn push_text(&self, method: &str, path: &str, body: &str) -> Response {
        http(
            self.ingest_addr(),
            method,
            path,
            &[("Content-Type", "text/plain; version=0.0.4")],
            body.as_bytes(),
        )
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

    /// Sends SIGTERM (to the sidecar and any wrapper: `unshare --fork` blocks it itself and
    /// exits with the sidecar) and waits for exit; returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.process.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.process.exited() {
                return self.process.kill().expect("the sidecar's exit status");
            }
            if Instant::now() > deadline {
                self.process.kill();
                panic!("sidecar did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a directory on drop, unless its path was taken out first.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A child started in its own process group, so that whatever it forks (`unshare --fork` runs
/// the sidecar as its child, which SIGKILLing `unshare` alone leaves running under init) goes
/// with it. [`ProcessGroup::kill`] (also on drop) SIGKILLs the whole group, then reaps the
/// child. The child also gets `PR_SET_PDEATHSIG` = SIGKILL, for when the test binary dies
/// without unwinding (a timeout's SIGKILL, an abort).
struct ProcessGroup {
    child: Child,
    /// Set once the child is reaped: its pid (the group id) may then belong to another process.
    reaped: bool,
    status: Option<ExitStatus>,
}

impl ProcessGroup {
    /// Spawns `cmd` as the leader of a new process group ([`crate::process::spawn_guarded`]).
    fn spawn(cmd: Command) -> std::io::Result<ProcessGroup> {
        let child = crate::process::spawn_guarded(cmd)?;
        Ok(ProcessGroup {
            child,
            reaped: false,
            status: None,
        })
    }

    /// Sends `signal` to every process of the group, while the leader is not reaped yet (so
    /// the group id is still ours).
    fn signal(&self, signal: libc::c_int) {
        if !self.reaped {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), signal) };
        }
    }

    /// Whether the leader has exited, without reaping it (`WNOWAIT`).
    fn exited(&self) -> bool {
        if self.reaped {
            return true;
        }
        // SAFETY: a zeroed siginfo_t is valid; waitid only writes into it.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                self.child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            r == 0 && info.si_pid() != 0
        }
    }

    /// SIGKILLs the group (what is left of it) and reaps the leader; returns its exit status.
    /// Idempotent.
    fn kill(&mut self) -> Option<ExitStatus> {
        if !self.reaped {
            self.signal(libc::SIGKILL);
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
            self.reaped = true;
        }
        self.status
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
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

/// One request over a fresh connection; panics when the sidecar does not answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    crate::http::request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
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
    run_python_env(modules, script, args, &[])
}

/// [`run_python`] with extra environment variables.
pub fn run_python_env(
    modules: &[&str],
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let out = python(modules)
        .arg("-c")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
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
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace");
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

pub use crate::exposition::{assert_valid_exposition, check_exposition};

impl Sidecar {
    /// `GET /metrics` in text 0.0.4 and in OpenMetrics, each checked with
    /// [`assert_valid_exposition`]; returns the text 0.0.4 body.
    #[track_caller]
    pub fn checked_metrics(&self) -> String {
        let text = self.metrics();
        assert_valid_exposition(text.as_bytes(), false);
        let om = self.openmetrics();
        assert_valid_exposition(om.as_bytes(), true);
        text
    }

    /// `GET /metrics` asking for OpenMetrics; panics on non-200 or another Content-Type.
    pub fn openmetrics(&self) -> String {
        let r = http(
            self.metrics_addr(),
            "GET",
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/openmetrics-text")),
            "not OpenMetrics: {:?}",
            r.header("content-type")
        );
        r.text()
    }
}
