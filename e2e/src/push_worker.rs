//! A real prometheus_client worker (`py/push_worker.py`) pushing its cumulative counter and
//! histogram to the sidecar, and the "pushed N" lines it prints after each successful push, so
//! a test knows exactly what the sidecar last received from it.

use crate::sidecar::python;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/push_worker.py");

/// A running push worker; killed on drop.
pub struct PushWorker {
    child: Child,
    lines: Receiver<u64>,
    /// The last push it reported.
    pub last: u64,
}

impl PushWorker {
    /// `pushes` pushes, `interval` seconds apart.
    pub fn start(gateway: &str, instance: &str, pushes: u32, interval: f64) -> PushWorker {
        PushWorker::start_pausing(gateway, instance, pushes, interval, 0)
    }

    /// A worker that blocks after push `pause_after` (0: never), to be killed there: no push
    /// can then be in flight, however slow the machine.
    pub fn start_pausing(
        gateway: &str,
        instance: &str,
        pushes: u32,
        interval: f64,
        pause_after: u32,
    ) -> PushWorker {
        let mut child = python(&["prometheus_client"])
            .arg(SCRIPT)
            .args([
                gateway,
                instance,
                &pushes.to_string(),
                &interval.to_string(),
                &pause_after.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start push worker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("pushed ").and_then(|n| n.parse().ok()) {
                    let _ = tx.send(n);
                }
            }
        });
        PushWorker {
            child,
            lines,
            last: 0,
        }
    }

    /// Waits for the next push to complete.
    pub fn next_push(&mut self) -> Option<u64> {
        let n = self.lines.recv_timeout(Duration::from_secs(30)).ok()?;
        self.last = n;
        Some(n)
    }

    /// Waits until push `n` is reported (a pausing worker then blocks there), and SIGKILLs it.
    /// Returns what it last pushed.
    pub fn kill_after(mut self, n: u64) -> u64 {
        while self.last < n {
            self.next_push().expect("the worker pushes");
        }
        let _ = self.child.kill();
        self.finish()
    }

    /// Waits for the process to end; returns what it last pushed.
    pub fn finish(mut self) -> u64 {
        while self.next_push().is_some() {}
        let _ = self.child.wait();
        self.last
    }
}

impl Drop for PushWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
