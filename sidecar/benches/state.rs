//! The cost of persisting state (`stateDir`) at 500k worker-series (5 workers x 100k series,
//! counters and gauges with 3 labels): the snapshot (encoded under the store's read lock:
//! what ingest waits), the whole write (snapshot, encode, write, fsync, rename, fsync of the
//! directory) and the load at start (read, check, decode).
//!
//! Run: `cargo bench -p monasca-sidecar --bench state`. `-- --table-only` prints only a
//! markdown table of medians over STATE_RUNS runs (used by `bench/run.py`).

use criterion::{Criterion, criterion_group};
use monasca_config::SidecarConfig;
use monasca_sidecar::app::App;
use monasca_sidecar::ingest::push::{BodyFormat, GroupingKey, parse_body};
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

/// One measured round: (snapshot lock ms, whole write ms, load ms, file bytes).
fn round(app: &App, dir: &std::path::Path) -> (f64, f64, f64, usize) {
    let started = Instant::now();
    let snap = state::snapshot(app, Vec::new());
    state::write_file(dir, &snap.bytes).expect("write");
    let write = started.elapsed();
    let started = Instant::now();
    let data = std::fs::read(dir.join(FILE_NAME)).expect("read");
    let restored = state::decode(&data, StoreSettings::default(), app.now()).expect("decode");
    let load = started.elapsed();
    black_box(restored);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(snap.locked), ms(write), ms(load), snap.bytes.len())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn table(runs: usize) {
    let app = filled_app();
    let dir = scratch();
    let series = app.store.read().worker_series_count();
    let (mut lock, mut write, mut load, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..runs.max(1) {
        let (l, w, d, b) = round(&app, &dir);
        lock.push(l);
        write.push(w);
        load.push(d);
        bytes = b;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "State file ({series} worker-series, {:.1} MB):",
        bytes as f64 / 1e6
    );
    println!("| step | time |\n| --- | --- |");
    println!(
        "| snapshot under the store's read lock (ingest waits this long) | {:.1} ms |",
        median(lock)
    );
    println!(
        "| whole write: snapshot, encode, write, fsync, rename, fsync dir (off the runtime) | {:.1} ms |",
        median(write)
    );
    println!(
        "| load at start: read, checksum, decode | {:.1} ms |",
        median(load)
    );
}

fn bench(c: &mut Criterion) {
    let app = filled_app();
    let dir = scratch();
    let mut group = c.benchmark_group("state_500k_worker_series");
    group.sample_size(10);
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
