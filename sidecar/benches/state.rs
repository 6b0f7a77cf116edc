//! The cost of persisting state (`stateDir`) at 500k worker-series (5 workers x 100k series in
//! 100 families, counters and gauges with 3 labels): the capture under the store's read lock
//! (what ingest waits), the encoding after the lock is released, the whole write (capture,
//! encode, write, fsync, rename, fsync of the directory), the load at start (read, check,
//! decode), and what copy-on-write costs ingest: one worker's full update (100k series, every
//! family) while a capture still holds every family, against the same update without one.
//!
//! Run: `cargo bench -p monasca-sidecar --bench state`. `-- --table-only` prints only a
//! markdown table of medians over STATE_RUNS runs (used by `bench/run.py`).

use criterion::{Criterion, criterion_group};
use monasca_config::SidecarConfig;
use monasca_sidecar::app::App;
use monasca_sidecar::sources::push::{BodyFormat, GroupingKey, parse_body};
use monasca_sidecar::state::{self, FILE_NAME};
use monasca_sidecar::store::{Scope, StoreSettings};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::worker_body;

const WORKERS: usize = 5;
const SERIES: usize = 100_000;

fn filled_app() -> Arc<App> {
    let mut config = SidecarConfig::default();
    config.limits.max_series_per_worker = 1_000_000;
    let app = App::new(config);
    let now = app.now();
    for w in 0..WORKERS {
        let body = worker_body(SERIES, w as u64 + 1);
        let families = parse_body(body.as_bytes(), BodyFormat::Text).expect("valid body");
        let key = GroupingKey::from_path(&format!("job/api/instance/w{w}")).unwrap();
        let mut store = app.store.write();
        let worker = key.worker(&store.settings().worker_labels);
        store
            .apply(&worker, &families, Scope::Worker, now)
            .expect("apply");
    }
    app
}

fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("monasca-state-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// One measured write, in ms (and the file's size).
struct Write {
    locked: f64,
    encoded: f64,
    whole: f64,
    bytes: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn write_round(app: &App, dir: &std::path::Path) -> Write {
    let started = Instant::now();
    let snap = state::snapshot(app, Vec::new());
    state::write_file(dir, &snap.bytes).expect("write");
    Write {
        locked: ms(snap.locked),
        encoded: ms(snap.encoded),
        whole: ms(started.elapsed()),
        bytes: snap.bytes.len(),
    }
}

/// Reads, checks and decodes the file (dropping the decoded store is not timed).
fn load_ms(app: &App, dir: &std::path::Path) -> f64 {
    let started = Instant::now();
    let data = std::fs::read(dir.join(FILE_NAME)).expect("read");
    let restored = state::decode(&data, StoreSettings::default(), app.now()).expect("decode");
    let took = started.elapsed();
    black_box(restored);
    ms(took)
}

/// The time of worker 0's full update (every series higher than before) under the store's
/// write lock, with a capture holding every family (so every family is copied first) or not.
fn update_ms(app: &App, scale: u64, during_capture: bool) -> f64 {
    let body = worker_body(SERIES, scale);
    let families = parse_body(body.as_bytes(), BodyFormat::Text).expect("valid body");
    let key = GroupingKey::from_path("job/api/instance/w0").unwrap();
    let now = app.now();
    let capture = during_capture.then(|| app.store.read().capture());
    let mut store = app.store.write();
    let worker = key.worker(&store.settings().worker_labels);
    let started = Instant::now();
    store
        .apply(&worker, &families, Scope::Worker, now)
        .expect("apply");
    let took = started.elapsed();
    drop(store);
    black_box(capture);
    ms(took)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn table(runs: usize) {
    let app = filled_app();
    let dir = scratch();
    let series = app.store.read().worker_series_count();
    let families = app.store.read().family_count();
    // Writes first, loads after: a capture right after dropping a decoded 500k-series store
    // would time the allocator tidying up that store, not the capture.
    let writes: Vec<Write> = (0..runs.max(1)).map(|_| write_round(&app, &dir)).collect();
    let loads: Vec<f64> = (0..runs.max(1)).map(|_| load_ms(&app, &dir)).collect();
    let _ = std::fs::remove_dir_all(&dir);
    // Worker 0 started at scale 1; every update is higher.
    let mut scale = 1;
    let (mut plain, mut copying) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        scale += 1;
        plain.push(update_ms(&app, scale, false));
        scale += 1;
        copying.push(update_ms(&app, scale, true));
    }
    let of = |f: fn(&Write) -> f64| median(writes.iter().map(f).collect());
    println!(
        "State file ({series} worker-series in {families} families, {:.1} MB):",
        writes[0].bytes as f64 / 1e6
    );
    println!("| step | time |\n| --- | --- |");
    println!(
        "| capture under the store's read lock (ingest waits this long; `/metrics` renders go on) | {:.2} ms |",
        of(|r| r.locked)
    );
    println!(
        "| encode the capture, StatsD and OTLP state (no store lock) | {:.1} ms |",
        of(|r| r.encoded)
    );
    println!(
        "| whole write: capture, encode, write, fsync, rename, fsync dir (off the runtime) | {:.1} ms |",
        of(|r| r.whole)
    );
    println!(
        "| load at start: read, checksum, decode | {:.1} ms |",
        median(loads)
    );
    println!(
        "| one worker's full update (100k series, every family), no capture alive | {:.1} ms |",
        median(plain)
    );
    println!(
        "| the same update while a capture holds every family (each family copied first) | {:.1} ms |",
        median(copying)
    );
}

fn bench(c: &mut Criterion) {
    let app = filled_app();
    let dir = scratch();
    let mut group = c.benchmark_group("state_500k_worker_series");
    group.sample_size(10);
    group.bench_function("capture_under_lock", |b| {
        b.iter(|| black_box(app.store.read().capture()))
    });
    let mut buf = Vec::new();
    group.bench_function("snapshot", |b| {
        b.iter(|| {
            let snap = state::snapshot(&app, std::mem::take(&mut buf));
            buf = snap.bytes;
            black_box(buf.len())
        })
    });
    group.bench_function("snapshot_write_fsync", |b| {
        b.iter(|| {
            let snap = state::snapshot(&app, std::mem::take(&mut buf));
            state::write_file(&dir, &snap.bytes).expect("write");
            buf = snap.bytes;
        })
    });
    let data = std::fs::read(dir.join(FILE_NAME)).expect("read");
    group.bench_function("load", |b| {
        b.iter(|| black_box(state::decode(&data, StoreSettings::default(), app.now()).is_ok()))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);

fn main() {
    if std::env::args().any(|a| a == "--table-only") {
        let runs = std::env::var("STATE_RUNS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        table(runs);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
