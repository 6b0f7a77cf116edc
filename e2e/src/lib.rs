//! Helpers for the end-to-end tests in `tests/`: locating the project's binaries, running a
//! real Prometheus server (Debian package `prometheus`) on loopback, and asking it PromQL, and
//! (in [`cluster`]) driving a real Kubernetes apiserver for the operator end-to-end tests,
//! which [`control_plane`] starts on loopback when no `KUBECONFIG` names one.

pub mod cluster;
pub mod control_plane;
pub mod dockerfile;
pub mod exposition;
pub mod http;
pub mod process;
pub mod prometheus;
pub mod push_worker;
pub mod sidecar;

use std::path::PathBuf;

/// Path of a binary of this workspace, as Cargo already built it: `$<NAME>_BIN` when set (a
/// prebuilt or release binary, e.g. `MONASCA_SIDECAR_BIN`), else `target/<profile>/<name>`
/// beside the running test. No nested `cargo build`: `ci/test.sh` builds both binaries before
/// any test (`cargo build --bins`), and Cargo builds a package's own binary before its
/// integration tests. A binary that is missing, or older than a source it is built from, must
/// never stand in for the code under test: that fails here, naming the command to run.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    let variable = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Ok(p) = std::env::var(&variable) {
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
    let build = format!("cargo build -p {package} --bin {name}");
    let built = std::fs::metadata(&candidate)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is not built: run `{build}` first (ci/test.sh does), or set {variable}",
                candidate.display()
            )
        });
    // Cargo's own record of the files the binary was built from (`<name>.d`): exact, so a
    // change to another package or to a test-only file does not make it look stale.
    let stale: Vec<String> = std::fs::read_to_string(profile_dir.join(format!("{name}.d")))
        .unwrap_or_default()
        .split_once(": ")
        .map(|(_, sources)| {
            sources
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|source| {
            std::fs::metadata(source)
                .and_then(|m| m.modified())
                .map_or(true, |changed| changed > built)
        })
        .collect();
    assert!(
        stale.is_empty(),
        "{} is older than its sources ({}): run `{build}` (ci/test.sh does), or set {variable}",
        candidate.display(),
        stale.join(", ")
    );
    candidate
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
