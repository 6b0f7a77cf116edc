//! Is the process that wrote a file still alive?
//!
//! Two ways to know, and the sidecar must not confuse them: deleting a live worker's files
//! loses everything it writes afterwards (it keeps writing into an unlinked inode).
//!
//! - **`/proc`**, when the sidecar sees the app's processes (same pid namespace: a pod with
//!   `shareProcessNamespace: true`, or both on one host). Proven, not assumed: some process
//!   other than the sidecar must have `PROMETHEUS_MULTIPROC_DIR` (or the deprecated lower-case
//!   name) pointing at the directory in its environment, or the config says `proc`. Only this
//!   mode allows deleting dead workers' files, and only what is *proven* dead:
//!   - a pid is *confirmed* as a file's writer when `/proc/<pid>/stat` (world-readable, so
//!     this works when the app runs under another uid) shows a process that started no later
//!     than the file was last written; its start time (clock ticks since boot, immune to wall
//!     clock steps) is recorded;
//!   - a confirmed pid is dead when `/proc/<pid>` is gone or a zombie with the recorded start
//!     time; a pid now held by a process with another start time was reused: the new process
//!     may be a worker writing the same files, so nothing is decided until it is gone too;
//!   - a pid never confirmed (its process ended before the sidecar looked) is dead when
//!     `/proc/<pid>` is gone only if file names are known to be pids: some file's pid was seen
//!     using the directory, or the config says `proc` (the operator renders it when it gave the
//!     pod a shared process namespace). A custom `process_identifier` is never taken for a
//!     dead pid.
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
    /// Confirmed writers: pid -> start time in clock ticks since boot.
    confirmed: std::collections::HashMap<u32, u64>,
    /// Some file's pid was seen (in `/proc/<pid>/environ`) using the directory: file names
    /// are process ids.
    names_are_pids: bool,
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
            confirmed: std::collections::HashMap::new(),
            names_are_pids: false,
        }
    }

    /// A new policy (config reload); what was confirmed about pids stays true.
    pub fn set_policy(&mut self, policy: LivenessPolicy) {
        if policy == self.policy {
            return;
        }
        self.policy = policy;
        self.mode = match policy {
            LivenessPolicy::Proc => LivenessMode::Proc,
            LivenessPolicy::Mtime => LivenessMode::Mtime,
            LivenessPolicy::Auto if self.names_are_pids => LivenessMode::Proc,
            LivenessPolicy::Auto => {
                self.last_detect = None;
                LivenessMode::Mtime
            }
        };
    }

    pub fn mode(&self) -> LivenessMode {
        self.mode
    }

    /// Looks for the app in `/proc` (Auto policy, while not found yet, at most every
    /// `REDETECT_EVERY`). `pids` are the pids of the directory's files, tried first.
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
                self.names_are_pids = true;
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
    /// are not stat'ed again); `stale_after` from config. `dir` is the multiprocess directory
    /// (to learn, once, that file names are pids).
    pub fn check(
        &mut self,
        dir: &Path,
        pid: &str,
        newest_write: SystemTime,
        last_change: SystemTime,
        stale_after: Duration,
    ) -> Verdict {
        if self.mode == LivenessMode::Proc
            && let Ok(n) = pid.parse::<u32>()
        {
            return self.proc_verdict(dir, n, newest_write.max(last_change));
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

    /// True when `pid` certainly has no process (`/proc` mode, proven dead, no
    /// `/proc/<pid>`): files read after this are final.
    pub fn gone(&self, pid: &str) -> bool {
        self.mode == LivenessMode::Proc
            && pid.parse::<u32>().is_ok_and(|n| {
                (self.confirmed.contains_key(&n) || self.names_trusted())
                    && !self.proc_root.join(n.to_string()).exists()
            })
    }

    /// The pid's files were folded and deleted: a later process with the same pid is new.
    pub fn forget(&mut self, pid: &str) {
        if let Ok(n) = pid.parse::<u32>() {
            self.confirmed.remove(&n);
        }
    }

    /// File names are process ids: seen, or promised by the config.
    fn names_trusted(&self) -> bool {
        self.names_are_pids || self.policy == LivenessPolicy::Proc
    }

    fn proc_verdict(&mut self, dir: &Path, pid: u32, newest_write: SystemTime) -> Verdict {
        const ALIVE: Verdict = Verdict {
            alive: true,
            reliable: true,
        };
        const DEAD: Verdict = Verdict {
            alive: false,
            reliable: true,
        };
        /// Not seen alive, but not proven dead: never deleted.
        const UNSURE_GONE: Verdict = Verdict {
            alive: false,
            reliable: false,
        };
        /// A process holds the pid, but it may not be the writer: kept, shown as live.
        const UNSURE_HELD: Verdict = Verdict {
            alive: true,
            reliable: false,
        };
        let confirmed = self.confirmed.get(&pid).copied();
        match read_stat(&self.proc_root, pid) {
            ProcStat::Absent => {
                if confirmed.is_some() || self.names_trusted() {
                    DEAD
                } else {
                    UNSURE_GONE
                }
            }
            ProcStat::Unreadable => UNSURE_HELD,
            ProcStat::Process { zombie, start } => match confirmed {
                Some(c) if c == start => {
                    if zombie {
                        DEAD
                    } else {
                        ALIVE
                    }
                }
                // Reused by another process, which may write the same files.
                Some(_) => UNSURE_HELD,
                None if zombie => UNSURE_GONE,
                None => {
                    let written = newest_write
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    let could_be_writer = self.boot_time.is_some_and(|boot| {
                        boot + start as f64 / USER_HZ <= written + START_SLACK_SECS
                    });
                    if !could_be_writer {
                        // Started after the last write (another process, or a wall clock
                        // step): undecided until it is gone.
                        return UNSURE_HELD;
                    }
                    self.confirmed.insert(pid, start);
                    if !self.names_are_pids {
                        let canonical =
                            std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
                        self.names_are_pids = self.uses_dir(pid, dir, &canonical);
                    }
                    ALIVE
                }
            },
        }
    }
}

/// What `/proc/<pid>/stat` says.
enum ProcStat {
    Absent,
    /// `/proc/<pid>` exists but its stat cannot be read or parsed.
    Unreadable,
    Process {
        zombie: bool,
        /// Start time, clock ticks since boot.
        start: u64,
    },
}

fn read_stat(proc_root: &Path, pid: u32) -> ProcStat {
    let Ok(stat) = std::fs::read_to_string(proc_root.join(format!("{pid}/stat"))) else {
        return if proc_root.join(pid.to_string()).exists() {
            ProcStat::Unreadable
        } else {
            ProcStat::Absent
        };
    };
    // `pid (comm) state ...`; comm may contain spaces and parentheses.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ProcStat::Unreadable;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X") | Some(&"x"));
    // Field 22 overall (start time in clock ticks since boot) is index 19 after comm.
    match fields.get(19).and_then(|t| t.parse::<u64>().ok()) {
        Some(start) => ProcStat::Process { zombie, start },
        None => ProcStat::Unreadable,
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
