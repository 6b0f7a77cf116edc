//! Helpers for the end-to-end tests in `tests/`: locating the project's binaries, running a
//! real Prometheus server (Debian package `prometheus`) on loopback, and asking it PromQL, and
//! (in [`cluster`]) driving a real Kubernetes apiserver for the operator end-to-end tests,
//! which [`control_plane`] starts on loopback when no `KUBECONFIG` names one.

pub mod cluster;
pub mod control_plane;
pub mod dockerfile;
pub mod exposition;
pub mod http;
pub mod prometheus;
pub mod push_worker;
pub mod sidecar;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// Path of a binary of this workspace, building it first if it is missing or older than a
/// source of the workspace (`cargo test --workspace` has already built it; `cargo test -p
/// monasca-e2e` alone has not, and a binary left by an earlier build must never stand in for
/// the code under test).
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!(
        "{}_BIN",
        name.to_ascii_uppercase().replace('-', "_")
    )) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf();
    let candidate = profile_dir.join(name);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ sits in the workspace root");
    if let Ok(built) = std::fs::metadata(&candidate).and_then(|m| m.modified())
        && newest_source(workspace, false).is_none_or(|source| source <= built)
    {
        return candidate;
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "-p", package, "--bin", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p {package} --bin {name} failed"
    );
    assert!(
        candidate.exists(),
        "{} not found after building",
        candidate.display()
    );
    candidate
}

/// The newest modification time of the files a workspace binary is built from: every `.rs`
/// under a `src/` directory, every `Cargo.toml` and `Cargo.lock` (skipping `target/`, `e2e/`
/// and hidden directories).
fn newest_source(dir: &Path, in_src: bool) -> Option<SystemTime> {
    let mut newest = None;
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let time = if kind.is_dir() {
            if name.starts_with('.') || name == "target" || name == "e2e" {
                continue;
            }
            newest_source(&path, in_src || name == "src")
        } else if name == "Cargo.toml" || name == "Cargo.lock" || (in_src && name.ends_with(".rs"))
        {
            entry.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(time);
    }
    newest
}

/// A fresh scratch directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("monasca-e2e-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A free loopback TCP port (bound then released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
