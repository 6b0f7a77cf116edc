//! Multiprocess reader benchmarks, and the comparison with prometheus_client's
//! MultiProcessCollector on the same directories.
//!
//! Run: `cargo bench -p monasca-sidecar --bench multiprocess`. Criterion times the reader;
//! afterwards a table compares "scan + render /metrics" with the collector's
//! `generate_latest` (best of 3, `tests/py/mp_collect.py --time`) when python3 with
//! prometheus_client is available.
//!
//! Directories (written once under the target dir, byte-identical to the client's files,
//! preallocated like `MmapedDict`):
//! - `live64x1000`: 64 workers x 1,000 series (780 counter series, 20 histograms with 15
//!   buckets, 200 `livesum` gauges), liveness by file changes (every worker live);
//! - `dead2000`: 2,000 files of 500 dead pids (counter, histogram, `all` gauge, summary),
//!   read without compaction (what the collector does on every scrape), and compacted once.

use criterion::{BatchSize, Criterion, criterion_group};
use monasca_config::SidecarConfig;
use monasca_sidecar::app::App;
use monasca_sidecar::expose::{Format, render};
use monasca_sidecar::sources::multiprocess::format::{
    encode_entry, encode_key, entries, finish_file, start_file,
};
use monasca_sidecar::sources::multiprocess::{LivenessPolicy, Options, Reader};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIVE_WORKERS: usize = 64;
const DEAD_PIDS: usize = 500;
const BUCKETS: [&str; 15] = [
    "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0",
    "7.5", "10.0", "+Inf",
];

fn bench_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mp-bench")
}

/// Writes a file like `MmapedDict`: entries, `used`, then zeros up to a power-of-two
/// capacity of at least 64 KiB.
fn write_db(path: &Path, entries: &[(String, f64, f64)]) {
    let mut out = Vec::new();
    start_file(&mut out);
    for (k, v, t) in entries {
        encode_entry(&mut out, k, *v, *t);
    }
    assert!(finish_file(&mut out));
    let mut capacity = 1 << 16;
    while capacity < out.len() {
        capacity *= 2;
    }
    out.resize(capacity, 0);
    std::fs::write(path, out).expect("write bench file");
}

fn histogram(metric: &str, labels: &[(&str, &str)], seed: f64, out: &mut Vec<(String, f64, f64)>) {
    out.push((
        encode_key(metric, &format!("{metric}_sum"), labels, "Latency."),
        seed * 1.5,
        0.0,
    ));
    for (i, le) in BUCKETS.iter().enumerate() {
        let mut l: Vec<(&str, &str)> = labels.to_vec();
        l.push(("le", le));
        l.sort();
        out.push((
            encode_key(metric, &format!("{metric}_bucket"), &l, "Latency."),
            seed + i as f64,
            0.0,
        ));
    }
}

fn make_live(dir: &Path) {
    if dir.join("done").exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    for w in 0..LIVE_WORKERS {
        let pid = 100_000 + w;
        let mut counters = Vec::new();
        for e in 0..78 {
            for c in 0..10 {
                let endpoint = format!("/api/v1/endpoint{e}");
                let code = format!("{}", 200 + c);
                counters.push((
                    encode_key(
                        "app_requests",
                        "app_requests_total",
                        &[("code", &code), ("endpoint", &endpoint)],
                        "Requests served.",
                    ),
                    (w * 1000 + e * 10 + c) as f64,
                    0.0,
                ));
            }
        }
        write_db(&dir.join(format!("counter_{pid}.db")), &counters);
        let mut hist = Vec::new();
        for e in 0..20 {
            let endpoint = format!("/api/v1/endpoint{e}");
            histogram(
                "app_latency_seconds",
                &[("endpoint", &endpoint)],
                (w + e) as f64,
                &mut hist,
            );
        }
        write_db(&dir.join(format!("histogram_{pid}.db")), &hist);
        let gauges: Vec<_> = (0..200)
            .map(|g| {
                let slot = format!("slot{g}");
                (
                    encode_key(
                        "app_inflight",
                        "app_inflight",
                        &[("slot", &slot)],
                        "In flight.",
                    ),
                    (g % 7) as f64,
                    0.0,
                )
            })
            .collect();
        write_db(&dir.join(format!("gauge_livesum_{pid}.db")), &gauges);
    }
    std::fs::write(dir.join("done"), b"").expect("marker");
}

fn make_dead(dir: &Path) {
    if dir.join("done").exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    for p in 0..DEAD_PIDS {
        // Pids above any pid_max: never alive.
        let pid = 90_000_000 + p;
        let counters: Vec<_> = (0..20)
            .map(|c| {
                let view = format!("view{c}");
                (
                    encode_key("web_hits", "web_hits_total", &[("view", &view)], "Hits."),
                    (p + c) as f64,
                    0.0,
                )
            })
            .collect();
        write_db(&dir.join(format!("counter_{pid}.db")), &counters);
        let mut hist = Vec::new();
        for v in 0..5 {
            let view = format!("view{v}");
            histogram("web_seconds", &[("view", &view)], p as f64, &mut hist);
        }
        write_db(&dir.join(format!("histogram_{pid}.db")), &hist);
        let gauges: Vec<_> = (0..5)
            .map(|g| {
                let q = format!("q{g}");
                (
                    encode_key("web_queue", "web_queue", &[("queue", &q)], "Queue."),
                    g as f64,
                    0.0,
                )
            })
            .collect();
        write_db(&dir.join(format!("gauge_all_{pid}.db")), &gauges);
        let mut summary = Vec::new();
        for s in 0..5 {
            let view = format!("view{s}");
            let l = [("view", view.as_str())];
            summary.push((
                encode_key("web_bytes", "web_bytes_count", &l, "Bytes."),
                3.0,
                0.0,
            ));
            summary.push((
                encode_key("web_bytes", "web_bytes_sum", &l, "Bytes."),
                300.0,
                0.0,
            ));
        }
        write_db(&dir.join(format!("summary_{pid}.db")), &summary);
    }
    // Dead for a day: stale by their mtime too.
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        if let Ok(f) = std::fs::File::options().write(true).open(e.path()) {
            let _ = f.set_modified(day_ago);
        }
    }
    std::fs::write(dir.join("done"), b"").expect("marker");
}

/// An app reading `dir`. The live directory's files are as old as the benchmark, so its
/// workers are kept live with a long `staleAfter`; the dead directory's are a day old.
fn app(dir: &Path, compact: bool) -> Arc<App> {
    let stale = if dir.to_string_lossy().contains("dead") {
        "60s"
    } else {
        "100000h"
    };
    let yaml = format!(
        "multiprocessDir: {:?}\nmultiprocessCompact: {compact}\nstaleAfter: {stale}\nlimits: {{maxSeriesPerWorker: 1000000}}\n",
        dir.display().to_string()
    );
    App::new(SidecarConfig::from_yaml(&yaml).expect("config"))
}

fn reader(policy: LivenessPolicy) -> Reader {
    Reader::new(Options {
        liveness: policy,
        interval: Duration::from_secs(3600),
        env_dir: None,
    })
}

fn render_text(app: &App) -> usize {
    let mut out = Vec::with_capacity(1 << 20);
    let store = app.store.read();
    render(&store, Format::Text, app.now().mono, &[], &mut out);
    out.len()
}

/// Copies every `*.db` file of `from` into a fresh `to`.
fn fresh_copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        if e.file_name().to_string_lossy().ends_with(".db") {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// More than the last-level cache of the machines we bench on.
const EVICT_BYTES: usize = 64 << 20;

/// Writes every cache line of `buffer`: what the reader held in the CPU caches is evicted,
/// as another process's work between two scrapes does.
fn evict_caches(buffer: &mut [u64]) {
    for (i, word) in buffer.iter_mut().enumerate().step_by(8) {
        *word = word.wrapping_add(i as u64);
    }
    black_box(buffer);
}

/// Worker `w`'s counter file, opened for reading and writing.
fn open_counter_file(dir: &Path, w: usize) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(format!("counter_{}.db", 100_000 + w)))
        .expect("open")
}

/// Bumps the first `n` counter values in every worker's counter file (as 64 busy workers
/// would between two scans).
fn touch_all_workers(dir: &Path, round: u64, n: usize) {
    for w in 0..LIVE_WORKERS {
        let f = open_counter_file(dir, w);
        let mut pos = 8u64;
        for _ in 0..n {
            let mut len = [0u8; 4];
            f.read_exact_at(&mut len, pos).expect("read");
            let k = i32::from_ne_bytes(len) as u64;
            let value_at = pos + 4 + k + (8 - (k + 4) % 8);
            f.write_all_at(&(1e9 + round as f64).to_ne_bytes(), value_at)
                .expect("write");
            pos = value_at + 16;
        }
    }
}

/// Every worker's counter file mapped shared and writable, as prometheus_client's
/// `MmapedDict` maps it: values written through it land in page-cache pages, and a write to a
/// page already dirty leaves the file's ctime alone, so the reader checks such files by their
/// value slots alone (the steady state of a live app between two write-backs).
struct WriterMaps {
    files: Vec<(*mut u8, usize, Vec<usize>)>,
}

impl WriterMaps {
    fn open(dir: &Path) -> WriterMaps {
        let files = (0..LIVE_WORKERS)
            .map(|w| {
                let path = dir.join(format!("counter_{}.db", 100_000 + w));
                let f = open_counter_file(dir, w);
                let len = f.metadata().expect("stat").len() as usize;
                // SAFETY: a fresh shared mapping of a file this bench owns, unmapped in `drop`.
                let ptr = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        std::os::fd::AsRawFd::as_raw_fd(&f),
                        0,
                    )
                };
                assert_ne!(ptr, libc::MAP_FAILED, "mmap {}", path.display());
                let bytes = std::fs::read(&path).expect("read");
                let values = entries(&bytes)
                    .expect("header")
                    .map(|e| e.expect("entry").value_offset)
                    .collect();
                (ptr.cast::<u8>(), len, values)
            })
            .collect();
        WriterMaps { files }
    }

    /// Writes `share` of every worker's counter values through the mappings, a different
    /// slice each round (as `bench/multiprocess.py`'s updater does).
    fn touch(&self, round: u64, share: f64) {
        for (ptr, len, values) in &self.files {
            let n = ((values.len() as f64 * share) as usize).max(1);
            let start = (round as usize * n) % values.len();
            for j in 0..n {
                let at = values[(start + j) % values.len()];
                assert!(at + 8 <= *len);
                // SAFETY: inside the mapping (checked above), which lives as long as `self`.
                unsafe {
                    ptr.add(at)
                        .cast::<[u8; 8]>()
                        .write_unaligned((1e9 + round as f64).to_ne_bytes())
                };
            }
        }
    }
}

impl Drop for WriterMaps {
    fn drop(&mut self) {
        for (ptr, len, _) in &self.files {
            // SAFETY: mapped in `open` with this length, unmapped once.
            unsafe { libc::munmap(ptr.cast(), *len) };
        }
    }
}

fn benches(c: &mut Criterion) {
    let root = bench_root();
    let live = root.join("live64x1000");
    let dead = root.join("dead2000-old");
    make_live(&live);
    make_dead(&dead);

    let mut g = c.benchmark_group("multiprocess");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("cold_scan/64x1000", |b| {
        b.iter_batched(
            || (app(&live, false), reader(LivenessPolicy::Mtime)),
            |(app, mut r)| {
                r.scan(&app);
                black_box(app)
            },
            BatchSize::PerIteration,
        )
    });

    {
        let app = app(&live, false);
        let mut r = reader(LivenessPolicy::Mtime);
        r.scan(&app);
        g.bench_function("rescan_unchanged/64x1000", |b| b.iter(|| r.scan(&app)));
        g.bench_function("render/64x1000", |b| {
            b.iter(|| black_box(render_text(&app)))
        });
    }

    {
        let work = root.join("live-work");
        fresh_copy(&live, &work);
        let app = app(&work, false);
        let mut r = reader(LivenessPolicy::Mtime);
        r.scan(&app);
        let mut round = 0u64;
        g.bench_function("rescan_1_series_changed_per_worker/64x1000", |b| {
            b.iter(|| {
                round += 1;
                touch_all_workers(&work, round, 1);
                r.scan(&app)
            })
        });
        g.bench_function("rescan_10pct_series_changed_per_worker/64x1000", |b| {
            b.iter(|| {
                round += 1;
                touch_all_workers(&work, round, 100);
                r.scan(&app)
            })
        });
        // The scrape a live app gets: values changed since the last one and the CPU caches
        // taken by other work in between (bench/multiprocess.py's changing row, in process).
        let mut other_work = vec![0u64; EVICT_BYTES / 8];
        g.bench_function("rescan_and_render_10pct_changed_cold/64x1000", |b| {
            b.iter_batched(
                || {
                    round += 1;
                    touch_all_workers(&work, round, 100);
                    evict_caches(&mut other_work);
                },
                |()| {
                    r.scan(&app);
                    render_text(&app)
                },
                BatchSize::PerIteration,
            )
        });
        // The same, with the values written through a shared mapping, as prometheus_client
        // writes them: the pages stay dirty, the ctime stands, and only value slots are read.
        let writer = WriterMaps::open(&work);
        g.bench_function(
            "rescan_and_render_10pct_changed_in_place_cold/64x1000",
            |b| {
                b.iter_batched(
                    || {
                        round += 1;
                        writer.touch(round, 0.1);
                        evict_caches(&mut other_work);
                    },
                    |()| {
                        r.scan(&app);
                        render_text(&app)
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }

    g.bench_function("cold_scan/2000_dead_files", |b| {
        b.iter_batched(
            || (app(&dead, false), reader(LivenessPolicy::Mtime)),
            |(app, mut r)| {
                r.scan(&app);
                black_box(app)
            },
            BatchSize::PerIteration,
        )
    });

    {
        let app = app(&dead, false);
        let mut r = reader(LivenessPolicy::Proc);
        r.scan(&app);
        g.bench_function("rescan_unchanged_no_compaction/2000_dead_files", |b| {
            b.iter(|| r.scan(&app))
        });
    }

    let work = root.join("dead-work");
    g.bench_function("compact/2000_dead_files", |b| {
        b.iter_batched(
            || {
                fresh_copy(&dead, &work);
                (app(&work, true), reader(LivenessPolicy::Proc))
            },
            |(app, mut r)| {
                r.scan(&app);
                black_box(app)
            },
            BatchSize::PerIteration,
        )
    });

    {
        fresh_copy(&dead, &work);
        let app = app(&work, true);
        let mut r = reader(LivenessPolicy::Proc);
        r.scan(&app);
        g.bench_function("rescan_after_compaction/2000_dead_files", |b| {
            b.iter(|| r.scan(&app))
        });
    }
    g.finish();
}

criterion_group!(multiprocess, benches);

/// Best of `n` runs of `f`, in seconds.
fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// MultiProcessCollector's `generate_latest` on `dir`, best of 3, or None without python.
fn python_seconds(dir: &Path) -> Option<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/mp_collect.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg("--time")
        .env_remove("PROMETHEUS_MULTIPROC_DIR")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python collector failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn compare() {
    let root = bench_root();
    let live = root.join("live64x1000");
    let dead = root.join("dead2000-old");
    make_live(&live);
    make_dead(&dead);
    let cold = |dir: &Path, compact: bool, policy: LivenessPolicy, copy: bool| {
        (0..5)
            .map(|_| {
                // The copy (a fresh directory for compaction to delete) is not timed.
                let target = if copy {
                    let work = root.join("compare-work");
                    fresh_copy(dir, &work);
                    work
                } else {
                    dir.to_path_buf()
                };
                let app = app(&target, compact);
                let mut r = reader(policy);
                best_of(1, || {
                    r.scan(&app);
                    black_box(render_text(&app));
                })
            })
            .fold(f64::INFINITY, f64::min)
    };
    let steady = |dir: &Path, compact: bool, policy: LivenessPolicy| {
        let app = app(dir, compact);
        let mut r = reader(policy);
        r.scan(&app);
        best_of(20, || {
            r.scan(&app);
            black_box(render_text(&app));
        })
    };
    let busy = |changed: usize| {
        let work = root.join("compare-busy");
        fresh_copy(&live, &work);
        let app = app(&work, false);
        let mut r = reader(LivenessPolicy::Mtime);
        r.scan(&app);
        let mut round = 0;
        (0..20)
            .map(|_| {
                round += 1;
                touch_all_workers(&work, round, changed);
                best_of(1, || {
                    r.scan(&app);
                    black_box(render_text(&app));
                })
            })
            .fold(f64::INFINITY, f64::min)
    };
    let rows: Vec<(&str, &Path, f64)> = vec![
        (
            "64 live workers x 1,000 series, cold (first scan + render)",
            &live,
            cold(&live, false, LivenessPolicy::Mtime, false),
        ),
        (
            "64 live workers x 1,000 series, unchanged (rescan + render)",
            &live,
            steady(&live, false, LivenessPolicy::Mtime),
        ),
        (
            "64 live workers x 1,000 series, 1 series changed per worker (rescan + render)",
            &live,
            busy(1),
        ),
        (
            "64 live workers x 1,000 series, 100 series changed per worker (rescan + render)",
            &live,
            busy(100),
        ),
        (
            "2,000 dead-pid files, read without compaction (scan + render)",
            &dead,
            cold(&dead, false, LivenessPolicy::Mtime, false),
        ),
        (
            "2,000 dead-pid files, no compaction, /proc liveness, unchanged (rescan + render)",
            &dead,
            steady(&dead, false, LivenessPolicy::Proc),
        ),
        (
            "2,000 dead-pid files, no compaction, mtime liveness, unchanged (rescan + render)",
            &dead,
            steady(&dead, false, LivenessPolicy::Mtime),
        ),
        (
            "2,000 dead-pid files, first scan with compaction (fold + write + delete + render)",
            &dead,
            cold(&dead, true, LivenessPolicy::Proc, true),
        ),
        (
            "2,000 dead-pid files, after compaction (rescan + render)",
            &dead,
            {
                let work = root.join("compare-steady");
                fresh_copy(&dead, &work);
                steady(&work, true, LivenessPolicy::Proc)
            },
        ),
    ];
    println!("\nsidecar vs prometheus_client MultiProcessCollector (generate_latest, best of 3)");
    let mut python_cache: Vec<(PathBuf, Option<f64>)> = Vec::new();
    for (what, dir, sidecar) in rows {
        let py = match python_cache.iter().find(|(d, _)| d == dir) {
            Some((_, v)) => *v,
            None => {
                let v = python_seconds(dir);
                python_cache.push((dir.to_path_buf(), v));
                v
            }
        };
        match py {
            Some(py) => println!(
                "  {what}: sidecar {:.3} ms, python {:.1} ms, ratio {:.0}x",
                sidecar * 1e3,
                py * 1e3,
                py / sidecar
            ),
            None => println!(
                "  {what}: sidecar {:.3} ms (python3 + prometheus_client not available)",
                sidecar * 1e3
            ),
        }
    }
}

fn main() {
    multiprocess();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    // Not when profiling one benchmark or listing them.
    let args: Vec<String> = std::env::args().collect();
    if !args
        .iter()
        .any(|a| a == "--profile-time" || a == "--list" || a == "--test")
    {
        compare();
    }
}
