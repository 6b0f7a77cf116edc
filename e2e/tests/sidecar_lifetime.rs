//! The sidecar harness never leaves a `monasca-sidecar` process behind: not on drop, not on a
//! restart, not when a wrapper forked it (`unshare --fork`), not when the test binary dies
//! without unwinding (src/bin/die_with_sidecar.rs). Needs the debug sidecar binary, like every
//! other test of the harness.

use monasca_e2e::sidecar::{Sidecar, wait_until};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether `pid` is gone, or dead and only waiting to be reaped (a zombie: an orphan under an
/// init that does not reap, as in some containers).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn assert_dies(pid: u32, what: &str) {
    assert!(
        wait_until(Duration::from_secs(5), || dead(pid)),
        "{what}: monasca-sidecar pid {pid} is still running"
    );
}

/// A start that fails (here a wrapper that exits at once instead of running the sidecar)
/// panics, and leaves neither a process nor its scratch directory.
#[test]
fn a_failed_start_leaves_no_scratch_directory() {
    let seen = std::env::temp_dir().join(format!(
        "monasca-e2e-failed-start-{}.path",
        std::process::id()
    ));
    let seen_text = seen.display().to_string();
    // The wrapper gets `<binary> --config <path>`: it writes the path down and fails.
    let wrapper = [
        "sh",
        "-c",
        "printf %s \"$3\" > \"$0\"; exit 3",
        seen_text.as_str(),
    ];
    let started = std::panic::catch_unwind(|| Sidecar::start_wrapped("", &[], &wrapper));
    assert!(started.is_err(), "a sidecar that never ran was started");
    let config = std::fs::read_to_string(&seen).expect("the wrapper ran");
    let _ = std::fs::remove_file(&seen);
    let dir = std::path::Path::new(&config)
        .parent()
        .expect("the config's directory");
    assert!(
        dir.starts_with(std::env::temp_dir()),
        "unexpected config path {config}"
    );
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test]
fn dropping_the_handle_kills_the_sidecar() {
    let sidecar = Sidecar::start("");
    let pid = sidecar.process_id().expect("the sidecar's pid");
    let dir = sidecar.dir.clone();
    drop(sidecar);
    // Drop reaps its own child: no waiting.
    assert!(dead(pid), "pid {pid} outlived its handle");
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test]
fn a_restart_kills_the_old_process_and_keeps_the_new_one() {
    let sidecar = Sidecar::start("");
    let old = sidecar.process_id().expect("the sidecar's pid");
    let sidecar = sidecar.restart();
    assert!(
        dead(old),
        "the pre-restart sidecar (pid {old}) is still running"
    );
    let new = sidecar.process_id().expect("the restarted sidecar's pid");
    assert_ne!(old, new);
    assert!(!dead(new));
    sidecar.metrics();
    let sidecar = sidecar.restart();
    assert!(dead(new), "the second sidecar (pid {new}) is still running");
    let last = sidecar.process_id().expect("the pid after two restarts");
    drop(sidecar);
    assert!(dead(last));
}

/// A wrapper that runs the sidecar as its child, like `unshare --pid --fork`: killing only the
/// wrapper would leave the sidecar running under init.
#[test]
fn a_forking_wrapper_does_not_leave_the_sidecar_behind() {
    let wrapper = ["sh", "-c", "\"$0\" \"$@\"; exit $?"];
    let mut sidecar = Sidecar::start_wrapped("", &[], &wrapper);
    let pid = sidecar.process_id().expect("the sidecar's pid");
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains("(sh)")),
        "the sidecar runs under the wrapper, as its child"
    );
    // The wrapper is kept on a restart, and the old sidecar goes.
    sidecar = sidecar.restart();
    assert_dies(pid, "after a restart");
    let pid = sidecar.process_id().expect("the restarted sidecar's pid");
    // SIGTERM goes to the sidecar too, not only to the wrapper (which `unshare --fork` blocks).
    sidecar.terminate();
    assert_dies(pid, "after terminate");
    let sidecar = sidecar.restart();
    let pid = sidecar.process_id().expect("the restarted sidecar's pid");
    drop(sidecar);
    assert_dies(pid, "after drop");
}

/// A sidecar started from a thread that ends before it is used still runs (it is not tied to
/// the lifetime of the thread that started it).
#[test]
fn a_sidecar_started_from_a_short_lived_thread_keeps_running() {
    let sidecar = std::thread::spawn(|| Sidecar::start(""))
        .join()
        .expect("start from a thread");
    std::thread::sleep(Duration::from_millis(300));
    let pid = sidecar.process_id().expect("the sidecar's pid");
    assert!(!dead(pid));
    sidecar.metrics();
}

#[test]
fn a_test_binary_that_dies_takes_its_sidecar_with_it() {
    // src/bin/die_with_sidecar.rs, given the sidecar binary this test would use.
    let sidecar_binary = monasca_e2e::workspace_binary("monasca-sidecar", "monasca-sidecar");
    let mut helper = Command::new(env!("CARGO_BIN_EXE_e2e-die-with-sidecar"))
        .env("MONASCA_SIDECAR_BIN", sidecar_binary)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the helper");
    let stdout = helper.stdout.take().expect("stdout");
    let (mut dir, mut pid) = (None, None);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(d) = line.strip_prefix("sidecar dir ") {
            dir = Some(std::path::PathBuf::from(d.trim()));
        } else if let Some(p) = line.strip_prefix("sidecar pid ") {
            pid = p.trim().parse::<u32>().ok();
        }
    }
    let status = helper.wait().expect("wait for the helper");
    let pid = pid.unwrap_or_else(|| panic!("the helper printed no pid ({status})"));
    assert!(!status.success(), "the helper kills itself ({status})");
    assert_dies(pid, "after the test binary was SIGKILLed");
    // Nothing dropped it: the directory is ours to remove.
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}
