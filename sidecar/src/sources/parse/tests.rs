//! Tests of the exposition parsers: real client output (Python prometheus_client, Go
//! client_golang), spec examples, tricky and malformed inputs, and property tests.

use super::protobuf::{self, proto};
use super::text;
use super::{ParseError, ParseErrorKind as K, Position};
use crate::model::{Family, HistogramValue, Label, MetricKind, Value};
use proptest::prelude::*;
use prost::Message;

// ---------------------------------------------------------------------------------------
// Helpers

fn ok(body: &str, om: bool) -> Vec<Family<'_>> {
    match text::parse(body, om) {
        Ok(f) => f,
        Err(e) => panic!("unexpected error {e} ({:?}) for body:\n{body}", e.kind),
    }
}

fn fail(body: &str, om: bool) -> ParseError {
    match text::parse(body, om) {
        Ok(f) => panic!("expected an error, got {f:?} for body:\n{body}"),
        Err(e) => {
            assert_one_line(&e);
            e
        }
    }
}

fn assert_one_line(e: &ParseError) {
    let s = e.to_string();
    assert!(
        !s.contains('\n') && !s.contains('\r'),
        "multi-line error: {s:?}"
    );
    assert!(s.len() < 400, "overlong error: {s}");
}

fn family<'f, 'a>(fams: &'f [Family<'a>], name: &str) -> &'f Family<'a> {
    fams.iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no family {name} in {fams:#?}"))
}

fn labels_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn label_pairs(labels: &[Label<'_>]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|l| (l.name.to_string(), l.value.to_string()))
        .collect()
}

/// The value of the series of `f` with exactly these labels (order-insensitive).
fn value<'f>(f: &'f Family<'_>, pairs: &[(&str, &str)]) -> &'f Value {
    let mut want = labels_of(pairs);
    want.sort();
    f.series
        .iter()
        .find(|s| {
            let mut have = label_pairs(&s.labels);
            have.sort();
            have == want
        })
        .map(|s| &s.value)
        .unwrap_or_else(|| panic!("no series {pairs:?} in {f:#?}"))
}

fn scalar(f: &Family<'_>, pairs: &[(&str, &str)]) -> f64 {
    match value(f, pairs) {
        Value::Scalar(v) => *v,
        other => panic!("not a scalar: {other:?}"),
    }
}

fn hist<'f>(f: &'f Family<'_>, pairs: &[(&str, &str)]) -> &'f HistogramValue {
    match value(f, pairs) {
        Value::Histogram(h) => h,
        other => panic!("not a histogram: {other:?}"),
    }
}

fn names(fams: &[Family<'_>]) -> Vec<String> {
    fams.iter().map(|f| f.name.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Real client output, captured by running the PyPI prometheus_client 0.26.0:
//   registry with Counter('app_requests', ..., ['method', 'path']), Gauge (NaN),
//   Histogram (buckets 0.1, 1, 10), Summary, Info, Enum, Gauge (+Inf), then
//   generate_latest(r) (0.0.4) and openmetrics.exposition.generate_latest(r).

const PYTHON_TEXT: &str = r##"# HELP app_requests_total Requests handled.\nSecond "line" \\ backslash
# TYPE app_requests_total counter
app_requests_total{method="GET",path="/a,b{c}\"d\"\\e\nf"} 3.0
app_requests_total{method="POST",path=""} 1.5
# HELP app_requests_created Requests handled.\nSecond "line" \\ backslash
# TYPE app_requests_created gauge
app_requests_created{method="GET",path="/a,b{c}\"d\"\\e\nf"} 1.7957028584884322e+09
app_requests_created{method="POST",path=""} 1.7957028584884489e+09
# HELP app_inflight In flight
# TYPE app_inflight gauge
app_inflight NaN
# HELP app_latency_seconds Latency
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{code="200",le="0.1"} 1.0
app_latency_seconds_bucket{code="200",le="1.0"} 1.0
app_latency_seconds_bucket{code="200",le="10.0"} 2.0
app_latency_seconds_bucket{code="200",le="+Inf"} 2.0
app_latency_seconds_count{code="200"} 2.0
app_latency_seconds_sum{code="200"} 5.05
app_latency_seconds_bucket{code="500",le="0.1"} 0.0
app_latency_seconds_bucket{code="500",le="1.0"} 0.0
app_latency_seconds_bucket{code="500",le="10.0"} 0.0
app_latency_seconds_bucket{code="500",le="+Inf"} 1.0
app_latency_seconds_count{code="500"} 1.0
app_latency_seconds_sum{code="500"} 100.0
# HELP app_latency_seconds_created Latency
# TYPE app_latency_seconds_created gauge
app_latency_seconds_created{code="200"} 1.7957028584884944e+09
app_latency_seconds_created{code="500"} 1.795702858488527e+09
# HELP app_size_bytes Size
# TYPE app_size_bytes summary
app_size_bytes_count 2.0
app_size_bytes_sum 1e+21
# HELP app_size_bytes_created Size
# TYPE app_size_bytes_created gauge
app_size_bytes_created 1.7957028584885492e+09
# HELP app_build_info Build info
# TYPE app_build_info gauge
app_build_info{rev="abc",version="1.2.3"} 1.0
# HELP app_state State
# TYPE app_state gauge
app_state{app_state="up"} 0.0
app_state{app_state="down"} 1.0
# HELP app_temp Temp
# TYPE app_temp gauge
app_temp +Inf
"##;

const PYTHON_OPENMETRICS: &str = r##"# HELP app_requests Requests handled.\nSecond \"line\" \\ backslash
# TYPE app_requests counter
app_requests_total{method="GET",path="/a,b{c}\"d\"\\e\nf"} 3.0
app_requests_created{method="GET",path="/a,b{c}\"d\"\\e\nf"} 1.795702858748264e+09
app_requests_total{method="POST",path=""} 1.5
app_requests_created{method="POST",path=""} 1.795702858748288e+09
# HELP app_inflight In flight
# TYPE app_inflight gauge
app_inflight NaN
# HELP app_latency_seconds Latency
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{code="200",le="0.1"} 1.0
app_latency_seconds_bucket{code="200",le="1.0"} 1.0
app_latency_seconds_bucket{code="200",le="10.0"} 2.0
app_latency_seconds_bucket{code="200",le="+Inf"} 2.0
app_latency_seconds_count{code="200"} 2.0
app_latency_seconds_sum{code="200"} 5.05
app_latency_seconds_created{code="200"} 1.7957028587483594e+09
app_latency_seconds_bucket{code="500",le="0.1"} 0.0
app_latency_seconds_bucket{code="500",le="1.0"} 0.0
app_latency_seconds_bucket{code="500",le="10.0"} 0.0
app_latency_seconds_bucket{code="500",le="+Inf"} 1.0
app_latency_seconds_count{code="500"} 1.0
app_latency_seconds_sum{code="500"} 100.0
app_latency_seconds_created{code="500"} 1.7957028587484105e+09
# HELP app_size_bytes Size
# TYPE app_size_bytes summary
app_size_bytes_count 2.0
app_size_bytes_sum 1e+21
app_size_bytes_created 1.795702858748441e+09
# HELP app_build Build info
# TYPE app_build info
app_build_info{rev="abc",version="1.2.3"} 1.0
# HELP app_state State
# TYPE app_state stateset
app_state{app_state="up"} 0.0
app_state{app_state="down"} 1.0
# HELP app_temp Temp
# TYPE app_temp gauge
app_temp +Inf
# EOF
"##;

/// `MultiProcessCollector` output of the same client (Counter, Gauge mode `all`, Histogram).
const PYTHON_MULTIPROCESS: &str = r##"# HELP inflight In flight
# TYPE inflight gauge
inflight{pid="18360"} 3.0
# HELP job_seconds Job time
# TYPE job_seconds histogram
job_seconds_sum 1.0
job_seconds_bucket{le="0.5"} 0.0
job_seconds_bucket{le="2.0"} 1.0
job_seconds_bucket{le="+Inf"} 1.0
job_seconds_count 1.0
# HELP jobs_total Jobs done
# TYPE jobs_total counter
jobs_total{queue="a"} 2.0
"##;

#[test]
fn python_text_exposition_parses_into_the_model() {
    let fams = ok(PYTHON_TEXT, false);
    // The `_created` gauges Python adds in 0.0.4 are dropped; the rest stays in body order.
    assert_eq!(
        names(&fams),
        [
            "app_requests_total",
            "app_inflight",
            "app_latency_seconds",
            "app_size_bytes",
            "app_build_info",
            "app_state",
            "app_temp"
        ]
    );
    let req = family(&fams, "app_requests_total");
    assert_eq!(req.kind, MetricKind::Counter);
    assert_eq!(
        req.help.as_deref(),
        Some("Requests handled.\nSecond \"line\" \\ backslash")
    );
    assert_eq!(
        scalar(req, &[("method", "GET"), ("path", "/a,b{c}\"d\"\\e\nf")]),
        3.0
    );
    assert_eq!(scalar(req, &[("method", "POST"), ("path", "")]), 1.5);

    let inflight = family(&fams, "app_inflight");
    assert_eq!(inflight.kind, MetricKind::Gauge);
    assert!(scalar(inflight, &[]).is_nan());

    let lat = family(&fams, "app_latency_seconds");
    assert_eq!(lat.kind, MetricKind::Histogram);
    let h = hist(lat, &[("code", "200")]);
    assert_eq!(h.bounds, [0.1, 1.0, 10.0, f64::INFINITY]);
    assert_eq!(h.buckets, [1.0, 1.0, 2.0, 2.0]);
    assert_eq!((h.count, h.sum), (2.0, 5.05));
    let h = hist(lat, &[("code", "500")]);
    assert_eq!(h.buckets, [0.0, 0.0, 0.0, 1.0]);
    assert_eq!((h.count, h.sum), (1.0, 100.0));

    let size = family(&fams, "app_size_bytes");
    assert_eq!(size.kind, MetricKind::Summary);
    assert_eq!(
        *value(size, &[]),
        Value::Summary {
            sum: 1e21,
            count: 2.0
        }
    );
    let build = family(&fams, "app_build_info");
    assert_eq!(build.kind, MetricKind::Gauge);
    assert_eq!(scalar(build, &[("rev", "abc"), ("version", "1.2.3")]), 1.0);
    let state = family(&fams, "app_state");
    assert_eq!(scalar(state, &[("app_state", "down")]), 1.0);
    assert_eq!(scalar(family(&fams, "app_temp"), &[]), f64::INFINITY);
}

#[test]
fn python_openmetrics_exposition_gives_the_same_model_as_text() {
    let om = ok(PYTHON_OPENMETRICS, true);
    let txt = ok(PYTHON_TEXT, false);
    assert_eq!(names(&om), names(&txt));
    for (a, b) in om.iter().zip(&txt) {
        assert_eq!(a.kind, b.kind, "{}", a.name);
        assert_eq!(a.help, b.help, "{}", a.name);
        assert_eq!(a.series.len(), b.series.len(), "{}", a.name);
        for (x, y) in a.series.iter().zip(&b.series) {
            assert_eq!(label_pairs(&x.labels), label_pairs(&y.labels));
            assert!(same_value(&x.value, &y.value), "{x:?} vs {y:?}");
        }
    }
}

#[test]
fn python_multiprocess_exposition_groups_histogram_with_sum_first() {
    let fams = ok(PYTHON_MULTIPROCESS, false);
    assert_eq!(names(&fams), ["inflight", "job_seconds", "jobs_total"]);
    let h = hist(family(&fams, "job_seconds"), &[]);
    assert_eq!(h.bounds, [0.5, 2.0, f64::INFINITY]);
    assert_eq!(h.buckets, [0.0, 1.0, 1.0]);
    assert_eq!((h.sum, h.count), (1.0, 1.0));
    let inflight = family(&fams, "inflight");
    assert_eq!(scalar(inflight, &[("pid", "18360")]), 3.0);
}

// ---------------------------------------------------------------------------------------
// Spec examples

/// The example of the Prometheus text-format documentation (0.0.4).
const PROMETHEUS_DOC_EXAMPLE: &str = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="0.2"} 100392
http_request_duration_seconds_bucket{le="0.5"} 129389
http_request_duration_seconds_bucket{le="1"} 133988
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# Finally a summary, which has a complex representation, too:
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.01"} 3102
rpc_duration_seconds{quantile="0.05"} 3272
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.9"} 9001
rpc_duration_seconds{quantile="0.99"} 76656
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
"#;

#[test]
fn prometheus_documentation_example() {
    let fams = ok(PROMETHEUS_DOC_EXAMPLE, false);
    assert_eq!(
        names(&fams),
        [
            "http_requests_total",
            "msdos_file_access_time_seconds",
            "metric_without_timestamp_and_labels",
            "something_weird",
            "http_request_duration_seconds",
            "rpc_duration_seconds"
        ]
    );
    let req = family(&fams, "http_requests_total");
    assert_eq!(req.series[0].timestamp, Some(1_395_066_363.0));
    assert_eq!(scalar(req, &[("method", "post"), ("code", "400")]), 3.0);
    let msdos = family(&fams, "msdos_file_access_time_seconds");
    assert_eq!(msdos.kind, MetricKind::Untyped);
    assert_eq!(
        scalar(
            msdos,
            &[
                ("path", r"C:\DIR\FILE.TXT"),
                ("error", "Cannot find file:\n\"FILE.TXT\"")
            ]
        ),
        1.458255915e9
    );
    let weird = family(&fams, "something_weird");
    assert_eq!(weird.series[0].value, Value::Scalar(f64::INFINITY));
    assert_eq!(weird.series[0].timestamp, Some(-3982.045));
    let h = hist(family(&fams, "http_request_duration_seconds"), &[]);
    assert_eq!(h.bounds, [0.05, 0.1, 0.2, 0.5, 1.0, f64::INFINITY]);
    assert_eq!(h.count, 144320.0);
    assert_eq!(h.sum, 53423.0);
    assert_eq!(
        *value(family(&fams, "rpc_duration_seconds"), &[]),
        Value::Summary {
            sum: 1.7560473e7,
            count: 2693.0
        }
    );
}

/// The example exposition of the OpenMetrics 1.0 specification ("Overall structure").
const OPENMETRICS_SPEC_EXAMPLE: &str = r#"# TYPE acme_http_router_request_seconds summary
# UNIT acme_http_router_request_seconds seconds
# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.
acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32
acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 807283.0
acme_http_router_request_seconds_created{path="/api/v1",method="GET"} 1605281325.0
acme_http_router_request_seconds_sum{path="/api/v2",method="POST"} 479.3
acme_http_router_request_seconds_count{path="/api/v2",method="POST"} 34.0
acme_http_router_request_seconds_created{path="/api/v2",method="POST"} 1605281325.0
# TYPE go_goroutines gauge
# HELP go_goroutines Number of goroutines that currently exist.
go_goroutines 69
# TYPE process_cpu_seconds counter
# UNIT process_cpu_seconds seconds
# HELP process_cpu_seconds Total user and system CPU time spent in seconds.
process_cpu_seconds_total 4.20072246e+06
# EOF
"#;

#[test]
fn openmetrics_specification_example() {
    let fams = ok(OPENMETRICS_SPEC_EXAMPLE, true);
    assert_eq!(
        names(&fams),
        [
            "acme_http_router_request_seconds",
            "go_goroutines",
            "process_cpu_seconds_total"
        ]
    );
    let acme = family(&fams, "acme_http_router_request_seconds");
    assert_eq!(acme.unit.as_deref(), Some("seconds"));
    assert_eq!(
        *value(acme, &[("path", "/api/v2"), ("method", "POST")]),
        Value::Summary {
            sum: 479.3,
            count: 34.0
        }
    );
    let cpu = family(&fams, "process_cpu_seconds_total");
    assert_eq!(cpu.kind, MetricKind::Counter);
    assert_eq!(cpu.unit.as_deref(), Some("seconds"));
    assert_eq!(scalar(cpu, &[]), 4.20072246e6);
}

#[test]
fn openmetrics_histogram_with_exemplars_and_created() {
    let body = r#"# TYPE foo histogram
foo_bucket{le="0.01"} 0
foo_bucket{le="0.1"} 8 # {} 0.054
foo_bucket{le="1"} 11 # {trace_id="KOO5S4vxi0o"} 0.67
foo_bucket{le="10"} 17 # {trace_id="oHg5SJYRHA0"} 9.8 1520879607.789
foo_bucket{le="+Inf"} 17
foo_count 17
foo_sum 324789.3
foo_created 1520430000.123
# EOF
"#;
    let fams = ok(body, true);
    let h = hist(family(&fams, "foo"), &[]);
    assert_eq!(h.bounds, [0.01, 0.1, 1.0, 10.0, f64::INFINITY]);
    assert_eq!(h.buckets, [0.0, 8.0, 11.0, 17.0, 17.0]);
    assert_eq!((h.count, h.sum), (17.0, 324789.3));
}

#[test]
fn openmetrics_exponent_bounds_sort_as_floats() {
    let body = r#"# TYPE foo histogram
foo_bucket{le="0.0"} 0
foo_bucket{le="1e-05"} 0
foo_bucket{le="0.0001"} 5
foo_bucket{le="0.1"} 8
foo_bucket{le="1.0"} 10
foo_bucket{le="10.0"} 11
foo_bucket{le="100000.0"} 11
foo_bucket{le="1e+06"} 15
foo_bucket{le="1e+23"} 16
foo_bucket{le="1.1e+23"} 17
foo_bucket{le="+Inf"} 17
foo_count 17
foo_sum 324789.3
foo_created 1520430000.123
# EOF
"#;
    let fams = ok(body, true);
    let h = hist(&fams[0], &[]);
    assert_eq!(
        h.bounds,
        [
            0.0,
            1e-5,
            1e-4,
            0.1,
            1.0,
            10.0,
            1e5,
            1e6,
            1e23,
            1.1e23,
            f64::INFINITY
        ]
    );
    assert!(h.bounds.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn openmetrics_counter_with_timestamp_and_exemplar() {
    let body = "# TYPE foo counter\nfoo_total 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1520879602.890\nfoo_created 1520430000.123\n# EOF\n";
    let fams = ok(body, true);
    assert_eq!(names(&fams), ["foo_total"]);
    assert_eq!(fams[0].series.len(), 1);
    assert_eq!(fams[0].series[0].value, Value::Scalar(17.0));
    assert_eq!(fams[0].series[0].timestamp, Some(1520879607.789));
}

#[test]
fn openmetrics_info_and_stateset_are_gauges() {
    let body = r#"# TYPE foo info
foo_info{name="pretty name",version="8.2.7"} 1
# TYPE bar stateset
bar{entity="controller",bar="a"} 1.0
bar{entity="controller",bar="bb"} 0.0
bar{entity="replica",bar="a"} 1.0
# EOF
"#;
    let fams = ok(body, true);
    assert_eq!(names(&fams), ["foo_info", "bar"]);
    assert!(fams.iter().all(|f| f.kind == MetricKind::Gauge));
    assert_eq!(fams[1].series.len(), 3);
}

#[test]
fn openmetrics_unknown_type_is_untyped() {
    let fams = ok("# TYPE foo unknown\nfoo 1\n# EOF", true);
    assert_eq!(fams[0].kind, MetricKind::Untyped);
}

// ---------------------------------------------------------------------------------------
// Tricky inputs

#[test]
fn label_values_with_escapes_commas_braces_and_quotes() {
    let body = concat!(
        r##"m{a="x,y",b="{}",c="say \"hi\"",d="back\\slash",e="new\nline",f="# not a comment"} 1"##,
        "\n"
    );
    let fams = ok(body, false);
    let s = &fams[0].series[0];
    let got = label_pairs(&s.labels);
    assert_eq!(
        got,
        labels_of(&[
            ("a", "x,y"),
            ("b", "{}"),
            ("c", "say \"hi\""),
            ("d", "back\\slash"),
            ("e", "new\nline"),
            ("f", "# not a comment"),
        ])
    );
}

#[test]
fn label_values_borrow_from_the_body_unless_escaped() {
    use std::borrow::Cow;
    let fams = ok("m{a=\"plain\",b=\"esc\\\\aped\"} 1\n", false);
    let labels = &fams[0].series[0].labels;
    assert!(matches!(labels[0].name, Cow::Borrowed(_)));
    assert!(matches!(labels[0].value, Cow::Borrowed("plain")));
    assert!(matches!(&labels[1].value, Cow::Owned(v) if v == "esc\\aped"));
    assert!(matches!(fams[0].name, Cow::Borrowed("m")));
}

#[test]
fn special_float_values_and_exponents() {
    let body = "a +Inf\nb -Inf\nc NaN\nd Inf\ne 1.5e-3\nf -2E+10\ng 0x\n";
    let e = fail(body, false);
    assert_eq!((e.kind, e.line()), (K::InvalidValue, Some(7)));
    let fams = ok(&body[..body.len() - 5], false);
    let v: Vec<f64> = fams
        .iter()
        .map(|f| match f.series[0].value {
            Value::Scalar(v) => v,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(v[0], f64::INFINITY);
    assert_eq!(v[1], f64::NEG_INFINITY);
    assert!(v[2].is_nan());
    assert_eq!(v[3], f64::INFINITY);
    assert_eq!(v[4], 1.5e-3);
    assert_eq!(v[5], -2e10);
}

#[test]
fn empty_label_set_trailing_comma_and_spacing() {
    let body = "a{} 1\nb{x=\"1\",} 2\nc { x = \"1\" , y=\"2\" } 3\n\td\t4\n";
    let fams = ok(body, false);
    assert_eq!(names(&fams), ["a", "b", "c", "d"]);
    assert!(fams[0].series[0].labels.is_empty());
    assert_eq!(scalar(&fams[1], &[("x", "1")]), 2.0);
    assert_eq!(scalar(&fams[2], &[("x", "1"), ("y", "2")]), 3.0);
    assert_eq!(scalar(&fams[3], &[]), 4.0);
}

#[test]
fn crlf_blank_lines_and_comments_are_tolerated() {
    let body =
        "# a free comment\r\n\r\n# HELP a Help\r\n# TYPE a gauge\r\na{x=\"y\"} 1\r\n   \r\n#\r\n";
    let fams = ok(body, false);
    assert_eq!(fams[0].help.as_deref(), Some("Help"));
    assert_eq!(scalar(&fams[0], &[("x", "y")]), 1.0);
    let om = ok("# TYPE a gauge\r\na 1\r\n# EOF\r\n", true);
    assert_eq!(scalar(&om[0], &[]), 1.0);
}

#[test]
fn timestamps_are_seconds() {
    let fams = ok("a 1 1700000000123\nb 1 -5\n", false);
    assert_eq!(fams[0].series[0].timestamp, Some(1_700_000_000.123));
    assert_eq!(fams[1].series[0].timestamp, Some(-0.005));
    let om = ok("a 1 1700000000.5\n# EOF\n", true);
    assert_eq!(om[0].series[0].timestamp, Some(1_700_000_000.5));
    assert_eq!(fail("a 1 1.5\n", false).kind, K::InvalidTimestamp);
    assert_eq!(fail("a 1 NaN\n# EOF\n", true).kind, K::InvalidTimestamp);
}

#[test]
fn untyped_samples_without_type_each_form_a_family() {
    let fams = ok("a{x=\"1\"} 1\na{x=\"2\"} 2\nb 3\nc_total 4\n", false);
    assert_eq!(names(&fams), ["a", "b", "c_total"]);
    assert!(fams.iter().all(|f| f.kind == MetricKind::Untyped));
    assert_eq!(fams[0].series.len(), 2);
}

#[test]
fn sample_outside_its_typed_family_starts_an_untyped_family() {
    let fams = ok("# TYPE a gauge\na 1\nb 2\n", false);
    assert_eq!(names(&fams), ["a", "b"]);
    assert_eq!(fams[1].kind, MetricKind::Untyped);
    // In 0.0.4 a counter `foo` owns only the sample `foo`; `foo_total` after it starts an
    // untyped family, which then collides with the counter's model name `foo_total`.
    let e = fail("# TYPE foo counter\nfoo 1\nfoo_total 2\n", false);
    assert_eq!(e.kind, K::TypeConflict);
    let fams = ok("# TYPE foo counter\nfoo 1\nfoo_bar 2\n", false);
    assert_eq!(names(&fams), ["foo_total", "foo_bar"]);
    assert_eq!(
        (fams[0].kind, fams[1].kind),
        (MetricKind::Counter, MetricKind::Untyped)
    );
}

#[test]
fn counter_names_follow_the_text_format() {
    // 0.0.4: the sample name, with `_total` added when it lacks it (issue 11: `jobs` from one
    // worker and `jobs_total` from another are one counter).
    assert_eq!(
        names(&ok("# TYPE foo_total counter\nfoo_total 1\n", false)),
        ["foo_total"]
    );
    assert_eq!(
        names(&ok("# TYPE foo counter\nfoo 1\n", false)),
        ["foo_total"]
    );
    assert_eq!(names(&ok("foo 1\n", false)), ["foo"], "untyped: as sent");
    // OpenMetrics: family foo, sample foo_total -> foo_total (also with no samples).
    assert_eq!(
        names(&ok("# TYPE foo counter\nfoo_total 1\n# EOF\n", true)),
        ["foo_total"]
    );
    assert_eq!(
        names(&ok("# TYPE foo counter\n# EOF\n", true)),
        ["foo_total"]
    );
    // ...and an OpenMetrics exposer that already put _total in the family name.
    assert_eq!(
        names(&ok("# TYPE foo_total counter\nfoo_total 1\n# EOF\n", true)),
        ["foo_total"]
    );
}

#[test]
fn created_samples_are_dropped() {
    let body = "# TYPE c counter\nc_total 1\nc_created 17\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_created 17\nh_count 1\nh_sum 2\n# TYPE s summary\ns_count 1\ns_sum 2\ns_created 3\n# EOF\n";
    let fams = ok(body, true);
    assert_eq!(names(&fams), ["c_total", "h", "s"]);
    assert_eq!(fams.iter().map(|f| f.series.len()).sum::<usize>(), 3);
}

#[test]
fn created_gauge_is_kept_when_it_is_not_pythons() {
    // Different HELP: a user's own gauge, not Python's munged `_created`.
    let body = "# HELP jobs_total Jobs\n# TYPE jobs_total counter\njobs_total 1\n# HELP jobs_created Jobs created\n# TYPE jobs_created gauge\njobs_created 5\n";
    assert_eq!(names(&ok(body, false)), ["jobs_total", "jobs_created"]);
}

#[test]
fn histogram_count_defaults_to_inf_bucket_and_a_missing_sum_stays_missing() {
    let body =
        "# TYPE h histogram\nh_bucket{le=\"+Inf\",a=\"1\"} 7\nh_bucket{a=\"1\",le=\"2\"} 3\n";
    let fams = ok(body, false);
    let h = hist(&fams[0], &[("a", "1")]);
    assert_eq!(h.bounds, [2.0, f64::INFINITY]);
    assert_eq!(h.buckets, [3.0, 7.0]);
    assert_eq!(h.count, 7.0);
    assert!(h.sum.is_nan(), "no _sum line: no sum (not an invented 0)");
}

#[test]
fn histogram_series_are_grouped_by_labels_in_any_order() {
    let body = "# TYPE h histogram\nh_bucket{a=\"1\",b=\"2\",le=\"+Inf\"} 1\nh_count{b=\"2\",a=\"1\"} 1\nh_sum{a=\"1\",b=\"2\"} 4\nh_bucket{a=\"2\",b=\"2\",le=\"+Inf\"} 9\n";
    let fams = ok(body, false);
    assert_eq!(fams[0].series.len(), 2);
    assert_eq!(hist(&fams[0], &[("a", "1"), ("b", "2")]).sum, 4.0);
    assert_eq!(hist(&fams[0], &[("a", "2"), ("b", "2")]).count, 9.0);
}

#[test]
fn summary_quantiles_are_dropped() {
    let body =
        "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.9\"} 2\ns_sum 10\ns_count 3\n";
    let fams = ok(body, false);
    assert_eq!(fams[0].series.len(), 1);
    assert_eq!(
        fams[0].series[0].value,
        Value::Summary {
            sum: 10.0,
            count: 3.0
        }
    );
}

#[test]
fn help_escapes_differ_between_formats() {
    let body = "# HELP a x\\\\y\\nz\\\"q\\t\n# TYPE a gauge\na 1\n";
    assert_eq!(ok(body, false)[0].help.as_deref(), Some("x\\y\nz\\\"q\\t"));
    let om = format!("{body}# EOF\n");
    assert_eq!(ok(&om, true)[0].help.as_deref(), Some("x\\y\nz\"q\\t"));
}

#[test]
fn metadata_only_family_is_kept_empty() {
    let fams = ok("# HELP a Help\n# TYPE a counter\n", false);
    assert_eq!(fams.len(), 1);
    assert!(fams[0].series.is_empty());
}

#[test]
fn eof_is_tolerated_at_the_end_of_text_004() {
    assert_eq!(ok("a 1\n# EOF\n\n", false).len(), 1);
    assert_eq!(ok("# EOF", true).len(), 0);
}

#[test]
fn empty_body() {
    assert!(ok("", false).is_empty());
    assert!(ok("\n\n", false).is_empty());
    assert_eq!(fail("", true).kind, K::MissingEof);
}

#[test]
fn very_long_lines() {
    let big = "x".repeat(1 << 20);
    let body = format!("big{{v=\"{big}\",w=\"a\\\"b\"}} 1\n");
    let fams = ok(&body, false);
    assert_eq!(fams[0].series[0].labels[0].value.len(), 1 << 20);
    assert_eq!(fams[0].series[0].labels[1].value, "a\"b");

    // A long line with many labels (duplicate detection must stay cheap).
    let many: Vec<String> = (0..20_000).map(|i| format!("l{i}=\"v\"")).collect();
    let body = format!("m{{{}}} 1\n", many.join(","));
    assert_eq!(ok(&body, false)[0].series[0].labels.len(), 20_000);
    let body = format!("m{{{},l7=\"x\"}} 1\n", many.join(","));
    assert_eq!(fail(&body, false).kind, K::DuplicateLabel);

    // A 1 MB garbage value: the error message stays short.
    let body = format!("m {big}\n");
    let e = fail(&body, false);
    assert_eq!(e.kind, K::InvalidValue);
}

#[test]
fn many_series_in_one_family() {
    let mut body = String::from("# TYPE m counter\n");
    for i in 0..5000 {
        body.push_str(&format!("m{{i=\"{i}\",j=\"x\"}} {i}\n"));
    }
    assert_eq!(ok(&body, false)[0].series.len(), 5000);
    body.push_str("m{j=\"x\",i=\"4321\"} 1\n");
    let e = fail(&body, false);
    assert_eq!((e.kind, e.line()), (K::DuplicateSeries, Some(5002)));
}

#[test]
fn parse_bytes_reports_invalid_utf8_line() {
    let e = text::parse_bytes(b"a 1\nb{x=\"\xff\"} 2\n", false).unwrap_err();
    assert_eq!((e.kind, e.line()), (K::InvalidUtf8, Some(2)));
    assert_eq!(text::parse_bytes(b"a 1\n", false).map(|f| f.len()), Ok(1));
}

// ---------------------------------------------------------------------------------------
// Malformed inputs: each gives its kind, its line and a one-line message.

#[test]
fn malformed_inputs_give_the_right_kind_and_line() {
    let cases: &[(&str, bool, K, usize)] = &[
        ("foo abc", false, K::InvalidValue, 1),
        ("a 1\nfoo{a=\"b} 1", false, K::Unterminated, 2),
        ("foo{a=\"b\"", false, K::Unterminated, 1),
        ("foo{a=\"b\",", false, K::Unterminated, 1),
        ("foo{a=\"\\t\"} 1", false, K::InvalidEscape, 1),
        ("foo{a=\"b\\", false, K::Unterminated, 1),
        ("foo{a=\"1\",a=\"2\"} 1", false, K::DuplicateLabel, 1),
        ("1foo 1", false, K::InvalidName, 1),
        ("foo-bar 1", false, K::InvalidName, 1),
        ("foo{1a=\"x\"} 1", false, K::InvalidName, 1),
        ("foo{a.b=\"x\"} 1", false, K::InvalidName, 1),
        ("foo{a=\"b\",,} 1", false, K::InvalidName, 1),
        ("foo{\"a\"=\"x\"} 1", false, K::InvalidName, 1),
        ("foo{a=b} 1", false, K::InvalidLabel, 1),
        ("foo{a \"b\"} 1", false, K::InvalidLabel, 1),
        ("foo{a=\"b\" c=\"d\"} 1", false, K::InvalidLabel, 1),
        ("foo", false, K::InvalidSample, 1),
        ("foo{}", false, K::InvalidSample, 1),
        ("foo 1 2 3", false, K::InvalidSample, 1),
        ("foo 1 abc", false, K::InvalidTimestamp, 1),
        ("foo 1 # {a=\"b\"} x\n# EOF", true, K::InvalidExemplar, 1),
        ("foo 1 # bad\n# EOF", true, K::InvalidExemplar, 1),
        ("foo 1 # {} 1 2 3\n# EOF", true, K::InvalidExemplar, 1),
        ("foo 1\nfoo 2", false, K::DuplicateSeries, 2),
        (
            "foo{a=\"1\",b=\"2\"} 1\nfoo{b=\"2\",a=\"1\"} 2",
            false,
            K::DuplicateSeries,
            2,
        ),
        (
            "# TYPE s summary\ns_sum 1\ns_sum 2",
            false,
            K::DuplicateSeries,
            3,
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 1",
            false,
            K::DuplicateSeries,
            2,
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_sum 1",
            false,
            K::MissingInfBucket,
            2,
        ),
        (
            "# TYPE h histogram\nh_count 1\nh_sum 1",
            false,
            K::MissingInfBucket,
            2,
        ),
        ("# TYPE h histogram\nh_bucket 1", false, K::InvalidBucket, 2),
        (
            "# TYPE h histogram\nh_bucket{le=\"x\"} 1",
            false,
            K::InvalidBucket,
            2,
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"NaN\"} 1",
            false,
            K::InvalidBucket,
            2,
        ),
        (
            "# TYPE foo gauge\nfoo 1\nbar 1\nfoo{a=\"b\"} 2",
            false,
            K::InterleavedFamily,
            4,
        ),
        (
            "# TYPE foo gauge\nfoo 1\nbar 1\n# HELP foo again",
            false,
            K::InterleavedFamily,
            4,
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nbar 1\nh_count 1",
            false,
            K::InterleavedFamily,
            4,
        ),
        ("a 1\nb 1\na 2", false, K::InterleavedFamily, 3),
        (
            "# TYPE foo gauge\n# TYPE foo counter",
            false,
            K::TypeConflict,
            2,
        ),
        ("foo 1\n# TYPE foo gauge", false, K::TypeConflict, 2),
        ("# TYPE foo counter\nfoo 1\n# EOF", true, K::TypeConflict, 2),
        ("# TYPE h histogram\nh 1", false, K::TypeConflict, 2),
        (
            "# TYPE foo counter\nfoo_total 1\n# TYPE foo_total gauge\nfoo_total 2\n# EOF",
            true,
            K::TypeConflict,
            3,
        ),
        ("# HELP foo a\n# HELP foo b", false, K::DuplicateMetadata, 2),
        (
            "# UNIT foo s\n# UNIT foo s\n# EOF",
            true,
            K::DuplicateMetadata,
            2,
        ),
        ("# TYPE foo bogus", false, K::InvalidType, 1),
        (
            "# TYPE foo gaugehistogram\n# EOF",
            true,
            K::UnsupportedType,
            1,
        ),
        ("# TYPE foo", false, K::InvalidMetadata, 1),
        ("# TYPE foo gauge extra", false, K::InvalidMetadata, 1),
        ("# HELP", false, K::InvalidMetadata, 1),
        ("# HELP 1foo x", false, K::InvalidName, 1),
        ("a 1\n", true, K::MissingEof, 1),
        ("a 1\n# EOF\na 2\n", true, K::ContentAfterEof, 3),
        ("a 1\n# EOF\n\n", true, K::ContentAfterEof, 3),
        ("a 1\n# EOF\nb 2\n", false, K::ContentAfterEof, 3),
    ];
    for (body, om, kind, line) in cases {
        let e = fail(body, *om);
        assert_eq!(
            (e.kind, e.line()),
            (*kind, Some(*line)),
            "body {body:?}: got {e}"
        );
        assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
    }
}

#[test]
fn error_messages_read_well() {
    assert_eq!(
        fail("a 1\nb 1\nfoo abc\n", false).to_string(),
        "line 3: invalid value \"abc\" for sample foo"
    );
    assert_eq!(
        fail("# TYPE h histogram\nh_bucket{le=\"1\",a=\"x\"} 1\n", false).to_string(),
        "line 2: histogram h{a=\"x\"} has no +Inf bucket"
    );
    let e = fail("m{a=\"x\ny\"} 1\n", false);
    assert_eq!(e.kind, K::Unterminated);
    // Input quoted in a message is escaped and shortened.
    let e = fail(&format!("m {}\u{7}\n", "9".repeat(500)), false);
    assert!(e.to_string().contains("..."), "{e}");
    assert!(e.to_string().len() < 120, "{e}");
}

#[test]
fn error_kinds_have_distinct_names() {
    let mut seen = std::collections::HashSet::new();
    for k in K::ALL {
        assert!(seen.insert(k.as_str()), "{k:?}");
        assert!(
            k.as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
    }
}

// ---------------------------------------------------------------------------------------
// Protobuf

const GO_PUSH_BODY: &[u8] = include_bytes!("../../../../../shared/fixtures/wire/go-push-body.bin");

#[test]
fn go_client_push_body_decodes() {
    let fams = protobuf::decode(GO_PUSH_BODY).unwrap();
    assert_eq!(names(&fams), ["go_job_seconds", "go_jobs_processed_total"]);
    let job = &fams[0];
    assert_eq!(job.kind, MetricKind::Histogram);
    assert_eq!(job.help.as_deref(), Some("Job duration in seconds."));
    let h = hist(job, &[]);
    // Go omits the +Inf bucket: it is added from sample_count.
    assert_eq!(h.bounds, [0.01, 0.1, 1.0, f64::INFINITY]);
    assert_eq!(h.buckets, [2.0, 10.0, 10.0, 10.0]);
    assert_eq!((h.count, h.sum), (10.0, 0.45000000000000007));
    let c = &fams[1];
    assert_eq!(c.kind, MetricKind::Counter);
    assert_eq!(c.help.as_deref(), Some("Jobs processed by the Go client."));
    assert_eq!(scalar(c, &[("queue", "a")]), 10.0);
    assert_eq!(c.series[0].timestamp, None);
}

#[test]
fn go_client_push_body_truncated_anywhere_is_an_error() {
    // Byte 99 ends the first message (1-byte prefix + 98): a valid body of one family.
    for cut in (1..GO_PUSH_BODY.len()).filter(|&cut| cut != 99) {
        let e = protobuf::decode(&GO_PUSH_BODY[..cut]).unwrap_err();
        assert!(
            matches!(e.kind, K::Truncated | K::InvalidProtobuf),
            "cut at {cut}: {e}"
        );
        assert_one_line(&e);
    }
}

fn lp(name: &str, value: &str) -> proto::LabelPair {
    proto::LabelPair {
        name: Some(name.into()),
        value: Some(value.into()),
    }
}

fn metric(labels: Vec<proto::LabelPair>) -> proto::Metric {
    proto::Metric {
        label: labels,
        ..Default::default()
    }
}

fn mf(name: &str, ty: proto::MetricType, metrics: Vec<proto::Metric>) -> proto::MetricFamily {
    proto::MetricFamily {
        name: Some(name.into()),
        help: Some(format!("help of {name}")),
        r#type: Some(ty as i32),
        metric: metrics,
        unit: None,
    }
}

fn encode(families: &[proto::MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        f.encode_length_delimited(&mut out).unwrap();
    }
    out
}

fn all_types_body() -> Vec<u8> {
    use proto::MetricType as T;
    let mut counter = metric(vec![lp("a", "1"), lp("b", "x\"y\n")]);
    counter.counter = Some(proto::Counter { value: Some(5.5) });
    counter.timestamp_ms = Some(1_700_000_000_250);
    let mut gauge = metric(vec![]);
    gauge.gauge = Some(proto::Gauge {
        value: Some(f64::NAN),
    });
    let mut untyped = metric(vec![lp("u", "v")]);
    untyped.untyped = Some(proto::Untyped { value: Some(-1.0) });
    let mut summary = metric(vec![]);
    summary.summary = Some(proto::Summary {
        sample_count: Some(4),
        sample_sum: Some(2.5),
        quantile: vec![proto::Quantile {
            quantile: Some(0.5),
            value: Some(0.6),
        }],
    });
    let bucket = |ub: f64, c: u64| proto::Bucket {
        cumulative_count: Some(c),
        cumulative_count_float: None,
        upper_bound: Some(ub),
    };
    let mut with_inf = metric(vec![lp("le_given", "yes")]);
    with_inf.histogram = Some(proto::Histogram {
        sample_count: Some(3),
        sample_sum: Some(9.0),
        // Out of order on purpose, with an explicit +Inf.
        bucket: vec![bucket(f64::INFINITY, 3), bucket(1.0, 1), bucket(0.5, 0)],
        ..Default::default()
    });
    let mut float_counts = metric(vec![lp("le_given", "no")]);
    float_counts.histogram = Some(proto::Histogram {
        sample_count: Some(0),
        sample_count_float: Some(2.5),
        sample_sum: Some(1.0),
        bucket: vec![proto::Bucket {
            cumulative_count: None,
            cumulative_count_float: Some(1.5),
            upper_bound: Some(1.0),
        }],
        ..Default::default()
    });
    encode(&[
        mf("c_total", T::Counter, vec![counter]),
        mf("g", T::Gauge, vec![gauge]),
        mf("u", T::Untyped, vec![untyped]),
        mf("s", T::Summary, vec![summary]),
        mf("h", T::Histogram, vec![with_inf, float_counts]),
    ])
}

#[test]
fn prost_encoded_body_of_every_type_decodes() {
    let body = all_types_body();
    let fams = protobuf::decode(&body).unwrap();
    assert_eq!(names(&fams), ["c_total", "g", "u", "s", "h"]);
    let c = &fams[0];
    assert_eq!(c.kind, MetricKind::Counter);
    assert_eq!(scalar(c, &[("a", "1"), ("b", "x\"y\n")]), 5.5);
    assert_eq!(c.series[0].timestamp, Some(1_700_000_000.25));
    assert!(scalar(&fams[1], &[]).is_nan());
    assert_eq!(fams[2].kind, MetricKind::Untyped);
    assert_eq!(
        *value(&fams[3], &[]),
        Value::Summary {
            sum: 2.5,
            count: 4.0
        }
    );
    let h = hist(&fams[4], &[("le_given", "yes")]);
    assert_eq!(h.bounds, [0.5, 1.0, f64::INFINITY]);
    assert_eq!(h.buckets, [0.0, 1.0, 3.0]);
    let h = hist(&fams[4], &[("le_given", "no")]);
    assert_eq!(h.bounds, [1.0, f64::INFINITY]);
    assert_eq!(h.buckets, [1.5, 2.5]);
    assert_eq!(h.count, 2.5);
}

#[test]
fn protobuf_and_text_give_the_same_model() {
    let body = all_types_body();
    let from_proto = protobuf::decode(&body).unwrap();
    let text = "# HELP c_total help of c_total\n# TYPE c_total counter\nc_total{a=\"1\",b=\"x\\\"y\\n\"} 5.5 1700000000250\n\
# HELP g help of g\n# TYPE g gauge\ng NaN\n\
# HELP u help of u\n# TYPE u untyped\nu{u=\"v\"} -1\n\
# HELP s help of s\n# TYPE s summary\ns{quantile=\"0.5\"} 0.6\ns_sum 2.5\ns_count 4\n\
# HELP h help of h\n# TYPE h histogram\n\
h_bucket{le_given=\"yes\",le=\"0.5\"} 0\nh_bucket{le_given=\"yes\",le=\"1\"} 1\nh_bucket{le_given=\"yes\",le=\"+Inf\"} 3\nh_sum{le_given=\"yes\"} 9\nh_count{le_given=\"yes\"} 3\n\
h_bucket{le_given=\"no\",le=\"1\"} 1.5\nh_bucket{le_given=\"no\",le=\"+Inf\"} 2.5\nh_sum{le_given=\"no\"} 1\nh_count{le_given=\"no\"} 2.5\n";
    let from_text = ok(text, false);
    assert_eq!(from_proto.len(), from_text.len());
    for (a, b) in from_proto.iter().zip(&from_text) {
        assert!(same_family(a, b), "{a:#?}\n!=\n{b:#?}");
    }
}

#[test]
fn protobuf_malformed_inputs() {
    use proto::MetricType as T;
    let cases: Vec<(&str, Vec<u8>, K)> = vec![
        ("bad varint", vec![0xff; 11], K::InvalidProtobuf),
        (
            "overflowing varint",
            [vec![0xff; 9], vec![0x02]].concat(),
            K::InvalidProtobuf,
        ),
        ("prefix ends", vec![0x80], K::Truncated),
        ("prefix beyond body", vec![0x05, 0x0a, 0x01], K::Truncated),
        (
            "prefix beyond the cap",
            {
                let mut v = Vec::new();
                prost::encoding::encode_varint((protobuf::MAX_MESSAGE_BYTES + 1) as u64, &mut v);
                v
            },
            K::TooLarge,
        ),
        // Field 1 (name, a string) sent as a varint.
        (
            "wrong wire type",
            vec![0x02, 0x08, 0x01],
            K::InvalidProtobuf,
        ),
        // Field 1 claims 5 bytes inside a 2-byte message.
        (
            "inner truncation",
            vec![0x02, 0x0a, 0x05],
            K::InvalidProtobuf,
        ),
        (
            "invalid utf8 name",
            vec![0x03, 0x0a, 0x01, 0xff],
            K::InvalidProtobuf,
        ),
        ("empty message", vec![0x00], K::InvalidProtobuf),
        (
            "no name",
            encode(&[proto::MetricFamily::default()]),
            K::InvalidProtobuf,
        ),
        (
            "unknown type",
            encode(&[proto::MetricFamily {
                name: Some("x".into()),
                r#type: Some(42),
                ..Default::default()
            }]),
            K::InvalidProtobuf,
        ),
        (
            "invalid metric name",
            encode(&[mf("a-b", T::Gauge, vec![])]),
            K::InvalidName,
        ),
        (
            "invalid label name",
            encode(&[mf(
                "g",
                T::Gauge,
                vec![proto::Metric {
                    gauge: Some(proto::Gauge { value: Some(1.0) }),
                    ..metric(vec![lp("", "x")])
                }],
            )]),
            K::InvalidName,
        ),
        (
            "duplicate label",
            encode(&[mf(
                "g",
                T::Gauge,
                vec![proto::Metric {
                    gauge: Some(proto::Gauge { value: Some(1.0) }),
                    ..metric(vec![lp("a", "x"), lp("a", "y")])
                }],
            )]),
            K::DuplicateLabel,
        ),
        (
            "duplicate series",
            encode(&[mf(
                "g",
                T::Gauge,
                vec![
                    proto::Metric {
                        gauge: Some(proto::Gauge { value: Some(1.0) }),
                        ..metric(vec![lp("a", "x"), lp("b", "y")])
                    },
                    proto::Metric {
                        gauge: Some(proto::Gauge { value: Some(2.0) }),
                        ..metric(vec![lp("b", "y"), lp("a", "x")])
                    },
                ],
            )]),
            K::DuplicateSeries,
        ),
        (
            "family twice",
            encode(&[mf("g", T::Gauge, vec![]), mf("g", T::Gauge, vec![])]),
            K::InterleavedFamily,
        ),
        (
            "value of another type",
            encode(&[mf(
                "c",
                T::Counter,
                vec![proto::Metric {
                    gauge: Some(proto::Gauge { value: Some(1.0) }),
                    ..metric(vec![])
                }],
            )]),
            K::TypeConflict,
        ),
        (
            "gauge histogram",
            encode(&[mf("gh", T::GaugeHistogram, vec![])]),
            K::UnsupportedType,
        ),
        (
            "native histogram",
            encode(&[mf(
                "nh",
                T::Histogram,
                vec![proto::Metric {
                    histogram: Some(proto::Histogram {
                        sample_count: Some(1),
                        schema: Some(3),
                        positive_span: vec![proto::BucketSpan {
                            offset: Some(0),
                            length: Some(1),
                        }],
                        ..Default::default()
                    }),
                    ..metric(vec![])
                }],
            )]),
            K::UnsupportedType,
        ),
        (
            "NaN bound",
            encode(&[mf(
                "h",
                T::Histogram,
                vec![proto::Metric {
                    histogram: Some(proto::Histogram {
                        bucket: vec![proto::Bucket {
                            cumulative_count: Some(1),
                            cumulative_count_float: None,
                            upper_bound: Some(f64::NAN),
                        }],
                        ..Default::default()
                    }),
                    ..metric(vec![])
                }],
            )]),
            K::InvalidBucket,
        ),
    ];
    for (what, body, kind) in cases {
        let e = protobuf::decode(&body).unwrap_err();
        assert_eq!(e.kind, kind, "{what}: {e}");
        assert_one_line(&e);
        assert!(
            matches!(
                e.at,
                Position::Message {
                    index: 1,
                    offset: 0
                } | Position::Message { index: 2, .. }
            ),
            "{what}: {e}"
        );
    }
}

#[test]
fn protobuf_error_names_the_message() {
    let mut body = GO_PUSH_BODY.to_vec();
    body.extend_from_slice(&[0x05, 0x0a]);
    let e = protobuf::decode(&body).unwrap_err();
    assert_eq!(e.kind, K::Truncated);
    assert_eq!(
        e.to_string(),
        "message 3 at byte 186: message claims 5 bytes but only 1 remain"
    );
    assert_eq!(e.line(), None);
}

#[test]
fn protobuf_empty_body_and_unknown_fields() {
    assert!(protobuf::decode(&[]).unwrap().is_empty());
    // A family with an unknown field (tag 15, varint) and a Metric exemplar-bearing counter
    // (Counter tag 2) still decodes: unknown fields are skipped.
    let mut msg = mf("c_total", proto::MetricType::Counter, vec![]).encode_to_vec();
    msg.extend_from_slice(&[0x78, 0x01]); // field 15, varint 1
    let mut body = Vec::new();
    prost::encoding::encode_varint(msg.len() as u64, &mut body);
    body.extend_from_slice(&msg);
    let fams = protobuf::decode(&body).unwrap();
    assert_eq!(names(&fams), ["c_total"]);
}

// ---------------------------------------------------------------------------------------
// Property tests

fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => same_f64(*x, *y),
        (Value::Summary { sum: s1, count: c1 }, Value::Summary { sum: s2, count: c2 }) => {
            same_f64(*s1, *s2) && same_f64(*c1, *c2)
        }
        (Value::Histogram(x), Value::Histogram(y)) => {
            x.bounds == y.bounds
                && x.buckets.len() == y.buckets.len()
                && x.buckets
                    .iter()
                    .zip(&y.buckets)
                    .all(|(a, b)| same_f64(*a, *b))
                && same_f64(x.sum, y.sum)
                && same_f64(x.count, y.count)
        }
        _ => false,
    }
}

fn same_family(a: &Family<'_>, b: &Family<'_>) -> bool {
    a.name == b.name
        && a.kind == b.kind
        && a.help == b.help
        && a.series.len() == b.series.len()
        && a.series.iter().zip(&b.series).all(|(x, y)| {
            label_pairs(&x.labels) == label_pairs(&y.labels)
                && same_value(&x.value, &y.value)
                && x.timestamp == y.timestamp
        })
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn render_labels(labels: &[Label<'_>], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|l| format!("{}=\"{}\"", l.name, escape_label(&l.value)))
        .collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A minimal renderer (the real one lives in `expose`), enough to round-trip the model.
fn render(fams: &[Family<'_>], om: bool) -> String {
    let mut out = String::new();
    for f in fams {
        let meta_name = match f.kind {
            MetricKind::Counter if om => f.name.strip_suffix("_total").unwrap_or(&f.name),
            _ => &f.name,
        };
        if let Some(help) = &f.help {
            out.push_str(&format!("# HELP {meta_name} {}\n", escape_help(help)));
        }
        let ty = if om {
            f.kind.openmetrics_name()
        } else {
            f.kind.text_name()
        };
        out.push_str(&format!("# TYPE {meta_name} {ty}\n"));
        for s in &f.series {
            let ts = match s.timestamp {
                None => String::new(),
                Some(t) if om => format!(" {t:?}"),
                Some(t) => format!(" {}", (t * 1000.0).round() as i64),
            };
            match &s.value {
                Value::Scalar(v) => out.push_str(&format!(
                    "{}{} {}{ts}\n",
                    f.name,
                    render_labels(&s.labels, None),
                    fmt_f64(*v)
                )),
                Value::Histogram(h) => {
                    for (b, c) in h.bounds.iter().zip(&h.buckets) {
                        out.push_str(&format!(
                            "{}_bucket{} {}{ts}\n",
                            f.name,
                            render_labels(&s.labels, Some(("le", fmt_f64(*b)))),
                            fmt_f64(*c)
                        ));
                    }
                    let l = render_labels(&s.labels, None);
                    out.push_str(&format!("{}_count{l} {}{ts}\n", f.name, fmt_f64(h.count)));
                    out.push_str(&format!("{}_sum{l} {}{ts}\n", f.name, fmt_f64(h.sum)));
                }
                Value::Summary { sum, count } => {
                    let l = render_labels(&s.labels, None);
                    out.push_str(&format!("{}_sum{l} {}{ts}\n", f.name, fmt_f64(*sum)));
                    out.push_str(&format!("{}_count{l} {}{ts}\n", f.name, fmt_f64(*count)));
                }
            }
        }
    }
    if om {
        out.push_str("# EOF\n");
    }
    out
}

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        2 => (-1000i64..1000).prop_map(|v| v as f64),
    ]
}

fn arb_label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{0,8}",
        "[ -~\n\\\\\"{},=#é\u{1F600}]{0,24}",
        any::<String>(),
    ]
}

/// Extra labels of one series: unique names, none of `le`, `quantile` or the `id` label that
/// makes series unique.
fn arb_labels() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[a-z_][a-z0-9_]{0,6}", arb_label_value(), 0..4).prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| k != "le" && k != "quantile" && k != "id")
            .collect()
    })
}

fn arb_histogram() -> impl Strategy<Value = HistogramValue> {
    (
        prop::collection::btree_set(-1_000_000i64..1_000_000, 0..6),
        prop::collection::vec(0u32..1000, 7),
        arb_f64(),
        arb_f64(),
    )
        .prop_map(|(bounds, incs, sum, count)| {
            let mut bounds: Vec<f64> = bounds.into_iter().map(|b| b as f64 / 8.0).collect();
            bounds.push(f64::INFINITY);
            let mut acc = 0.0;
            let buckets = bounds
                .iter()
                .zip(&incs)
                .map(|(_, i)| {
                    acc += f64::from(*i);
                    acc
                })
                .collect();
            HistogramValue {
                bounds,
                buckets,
                sum,
                count,
            }
        })
}

/// Extra labels, value and optional millisecond timestamp of one generated series.
type GenSeries = (Vec<(String, String)>, Value, Option<i64>);

#[derive(Clone, Debug)]
struct GenFamily {
    kind: MetricKind,
    help: Option<String>,
    series: Vec<GenSeries>,
}

fn arb_family() -> impl Strategy<Value = GenFamily> {
    let kind = prop_oneof![
        Just(MetricKind::Counter),
        Just(MetricKind::Gauge),
        Just(MetricKind::Untyped),
        Just(MetricKind::Histogram),
        Just(MetricKind::Summary),
    ];
    (
        kind,
        // A trailing carriage return would read as CRLF: exposers escape or never write it.
        prop::option::of("[ -~\n\\\\\"é\t]{0,24}"),
    )
        .prop_flat_map(|(kind, help)| {
            let value = match kind {
                MetricKind::Histogram => arb_histogram().prop_map(Value::Histogram).boxed(),
                MetricKind::Summary => (arb_f64(), arb_f64())
                    .prop_map(|(sum, count)| Value::Summary { sum, count })
                    .boxed(),
                _ => arb_f64().prop_map(Value::Scalar).boxed(),
            };
            let series = prop::collection::vec(
                (
                    arb_labels(),
                    value,
                    prop::option::of(-10_000_000_000_000i64..10_000_000_000_000),
                ),
                0..5,
            );
            series.prop_map(move |series| GenFamily {
                kind,
                help: help.clone(),
                series,
            })
        })
}

fn build_families(gens: &[GenFamily]) -> Vec<Family<'static>> {
    gens.iter()
        .enumerate()
        .map(|(i, g)| {
            let name = match g.kind {
                MetricKind::Counter => format!("m{i}_total"),
                _ => format!("m{i}"),
            };
            let mut f = Family::new(name, g.kind);
            f.help = g.help.clone().map(Into::into);
            for (j, (labels, value, ts)) in g.series.iter().enumerate() {
                let mut ls: crate::model::Labels<'static> = labels
                    .iter()
                    .map(|(n, v)| Label::new(n.clone(), v.clone()))
                    .collect();
                ls.push(Label::new("id", j.to_string()));
                // Whole milliseconds: exact in both 0.0.4 (integer ms) and OpenMetrics.
                let timestamp = ts.map(|ms| ms as f64 / 1000.0);
                f.series.push(crate::model::Series {
                    labels: ls,
                    value: value.clone(),
                    timestamp,
                });
            }
            f
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn text_parser_never_panics_on_arbitrary_strings(s in any::<String>(), om in any::<bool>()) {
        if let Err(e) = text::parse(&s, om) {
            assert_one_line(&e);
        }
    }

    #[test]
    fn text_parser_never_panics_on_exposition_like_strings(
        s in "[a-z_{}=\",# \n\\\\0-9.+eInfNa\t\r-]{0,300}",
        om in any::<bool>(),
    ) {
        if let Err(e) = text::parse(&s, om) {
            assert_one_line(&e);
        }
    }

    #[test]
    fn text_parser_never_panics_on_mutated_valid_bodies(
        cut in 0usize..2000,
        insert in prop::sample::select(vec!["\"", "\\", "{", "}", ",", "\n", " ", "#", "=", "_bucket", "\r", "é"]),
        om in any::<bool>(),
    ) {
        let base = if om { PYTHON_OPENMETRICS } else { PYTHON_TEXT };
        let mut at = cut.min(base.len());
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let body = format!("{}{insert}{}", &base[..at], &base[at..]);
        if let Err(e) = text::parse(&body, om) {
            assert_one_line(&e);
        }
        if let Err(e) = text::parse(&base[..at], om) {
            assert_one_line(&e);
        }
    }

    #[test]
    fn byte_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = protobuf::decode(&bytes) {
            assert_one_line(&e);
        }
        let _ = text::parse_bytes(&bytes, false);
    }

    #[test]
    fn protobuf_decoder_never_panics_on_mutated_bodies(
        pos in 0usize..400,
        byte in any::<u8>(),
    ) {
        let mut body = all_types_body();
        body.extend_from_slice(GO_PUSH_BODY);
        let i = pos % body.len();
        body[i] = byte;
        if let Err(e) = protobuf::decode(&body) {
            assert_one_line(&e);
        }
    }

    #[test]
    fn rendered_families_parse_back_to_the_same_values(
        gens in prop::collection::vec(arb_family(), 0..6),
        om in any::<bool>(),
    ) {
        let fams = build_families(&gens);
        let body = render(&fams, om);
        let parsed = match text::parse(&body, om) {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{body}"),
        };
        prop_assert_eq!(parsed.len(), fams.len());
        for (a, b) in parsed.iter().zip(&fams) {
            prop_assert!(same_family(a, b), "{:#?}\n!=\n{:#?}\nbody:\n{}", a, b, body);
        }
    }
}

/// Issue 11 item 4: a protobuf counter named without `_total` (client_golang allows it) is
/// the same counter as one named with it.
#[test]
fn protobuf_counter_family_names_end_in_total() {
    use proto::MetricType as T;
    let mut m = metric(vec![]);
    m.counter = Some(proto::Counter { value: Some(3.0) });
    let mut g = metric(vec![]);
    g.gauge = Some(proto::Gauge { value: Some(1.0) });
    let body = encode(&[
        mf("jobs", T::Counter, vec![m.clone()]),
        mf("done_total", T::Counter, vec![m]),
        mf("temp", T::Gauge, vec![g]),
    ]);
    let fams = protobuf::decode(&body).expect("decodes");
    assert_eq!(names(&fams), ["jobs_total", "done_total", "temp"]);
}

// ---------------------------------------------------------------------------------------
// Names repeated from the previous line (taken without a scan): only an exact repeat counts

/// Label names of every series of every family, in body order.
fn label_names<'a>(fams: &'a [Family<'_>]) -> Vec<Vec<&'a str>> {
    fams.iter()
        .flat_map(|f| &f.series)
        .map(|s| s.labels.iter().map(|l| &*l.name).collect())
        .collect()
}

#[test]
fn names_like_the_previous_lines_are_read_whole() {
    // A longer name that starts with the previous one is another name.
    let fams = ok("a{x=\"1\"} 1\nab{x=\"1\"} 1\nab{xy=\"1\"} 2\n", false);
    assert_eq!(names(&fams), ["a", "ab"]);
    assert_eq!(label_names(&fams), [vec!["x"], vec!["x"], vec!["xy"]]);
    // `:` continues a metric name (not a label name).
    let fams = ok("m 1\nm:x 2\n", false);
    assert_eq!(names(&fams), ["m", "m:x"]);
    // Same names in another order, fewer, more, none.
    let fams = ok(
        "m{a=\"1\",b=\"2\"} 1\nm{b=\"3\",a=\"4\"} 1\nm{b=\"5\"} 1\nm{b=\"6\",a=\"7\",c=\"8\"} 1\nm 1\nm{ a = \"9\" } 1\n",
        false,
    );
    assert_eq!(
        label_names(&fams),
        [
            vec!["a", "b"],
            vec!["b", "a"],
            vec!["b"],
            vec!["b", "a", "c"],
            vec![],
            vec!["a"]
        ]
    );
}

#[test]
fn repeated_names_after_a_valid_line_are_still_refused() {
    for (body, kind, line) in [
        (
            "m{a=\"1\",b=\"2\"} 1\nm{a=\"1\",a=\"2\"} 1\n",
            K::DuplicateLabel,
            2,
        ),
        ("m{a=\"1\"} 1\nm{a=\"2\",a=\"3\"} 1\n", K::DuplicateLabel, 2),
        (
            "m{a=\"1\",b=\"2\"} 1\nm{a=\"1\",b=\"2\",b=\"3\"} 1\n",
            K::DuplicateLabel,
            2,
        ),
        ("m{a=\"1\"} 1\nm{a-b=\"2\"} 1\n", K::InvalidName, 2),
        ("m{a=\"1\"} 1\nm{a\"2\"} 1\n", K::InvalidName, 2),
        ("m{a=\"1\"} 1\nm{a \"2\"} 1\n", K::InvalidLabel, 2),
        ("m{a=\"1\"} 1\nm-x{a=\"2\"} 1\n", K::InvalidName, 2),
        ("m 1\nm", K::InvalidSample, 2),
    ] {
        let e = fail(body, false);
        assert_eq!((e.kind, e.line()), (kind, Some(line)), "{body}");
    }
}

/// Sample lines of one family drawn from names that extend, repeat and break each other.
fn arb_sample_line() -> impl Strategy<Value = String> {
    let label = (
        prop::sample::select(vec!["a", "ab", "b", "a_b", "a-b", "1a", "le", ""]),
        prop::sample::select(vec!["=", " = ", "=\t", ""]),
    );
    (
        prop::sample::select(vec!["m", "m", "m", "mx", "m:x", "m-"]),
        prop::collection::vec(label, 0..4),
        any::<bool>(),
    )
        .prop_map(|(name, labels, braces)| {
            let set: Vec<String> = labels
                .iter()
                .map(|(n, eq)| format!("{n}{eq}\"v\""))
                .collect();
            if braces || !set.is_empty() {
                format!("{name}{{{}}}", set.join(","))
            } else {
                name.to_string()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A body parses line for line as each of its lines parses alone: the same label names,
    /// or the error of the first line that fails alone, on that line. Lines get distinct
    /// values (no duplicate series) and their names come grouped (no interleaving).
    #[test]
    fn each_line_parses_as_it_does_alone(mut lines in prop::collection::vec(arb_sample_line(), 1..12)) {
        lines.sort_by_key(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string());
        let lines: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{} {i}", l.replace("\"v\"", &format!("\"v{i}\""))))
            .collect();
        let body = lines.join("\n");
        let alone: Vec<Result<Vec<Vec<String>>, ParseError>> = lines
            .iter()
            .map(|l| {
                text::parse(l, false).map(|f| {
                    label_names(&f).iter().map(|s| s.iter().map(|n| n.to_string()).collect()).collect()
                })
            })
            .collect();
        match alone.iter().position(Result::is_err) {
            Some(first) => {
                let Err(expected) = &alone[first] else { unreachable!() };
                let e = text::parse(&body, false).expect_err("a line fails alone");
                // Unless two lines before it have no labels (the same series twice).
                if e.kind != K::DuplicateSeries || e.line() > Some(first + 1) {
                    prop_assert_eq!((e.kind, e.line()), (expected.kind, Some(first + 1)), "{}", body);
                }
            }
            None => {
                let fams = match text::parse(&body, false) {
                    Ok(f) => f,
                    // Only what a line cannot show alone: two lines without labels (the same
                    // series twice).
                    Err(e) => {
                        prop_assert_eq!(e.kind, K::DuplicateSeries, "{}", body);
                        return Ok(());
                    }
                };
                let expected: Vec<Vec<String>> = alone.into_iter().flat_map(|r| r.unwrap_or_default()).collect();
                let got: Vec<Vec<String>> = label_names(&fams)
                    .iter()
                    .map(|s| s.iter().map(|n| n.to_string()).collect())
                    .collect();
                prop_assert_eq!(got, expected, "{}", body);
            }
        }
    }
}
