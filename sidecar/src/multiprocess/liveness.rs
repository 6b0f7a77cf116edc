//! Is the process that wrote a file still alive?
//!
//! Two ways to know, and the sidecar must not confuse them: deleting a live worker's files
//! loses everything it writes afterwards (it keeps writing into an unlinked inode).
//!
//! - **`/proc`**, when the sidecar sees the app's processes (same pid namespace: a pod with
//!   `shareProcessNamespace: true`, or both on one host). Proven, not assumed: some process
//!   other than the sidecar must have `PROMETHEUS_MULTIPROC_DIR` (or the deprecated lower-case
//!   name) pointing at the directory in its environment. A pid from a file name is then alive
//!   when `/proc/<pid>` exists, is not a zombie, and started no later than the file was last
//!   written (otherwise the pid was reused by another process). Only this mode allows
//!   deleting dead workers' files.
//! - **mtime**, otherwise: a worker is live while one of its files changed within
//!   `staleAfter`. Good enough to hide `live*` gauges of idle or dead workers, never good
//!   enough to delete anything (an idle worker is indistinguishable from a dead one).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How liveness is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivenessMode {
    /// `/proc/<pid>`: reliable, allows compaction.
    Proc,
    /// File changes against `staleAfter`: never deletes.
    Mtime,
}

impl LivenessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LivenessMode::Proc => "proc",
            LivenessMode::Mtime => "mtime",
        }
    }
}

/// Which liveness method to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LivenessPolicy {
    /// `/proc` once a process using the directory is seen there, mtime until then.
    #[default]
    Auto,
    /// Always `/proc` (the deployment guarantees a shared pid namespace).
    Proc,
    /// Always mtime (never delete files).
    Mtime,
}

/// How often to look for the app again while it cannot be seen in `/proc`.
const REDETECT_EVERY: Duration = Duration::from_secs(10);
/// At most this many `/proc` entries are examined per detection.
const MAX_PROC_SCAN: usize = 4096;
/// Clock slack when comparing a process start time with a file time (`btime` has whole
/// seconds, and file times may be coarse).
const START_SLACK_SECS: f64 = 2.0;
/// `USER_HZ`: the unit of `/proc/<pid>/stat` start times, 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// Liveness state for one directory.
#[derive(Debug)]
pub struct Liveness {
    policy: LivenessPolicy,
    proc_root: PathBuf,
    mode: LivenessMode,
    last_detect: Option<Instant>,
    boot_time: Option<f64>,
    own_pid: u32,
}

impl Liveness {
    pub fn new(policy: LivenessPolicy) -> Self {
        Liveness::with_proc_root(policy, PathBuf::from("/proc"))
    }

    /// For tests: a fake `/proc`.
    pub fn with_proc_root(policy: LivenessPolicy, proc_root: PathBuf) -> Self {
        let boot_time = read_boot_time(&proc_root);
        Liveness {
            mode: match policy {
                LivenessPolicy::Proc => LivenessMode::Proc,
                _ => LivenessMode::Mtime,
            },
            policy,
            proc_root,
            last_detect: None,
            boot_time,
            own_pid: std::process::id(),
        }
    }

    pub fn mode(&self) -> LivenessMode {
        self.mode
    }

    /// Looks for the app in `/proc` (Auto policy, while not found yet, at most every
    /// [`REDETECT_EVERY`]). `pids` are the pids of the directory's files, tried first.
    /// Returns true when the mode just changed.
    pub fn detect<'p>(&mut self, dir: &Path, pids: impl Iterator<Item = &'p str>) -> bool {
        if self.policy != LivenessPolicy::Auto || self.mode == LivenessMode::Proc {
            return false;
        }
        if self
            .last_detect
            .is_some_and(|t| t.elapsed() < REDETECT_EVERY)
        {
            return false;
        }
        self.last_detect = Some(Instant::now());
        let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut tried = 0usize;
        for pid in pids.filter_map(|p| p.parse::<u32>().ok()) {
            tried += 1;
            if tried > 256 {
                break;
            }
            if pid != self.own_pid && self.uses_dir(pid, dir, &canonical) {
                self.mode = LivenessMode::Proc;
                return true;
            }
        }
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return false;
        };
        for entry in entries.flatten().take(MAX_PROC_SCAN) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != self.own_pid && self.uses_dir(pid, dir, &canonical) {
                self.mode = LivenessMode::Proc;
                return true;
            }
        }
        false
    }

    /// True when process `pid` has the multiprocess directory variable set to `dir`.
    fn uses_dir(&self, pid: u32, dir: &Path, canonical: &Path) -> bool {
        let base = self.proc_root.join(pid.to_string());
        let Ok(environ) = std::fs::read(base.join("environ")) else {
            return false;
        };
        for var in environ.split(|b| *b == 0) {
            let Ok(var) = std::str::from_utf8(var) else {
                continue;
            };
            let value = var
                .strip_prefix("PROMETHEUS_MULTIPROC_DIR=")
                .or_else(|| var.strip_prefix("prometheus_multiproc_dir="));
            let Some(value) = value else { continue };
            let path = Path::new(value);
            if path == dir {
                return true;
            }
            let absolute = if path.is_relative() {
                match std::fs::read_link(base.join("cwd")) {
                    Ok(cwd) => cwd.join(path),
                    Err(_) => continue,
                }
            } else {
                path.to_path_buf()
            };
            if std::fs::canonicalize(&absolute).is_ok_and(|c| c == canonical) {
                return true;
            }
        }
        false
    }

    /// Whether the writer of files named for `pid` is alive, and whether that answer is
    /// reliable enough to delete its files. `newest_write` is the latest modification time of
    /// the pid's files when they were opened (wall clock); `last_change` the latest time
    /// their content was seen to change (the mtime of mmap writes lags, and files kept open
    /// are not stat'ed again); `stale_after` from config.
    pub fn check(
        &self,
        pid: &str,
        newest_write: SystemTime,
        last_change: SystemTime,
        stale_after: Duration,
    ) -> Verdict {
        if self.mode == LivenessMode::Proc
            && let Ok(n) = pid.parse::<u32>()
        {
            return Verdict {
                alive: self.proc_alive(n, newest_write.max(last_change)),
                reliable: true,
            };
        }
        let latest = newest_write.max(last_change);
        let age = SystemTime::now()
            .duration_since(latest)
            .unwrap_or(Duration::ZERO);
        Verdict {
            alive: age <= stale_after,
            reliable: false,
        }
    }

    /// True when `pid` certainly has no process (`/proc` mode, numeric pid, no
    /// `/proc/<pid>`): files read after this are final.
    pub fn gone(&self, pid: &str) -> bool {
        self.mode == LivenessMode::Proc
            && pid
                .parse::<u32>()
                .is_ok_and(|n| !self.proc_root.join(n.to_string()).exists())
    }

    fn proc_alive(&self, pid: u32, newest_write: SystemTime) -> bool {
        let Ok(stat) = std::fs::read_to_string(self.proc_root.join(format!("{pid}/stat"))) else {
            // Gone, or unreadable: /proc/<pid> existing is the fallback evidence.
            return self.proc_root.join(pid.to_string()).exists();
        };
        // `pid (comm) state ...`; comm may contain spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return true;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if matches!(fields.first(), Some(&"Z") | Some(&"X") | Some(&"x")) {
            return false;
        }
        // Field 22 overall (start time in clock ticks since boot) is index 19 after comm.
        let (Some(boot), Some(ticks)) = (
            self.boot_time,
            fields.get(19).and_then(|t| t.parse::<f64>().ok()),
        ) else {
            return true;
        };
        let started = boot + ticks / USER_HZ;
        let written = newest_write
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        // The writer existed when it wrote; a process started after the last write is a
        // different process that got the same pid.
        started <= written + START_SLACK_SECS
    }
}

/// The answer of [`Liveness::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub alive: bool,
    /// True when a dead verdict may lead to deleting files.
    pub reliable: bool,
}

fn read_boot_time(proc_root: &Path) -> Option<f64> {
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}
