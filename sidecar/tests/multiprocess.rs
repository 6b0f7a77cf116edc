//! The multiprocess reader against the real prometheus_client (PyPI): the sidecar's output
//! must equal MultiProcessCollector's for the same directory, for every metric type and
//! every gauge mode, while workers live, after they die and are compacted (the collector then
//! reads the sidecar's `*_retired.db` files), and without compaction.

mod multiprocess_support;

use multiprocess_support::*;
use std::process::Command;
use std::time::Duration;

fn config(dir: &std::path::Path, compact: bool) -> String {
    format!(
        "multiprocessDir: {:?}\nmultiprocessCompact: {compact}\nstaleAfter: 60s\n",
        dir.display().to_string()
    )
}

/// Counter-like series (their values never change when workers die).
fn cumulative(text: &str) -> std::collections::BTreeMap<String, f64> {
    samples(text)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("mp_gauge_"))
        .collect()
}

#[test]
fn matches_multiprocess_collector_live_then_compacted() {
    live_then_compacted("collector", &|| python(PY_MODULES));
}

/// The same with prometheus_client 0.16, whose files have no timestamps: the sidecar reads
/// them, and writes its retired files so that 0.16's own collector reads them too.
#[test]
fn prometheus_client_0_16_files_match_its_collector_live_then_compacted() {
    live_then_compacted("collector-0.16", &legacy_client_python);
}

/// Workers and MultiProcessCollector both run under `python()`.
fn live_then_compacted(name: &str, python: &dyn Fn() -> Command) {
    let dir = scratch(name);
    let mut fleet = Fleet::start_with(python(), &dir, 6);
    let sidecar = InProcess::start(&config(&dir, true));
    let collector = |dir: &std::path::Path, dead: &[u32]| collector_with(python(), dir, dead);

    // 1. Every worker alive: exactly the collector's output.
    let live = sidecar.metrics();
    let reference = collector(&dir, &[]);
    assert!(
        live.contains("mp_requests_total{code=\"200\",method=\"GET\"} 21"),
        "the workers' counters are read:\n{live}"
    );
    assert_same(&live, &reference, "all workers alive");
    assert!(
        live.contains("mp_gauge_all{kind=\"a\",pid=\""),
        "all mode keeps the pid label"
    );
    assert!(
        self_metric(
            &live,
            "monasca_sidecar_multiprocess_liveness{method=\"proc\"}"
        ) == Some(1.0),
        "the fleet's environment proves a shared pid namespace:\n{live}"
    );

    // 2. Three workers die. The sidecar folds them into its retired files and deletes their
    // files; the collector, reading the compacted directory, must agree with the sidecar.
    for i in 0..3 {
        fleet.kill(i);
    }
    let dead: Vec<u32> = fleet.pids[..3].to_vec();
    assert!(
        wait_until(Duration::from_secs(15), || {
            sidecar.app.refresh();
            dead.iter().all(|p| !has_pid_files(&dir, *p))
        }),
        "dead workers' files were not compacted: {:?}",
        db_files(&dir)
    );
    let files = db_files(&dir);
    for own in [
        "counter_retired.db",
        "histogram_retired.db",
        "summary_retired.db",
    ] {
        assert!(files.contains(&own.to_string()), "{own} missing: {files:?}");
    }
    let after = sidecar.metrics();
    assert_same(&after, &collector(&dir, &[]), "after compaction");
    // Nothing counted was lost or counted twice.
    let before = cumulative(&live);
    let now = cumulative(&after);
    assert_eq!(before.len(), now.len());
    for (k, v) in &before {
        assert!(close(now[k], *v), "{k}: {v} before, {} after", now[k]);
    }
    // Live gauges of the dead are gone; all-mode gauges of the dead went with their files.
    for p in &dead {
        assert!(
            !after.contains(&format!("pid=\"{p}\"")),
            "pid {p} still shown"
        );
    }
    assert_eq!(
        self_metric(&after, "monasca_sidecar_multiprocess_folded_workers_total"),
        Some(3.0)
    );

    // 3. A survivor works again: still the collector's answer.
    fleet.work(4);
    assert_same(&sidecar.metrics(), &collector(&dir, &[]), "after more work");

    // 4. A restarted sidecar (new App over the same directory) shows the same.
    let expected = sidecar.metrics();
    sidecar.stop();
    let restarted = InProcess::start(&config(&dir, true));
    assert_same(&restarted.metrics(), &expected, "after a sidecar restart");
    restarted.stop();
    fleet.py.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_compaction_matches_collector_after_mark_process_dead() {
    let dir = scratch("nocompact");
    let mut fleet = Fleet::start(&dir, 4);
    let sidecar = InProcess::start(&config(&dir, false));
    assert_same(&sidecar.metrics(), &collector(&dir, &[]), "all alive");
    fleet.kill(0);
    fleet.kill(1);
    let dead = fleet.pids[..2].to_vec();
    // The sidecar forgets live gauges of dead workers by itself; the collector needs
    // mark_process_dead (run on a copy, so the directory stays as the app left it).
    let copy = snapshot(&dir);
    let reference = collector(&copy, &dead);
    wait_until(Duration::from_secs(10), || {
        same(&sidecar.metrics(), &reference)
    });
    assert_same(
        &sidecar.metrics(),
        &reference,
        "dead workers, no compaction",
    );
    // Read-only: every file is still there and the sidecar wrote nothing.
    for p in &dead {
        assert!(has_pid_files(&dir, *p), "pid {p}'s files were deleted");
    }
    assert!(
        db_files(&dir).iter().all(|f| !f.contains("retired")),
        "{:?}",
        db_files(&dir)
    );
    sidecar.stop();
    fleet.py.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&copy);
}

#[test]
fn mtime_liveness_from_config_never_deletes() {
    let dir = scratch("mtime-policy");
    let mut fleet = Fleet::start(&dir, 2);
    let sidecar = InProcess::start(&format!(
        "{}multiprocessLiveness: mtime\n",
        config(&dir, true)
    ));
    let before = sidecar.metrics();
    assert_eq!(
        self_metric(
            &before,
            "monasca_sidecar_multiprocess_liveness{method=\"mtime\"}"
        ),
        Some(1.0),
        "{before}"
    );
    fleet.kill(0);
    let dead = fleet.pids[0];
    // Several scan rounds: the dead worker's files stay (mtime can never prove death), and
    // its counters still count.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        let now = sidecar.metrics();
        assert!(
            has_pid_files(&dir, dead),
            "files deleted under mtime liveness"
        );
        assert_eq!(cumulative(&now), cumulative(&before));
    }
    sidecar.stop();
    fleet.py.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
