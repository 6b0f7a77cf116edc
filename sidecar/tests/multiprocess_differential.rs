//! Differential test: real prometheus_client worker processes doing random work (negative
//! observations, every gauge mode, workers SIGKILLed and replaced) against
//! MultiProcessCollector reading the same directory, sample by sample, with compaction on.
//! After every step the directory settles (dead workers folded into the retired files and
//! their files deleted) and the two must agree; counters, buckets and counts never go down.

mod multiprocess_support;

use multiprocess_support::*;
use std::collections::BTreeMap;
use std::time::Duration;

const MODES: [&str; 10] = [
    "all",
    "liveall",
    "min",
    "livemin",
    "max",
    "livemax",
    "sum",
    "livesum",
    "mostrecent",
    "livemostrecent",
];
const STEPS: usize = 30;

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn config(dir: &std::path::Path) -> String {
    format!(
        "multiprocessDir: {:?}\nmultiprocessCompact: true\nstaleAfter: 60s\n",
        dir.display().to_string()
    )
}

fn counter_like(text: &str) -> BTreeMap<String, f64> {
    samples(text)
        .into_iter()
        .filter(|(k, _)| {
            let name = k.split('{').next().unwrap_or_default();
            name.ends_with("_total") || name.ends_with("_bucket") || name.ends_with("_count")
        })
        .collect()
}

fn run(seed: u64) {
    let mut rng = Rng(seed.max(1));
    let dir = scratch(&format!("differential-{seed}"));
    let mut workers: Vec<PyProcess> = (0..3)
        .map(|_| PyProcess::start("mp_driver.py", &dir, &[]))
        .collect();
    let mut dead: Vec<u32> = Vec::new();
    let sidecar = InProcess::start(&config(&dir));
    let mut previous = BTreeMap::new();
    for step in 0..STEPS {
        let what = rng.below(10);
        let i = rng.below(workers.len());
        let action = match what {
            0 if workers.len() > 1 => {
                let mut w = workers.swap_remove(i);
                dead.push(w.pid());
                w.kill();
                "kill".to_string()
            }
            1 => {
                workers.push(PyProcess::start("mp_driver.py", &dir, &[]));
                "spawn".to_string()
            }
            2 | 3 => {
                let v = [0.2, 0.7, 3.0, -1.5, -40.0][rng.below(5)];
                let cmd = if what == 2 {
                    format!("observe lat {v}")
                } else {
                    format!("summary size {v}")
                };
                workers[i].command(&cmd);
                cmd
            }
            4..=6 => {
                let mode = MODES[rng.below(MODES.len())];
                let v = rng.below(20) as f64 - 5.0;
                let cmd = format!("set g_{mode} {mode} {v}");
                workers[i].command(&cmd);
                cmd
            }
            _ => {
                let n = 1 + rng.below(5);
                let w = ["a", "b", "c"][rng.below(3)];
                let cmd = format!("inc jobs {n} {w}");
                workers[i].command(&cmd);
                cmd
            }
        };
        // Settle: every dead worker folded and its files gone.
        let settled = wait_until(Duration::from_secs(30), || {
            sidecar.app.refresh();
            dead.iter().all(|p| !has_pid_files(&dir, *p))
        });
        assert!(
            settled,
            "seed {seed} step {step} ({action}): files of dead workers left: {:?}",
            db_files(&dir)
        );
        let ours = sidecar.metrics();
        let reference = collector(&dir, &dead);
        assert_same(
            &ours,
            &reference,
            &format!("seed {seed} step {step} after {action}"),
        );
        let now = counter_like(&ours);
        for (k, before) in &previous {
            let after = now.get(k).copied().unwrap_or(0.0);
            assert!(
                after >= *before,
                "seed {seed} step {step} ({action}): {k} went down from {before} to {after}"
            );
        }
        previous = now;
    }
    sidecar.stop();
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn random_work_matches_multiprocess_collector_with_compaction() {
    for seed in [0x5eed_0001, 0x5eed_0002] {
        run(seed);
    }
}
