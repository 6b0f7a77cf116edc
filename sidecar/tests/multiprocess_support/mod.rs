//! Helpers for the multiprocess tests: real prometheus_client worker fleets (Python scripts in
//! `tests/py/`), MultiProcessCollector's view of a directory, an in-process sidecar (App plus
//! the multiprocess reader) and value-level comparison of expositions.
#![allow(dead_code)]

use monasca_config::SidecarConfig;
use monasca_sidecar::app::App;
use monasca_sidecar::expose::{self, Format};
use monasca_sidecar::sources::SourceContext;
use monasca_sidecar::sources::multiprocess::{self, LivenessPolicy, Multiprocess, Options};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

pub const PY_MODULES: &[&str] = &["prometheus_client"];

/// Path of a helper script in `tests/py/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

pub use monasca_e2e::sidecar::python;

/// A fresh scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    monasca_e2e::scratch_dir(&format!("mp-{name}"))
}

/// Python with prometheus_client 0.16 (Debian bookworm's version, the last that writes
/// multiprocess files without timestamps), in the virtualenv `bash ci/test.sh` makes from
/// `tests/requirements-prometheus-client-0.16.txt`. `MONASCA_LEGACY_CLIENT_PYTHON` overrides.
pub fn legacy_client_python() -> Command {
    let python = std::env::var("MONASCA_LEGACY_CLIENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("MONASCA_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                        .join(".cache/monasca-sidecar")
                })
                .join("prometheus-client-0.16-venv/bin/python")
        });
    let out = Command::new(&python)
        .args([
            "-c",
            "import prometheus_client, importlib.metadata as m; print(m.version('prometheus_client'))",
        ])
        .output();
    let version = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        other => panic!(
            "{} cannot import prometheus_client ({other:?}): `bash ci/test.sh` installs it \
             from sidecar/tests/requirements-prometheus-client-0.16.txt",
            python.display()
        ),
    };
    assert!(
        version.starts_with("0.16."),
        "{} has prometheus_client {version}, not 0.16",
        python.display()
    );
    Command::new(python)
}

/// A Python process driven line by line over stdin/stdout, killed on drop.
pub struct PyProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub first_line: String,
}

impl PyProcess {
    /// Starts `script args...` with `PROMETHEUS_MULTIPROC_DIR=dir` in its initial environment
    /// (where `/proc/<pid>/environ` shows it), and waits for its first output line.
    pub fn start(script_name: &str, dir: &Path, args: &[&str]) -> PyProcess {
        PyProcess::start_with(python(PY_MODULES), script_name, dir, args)
    }

    /// [`PyProcess::start`] with another interpreter (another prometheus_client version).
    pub fn start_with(mut cmd: Command, script_name: &str, dir: &Path, args: &[&str]) -> PyProcess {
        cmd.arg(script(script_name))
            .arg(dir)
            .args(args)
            .env("PROMETHEUS_MULTIPROC_DIR", dir);
        PyProcess::spawn(cmd)
    }

    /// Starts `script args...` without a multiprocess directory.
    pub fn plain(script_name: &str, args: &[&str]) -> PyProcess {
        let mut cmd = python(PY_MODULES);
        cmd.arg(script(script_name))
            .args(args)
            .env_remove("PROMETHEUS_MULTIPROC_DIR");
        PyProcess::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> PyProcess {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = PyProcess {
            child,
            stdin,
            lines: rx,
            first_line: String::new(),
        };
        p.first_line = p.read_line(Duration::from_secs(60));
        p
    }

    fn read_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(_) => {
                let _ = self.child.kill();
                panic!("python helper gave no answer within {timeout:?}");
            }
        }
    }

    /// Sends a command and waits for "ok".
    pub fn command(&mut self, cmd: &str) {
        let rest = self.ask(cmd);
        assert_eq!(rest, "", "python helper answered \"ok {rest}\" to {cmd:?}");
    }

    /// Sends a command and returns what follows "ok" in the answer.
    pub fn ask(&mut self, cmd: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cmd}").expect("write command");
        stdin.flush().expect("flush");
        let answer = self.read_line(Duration::from_secs(120));
        match answer.strip_prefix("ok") {
            Some(rest) => rest.trim().to_string(),
            None => panic!("python helper answered {answer:?} to {cmd:?}"),
        }
    }

    /// Closes stdin and waits (bounded) for a clean exit.
    pub fn finish(mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyProcess {
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mp_fleet.py`: N forked workers of one parent, writing every metric type and gauge mode.
pub struct Fleet {
    pub py: PyProcess,
    pub parent: u32,
    pub pids: Vec<u32>,
}

impl Fleet {
    pub fn start(dir: &Path, n: usize) -> Fleet {
        Fleet::start_with(python(PY_MODULES), dir, n)
    }

    /// [`Fleet::start`] under another interpreter.
    pub fn start_with(python: Command, dir: &Path, n: usize) -> Fleet {
        let py = PyProcess::start_with(python, "mp_fleet.py", dir, &[&n.to_string()]);
        let v: serde_json::Value =
            serde_json::from_str(&py.first_line).expect("fleet prints JSON first");
        let parent = v["parent"].as_u64().expect("parent") as u32;
        let pids = v["pids"]
            .as_array()
            .expect("pids")
            .iter()
            .map(|p| p.as_u64().expect("pid") as u32)
            .collect();
        Fleet { py, parent, pids }
    }

    pub fn kill(&mut self, i: usize) {
        self.py.command(&format!("kill {i}"));
    }

    pub fn work(&mut self, i: usize) {
        self.py.command(&format!("work {i}"));
    }
}

/// MultiProcessCollector's exposition of `dir` (after `mark_process_dead` for `dead`).
pub fn collector(dir: &Path, dead: &[u32]) -> String {
    collector_with(python(PY_MODULES), dir, dead)
}

/// [`collector`] under another interpreter.
pub fn collector_with(mut cmd: Command, dir: &Path, dead: &[u32]) -> String {
    cmd.arg(script("mp_collect.py")).arg(dir);
    if !dead.is_empty() {
        cmd.arg("--pid-dead");
        for p in dead {
            cmd.arg(p.to_string());
        }
    }
    let out = cmd
        .env_remove("PROMETHEUS_MULTIPROC_DIR")
        .output()
        .expect("run mp_collect.py");
    assert!(
        out.status.success(),
        "MultiProcessCollector failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Copies the `*.db` files of `dir` into a new scratch directory.
pub fn snapshot(dir: &Path) -> PathBuf {
    let copy = scratch("snapshot");
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".db") {
            std::fs::copy(e.path(), copy.join(&name)).expect("copy");
        }
    }
    copy
}

/// The sidecar in-process: an App with the multiprocess reader running.
pub struct InProcess {
    pub app: Arc<App>,
    pub mp: Option<Multiprocess>,
}

impl InProcess {
    pub fn start(config_yaml: &str) -> InProcess {
        let config = SidecarConfig::from_yaml(config_yaml).expect("valid config");
        let app = App::new(config);
        let mp = multiprocess::spawn_with(
            &SourceContext::standalone(&app),
            Options {
                liveness: LivenessPolicy::Auto,
                interval: Duration::from_millis(200),
                env_dir: None,
            },
        );
        InProcess { app, mp: Some(mp) }
    }

    /// `/metrics` as text 0.0.4, refreshed first (what the HTTP handler does).
    pub fn metrics(&self) -> String {
        self.app.refresh();
        let mut out = Vec::new();
        let own = self.app.self_families();
        let store = self.app.store.read();
        expose::render(&store, Format::Text, self.app.now().mono, &own, &mut out);
        String::from_utf8(out).expect("utf-8 exposition")
    }

    /// Stops the reader (waiting for its thread), as a process exit would.
    pub fn stop(mut self) {
        if let Some(mp) = self.mp.take() {
            mp.stop();
        }
    }
}

/// Series of an exposition: `name{sorted labels}` -> value. Comments, the sidecar's own
/// metrics and empty label values (absent in Prometheus) are left out; `le` is normalised.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') || line.starts_with("monasca_sidecar_") {
            continue;
        }
        let (series, value) = split_sample(line);
        let v = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let prev = out.insert(series.clone(), v);
        assert!(prev.is_none(), "series {series} appears twice");
    }
    out
}

fn split_sample(line: &str) -> (String, &str) {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => panic!("bad sample line {line:?}"),
    };
    let mut labels: Vec<(String, String)> = Vec::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut end = 0;
        loop {
            // name
            let mut lname = String::new();
            let mut closed = false;
            for (i, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' => {
                        closed = true;
                        end = i + 1;
                        break;
                    }
                    ',' | ' ' => {}
                    c => lname.push(c),
                }
            }
            if closed {
                break;
            }
            assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line}");
            let mut value = String::new();
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|c| c.1) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => panic!("{line}"),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            if lname == "le" {
                let b: f64 = match value.as_str() {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().expect("le"),
                };
                value = format!("{b:?}");
            }
            if !value.is_empty() {
                labels.push((lname, value));
            }
        }
        &body[end..]
    } else {
        rest
    };
    labels.sort();
    let mut series = name.to_string();
    if !labels.is_empty() {
        series.push('{');
        for (i, (n, v)) in labels.iter().enumerate() {
            if i > 0 {
                series.push(',');
            }
            series.push_str(&format!("{n}={v:?}"));
        }
        series.push('}');
    }
    let value = rest.split_whitespace().next().expect("value");
    (series, value)
}

/// Asserts two expositions hold the same series with the same values (relative 1e-9).
pub fn assert_same(sidecar: &str, reference: &str, what: &str) {
    let a = samples(sidecar);
    let b = samples(reference);
    let mut problems = Vec::new();
    for (k, v) in &b {
        match a.get(k) {
            None => problems.push(format!("missing in sidecar: {k} {v}")),
            Some(x) if !close(*x, *v) => problems.push(format!("{k}: sidecar {x}, reference {v}")),
            _ => {}
        }
    }
    for (k, v) in &a {
        if !b.contains_key(k) {
            problems.push(format!("only in sidecar: {k} {v}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: {} differences:\n{}\n--- sidecar:\n{sidecar}\n--- reference:\n{reference}",
        problems.len(),
        problems.join("\n")
    );
}

/// True when two expositions hold the same series with the same values (relative 1e-9).
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (samples(a), samples(b));
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| close(*v, *w)))
}

pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
}

/// The value of one series (as [`samples`] names it), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    samples(text).get(series).copied()
}

/// The sidecar's own metric `name{labels}` as printed.
pub fn self_metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `check` every 50 ms until it holds, for at most `timeout`.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Names of the `*.db` files in `dir`, sorted.
pub fn db_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".db"))
        .collect();
    v.sort();
    v
}

/// True when some file of `pid` is in `dir`.
pub fn has_pid_files(dir: &Path, pid: u32) -> bool {
    let suffix = format!("_{pid}.db");
    db_files(dir).iter().any(|n| n.ends_with(&suffix))
}

impl Fleet {
    pub fn grow(&mut self, i: usize) {
        self.py.command(&format!("grow {i}"));
    }
}

/// gunicorn workers per app.
pub const GUNICORN_WORKERS: usize = 4;

/// A real gunicorn (PyPI) serving `tests/py/gunicorn_app.py` with [`GUNICORN_WORKERS`]
/// workers in multiprocess mode, in its own process group; the whole group is killed on drop.
pub struct Gunicorn {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl Gunicorn {
    /// Starts gunicorn with `PROMETHEUS_MULTIPROC_DIR=dir` and `extra` gunicorn arguments
    /// (e.g. `--max-requests 25`), and waits until it answers.
    pub fn start(dir: &Path, extra: &[&str]) -> Gunicorn {
        use std::os::unix::process::CommandExt;
        let port = monasca_e2e::free_port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let app_dir = script("gunicorn_app.py");
        let app_dir = app_dir.parent().expect("tests/py");
        let child = python(&["prometheus_client", "gunicorn"])
            .args(["-m", "gunicorn", "--workers", &GUNICORN_WORKERS.to_string()])
            .args(["--bind", &addr.to_string(), "--chdir"])
            .arg(app_dir)
            .args(["--graceful-timeout", "2", "--log-level", "warning"])
            .args(extra)
            .arg("gunicorn_app:app")
            .env("PROMETHEUS_MULTIPROC_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start gunicorn");
        let g = Gunicorn { child, addr };
        let up = wait_until(Duration::from_secs(30), || get(addr, "/pid").is_some());
        assert!(up, "gunicorn did not answer on {addr}");
        g
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn hello(&self) {
        let body = get(self.addr, "/hello").expect("GET /hello");
        assert_eq!(body, "hello\n");
    }

    pub fn worker_pid(&self) -> u32 {
        get(self.addr, "/pid")
            .and_then(|b| b.trim().parse().ok())
            .expect("GET /pid")
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET over a fresh connection, bounded by timeouts; None when it fails.
pub fn get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    if !raw.starts_with("HTTP/1.1 200") && !raw.starts_with("HTTP/1.0 200") {
        return None;
    }
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}
