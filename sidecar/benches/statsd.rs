//! StatsD throughput per core: lines per second through the parser alone, and through parse
//! + mapping + accumulation (what the UDP thread does per line), over a mix of every dialect.
//!
//! Run: `cargo bench -p monasca-sidecar --bench statsd -- --warm-up-time 1 --measurement-time 3`
//!
//! The loss test at a sustained rate over real loopback UDP is the example
//! `cargo run --release -p monasca-sidecar --example statsd_loss`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use monasca_config::SidecarConfig;
use monasca_sidecar::sources::statsd::{Accumulator, line};
use std::hint::black_box;

/// 1 200 lines: plain, DogStatsD, monasca-statsd (Python dict), InfluxDB, Librato and
/// SignalFX tags; counters with sample rates, gauges, timers; 200 distinct series names.
fn corpus() -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..200 {
        let endpoint = ["/v2.0/metrics", "/v2.0/alarms", "/v2.0/notifications"][i % 3];
        lines.push(format!("api.requests.{i}:1|c"));
        lines.push(format!(
            "api.dog.{i}:2|c|@0.5|#env:prod,service:api,endpoint:{endpoint}"
        ));
        lines.push(format!(
            "monasca.requests.{i}:1|c|#{{'service': 'monitoring', 'hostname': 'api-7f9c6d-x2k4q', 'endpoint': '{endpoint}'}}"
        ));
        lines.push(format!("influx.queue.{i},env=prod,queue=q{}:42|g", i % 5));
        lines.push(format!(
            "librato.latency.{i}#env=prod,service=api:{}|ms",
            i % 250
        ));
        lines.push(format!("signalfx.db[env=prod,db=mysql].query_{i}:0.25|g"));
    }
    lines
}

fn bench(c: &mut Criterion) {
    let lines = corpus();
    let mut group = c.benchmark_group("statsd");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("parse_lines", |b| {
        b.iter(|| {
            for l in &lines {
                let _ = black_box(line::parse_line(black_box(l.as_bytes())));
            }
        })
    });

    // Datagrams as a buffering client sends them: 10 lines each.
    let datagrams: Vec<Vec<u8>> = lines
        .chunks(10)
        .map(|c| c.join("\n").into_bytes())
        .collect();
    let mut acc = Accumulator::new(&SidecarConfig::default()).expect("default config");
    group.bench_function("parse_map_accumulate", |b| {
        b.iter(|| {
            for d in &datagrams {
                acc.ingest_datagram(black_box(d));
            }
        })
    });
    group.finish();

    // One flush of every series (the worst case: all 1 200 changed).
    c.bench_function("statsd/take_changes_all_series", |b| {
        b.iter_batched(
            || {
                let mut acc = Accumulator::new(&SidecarConfig::default()).expect("config");
                for d in &datagrams {
                    acc.ingest_datagram(d);
                }
                acc
            },
            |mut acc| black_box(acc.take_changes()),
            criterion::BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
