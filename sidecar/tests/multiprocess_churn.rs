//! Churn: 1,000 short-lived real prometheus_client workers (forked, each with its own pid and
//! files, like gunicorn's `max_requests`). Afterwards the directory holds only live workers'
//! files plus the sidecar's own, every total equals the work done, nothing ever went down,
//! and a sidecar restart in the middle changes nothing.
//!
//! Real processes rather than synthetic files: the pids are real (so `/proc` liveness is
//! exercised), the files are written by the real client, and a fork per worker is cheap
//! enough (~1,000 in a few seconds).

mod multiprocess_support;

use multiprocess_support::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const BATCHES: usize = 10;
const PER_BATCH: usize = 100;
const LIVE: usize = 3;

const REQUESTS: &str = "churn_requests_total{w=\"x\"}";
const LAT_COUNT: &str = "churn_latency_seconds_count";
const LAT_SUM: &str = "churn_latency_seconds_sum";
const LAT_INF: &str = "churn_latency_seconds_bucket{le=\"inf\"}";
const SIZE_COUNT: &str = "churn_size_bytes_count";
const SIZE_SUM: &str = "churn_size_bytes_sum";
const EVER: &str = "churn_ever";
const LIVE_GAUGE: &str = "churn_live";

fn config(dir: &Path) -> String {
    format!(
        "multiprocessDir: {:?}\nstaleAfter: 60s\n",
        dir.display().to_string()
    )
}

/// The pids that own files in `dir` (the sidecar's own files excluded).
fn file_pids(dir: &Path) -> BTreeSet<String> {
    db_files(dir)
        .iter()
        .filter_map(|f| {
            f.strip_suffix(".db")?
                .rsplit('_')
                .next()
                .map(str::to_string)
        })
        .filter(|p| p != "retired")
        .collect()
}

/// Every cumulative value we track, in one read.
fn totals(text: &str) -> [f64; 6] {
    let s = samples(text);
    let get = |k: &str| s.get(k).copied().unwrap_or(0.0);
    [
        get(REQUESTS),
        get(LAT_COUNT),
        get(LAT_SUM),
        get(LAT_INF),
        get(SIZE_COUNT),
        get(SIZE_SUM),
    ]
}

fn expected(workers: usize) -> [f64; 6] {
    let w = workers as f64;
    [w, w, 0.25 * w, w, w, 3.0 * w]
}

#[test]
fn thousand_short_lived_workers_keep_totals_and_a_bounded_directory() {
    let started = Instant::now();
    let dir = scratch("churn");
    let mut churn = PyProcess::start("mp_churn.py", &dir, &[]);
    let v: serde_json::Value = serde_json::from_str(&churn.first_line).expect("JSON first line");
    let parent = v["parent"].as_u64().expect("parent pid").to_string();
    let mut sidecar = InProcess::start(&config(&dir));
    let mut last = [0.0; 6];
    let check = |text: &str, last: &mut [f64; 6], when: &str| {
        let now = totals(text);
        for (i, (a, b)) in now.iter().zip(last.iter()).enumerate() {
            assert!(
                a >= b,
                "{when}: value {i} went down from {b} to {a}\n{text}"
            );
        }
        *last = now;
    };

    for batch in 1..=BATCHES {
        churn.command(&format!("batch {PER_BATCH}"));
        check(&sidecar.metrics(), &mut last, "right after a batch");
        // Settle: every worker of the batch is dead, folded and its files deleted.
        let settled = wait_until(Duration::from_secs(30), || {
            let text = sidecar.metrics();
            check(&text, &mut last, "while folding");
            file_pids(&dir) == BTreeSet::from([parent.clone()])
        });
        assert!(settled, "batch {batch}: files left {:?}", db_files(&dir));
        let text = sidecar.metrics();
        check(&text, &mut last, "settled");
        assert_eq!(
            totals(&text),
            expected(batch * PER_BATCH),
            "after batch {batch}\n{text}"
        );
        assert_eq!(
            samples(&text).get(EVER),
            Some(&((batch * PER_BATCH) as f64))
        );

        if batch == BATCHES / 2 {
            // Restart: a new App over the same directory, as after a sidecar crash.
            let before = samples(&text);
            sidecar.stop();
            sidecar = InProcess::start(&config(&dir));
            let after = sidecar.metrics();
            assert_same(&after, &text, "after restart");
            assert_eq!(samples(&after), before);
            check(&after, &mut last, "after restart");
        }
    }

    // A few workers stay alive: their files stay, their live gauge counts them.
    let answer = churn.ask(&format!("live {LIVE}"));
    let live: BTreeSet<String> = answer.split_whitespace().map(str::to_string).collect();
    assert_eq!(live.len(), LIVE);
    let total = BATCHES * PER_BATCH + LIVE;
    assert!(wait_until(Duration::from_secs(10), || {
        totals(&sidecar.metrics()) == expected(total)
    }));
    let text = sidecar.metrics();
    check(&text, &mut last, "with live workers");
    assert_eq!(totals(&text), expected(total), "{text}");
    assert_eq!(
        samples(&text).get(LIVE_GAUGE),
        Some(&(LIVE as f64)),
        "{text}"
    );
    assert_eq!(samples(&text).get(EVER), Some(&(total as f64)));

    // The directory: live workers' files (and the parent's) plus the sidecar's own.
    let mut allowed = live.clone();
    allowed.insert(parent.clone());
    assert_eq!(file_pids(&dir), allowed, "{:?}", db_files(&dir));
    let own: Vec<String> = db_files(&dir)
        .into_iter()
        .filter(|f| f.contains("retired"))
        .collect();
    assert_eq!(
        own,
        [
            "counter_retired.db",
            "gauge_sum_retired.db",
            "histogram_retired.db",
            "summary_retired.db"
        ]
    );
    assert!(
        db_files(&dir).len() <= 4 + 5 * (LIVE + 1),
        "{:?}",
        db_files(&dir)
    );
    // MultiProcessCollector agrees with the sidecar on the compacted directory.
    assert_same(
        &text,
        &collector(&dir, &[]),
        "collector on the compacted directory",
    );
    assert_eq!(
        self_metric(&text, "monasca_sidecar_multiprocess_folded_workers_total").map(|v| v > 0.0),
        Some(true)
    );

    sidecar.stop();
    churn.finish();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "took {:?}",
        started.elapsed()
    );
}
