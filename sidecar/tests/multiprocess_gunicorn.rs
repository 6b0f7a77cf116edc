//! A real gunicorn app (PyPI gunicorn + prometheus_client, 4 workers, multiprocess mode):
//! after N requests the sidecar reports exactly N; after a worker is SIGKILLed (gunicorn
//! respawns it) and M more requests, exactly N+M, never less at any scrape in between, and
//! the dead worker's files are compacted away.

mod common;
mod multiprocess_support;

use multiprocess_support::{Gunicorn, get, has_pid_files, samples, scratch};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const N: usize = 120;
const M: usize = 80;
const SERIES: &str = "app_requests_total{path=\"/hello\"}";

/// Scrapes `metrics` every 50 ms in the background and records the counter.
struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<f64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(metrics: Arc<dyn Fn() -> String + Send + Sync>) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let v = samples(&metrics()).get(SERIES).copied().unwrap_or(0.0);
                    seen.lock().expect("lock").push(v);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Watcher {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops and returns every value seen, asserting they never decreased.
    /// It first lets the watcher reach a few scrapes, so a slow machine still checks the
    /// counter across several of them.
    fn finish(mut self) -> Vec<f64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.seen.lock().expect("lock").len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop_thread().expect("watcher thread");
        let seen = self.seen.lock().expect("lock").clone();
        for w in seen.windows(2) {
            assert!(w[1] >= w[0], "the counter went down: {} -> {}", w[0], w[1]);
        }
        seen
    }

    /// Stops the scraping thread and waits for it (once): its result.
    fn stop_thread(&mut self) -> std::thread::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map_or(Ok(()), |t| t.join())
    }
}

/// A test that fails before [`Watcher::finish`] still stops the scraping thread, which holds
/// the sidecar (and so its process) for as long as it runs.
impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

/// The scenario, against any way of reading the sidecar's `/metrics`.
fn scenario(dir: &Path, metrics: Arc<dyn Fn() -> String + Send + Sync>) {
    let gunicorn = Gunicorn::start(dir, &[]);
    let watcher = Watcher::start(metrics.clone());
    for _ in 0..N {
        gunicorn.hello();
    }
    let value = || samples(&metrics()).get(SERIES).copied();
    assert_eq!(value(), Some(N as f64), "after {N} requests");

    // SIGKILL the worker that answers; gunicorn respawns it.
    let victim = gunicorn.worker_pid();
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(value(), Some(N as f64), "right after the kill");
    let mut served = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while served < M {
        assert!(Instant::now() < deadline, "gunicorn stopped serving");
        if get(gunicorn.addr, "/hello").is_some() {
            served += 1;
        }
    }
    assert_eq!(value(), Some((N + M) as f64), "after {M} more requests");
    // The dead worker's files are folded into the sidecar's own and deleted.
    assert!(
        common::wait_until(Duration::from_secs(15), || !has_pid_files(dir, victim)),
        "pid {victim}'s files are still there"
    );
    assert_eq!(value(), Some((N + M) as f64), "after compaction");
    let text = metrics();
    assert_eq!(
        samples(&text).get("app_request_seconds_count{path=\"/hello\"}"),
        Some(&((N + M) as f64)),
        "{text}"
    );
    let seen = watcher.finish();
    assert!(
        seen.len() > 3,
        "the watcher scraped only {} times",
        seen.len()
    );
}

/// Through the real `monasca-sidecar` binary and its `/metrics`.
#[test]
fn gunicorn_counts_exactly_through_the_binary() {
    let dir = scratch("gunicorn-bin");
    let sidecar = Arc::new(common::Sidecar::start(&format!(
        "multiprocessDir: {:?}\n",
        dir.display().to_string()
    )));
    let first = sidecar.metrics();
    assert!(
        first.contains("monasca_sidecar_multiprocess_enabled 1"),
        "the binary does not run the multiprocess reader (wire monasca_sidecar::sources::multiprocess::spawn into main):\n{first}"
    );
    let s = sidecar.clone();
    scenario(&dir, Arc::new(move || s.metrics()));
    let _ = std::fs::remove_dir_all(&dir);
}
