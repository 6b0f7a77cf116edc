//! Corrupt, truncated and growing files next to real prometheus_client workers: a bad file is
//! skipped (logged once, counted once), keeps its last good values, never costs another
//! worker's data and never crashes the reader; files that double in size are read whole.

mod multiprocess_support;

use multiprocess_support::*;
use std::path::Path;
use std::time::Duration;

fn config(dir: &Path) -> String {
    format!(
        "multiprocessDir: {:?}\nstaleAfter: 60s\n",
        dir.display().to_string()
    )
}

fn corrupt_count(text: &str, reason: &str) -> f64 {
    self_metric(
        text,
        &format!("monasca_sidecar_multiprocess_corrupt_files_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// Pids above any `pid_max`: never alive.
const FAKE: u64 = 99_999_990;

#[test]
fn corrupt_and_truncated_files_are_skipped_without_losing_other_data() {
    let dir = scratch("corrupt");
    let mut fleet = Fleet::start(&dir, 2);
    let sidecar = InProcess::start(&config(&dir));
    let baseline = sidecar.metrics();
    assert_same(&baseline, &collector(&dir, &[]), "baseline");
    let real = std::fs::read(dir.join(format!("counter_{}.db", fleet.pids[0]))).expect("read");
    let used = i32::from_ne_bytes(real[..4].try_into().expect("4 bytes")) as usize;
    assert!(used > 200, "the worker wrote entries");

    // Broken files of dead (fake) pids, each broken differently.
    // Written whole (temp file, then rename), as no dead process writes: a reader must never
    // see a half-written fake file (it would be final, its pid being dead).
    let write = |name: String, bytes: &[u8]| {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    };
    write(format!("counter_{}.db", FAKE + 1), &[0xff; 100]); // used = -1
    write(format!("counter_{}.db", FAKE + 2), &real[..used / 2]); // truncated copy
    let mut bad_key = real[..used].to_vec();
    bad_key[13] = 0xff; // inside the first key: not UTF-8
    write(format!("histogram_{}.db", FAKE + 3), &bad_key);
    let mut bad_used = real[..used].to_vec();
    bad_used[..4].copy_from_slice(&3i32.to_ne_bytes());
    write(format!("summary_{}.db", FAKE + 4), &bad_used);
    write(format!("gauge_all_{}.db", FAKE + 5), b""); // just created: empty, not corrupt
    // Valid layout, but the key is not JSON: that entry alone is left out.
    let mut not_json = Vec::new();
    not_json.extend_from_slice(&[0u8; 8]);
    let key = b"[\"x\", \"x_total\", {}, \"h\"";
    not_json.extend_from_slice(&(key.len() as i32).to_ne_bytes());
    not_json.extend_from_slice(key);
    not_json.extend(std::iter::repeat_n(b' ', 8 - (key.len() + 4) % 8));
    not_json.extend_from_slice(&5.0f64.to_ne_bytes());
    not_json.extend_from_slice(&0.0f64.to_ne_bytes());
    let len = not_json.len() as i32;
    not_json[..4].copy_from_slice(&len.to_ne_bytes());
    write(format!("counter_{}.db", FAKE + 6), &not_json);
    write("gauge_bogus_1.db".to_string(), b"not ours");

    // Several scans: each broken file is counted once, nothing else changes.
    for _ in 0..5 {
        assert_same(&sidecar.metrics(), &baseline, "with broken files");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = sidecar.metrics();
    assert_eq!(corrupt_count(&text, "bad_header"), 2.0, "{text}");
    assert_eq!(corrupt_count(&text, "truncated"), 1.0, "{text}");
    assert_eq!(corrupt_count(&text, "bad_key"), 2.0, "{text}");
    // Unreadable files are never deleted (the sidecar cannot know what they held); a
    // readable file of a dead pid is folded and deleted as usual.
    for n in 1..=4 {
        assert!(has_pid_files(&dir, (FAKE + n) as u32), "fake {n} deleted");
    }
    assert!(
        !has_pid_files(&dir, (FAKE + 6) as u32),
        "readable dead file kept"
    );

    // A live worker's file goes bad (its `used` now points past the end): its last good
    // values stay, the other worker goes on.
    let path = dir.join(format!("counter_{}.db", fleet.pids[0]));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.write_all_at(&(1i32 << 30).to_ne_bytes(), 0)
            .expect("corrupt used");
    }
    fleet.work(0);
    fleet.work(1);
    let get = "mp_requests_total{code=\"200\",method=\"GET\"}";
    let before = value(&baseline, get).expect("series");
    assert!(wait_until(Duration::from_secs(10), || {
        value(&sidecar.metrics(), get) == Some(before + 2.0)
    }));
    let text = sidecar.metrics();
    assert_eq!(corrupt_count(&text, "too_large"), 1.0, "{text}");
    // Worker 0's other files (gauges, histograms) are unaffected.
    assert_eq!(
        value(&text, "mp_latency_seconds_count{route=\"/x\"}"),
        value(&baseline, "mp_latency_seconds_count{route=\"/x\"}").map(|v| v + 8.0)
    );

    sidecar.stop();
    fleet.py.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_that_double_in_size_are_read_whole() {
    let dir = scratch("grow");
    let mut fleet = Fleet::start(&dir, 2);
    let sidecar = InProcess::start(&config(&dir));
    assert_same(&sidecar.metrics(), &collector(&dir, &[]), "before growth");
    let path = dir.join(format!("counter_{}.db", fleet.pids[1]));
    let small = std::fs::metadata(&path).expect("stat").len();
    fleet.grow(1);
    let big = std::fs::metadata(&path).expect("stat").len();
    assert!(big >= 4 * small, "file grew from {small} to {big} bytes");
    let text = sidecar.metrics();
    let grown = samples(&text)
        .iter()
        .filter(|(k, _)| k.starts_with("mp_grow_total"))
        .count();
    assert_eq!(grown, 2000);
    assert_eq!(
        value(&text, "mp_grow_total{series=\"series-01999\"}"),
        Some(1999.0)
    );
    assert_same(&text, &collector(&dir, &[]), "after growth");
    // Growth while the worker dies: folded whole.
    fleet.kill(1);
    assert!(wait_until(Duration::from_secs(10), || !has_pid_files(
        &dir,
        fleet.pids[1]
    )));
    let after = sidecar.metrics();
    assert_eq!(
        value(&after, "mp_grow_total{series=\"series-01999\"}"),
        Some(1999.0)
    );
    assert_same(
        &after,
        &collector(&dir, &[]),
        "after folding the grown file",
    );
    sidecar.stop();
    fleet.py.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
