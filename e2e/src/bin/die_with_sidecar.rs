//! A helper of `tests/sidecar_lifetime.rs`: starts a sidecar through the harness, prints its
//! directory and pid, and SIGKILLs itself, as a test timeout would (no unwinding, no drop).
//! The test then checks the sidecar died with it.

use monasca_e2e::sidecar::Sidecar;

fn main() {
    let sidecar = Sidecar::start("");
    println!("sidecar dir {}", sidecar.dir.display());
    match sidecar.process_id() {
        Some(pid) => println!("sidecar pid {pid}"),
        None => eprintln!("the sidecar has no pid"),
    }
    // SAFETY: kill(2) on this process's own pid.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILLed");
}
