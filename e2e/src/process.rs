//! Child processes of the tests that never outlive the test binary: each leads a process group
//! of its own (so whatever it forks can be signalled with it) and gets SIGKILL when the test
//! binary dies (`PR_SET_PDEATHSIG`), however it dies: a timeout's SIGKILL or an abort runs no
//! `Drop`.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// Spawns `cmd` as the leader of a new process group with `PR_SET_PDEATHSIG` = SIGKILL, from
/// the `launcher` thread. Refuses to start it if the test binary died before the signal was
/// set (nothing would kill it then).
pub fn spawn_guarded(mut cmd: Command) -> std::io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    launcher(cmd)
}

/// Spawns `cmd` from one thread that lives as long as the test binary. `PR_SET_PDEATHSIG`
/// fires when the *thread* that forked the child ends, so a process started from a short-lived
/// thread (a test's helper thread, a tokio worker or blocking-pool thread restarting the
/// apiserver) and kept longer would be killed early; started from here, it is killed only
/// when the test binary itself dies.
fn launcher(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static JOBS: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let jobs = JOBS.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("e2e-launcher".into())
            .spawn(move || {
                for (mut cmd, reply) in queue {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the e2e launcher thread");
        Mutex::new(jobs)
    });
    let (reply, answer) = mpsc::channel();
    let gone = || std::io::Error::other("the e2e launcher thread is gone");
    jobs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}
