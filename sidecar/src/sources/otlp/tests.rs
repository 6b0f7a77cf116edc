//! The OTLP semantics, tested by feeding requests to a store and reading the aggregate.

use super::*;
use crate::expose::{self, Format};
use crate::store::StoreSettings;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, Summary, SummaryDataPoint, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::time::Duration;

const CUMULATIVE: i32 = 2;
const DELTA: i32 = 1;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn num(value: f64, start: u64, attrs: &[(&str, &str)]) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        start_time_unix_nano: start,
        time_unix_nano: start + 1,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn sum(name: &str, temporality: i32, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: "{request}".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn hist(name: &str, temporality: i32, start: u64, counts: Vec<u64>, bounds: Vec<f64>) -> Metric {
    let count = counts.iter().sum();
    Metric {
        name: name.into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: start,
                count,
                sum: Some(count as f64 * 0.5),
                bucket_counts: counts,
                explicit_bounds: bounds,
                ..Default::default()
            }],
            aggregation_temporality: temporality,
        })),
        ..Default::default()
    }
}

fn req(resource: &[(&str, &str)], metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Harness {
    store: Store,
    streams: Streams,
    settings: Settings,
    now: Now,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(monasca_config::SidecarConfig::default())
    }

    fn with(config: monasca_config::SidecarConfig) -> Harness {
        Harness {
            store: Store::new(StoreSettings::from_config(&config)),
            streams: Streams::default(),
            settings: Settings::from_config(&config),
            now: Now::now(),
        }
    }

    fn send(&mut self, r: ExportMetricsServiceRequest) -> Outcome {
        self.now = self.now.after(Duration::from_secs(1));
        let t = translate(&r, &self.settings);
        self.streams.apply(&mut self.store, t, self.now)
    }

    fn render(&self) -> String {
        let mut out = Vec::new();
        expose::render(&self.store, Format::Text, self.now.mono, &[], &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    fn value(&self, series: &str) -> Option<f64> {
        let text = self.render();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

const SVC: (&str, &str) = ("service.name", "api");
const REQS: &str = "reqs_total{job=\"api\",otel_scope_name=\"lib\",path=\"/\"}";

#[test]
fn identical_resources_are_told_apart_by_start_time() {
    let mut h = Harness::new();
    // Four processes, same resource, their own start times.
    for (i, v) in [3.0, 5.0, 7.0, 11.0].iter().enumerate() {
        let o = h.send(req(
            &[SVC],
            vec![sum(
                "reqs",
                CUMULATIVE,
                true,
                vec![num(*v, 100 + i as u64, &[("path", "/")])],
            )],
        ));
        assert_eq!(o.accepted, 1);
    }
    assert_eq!(h.value(REQS), Some(26.0), "{}", h.render());
    // Later cumulative values of two of them replace, never add.
    h.send(req(
        &[SVC],
        vec![sum(
            "reqs",
            CUMULATIVE,
            true,
            vec![num(4.0, 100, &[("path", "/")])],
        )],
    ));
    h.send(req(
        &[SVC],
        vec![sum(
            "reqs",
            CUMULATIVE,
            true,
            vec![num(12.0, 103, &[("path", "/")])],
        )],
    ));
    assert_eq!(h.value(REQS), Some(28.0), "{}", h.render());
    // A restarted process (new start time) adds; the old value stays counted.
    h.send(req(
        &[SVC],
        vec![sum(
            "reqs",
            CUMULATIVE,
            true,
            vec![num(1.0, 900, &[("path", "/")])],
        )],
    ));
    assert_eq!(h.value(REQS), Some(29.0));
    assert_eq!(h.render().matches("reqs_total{").count(), 1);
}

#[test]
fn worker_attributes_are_hidden_and_a_new_start_time_is_a_restart() {
    let mut h = Harness::new();
    for w in ["1", "2"] {
        h.send(req(
            &[SVC, ("worker.id", w), ("host.name", "h")],
            vec![sum(
                "reqs",
                CUMULATIVE,
                true,
                vec![num(10.0, 5, &[("path", "/")])],
            )],
        ));
    }
    assert_eq!(h.value(REQS), Some(20.0), "{}", h.render());
    let text = h.render();
    assert!(!text.contains("worker_id"), "{text}");
    assert!(
        text.contains("target_info{host_name=\"h\",job=\"api\"} 1"),
        "{text}"
    );
    // Worker 1 restarts and has already counted past its old value before its first export:
    // the old 10 is retired, the new 15 added.
    h.send(req(
        &[SVC, ("worker.id", "1"), ("host.name", "h")],
        vec![sum(
            "reqs",
            CUMULATIVE,
            true,
            vec![num(15.0, 50, &[("path", "/")])],
        )],
    ));
    assert_eq!(h.value(REQS), Some(35.0), "{}", h.render());
    // Same start time again: an update, not a restart.
    h.send(req(
        &[SVC, ("worker.id", "1"), ("host.name", "h")],
        vec![sum(
            "reqs",
            CUMULATIVE,
            true,
            vec![num(16.0, 50, &[("path", "/")])],
        )],
    ));
    assert_eq!(h.value(REQS), Some(36.0));
}

#[test]
fn deltas_accumulate_and_restart_from_zero_when_the_worker_is_forgotten() {
    let mut h = Harness::new();
    let r = |v: f64| {
        req(
            &[SVC, ("worker.id", "1")],
            vec![sum("reqs", DELTA, true, vec![num(v, 0, &[("path", "/")])])],
        )
    };
    h.send(r(2.0));
    h.send(r(3.0));
    // Another process of the same service.
    h.send(req(
        &[SVC, ("worker.id", "2")],
        vec![sum(
            "reqs",
            DELTA,
            true,
            vec![num(4.0, 0, &[("path", "/")])],
        )],
    ));
    assert_eq!(h.value(REQS), Some(9.0));
    // A negative monotonic delta is refused, the total kept.
    let o = h.send(r(-1.0));
    assert_eq!(o.rejected.by_reason.get("negative_counter"), Some(&1));
    assert_eq!(h.value(REQS), Some(9.0));
    // The store forgets worker 1 (retiring 5); its next delta starts a new total.
    let id = h
        .store
        .workers_info(h.now)
        .into_iter()
        .find(|w| w.labels.get("worker_id").map(String::as_str) == Some("1"))
        .expect("worker 1")
        .id;
    assert!(h.store.remove_worker(&id));
    h.send(r(1.0));
    assert_eq!(h.value(REQS), Some(10.0), "{}", h.render());
}

#[test]
fn two_deltas_of_one_series_in_one_request_both_count() {
    let mut h = Harness::new();
    h.send(req(
        &[SVC],
        vec![sum(
            "reqs",
            DELTA,
            true,
            vec![num(2.0, 0, &[("path", "/")]), num(5.0, 0, &[("path", "/")])],
        )],
    ));
    assert_eq!(h.value(REQS), Some(7.0));
}

#[test]
fn gauges_and_non_monotonic_sums_follow_the_gauge_modes() {
    let mut h = Harness::new();
    for w in ["1", "2"] {
        h.send(req(
            &[SVC, ("worker.id", w)],
            vec![
                sum("inflight", CUMULATIVE, false, vec![num(2.0, 5, &[])]),
                Metric {
                    name: "temp".into(),
                    unit: "1".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![num(0.5, 0, &[])],
                    })),
                    ..Default::default()
                },
            ],
        ));
    }
    assert_eq!(
        h.value("inflight{job=\"api\",otel_scope_name=\"lib\"}"),
        Some(4.0),
        "{}",
        h.render()
    );
    assert_eq!(
        h.value("temp_ratio{job=\"api\",otel_scope_name=\"lib\"}"),
        Some(1.0),
        "{}",
        h.render()
    );
}

#[test]
fn histograms_become_cumulative_buckets_and_deltas_add_up() {
    let mut h = Harness::new();
    h.send(req(
        &[SVC, ("worker.id", "1")],
        vec![hist("lat", CUMULATIVE, 5, vec![1, 2, 3], vec![0.1, 1.0])],
    ));
    h.send(req(
        &[SVC, ("worker.id", "2")],
        vec![hist("lat", DELTA, 0, vec![1, 0, 0], vec![0.1, 1.0])],
    ));
    h.send(req(
        &[SVC, ("worker.id", "2")],
        vec![hist("lat", DELTA, 0, vec![0, 1, 0], vec![0.1, 1.0])],
    ));
    let text = h.render();
    let b = |le: &str| {
        h.value(&format!(
            "lat_seconds_bucket{{job=\"api\",otel_scope_name=\"lib\",le=\"{le}\"}}"
        ))
    };
    assert_eq!(b("0.1"), Some(2.0), "{text}");
    assert_eq!(b("1.0"), Some(5.0), "{text}");
    assert_eq!(b("+Inf"), Some(8.0), "{text}");
    assert_eq!(
        h.value("lat_seconds_count{job=\"api\",otel_scope_name=\"lib\"}"),
        Some(8.0)
    );
    // Different bounds for the same series: refused, the rest kept.
    let o = h.send(req(
        &[SVC, ("worker.id", "3")],
        vec![
            hist("lat", CUMULATIVE, 5, vec![1, 1], vec![0.2]),
            sum(
                "reqs",
                CUMULATIVE,
                true,
                vec![num(1.0, 5, &[("path", "/")])],
            ),
        ],
    ));
    assert_eq!(
        o.rejected.by_reason.get("histogram_layout_mismatch"),
        Some(&1),
        "{o:?}"
    );
    assert_eq!(o.accepted, 1);
    assert_eq!(h.value(REQS), Some(1.0));
}

#[test]
fn summaries_keep_count_and_sum() {
    let mut h = Harness::new();
    for w in ["1", "2"] {
        h.send(req(
            &[SVC, ("worker.id", w)],
            vec![Metric {
                name: "rpc".into(),
                data: Some(metric::Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        start_time_unix_nano: 1,
                        count: 4,
                        sum: 2.0,
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            }],
        ));
    }
    assert_eq!(
        h.value("rpc_count{job=\"api\",otel_scope_name=\"lib\"}"),
        Some(8.0),
        "{}",
        h.render()
    );
    assert_eq!(
        h.value("rpc_sum{job=\"api\",otel_scope_name=\"lib\"}"),
        Some(4.0)
    );
}

#[test]
fn bad_points_are_rejected_with_reasons_and_the_rest_kept() {
    let mut config = monasca_config::SidecarConfig::default();
    config.otlp.max_attributes = 3;
    let mut h = Harness::with(config);
    let mut no_value = num(1.0, 5, &[]);
    no_value.value = None;
    let o = h.send(req(
        &[SVC],
        vec![
            sum(
                "reqs",
                CUMULATIVE,
                true,
                vec![
                    num(1.0, 5, &[("path", "/")]),
                    num(f64::INFINITY, 5, &[("path", "/x")]),
                ],
            ),
            sum("neg", CUMULATIVE, true, vec![num(-1.0, 5, &[])]),
            sum("unspec", 0, true, vec![num(1.0, 5, &[])]),
            sum("nov", CUMULATIVE, true, vec![no_value]),
            sum(
                "wide",
                CUMULATIVE,
                true,
                vec![num(
                    1.0,
                    5,
                    &[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")],
                )],
            ),
            hist("h1", CUMULATIVE, 5, vec![1, 2, 3], vec![1.0]),
            hist("h2", CUMULATIVE, 5, vec![1, 2], vec![f64::NAN]),
            Metric {
                name: "nodata".into(),
                ..Default::default()
            },
            Metric {
                name: "monasca_sidecar_x".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![num(1.0, 0, &[])],
                })),
                ..Default::default()
            },
        ],
    ));
    let reasons: Vec<(&str, u64)> = o.rejected.by_reason.iter().map(|(r, n)| (*r, *n)).collect();
    assert_eq!(
        reasons,
        [
            ("bucket_count_mismatch", 1),
            ("invalid_bounds", 1),
            ("invalid_temporality", 1),
            ("missing_value", 1),
            ("negative_counter", 1),
            ("non_finite", 1),
            ("reserved_name", 1),
            ("too_many_attributes", 1),
        ]
    );
    assert_eq!(o.rejected.count, 8);
    assert_eq!(o.accepted, 1);
    let msg = o.rejected.message();
    assert!(msg.contains("and 4 more"), "{msg}");
    assert_eq!(h.value(REQS), Some(1.0));
}

#[test]
fn one_name_with_two_types_keeps_the_first() {
    let mut h = Harness::new();
    let gauge = |name: &str| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![num(2.0, 0, &[])],
        })),
        ..Default::default()
    };
    // In one worker's update: the second is refused by the receiver.
    let o = h.send(req(
        &[SVC, ("worker.id", "1")],
        vec![
            sum("x", CUMULATIVE, true, vec![num(1.0, 5, &[])]),
            gauge("x_total"),
        ],
    ));
    assert_eq!(o.rejected.by_reason.get("type_conflict"), Some(&1), "{o:?}");
    // Across workers (no worker attribute: the counter lives under its start time): the
    // store refuses the later one.
    let o = h.send(req(&[SVC], vec![gauge("x_total")]));
    assert_eq!(o.rejected.by_reason.get("type_conflict"), Some(&1), "{o:?}");
    assert_eq!(
        h.value("x_total{job=\"api\",otel_scope_name=\"lib\"}"),
        Some(1.0),
        "{}",
        h.render()
    );
}

#[test]
fn target_info_is_one_series_and_can_be_turned_off() {
    let mut h = Harness::new();
    for w in ["1", "2", "3"] {
        h.send(req(
            &[
                SVC,
                ("service.namespace", "shop"),
                ("worker.id", w),
                ("k8s.pod.name", "p"),
            ],
            vec![],
        ));
    }
    let text = h.render();
    assert!(
        text.contains("target_info{job=\"shop/api\",k8s_pod_name=\"p\"} 1\n"),
        "{text}"
    );
    let mut config = monasca_config::SidecarConfig::default();
    config.otlp.target_info = false;
    config.otlp.scope_labels = false;
    let mut h = Harness::with(config);
    h.send(req(
        &[SVC, ("k8s.pod.name", "p")],
        vec![sum(
            "reqs",
            CUMULATIVE,
            true,
            vec![num(1.0, 5, &[("path", "/")])],
        )],
    ));
    let text = h.render();
    assert!(!text.contains("target_info"), "{text}");
    assert!(
        text.contains("reqs_total{job=\"api\",path=\"/\"} 1"),
        "{text}"
    );
}

#[test]
fn colliding_attribute_keys_are_joined() {
    let mut h = Harness::new();
    h.send(req(
        &[SVC],
        vec![sum(
            "reqs",
            CUMULATIVE,
            true,
            vec![num(1.0, 5, &[("a.b", "1"), ("a_b", "2")])],
        )],
    ));
    let text = h.render();
    assert!(
        text.contains("reqs_total{a_b=\"1;2\",job=\"api\",otel_scope_name=\"lib\"} 1"),
        "{text}"
    );
}

#[test]
fn no_recorded_value_points_are_skipped() {
    let mut h = Harness::new();
    let mut p = num(1.0, 5, &[]);
    p.flags = 1;
    let o = h.send(req(&[SVC], vec![sum("reqs", CUMULATIVE, true, vec![p])]));
    assert_eq!((o.accepted, o.rejected.count), (0, 0));
}

#[test]
fn responses_and_json_decoding() {
    use prost::Message as _;
    let body = decode::response(0, "", Encoding::Protobuf);
    assert!(body.is_empty(), "full success is an empty message");
    assert_eq!(decode::response(0, "", Encoding::Json), b"{}");
    let body = decode::response(2, "why", Encoding::Protobuf);
    let resp =
        opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(
            &body[..],
        )
        .expect("decode");
    let p = resp.partial_success.expect("partial");
    assert_eq!(
        (p.rejected_data_points, p.error_message.as_str()),
        (2, "why")
    );
    let json: serde_json::Value =
        serde_json::from_slice(&decode::response(2, "why", Encoding::Json)).expect("json");
    assert_eq!(json["partialSuccess"]["rejectedDataPoints"], "2", "{json}");
    // OTLP/JSON: camelCase, int64 as strings or numbers, unknown fields ignored.
    let body = br#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
        "scopeMetrics":[{"metrics":[{"name":"reqs","unknownField":1,"sum":{"aggregationTemporality":2,"isMonotonic":true,
        "dataPoints":[{"startTimeUnixNano":"5","timeUnixNano":6,"asInt":"42","attributes":[{"key":"path","value":{"stringValue":"/"}}]}]}}]}]}]}"#;
    let r = decode::decode(body, Encoding::Json).expect("decode");
    let mut h = Harness::new();
    h.send(r);
    assert_eq!(
        h.value("reqs_total{job=\"api\",path=\"/\"}"),
        Some(42.0),
        "{}",
        h.render()
    );
    assert!(decode::decode(b"{", Encoding::Json).is_err());
    assert!(decode::decode(b"\xff\xff", Encoding::Protobuf).is_err());
}

#[test]
fn a_histogram_point_without_sum_gives_no_sum_line() {
    let mut h = Harness::new();
    let mut m = hist("lat", CUMULATIVE, 5, vec![1, 2, 3], vec![0.1, 1.0]);
    if let Some(metric::Data::Histogram(hg)) = &mut m.data {
        hg.data_points[0].sum = None;
    }
    h.send(req(&[SVC, ("worker.id", "1")], vec![m]));
    let text = h.render();
    assert!(text.contains("lat_seconds_count"), "{text}");
    assert!(
        !text.contains("lat_seconds_sum"),
        "no sum sent, none invented:\n{text}"
    );
}
