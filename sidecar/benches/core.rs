//! Core benchmarks: push ingest (parse + apply), `/metrics` render of 100k aggregated series
//! from 16 workers, and bytes held per stored worker-series.
//!
//! Run: `cargo bench -p monasca-sidecar --bench core`. The memory figure is printed once
//! (`bytes per worker-series`) from a counting allocator, next to criterion's timings.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use monasca_sidecar::expose::{Format, render};
use monasca_sidecar::sources::push::{BodyFormat, GroupingKey, parse_body};
use monasca_sidecar::store::{Now, Scope, Store, StoreSettings};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts live heap bytes so the store's footprint can be measured exactly.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

mod common;

use common::worker_body;

const WORKERS: usize = 16;
const SERIES: usize = 100_000;

fn filled_store(bodies: &[String]) -> Store {
    let mut store = Store::new(StoreSettings {
        max_series_per_worker: 1_000_000,
        ..StoreSettings::default()
    });
    let now = Now::now();
    for (w, body) in bodies.iter().enumerate() {
        let families = parse_body(body.as_bytes(), BodyFormat::Text).expect("valid body");
        let key = GroupingKey::from_path(&format!("job/api/instance/w{w}")).unwrap();
        store
            .apply(
                &key.worker(&store.settings().worker_labels),
                &families,
                Scope::Worker,
                now,
            )
            .expect("apply");
    }
    store
}

fn bench(c: &mut Criterion) {
    let per_worker = SERIES;
    let bodies: Vec<String> = (0..WORKERS)
        .map(|w| worker_body(per_worker, w as u64 + 1))
        .collect();

    // Memory: live heap of the store per (worker, series) value.
    let before = LIVE.load(Ordering::Relaxed);
    let store = filled_store(&bodies);
    let after = LIVE.load(Ordering::Relaxed);
    let worker_series = store.worker_series_count();
    println!(
        "memory: {} worker-series ({} series x {} workers) hold {:.1} MiB = {:.1} bytes per worker-series",
        worker_series,
        store.series_count(),
        WORKERS,
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / worker_series as f64
    );

    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    let body = &bodies[0];
    let samples = per_worker as u64;
    group.throughput(Throughput::Elements(samples));
    // Steady state: a worker re-pushes all its series into a store that holds 16 workers.
    let mut steady = filled_store(&bodies);
    let key = GroupingKey::from_path("job/api/instance/w0").unwrap();
    let worker = key.worker(&steady.settings().worker_labels);
    group.bench_function("parse_and_apply_100k_samples", |b| {
        b.iter(|| {
            let families = parse_body(body.as_bytes(), BodyFormat::Text).unwrap();
            black_box(
                steady
                    .apply(&worker, &families, Scope::Worker, Now::now())
                    .unwrap(),
            );
        })
    });
    let families = parse_body(body.as_bytes(), BodyFormat::Text).unwrap();
    group.bench_function("apply_100k_samples", |b| {
        b.iter(|| {
            black_box(
                steady
                    .apply(&worker, &families, Scope::Worker, Now::now())
                    .unwrap(),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("render");
    group.sample_size(10);
    group.throughput(Throughput::Elements(store.series_count() as u64));
    let mut out = Vec::with_capacity(16 << 20);
    let now = Now::now().mono;
    group.bench_function("text_100k_series_16_workers", |b| {
        b.iter(|| {
            out.clear();
            render(&store, Format::Text, now, &[], &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("openmetrics_100k_series_16_workers", |b| {
        b.iter(|| {
            out.clear();
            render(&store, Format::OpenMetrics, now, &[], &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
