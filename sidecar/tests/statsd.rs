//! StatsD ingest over real sockets: the listener is started with `statsd::spawn` on
//! 127.0.0.1:0, datagrams come from the captures in `shared/fixtures/wire/`, from hand-made
//! malformed input, and from the real PyPI clients `monasca-statsd` and `statsd` running in
//! python3 subprocesses; results are read from the rendered `/metrics` text.

mod common;

use monasca_config::{MappingAction, MatchType, SidecarConfig, StatsdMapping, StatsdMetricType};
use monasca_sidecar::app::App;
use monasca_sidecar::expose::{Format, render};
use monasca_sidecar::sources::SourceContext;
use monasca_sidecar::sources::statsd::{self, StatsdHandle};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// A running listener; fields drop in order (listener first, runtime last).
struct Running {
    handle: StatsdHandle,
    app: Arc<App>,
    _rt: tokio::runtime::Runtime,
}

fn start(mut config: SidecarConfig) -> Running {
    config.listen.statsd = "127.0.0.1:0".into();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = App::new(config);
    let handle = rt
        .block_on(statsd::spawn(&SourceContext::standalone(&app), None))
        .expect("statsd listener starts");
    Running {
        handle,
        app,
        _rt: rt,
    }
}

impl Running {
    fn port(&self) -> u16 {
        self.handle.udp_addr().expect("udp bound").port()
    }

    fn send(&self, datagram: &[u8]) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        socket
            .send_to(datagram, self.handle.udp_addr().expect("udp bound"))
            .expect("send");
    }

    /// Waits until `lines` lines were received, then flushes and renders `/metrics`.
    fn metrics_after(&self, lines: u64) -> String {
        let arrived = common::wait_until(Duration::from_secs(10), || {
            self.handle.lines_received() >= lines
        });
        assert!(
            arrived,
            "only {} of {lines} lines arrived",
            self.handle.lines_received()
        );
        self.handle.flush();
        self.checked()
    }

    /// Flushes and renders until `ready` holds (for input whose line count is not exact).
    fn metrics_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let mut text = String::new();
        let ok = common::wait_until(Duration::from_secs(10), || {
            self.handle.flush();
            text = self.render();
            ready(&text)
        });
        assert!(ok, "condition not reached; last rendering:\n{text}");
        self.checked()
    }

    /// Renders both formats, checks each with promtool and client_python
    /// ([`common::assert_valid_exposition`]), and returns the text 0.0.4 rendering.
    #[track_caller]
    fn checked(&self) -> String {
        let om = self.render_as(Format::OpenMetrics);
        common::assert_valid_exposition(om.as_bytes(), true);
        let text = self.render();
        common::assert_valid_exposition(text.as_bytes(), false);
        text
    }

    fn render(&self) -> String {
        self.render_as(Format::Text)
    }

    fn render_as(&self, format: Format) -> String {
        let mut out = Vec::new();
        render(
            &self.app.store.read(),
            format,
            self.app.now().mono,
            &self.app.self_families(),
            &mut out,
        );
        String::from_utf8(out).expect("utf-8 exposition")
    }
}

#[track_caller]
fn assert_value(text: &str, series: &str, expected: f64) {
    match common::sample_value(text, series) {
        Some(v) => assert!(
            (v - expected).abs() < 1e-9,
            "{series} = {v}, expected {expected}\n{text}"
        ),
        None => panic!("{series} missing from\n{text}"),
    }
}

/// The datagrams of a capture in `shared/fixtures/wire/`, from their `hex:` lines.
fn capture(file: &str) -> Vec<Vec<u8>> {
    let path = common::fixtures().join("wire").join(file);
    let text = std::fs::read_to_string(&path).expect("read capture");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("hex:"))
        .map(|hex| {
            let hex = hex.trim();
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect()
        })
        .collect()
}

#[test]
fn captured_datagrams_over_udp() {
    let running = start(SidecarConfig::default());
    let mut lines = 0;
    for file in [
        "monasca-statsd-datagrams.txt",
        "statsd-dialects-datagrams.txt",
    ] {
        for datagram in capture(file) {
            lines += datagram
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count() as u64;
            running.send(&datagram);
        }
    }
    assert_eq!(lines, 24);
    let text = running.metrics_after(lines);
    let base = r#"endpoint="/v2.0/metrics",hostname="h1",service="monitoring""#;
    assert_value(&text, &format!("demo_requests_total{{{base}}}"), 2.0);
    assert_value(
        &text,
        &format!("demo_requests_total{{{base},status=\"204\"}}"),
        5.0,
    );
    assert_value(
        &text,
        r#"demo_db_query_seconds{db="mysql",hostname="h1",service="monitoring"}"#,
        0.25,
    );
    assert_value(
        &text,
        r#"edge_counter_total{city="Zürich",code="204",note="it's"}"#,
        1.0,
    );
    let tags = r#"{env="prod",service="api"}"#;
    assert_value(&text, &format!("dialects_dog_requests_total{tags}"), 4.0);
    for dialect in ["monasca", "influx", "librato", "signalfx"] {
        assert_value(
            &text,
            &format!("dialects_{dialect}_requests_total{tags}"),
            1.0,
        );
    }
    assert_value(&text, "dialects_multi_queue_depth", 42.0);
    assert_value(&text, r#"dialects_multi_latency_bucket{le="0.025"}"#, 1.0);
    assert_value(&text, "monasca_sidecar_statsd_datagrams_total", 19.0);
    assert_value(&text, "monasca_sidecar_statsd_lines_total", 24.0);
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="unsupported_set"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_dropped_total{reason="negative_counter"}"#,
        2.0,
    );
    // Everything lands as the one StatsD worker.
    let workers = running.app.store.read().workers_info(running.app.now());
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id, statsd::WORKER_ID);
    assert_eq!(workers[0].source, "statsd");
}

#[test]
fn malformed_datagrams_never_hurt_the_rest() {
    let running = start(SidecarConfig::default());
    running.send(b"ok.one:1|c\n\xff\xfe:1|c\ngarbage\nok.two:2|g\n:|\nx:1|c|#{'unterminated\n");
    running.send(b"");
    running.send(b"\n\n");
    // Close to the largest UDP payload (65,507 bytes): taken whole, every line counted.
    let mut big = b"ok.big:1|c\n".to_vec();
    let mut pads = 0u32;
    while big.len() < 65_000 {
        big.extend_from_slice(b"pad.metric:1|c\n");
        pads += 1;
    }
    running.send(&big);
    running.send(b"ok.three:3|c");
    let text = running.metrics_when(|t| t.contains("ok_three_total"));
    assert_value(&text, "ok_one_total", 1.0);
    assert_value(&text, "ok_two", 2.0);
    assert_value(&text, "ok_three_total", 3.0);
    assert_value(&text, "ok_big_total", 1.0);
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="invalid_utf8"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="invalid_line"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="invalid_name"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="invalid_tags"}"#,
        1.0,
    );
    assert_value(&text, "pad_metric_total", f64::from(pads));
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="truncated"}"#,
        0.0,
    );
    // And the listener keeps working.
    let before = running.handle.lines_received();
    running.send(b"ok.after:1|c");
    let text = running.metrics_after(before + 1);
    assert_value(&text, "ok_after_total", 1.0);
}

/// A burst of one-line datagrams, many `recvmmsg` batches long and not a multiple of any
/// batch size, so batch boundaries (and the receiver's pauses between drained batches) fall in
/// the middle of it, with malformed datagrams among the good ones: every good line is counted
/// exactly once, in order, and each bad one is counted as an error without touching the rest.
#[test]
fn bursts_across_batch_boundaries_keep_every_line() {
    let running = start(SidecarConfig::default());
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    let target = running.handle.udp_addr().expect("udp bound");
    const DATAGRAMS: u64 = 1_501;
    let (mut broken, mut bad_value, mut rated) = (0u64, 0u64, 0u64);
    for i in 0..DATAGRAMS {
        let datagram = match i % 97 {
            13 => {
                broken += 1;
                "burst.broken|c".to_string()
            }
            41 => {
                bad_value += 1;
                "burst.count:x|c".to_string()
            }
            _ if i % 5 == 0 => {
                rated += 1;
                "burst.count:1|c|@0.5".to_string()
            }
            _ => format!("burst.count:1|c\nburst.last:{i}|g"),
        };
        socket.send_to(datagram.as_bytes(), target).expect("send");
    }
    let good_two_line = DATAGRAMS - broken - bad_value - rated;
    let lines = good_two_line * 2 + rated + broken + bad_value;
    let text = running.metrics_after(lines);
    assert_eq!(running.handle.lines_received(), lines);
    assert_value(
        &text,
        "burst_count_total",
        (good_two_line + 2 * rated) as f64,
    );
    // The last good gauge line sent wins: datagrams are applied in arrival order.
    let last = (0..DATAGRAMS)
        .rev()
        .find(|i| !matches!(i % 97, 13 | 41) && i % 5 != 0)
        .expect("a gauge line");
    assert_value(&text, "burst_last", last as f64);
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="invalid_line"}"#,
        broken as f64,
    );
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="invalid_value"}"#,
        bad_value as f64,
    );
}

#[test]
fn tcp_lines_split_across_writes() {
    let running = start(SidecarConfig::default());
    let addr = running.handle.tcp_addr().expect("tcp enabled by default");
    assert_eq!(addr.port(), running.port(), "TCP shares the UDP port");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(b"tcp.hits:1|c\ntcp.hi").unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(b"ts:2|c\r\ntcp.level:7|g|#k:v\n").unwrap();
    let long = vec![b'x'; 70 * 1024];
    stream.write_all(&long).unwrap();
    stream.write_all(b":1|c\ntcp.last:1|c").unwrap();
    drop(stream);
    let text = running.metrics_after(5);
    assert_value(&text, "tcp_hits_total", 3.0);
    assert_value(&text, r#"tcp_level{k="v"}"#, 7.0);
    assert_value(&text, "tcp_last_total", 1.0);
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="line_too_long"}"#,
        1.0,
    );
    assert_value(&text, "monasca_sidecar_statsd_tcp_connections_total", 1.0);
}

#[test]
fn mapping_rules_from_config() {
    let mut config = SidecarConfig::default();
    let mut labels = BTreeMap::new();
    labels.insert("service".to_string(), "$1".to_string());
    config.statsd.mappings = vec![
        StatsdMapping {
            pattern: "svc.*.latency".into(),
            match_type: MatchType::Glob,
            name: Some("service_latency_seconds".into()),
            labels,
            metric_type: Some(StatsdMetricType::Histogram),
            action: MappingAction::Map,
        },
        StatsdMapping {
            pattern: "^debug\\.".into(),
            match_type: MatchType::Regex,
            name: None,
            labels: BTreeMap::new(),
            metric_type: None,
            action: MappingAction::Drop,
        },
    ];
    let running = start(config);
    running.send(b"svc.api.latency:0.3|g\nsvc.db.latency:120|ms\ndebug.noise:1|c");
    let text = running.metrics_after(3);
    assert_value(
        &text,
        r#"service_latency_seconds_bucket{service="api",le="0.5"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"service_latency_seconds_bucket{service="db",le="0.25"}"#,
        1.0,
    );
    assert!(!text.contains("debug_noise"), "{text}");
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_dropped_total{reason="mapping"}"#,
        1.0,
    );
}

#[test]
fn mappings_reload_with_the_config() {
    let running = start(SidecarConfig::default());
    running.send(b"reload.a:1|c");
    running.metrics_after(1);
    let mut config = SidecarConfig::default();
    config.listen.statsd = running.app.config().listen.statsd.clone();
    config.statsd.mappings = vec![StatsdMapping {
        pattern: "reload.*".into(),
        match_type: MatchType::Glob,
        name: Some("reloaded".into()),
        labels: BTreeMap::new(),
        metric_type: None,
        action: MappingAction::Map,
    }];
    running.app.set_config(config);
    running.handle.flush(); // picks up the new rules
    running.send(b"reload.b:2|c");
    let text = running.metrics_after(2);
    assert_value(&text, "reload_a_total", 1.0);
    assert_value(&text, "reloaded_total", 2.0);
}

#[test]
fn disabled_statsd_binds_nothing() {
    let mut config = SidecarConfig::default();
    config.statsd.enabled = false;
    let running = start(config);
    assert!(running.handle.udp_addr().is_none());
    assert!(running.handle.tcp_addr().is_none());
}

#[test]
fn udp_only_when_tcp_is_off() {
    let mut config = SidecarConfig::default();
    config.statsd.tcp = false;
    let running = start(config);
    assert!(running.handle.udp_addr().is_some());
    assert!(running.handle.tcp_addr().is_none());
}

/// The real PyPI `monasca-statsd` client: counters (with per-call and client dimensions,
/// decrements), gauges, timers (sent as `g` seconds), the `timed` decorator, buffered
/// connections, and dimension values with quotes, UTF-8 and ints.
#[test]
fn real_monasca_statsd_client() {
    let running = start(SidecarConfig::default());
    let script = r#"
import sys, time
import monascastatsd as mstatsd
port = int(sys.argv[1])
c = mstatsd.Client(name="demo", host="127.0.0.1", port=port,
                   dimensions={"service": "monitoring", "hostname": "h1"})
counter = c.get_counter("requests", dimensions={"endpoint": "/v2.0/metrics"})
counter.increment()
counter.increment(5)
counter.increment(2, dimensions={"status": "204"})
counter.decrement()
gauge = c.get_gauge("queue")
gauge.send("depth", 42, dimensions={"queue": "a"})
timer = c.get_timer()
timer.timing("db.query_seconds", 0.25, dimensions={"db": "mysql"})
with timer.time("block_seconds", dimensions={"op": "sleep"}):
    time.sleep(0.01)
@timer.timed("fn_seconds")
def work():
    return 1
work()
with c.connection:
    counter.increment()
    gauge.send("depth", 7)
edge = mstatsd.Client(name="edge", host="127.0.0.1", port=port,
                      dimensions={"note": "it's", "city": "Zürich", "code": 204})
edge.get_counter("counter").increment()
print("sent")
"#;
    let port = running.port().to_string();
    let out = common::run_python(&["monascastatsd"], script, &[&port]);
    assert!(out.contains("sent"), "{out}");
    let text = running.metrics_after(11);
    let base = r#"endpoint="/v2.0/metrics",hostname="h1",service="monitoring""#;
    assert_value(&text, &format!("demo_requests_total{{{base}}}"), 7.0);
    assert_value(
        &text,
        &format!("demo_requests_total{{{base},status=\"204\"}}"),
        2.0,
    );
    assert_value(
        &text,
        r#"demo_queue_depth{hostname="h1",queue="a",service="monitoring"}"#,
        42.0,
    );
    assert_value(
        &text,
        r#"demo_queue_depth{hostname="h1",service="monitoring"}"#,
        7.0,
    );
    assert_value(
        &text,
        r#"demo_db_query_seconds{db="mysql",hostname="h1",service="monitoring"}"#,
        0.25,
    );
    let block = common::sample_value(
        &text,
        r#"demo_block_seconds{hostname="h1",op="sleep",service="monitoring"}"#,
    )
    .expect("block timer");
    assert!((0.01..1.0).contains(&block), "{block}");
    assert!(text.contains("# TYPE demo_fn_seconds gauge"), "{text}");
    assert_value(
        &text,
        r#"edge_counter_total{city="Zürich",code="204",note="it's"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_dropped_total{reason="negative_counter"}"#,
        1.0,
    );
    let errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("monasca_sidecar_statsd_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(errors, 0.0, "{text}");
}

/// The real PyPI `statsd` client over UDP (counters, decrements, gauges with deltas, timers,
/// sets, pipelines) and TCP.
#[test]
fn real_statsd_client_udp_and_tcp() {
    let running = start(SidecarConfig::default());
    let script = r#"
import sys
import statsd
port = int(sys.argv[1])
c = statsd.StatsClient("127.0.0.1", port, prefix="app")
c.incr("hits")
c.incr("hits", 3)
c.decr("hits")
c.gauge("temp", 10)
c.gauge("temp", 5, delta=True)
c.timing("render", 250)
with c.timer("block"):
    pass
c.set("users", "alice")
with c.pipeline() as p:
    p.incr("piped")
    p.incr("piped", 2)
    p.gauge("level", 3)
t = statsd.TCPStatsClient("127.0.0.1", port, prefix="tcp")
t.incr("hits", 4)
t.gauge("g", 1.5)
t.close()
print("sent")
"#;
    let port = running.port().to_string();
    let out = common::run_python(&["statsd"], script, &[&port]);
    assert!(out.contains("sent"), "{out}");
    let text = running.metrics_after(13);
    assert_value(&text, "app_hits_total", 4.0);
    assert_value(&text, "app_temp", 15.0);
    assert_value(&text, r#"app_render_bucket{le="0.1"}"#, 0.0);
    assert_value(&text, r#"app_render_bucket{le="0.25"}"#, 1.0);
    assert_value(&text, "app_render_sum", 0.25);
    assert_value(&text, "app_block_count", 1.0);
    assert_value(&text, "app_piped_total", 3.0);
    assert_value(&text, "app_level", 3.0);
    assert_value(&text, "tcp_hits_total", 4.0);
    assert_value(&text, "tcp_g", 1.5);
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_errors_total{reason="unsupported_set"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"monasca_sidecar_statsd_dropped_total{reason="negative_counter"}"#,
        1.0,
    );
}

/// Through the real `monasca-sidecar` binary: the captured monasca-statsd datagrams over
/// UDP and a line over TCP, read back from `/metrics` over HTTP.
#[test]
fn end_to_end_through_the_binary() {
    let sidecar = common::Sidecar::start("");
    let addr = *sidecar
        .addrs
        .get("statsd")
        .expect("the binary announces its statsd listener (listener=statsd addr=...)");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    for datagram in capture("monasca-statsd-datagrams.txt") {
        socket.send_to(&datagram, addr).expect("send");
    }
    let mut tcp = TcpStream::connect(addr).expect("statsd TCP on the same port");
    tcp.write_all(b"e2e.tcp:2|c\n").expect("write");
    drop(tcp);
    let edge = r#"edge_counter_total{city="Zürich",code="204",note="it's"}"#;
    let arrived = common::wait_until(Duration::from_secs(10), || {
        let text = sidecar.metrics();
        common::sample_value(&text, edge).is_some()
            && common::sample_value(&text, "e2e_tcp_total").is_some()
    });
    assert!(
        arrived,
        "StatsD values never reached /metrics:\n{}",
        sidecar.metrics()
    );
    let text = sidecar.metrics();
    let base = r#"endpoint="/v2.0/metrics",hostname="h1",service="monitoring""#;
    assert_value(&text, &format!("demo_requests_total{{{base}}}"), 2.0);
    assert_value(&text, edge, 1.0);
    assert_value(&text, "e2e_tcp_total", 2.0);
    assert_value(&text, "monasca_sidecar_statsd_lines_total", 14.0);
}

/// `POST /v1/clear` (what its route calls): StatsD values from before it are forgotten, and
/// samples that arrive right after it, before the next flush, are kept.
#[test]
fn samples_sent_right_after_a_clear_are_kept() {
    let s = start(SidecarConfig::default());
    s.send(b"hits:5|c\nlevel:3|g");
    let text = s.metrics_after(2);
    assert_eq!(
        common::sample_value(&text, "hits_total"),
        Some(5.0),
        "{text}"
    );
    s.app.clear();
    s.send(b"hits:2|c\nlevel:4|g");
    let text = s.metrics_after(4);
    assert_eq!(
        common::sample_value(&text, "hits_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(common::sample_value(&text, "level"), Some(4.0), "{text}");
    s.send(b"hits:1|c");
    let text = s.metrics_after(5);
    assert_eq!(
        common::sample_value(&text, "hits_total"),
        Some(3.0),
        "{text}"
    );
}
