//! Parse throughput of a realistic push body (~10k series): text 0.0.4, OpenMetrics and
//! delimited protobuf of the same content, in bytes per second.
//!
//! Run: `cargo bench -p monasca-sidecar --bench parse -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use monasca_sidecar::sources::parse::protobuf::{self, proto};
use monasca_sidecar::sources::parse::text;
use prost::Message;
use std::fmt::Write;
use std::hint::black_box;

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const CODES: [&str; 3] = ["200", "404", "500"];
const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What a busy worker exposes: 8 000 counter series with 4 labels, 400 gauges, 200
/// histograms of 12 buckets (about 11 000 lines, 1 MB).
struct Content {
    counters: Vec<(String, Vec<[String; 4]>)>,
    gauges: Vec<(String, Vec<String>)>,
    histograms: Vec<(String, Vec<(String, String)>)>,
}

fn content() -> Content {
    let counters = (0..40)
        .map(|i| {
            let series = (0..200)
                .map(|j| {
                    [
                        METHODS[j % 4].to_owned(),
                        format!("/v2.0/metrics/resource_{}", j / 12),
                        CODES[j % 3].to_owned(),
                        "api-7f9c6d-x2k4q".to_owned(),
                    ]
                })
                .collect();
            (format!("monasca_api_http_requests_{i}_total"), series)
        })
        .collect();
    let gauges = (0..20)
        .map(|i| {
            let series = (0..20).map(|j| format!("queue-{j}")).collect();
            (format!("monasca_persister_queue_depth_{i}"), series)
        })
        .collect();
    let histograms = (0..20)
        .map(|i| {
            let series = (0..10)
                .map(|j| (METHODS[j % 4].to_owned(), format!("handler_{j}")))
                .collect();
            (format!("monasca_api_request_duration_seconds_{i}"), series)
        })
        .collect();
    Content {
        counters,
        gauges,
        histograms,
    }
}

fn text_body(c: &Content, openmetrics: bool) -> String {
    let mut out = String::new();
    for (name, series) in &c.counters {
        let family = if openmetrics {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name
        };
        let _ = writeln!(out, "# HELP {family} Total HTTP requests handled.");
        let _ = writeln!(out, "# TYPE {family} counter");
        for (k, [method, path, code, instance]) in series.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{method=\"{method}\",path=\"{path}\",code=\"{code}\",instance=\"{instance}\"}} {}.0",
                k * 1_237
            );
        }
    }
    for (name, series) in &c.gauges {
        let _ = writeln!(out, "# HELP {name} Messages waiting.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (k, queue) in series.iter().enumerate() {
            let _ = writeln!(out, "{name}{{queue=\"{queue}\"}} {}", k as f64 * 0.5);
        }
    }
    for (name, series) in &c.histograms {
        let _ = writeln!(out, "# HELP {name} Request latency.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (method, handler) in series {
            let labels = format!("method=\"{method}\",handler=\"{handler}\"");
            for (b, bound) in BOUNDS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},le=\"{bound:?}\"}} {}.0",
                    b * 100
                );
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} 1200.0");
            let _ = writeln!(out, "{name}_sum{{{labels}}} 8123.456");
            let _ = writeln!(out, "{name}_count{{{labels}}} 1200.0");
        }
    }
    if openmetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    proto::LabelPair {
        name: Some(name.to_owned()),
        value: Some(value.to_owned()),
    }
}

fn family(
    name: &str,
    help: &str,
    ty: proto::MetricType,
    metric: Vec<proto::Metric>,
) -> proto::MetricFamily {
    proto::MetricFamily {
        name: Some(name.to_owned()),
        help: Some(help.to_owned()),
        r#type: Some(ty as i32),
        metric,
        unit: None,
    }
}

/// The same content as Go's client would push it (no `+Inf` bucket).
fn protobuf_body(c: &Content) -> Vec<u8> {
    let mut families = Vec::new();
    for (name, series) in &c.counters {
        let metric = series
            .iter()
            .enumerate()
            .map(|(k, [method, path, code, instance])| proto::Metric {
                label: vec![
                    label("method", method),
                    label("path", path),
                    label("code", code),
                    label("instance", instance),
                ],
                counter: Some(proto::Counter {
                    value: Some((k * 1_237) as f64),
                }),
                ..Default::default()
            })
            .collect();
        families.push(family(
            name,
            "Total HTTP requests handled.",
            proto::MetricType::Counter,
            metric,
        ));
    }
    for (name, series) in &c.gauges {
        let metric = series
            .iter()
            .enumerate()
            .map(|(k, queue)| proto::Metric {
                label: vec![label("queue", queue)],
                gauge: Some(proto::Gauge {
                    value: Some(k as f64 * 0.5),
                }),
                ..Default::default()
            })
            .collect();
        families.push(family(
            name,
            "Messages waiting.",
            proto::MetricType::Gauge,
            metric,
        ));
    }
    for (name, series) in &c.histograms {
        let metric = series
            .iter()
            .map(|(method, handler)| proto::Metric {
                label: vec![label("method", method), label("handler", handler)],
                histogram: Some(proto::Histogram {
                    sample_count: Some(1200),
                    sample_sum: Some(8123.456),
                    bucket: BOUNDS
                        .iter()
                        .enumerate()
                        .map(|(b, bound)| proto::Bucket {
                            cumulative_count: Some(b as u64 * 100),
                            cumulative_count_float: None,
                            upper_bound: Some(*bound),
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        families.push(family(
            name,
            "Request latency.",
            proto::MetricType::Histogram,
            metric,
        ));
    }
    let mut out = Vec::new();
    for f in &families {
        f.encode_length_delimited(&mut out)
            .expect("a Vec grows as needed");
    }
    out
}

fn series_count(families: &[monasca_sidecar::model::Family<'_>]) -> usize {
    families.iter().map(|f| f.series.len()).sum()
}

fn bench_parse(c: &mut Criterion) {
    let content = content();
    let text_004 = text_body(&content, false);
    let text_om = text_body(&content, true);
    let pb = protobuf_body(&content);

    // The bodies are only worth measuring if they parse to the same ~8 600 series.
    let n = series_count(&text::parse(&text_004, false).expect("0.0.4 body parses"));
    assert_eq!(
        n,
        series_count(&text::parse(&text_om, true).expect("OpenMetrics body parses"))
    );
    assert_eq!(
        n,
        series_count(&protobuf::decode(&pb).expect("protobuf body decodes"))
    );
    eprintln!(
        "bodies: text 0.0.4 {} bytes, OpenMetrics {} bytes, protobuf {} bytes; {n} series",
        text_004.len(),
        text_om.len(),
        pb.len()
    );

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(text_004.len() as u64));
    group.bench_function("text_0.0.4", |b| {
        b.iter(|| text::parse(black_box(&text_004), false))
    });
    group.throughput(Throughput::Bytes(text_om.len() as u64));
    group.bench_function("openmetrics", |b| {
        b.iter(|| text::parse(black_box(&text_om), true))
    });
    group.throughput(Throughput::Bytes(pb.len() as u64));
    group.bench_function("protobuf", |b| b.iter(|| protobuf::decode(black_box(&pb))));
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
