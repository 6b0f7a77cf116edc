//! OTLP ingest throughput in data points per second: decode + translate + apply of a busy
//! worker's export (8 000 counter points with 4 attributes, 200 histogram points of 12
//! buckets), as protobuf and as OTLP/JSON, next to the push path (Pushgateway text body of
//! the same series, parse + apply) measured in the same run.
//!
//! Run: `cargo bench -p monasca-sidecar --bench otlp -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use monasca_sidecar::sources::otlp::decode::{Encoding, decode};
use monasca_sidecar::sources::otlp::{Settings, Streams, translate};
use monasca_sidecar::sources::push::{BodyFormat, GroupingKey, parse_body};
use monasca_sidecar::store::{Now, Scope, Store, StoreSettings};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use std::fmt::Write as _;
use std::hint::black_box;

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const CODES: [&str; 3] = ["200", "404", "500"];
const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn counter_attrs(j: usize) -> [(String, String); 4] {
    [
        ("http.request.method".into(), METHODS[j % 4].into()),
        (
            "http.route".into(),
            format!("/v2.0/metrics/resource_{}", j / 12),
        ),
        ("http.response.status_code".into(), CODES[j % 3].into()),
        ("server.address".into(), "api-7f9c6d-x2k4q".into()),
    ]
}

/// The export and the same series as a Pushgateway text body; and the number of points.
fn content() -> (ExportMetricsServiceRequest, String, u64) {
    let mut metrics = Vec::new();
    let mut text = String::new();
    let mut points = 0;
    for i in 0..40 {
        let name = format!("monasca.api.http.requests.{i}");
        let _ = writeln!(text, "# TYPE monasca_api_http_requests_{i}_total counter");
        let dps = (0..200)
            .map(|j| {
                let attrs = counter_attrs(j);
                let _ = writeln!(
                    text,
                    "monasca_api_http_requests_{i}_total{{http_request_method=\"{}\",http_route=\"{}\",http_response_status_code=\"{}\",server_address=\"{}\"}} {}",
                    attrs[0].1, attrs[1].1, attrs[2].1, attrs[3].1, j * 7
                );
                NumberDataPoint {
                    attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    time_unix_nano: 1_700_000_010_000_000_000,
                    value: Some(number_data_point::Value::AsInt(j as i64 * 7)),
                    ..Default::default()
                }
            })
            .collect::<Vec<_>>();
        points += dps.len() as u64;
        metrics.push(Metric {
            name,
            unit: "{request}".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: dps,
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    }
    for i in 0..20 {
        let name = format!("monasca.api.request.duration.{i}");
        let _ = writeln!(
            text,
            "# TYPE monasca_api_request_duration_{i}_seconds histogram"
        );
        let dps = (0..10)
            .map(|j| {
                let counts: Vec<u64> = (0..=BOUNDS.len() as u64).map(|b| b + j).collect();
                let mut cumulative = 0;
                for (b, c) in BOUNDS.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]).zip(&counts) {
                    cumulative += c;
                    let _ = writeln!(
                        text,
                        "monasca_api_request_duration_{i}_seconds_bucket{{handler=\"handler_{j}\",method=\"{}\",le=\"{b}\"}} {cumulative}",
                        METHODS[j as usize % 4]
                    );
                }
                let _ = writeln!(
                    text,
                    "monasca_api_request_duration_{i}_seconds_sum{{handler=\"handler_{j}\",method=\"{}\"}} 12.5\nmonasca_api_request_duration_{i}_seconds_count{{handler=\"handler_{j}\",method=\"{}\"}} {cumulative}",
                    METHODS[j as usize % 4],
                    METHODS[j as usize % 4]
                );
                HistogramDataPoint {
                    attributes: vec![
                        kv("method", METHODS[j as usize % 4]),
                        kv("handler", &format!("handler_{j}")),
                    ],
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    time_unix_nano: 1_700_000_010_000_000_000,
                    count: cumulative,
                    sum: Some(12.5),
                    bucket_counts: counts,
                    explicit_bounds: BOUNDS.to_vec(),
                    ..Default::default()
                }
            })
            .collect::<Vec<_>>();
        points += dps.len() as u64;
        metrics.push(Metric {
            name,
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: dps,
                aggregation_temporality: 2,
            })),
            ..Default::default()
        });
    }
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api"), kv("worker.id", "1")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (req, text, points)
}

fn bench(c: &mut Criterion) {
    let (req, text, points) = content();
    let proto = req.encode_to_vec();
    let json = serde_json::to_vec(&req).expect("json");
    println!(
        "{points} points: protobuf {} bytes, JSON {} bytes, text {} bytes",
        proto.len(),
        json.len(),
        text.len()
    );
    let settings = Settings::default();
    let store_settings = StoreSettings {
        max_series_per_worker: 1_000_000,
        ..StoreSettings::default()
    };
    let mut group = c.benchmark_group("otlp");
    group.sample_size(10);
    group.throughput(Throughput::Elements(points));
    for (label, body, encoding) in [
        (
            "protobuf_decode_translate_apply",
            &proto,
            Encoding::Protobuf,
        ),
        ("json_decode_translate_apply", &json, Encoding::Json),
    ] {
        // Steady state: the worker re-exports all its cumulative points.
        let mut store = Store::new(store_settings.clone());
        let mut streams = Streams::default();
        let r = decode(body, encoding).expect("decode");
        let first = streams.apply(&mut store, translate(&r, &settings), Now::now());
        assert_eq!(first.accepted, points, "{first:?}");
        group.bench_function(label, |b| {
            b.iter(|| {
                let r = decode(body, encoding).expect("decode");
                let out = streams.apply(&mut store, translate(&r, &settings), Now::now());
                black_box(out)
            })
        });
    }
    // The push path on the same series, for comparison.
    let mut store = Store::new(store_settings);
    let key = GroupingKey::from_path("job/api/instance/w1").expect("key");
    let worker = key.worker(&store.settings().worker_labels);
    let families = parse_body(text.as_bytes(), BodyFormat::Text).expect("text");
    store
        .apply(&worker, &families, Scope::Worker, Now::now())
        .expect("apply");
    group.bench_function("push_text_parse_apply_same_series", |b| {
        b.iter(|| {
            let families = parse_body(text.as_bytes(), BodyFormat::Text).expect("text");
            black_box(
                store
                    .apply(&worker, &families, Scope::Worker, Now::now())
                    .expect("apply"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
