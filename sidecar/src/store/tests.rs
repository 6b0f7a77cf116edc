//! Aggregation semantics, fed by values and read back through the text renderer.

use super::*;
use crate::expose::{Format, render};
use crate::model::{Family, HistogramValue, Label, Labels, MetricKind, Series, Value};
use monasca_config::{AggregationRule, SidecarConfig};

fn t0() -> Now {
    Now::now()
}

fn worker(id: &str) -> WorkerKey {
    WorkerKey::new(
        Source::Push,
        format!("push:instance={id}"),
        vec![("instance".into(), id.into())],
    )
}

fn labels(pairs: &[(&'static str, &'static str)]) -> Labels<'static> {
    pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect()
}

fn scalar(
    name: &'static str,
    kind: MetricKind,
    pairs: &[(&'static str, &'static str)],
    v: f64,
) -> Family<'static> {
    let mut f = Family::new(name, kind);
    f.series.push(Series {
        labels: labels(pairs),
        value: Value::Scalar(v),
        timestamp: None,
    });
    f
}

fn counter(v: f64) -> Family<'static> {
    scalar("requests_total", MetricKind::Counter, &[("path", "/a")], v)
}

fn histogram(bounds: &[f64], buckets: &[f64], sum: f64) -> Family<'static> {
    let mut f = Family::new("latency_seconds", MetricKind::Histogram);
    f.series.push(Series {
        labels: labels(&[]),
        value: Value::Histogram(HistogramValue {
            bounds: bounds.to_vec(),
            buckets: buckets.to_vec(),
            sum,
            count: *buckets.last().unwrap(),
        }),
        timestamp: None,
    });
    f
}

fn text(store: &Store, now: Now) -> String {
    let mut out = Vec::new();
    render(store, Format::Text, now.mono, &[], &mut out);
    String::from_utf8(out).unwrap()
}

fn samples(store: &Store, now: Now) -> Vec<String> {
    text(store, now)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn store() -> Store {
    Store::new(StoreSettings::default())
}

#[test]
fn counters_sum_across_workers_without_worker_label() {
    let mut s = store();
    let now = t0();
    s.apply(&worker("w1"), &[counter(10.0)], Scope::Worker, now)
        .unwrap();
    s.apply(&worker("w2"), &[counter(5.0)], Scope::Worker, now)
        .unwrap();
    assert_eq!(samples(&s, now), ["requests_total{path=\"/a\"} 15"]);
}

#[test]
fn counter_survives_worker_deletion_and_restart() {
    let mut s = store();
    let now = t0();
    s.apply(&worker("w1"), &[counter(10.0)], Scope::Worker, now)
        .unwrap();
    s.apply(&worker("w2"), &[counter(5.0)], Scope::Worker, now)
        .unwrap();
    assert!(s.remove_worker("push:instance=w2"));
    assert_eq!(samples(&s, now), ["requests_total{path=\"/a\"} 15"]);
    // w1 restarts: its value drops from 10 to 3; the 10 is retired.
    let stats = s
        .apply(&worker("w1"), &[counter(3.0)], Scope::Worker, now)
        .unwrap();
    assert_eq!(stats.resets, 1);
    assert_eq!(samples(&s, now), ["requests_total{path=\"/a\"} 18"]);
    assert_eq!(s.worker_count(), 1);
}

/// `orders_total` with an `ok` series and, when given, a `failed` one.
fn orders(ok: f64, failed: Option<f64>) -> Family<'static> {
    let mut f = scalar(
        "orders_total",
        MetricKind::Counter,
        &[("outcome", "ok")],
        ok,
    );
    if let Some(v) = failed {
        let mut other = scalar(
            "orders_total",
            MetricKind::Counter,
            &[("outcome", "failed")],
            v,
        );
        f.series.append(&mut other.series);
    }
    f
}

/// Samples in sorted order: a series that returns is rendered after the others.
fn sorted_samples(s: &Store, now: Now) -> Vec<String> {
    let mut lines = samples(s, now);
    lines.sort();
    lines
}

/// Worker `w1` PUTs [`orders`].
fn push_orders(s: &mut Store, now: Now, ok: f64, failed: Option<f64>) -> ApplyStats {
    s.apply(&worker("w1"), &[orders(ok, failed)], Scope::Worker, now)
        .unwrap()
}

/// The Java client creates a labelled child on its first use: a restarted worker pushes
/// without `outcome="failed"` until its first failure, then pushes 1 again. That 1 is new.
#[test]
fn series_dropped_by_a_restarted_worker_counts_anew_when_it_returns() {
    // The restart is seen in the same update that drops the series, or in a later one.
    for dropped_first in [false, true] {
        let mut s = store();
        let now = t0();
        push_orders(&mut s, now, 51.0, Some(1.0));
        if dropped_first {
            push_orders(&mut s, now, 52.0, None);
        }
        let restart = push_orders(&mut s, now, 5.0, None);
        assert_eq!(restart.resets, 1);
        let before = if dropped_first { 52 } else { 51 };
        assert_eq!(
            sorted_samples(&s, now),
            [
                "orders_total{outcome=\"failed\"} 1".to_string(),
                format!("orders_total{{outcome=\"ok\"}} {}", before + 5)
            ],
            "dropped first: {dropped_first}"
        );
        push_orders(&mut s, now, 6.0, Some(1.0));
        assert_eq!(
            sorted_samples(&s, now),
            [
                "orders_total{outcome=\"failed\"} 2".to_string(),
                format!("orders_total{{outcome=\"ok\"}} {}", before + 6)
            ],
            "dropped first: {dropped_first}"
        );
    }
}

/// Without a restart, a series that leaves and comes back at or above its last value
/// continues (a push that omitted it is not a new process).
#[test]
fn series_dropped_without_a_restart_continues_when_it_returns() {
    let mut s = store();
    let now = t0();
    push_orders(&mut s, now, 51.0, Some(1.0));
    push_orders(&mut s, now, 52.0, None);
    push_orders(&mut s, now, 53.0, Some(1.0));
    assert_eq!(
        sorted_samples(&s, now),
        [
            "orders_total{outcome=\"failed\"} 1",
            "orders_total{outcome=\"ok\"} 53"
        ]
    );
}

/// The failure seen in CI with the Java client: a pushing worker restarts, and by its first
/// push it has already counted a rare outcome back up to its old value. Its other counter went
/// down, so the process restarted: the rare one's old value belongs to the previous life too.
#[test]
fn a_restart_retires_the_counters_that_came_back_at_or_above_their_old_value() {
    for (failed_before, failed_after) in [(1.0, 1.0), (1.0, 3.0)] {
        let mut s = store();
        let now = t0();
        push_orders(&mut s, now, 69.0, Some(failed_before));
        let restart = push_orders(&mut s, now, 10.0, Some(failed_after));
        assert_eq!(restart.resets, 1);
        assert!(restart.restarted);
        assert_eq!(
            sorted_samples(&s, now),
            [
                format!(
                    "orders_total{{outcome=\"failed\"}} {}",
                    failed_before + failed_after
                ),
                "orders_total{outcome=\"ok\"} 79".to_string(),
            ]
        );
        // The new life continues as usual.
        let next = push_orders(&mut s, now, 12.0, Some(failed_after + 1.0));
        assert!(!next.restarted);
        assert_eq!(
            sorted_samples(&s, now),
            [
                format!(
                    "orders_total{{outcome=\"failed\"}} {}",
                    failed_before + failed_after + 1.0
                ),
                "orders_total{outcome=\"ok\"} 81".to_string(),
            ]
        );
        assert_eq!(s.worker_restarts, 1);
    }
}

/// The restart may show in a histogram (a bucket went down) while a counter came back above
/// its old value, or the other way round; and a family a `POST` left out belongs to the
/// previous life as well.
#[test]
fn a_restart_shown_by_any_family_retires_the_whole_worker() {
    let bounds = [0.1, 1.0, f64::INFINITY];
    // A histogram bucket goes down; the counter is above its old value.
    let mut s = store();
    let now = t0();
    let first = [counter(2.0), histogram(&bounds, &[3.0, 5.0, 6.0], 4.0)];
    s.apply(&worker("w1"), &first, Scope::Worker, now).unwrap();
    let again = [counter(4.0), histogram(&bounds, &[1.0, 5.0, 7.0], 4.5)];
    let stats = s.apply(&worker("w1"), &again, Scope::Worker, now).unwrap();
    assert!(stats.restarted);
    let shown = text(&s, now);
    for line in [
        "requests_total{path=\"/a\"} 6",
        "latency_seconds_bucket{le=\"0.1\"} 4",
        "latency_seconds_bucket{le=\"1.0\"} 10",
        "latency_seconds_bucket{le=\"+Inf\"} 13",
        "latency_seconds_sum 8.5",
        "latency_seconds_count 13",
    ] {
        assert!(shown.lines().any(|l| l == line), "{line} not in\n{shown}");
    }

    // The counter goes down in a POST of its family alone: the histogram, not in the POST,
    // was the previous life's and is retired; the new process later sends it from zero, and
    // that (at or above the old value) counts anew.
    let mut s = store();
    let gauge = scalar("queue", MetricKind::Gauge, &[], 4.0);
    let first = [
        counter(9.0),
        histogram(&bounds, &[1.0, 1.0, 1.0], 0.5),
        gauge,
    ];
    s.apply(&worker("w1"), &first, Scope::Worker, now).unwrap();
    let stats = s
        .apply(&worker("w1"), &[counter(1.0)], Scope::Families, now)
        .unwrap();
    assert!(stats.restarted);
    let later = [histogram(&bounds, &[1.0, 2.0, 2.0], 0.75)];
    s.apply(&worker("w1"), &later, Scope::Families, now)
        .unwrap();
    let shown = text(&s, now);
    for line in [
        "requests_total{path=\"/a\"} 10",
        "latency_seconds_count 3",
        "latency_seconds_sum 1.25",
        // POST keeps the gauge of a family it does not name.
        "queue 4",
    ] {
        assert!(shown.lines().any(|l| l == line), "{line} not in\n{shown}");
    }
}

/// A worker that is one process (a pushing worker, a scrape target with
/// `oneProcessPerTarget`) and sends a `process_start_time_seconds` later by more than the
/// jitter allowance restarted, even when every counter is already back at or above its old
/// value; the same start time again, or the first one, is no restart. Any other scrape
/// target's start time (an exporter mirroring outside counters) is not taken as one.
#[test]
fn a_new_process_start_time_is_a_restart_of_a_one_process_worker() {
    let with_start = |ok: f64, failed: f64, start: f64| {
        [
            orders(ok, Some(failed)),
            scalar(PROCESS_START_TIME, MetricKind::Gauge, &[], start),
        ]
    };
    let keys = [
        WorkerKey::new(Source::Push, "w1", vec![]),
        WorkerKey::new(Source::Scrape, "w1", vec![]),
        WorkerKey::new(Source::Scrape, "w1", vec![]).with_one_process(true),
    ];
    for w in keys {
        let source = (w.source, w.one_process);
        let mut s = store();
        let now = t0();
        let first = s
            .apply(&w, &with_start(5.0, 1.0, 1000.5), Scope::Worker, now)
            .unwrap();
        assert!(!first.restarted);
        let same = s
            .apply(&w, &with_start(6.0, 1.0, 1000.5), Scope::Worker, now)
            .unwrap();
        assert!(!same.restarted);
        let again = s
            .apply(&w, &with_start(7.0, 2.0, 2000.25), Scope::Worker, now)
            .unwrap();
        assert_eq!(again.resets, 0);
        let one_process = w.one_process;
        assert_eq!(again.restarted, one_process, "{source:?}");
        let (ok, failed) = if one_process { (13, 3) } else { (7, 2) };
        let shown = sorted_samples(&s, now);
        assert_eq!(
            shown[..2],
            [
                format!("orders_total{{outcome=\"failed\"}} {failed}"),
                format!("orders_total{{outcome=\"ok\"}} {ok}"),
            ],
            "{source:?}"
        );
    }
}

/// Go's client adds `/proc/stat`'s boot time to the process's start ticks at every collect, so
/// a live process's start time moves by a whole second now and then, either way: that is the
/// same process, whose counters continue (taking it for a restart would count them twice).
/// A start time more than the jitter earlier is no restart either (no process starts before
/// the one it replaces), and is counted; more than the jitter later is a restart.
#[test]
fn a_start_time_that_jitters_or_goes_back_is_no_restart() {
    let with_start = |ok: f64, start: f64| {
        [
            orders(ok, Some(1.0)),
            scalar(PROCESS_START_TIME, MetricKind::Gauge, &[], start),
        ]
    };
    let w = WorkerKey::new(Source::Push, "w1", vec![]);
    let mut s = store();
    let now = t0();
    let mut push = |ok: f64, start: f64| s.apply(&w, &with_start(ok, start), Scope::Worker, now);
    for (ok, start) in [
        (5.0, 1000.25),
        (6.0, 1001.25),
        (7.0, 1000.25),
        (8.0, 999.25),
    ] {
        let stats = push(ok, start).unwrap();
        assert!(!stats.restarted, "start time {start}");
    }
    assert_eq!((s.worker_restarts, s.start_time_regressions), (0, 0));
    assert_eq!(
        sorted_samples(&s, now)[..2],
        [
            "orders_total{outcome=\"failed\"} 1".to_string(),
            "orders_total{outcome=\"ok\"} 8".to_string(),
        ]
    );
    // Two processes under one id: going back is counted, going forward is a restart.
    let mut push = |ok: f64, start: f64| s.apply(&w, &with_start(ok, start), Scope::Worker, now);
    let back = push(9.0, 990.0).unwrap();
    assert!(!back.restarted);
    let forward = push(10.0, 999.25).unwrap();
    assert!(forward.restarted);
    assert_eq!((s.worker_restarts, s.start_time_regressions), (1, 1));
}

#[test]
fn start_time_moves_past_the_jitter_only() {
    use StartTimeMove::{Earlier, Later, Same};
    let j = START_TIME_JITTER_SECONDS;
    for (old, new, expected) in [
        (1000.0, 1000.0, Same),
        (1000.0, 1000.0 + j, Same),
        (1000.0, 1000.0 - j, Same),
        (1000.0, 1000.01 + j, Later),
        (1000.0, 999.99 - j, Earlier),
        (1.7e9, 1.7e9 + 1.0, Same),
        (1.7e9, 1.7e9 + 3600.0, Later),
    ] {
        assert_eq!(StartTimeMove::between(old, new), expected, "{old} -> {new}");
    }
}

/// Where a worker is not known to be one process (a scrape target by default, StatsD, the
/// JSON API), a counter that goes down restarts alone: the others continue, counted once. A
/// scrape target with `oneProcessPerTarget` restarts whole, as a pushing worker does: the
/// rare counter that the new process counted up past its old value (1, then 2) counts both
/// lives.
#[test]
fn a_reset_is_per_series_unless_the_worker_is_one_process() {
    let keys = [
        WorkerKey::new(Source::Scrape, "w1", vec![]),
        WorkerKey::new(Source::Json, "w1", vec![]),
        WorkerKey::new(Source::Statsd, "w1", vec![]),
        WorkerKey::new(Source::Scrape, "w1", vec![]).with_one_process(true),
    ];
    for w in keys {
        let mut s = store();
        let now = t0();
        s.apply(&w, &[orders(69.0, Some(1.0))], Scope::Worker, now)
            .unwrap();
        let stats = s
            .apply(&w, &[orders(10.0, Some(2.0))], Scope::Worker, now)
            .unwrap();
        assert_eq!((stats.resets, stats.restarted), (1, w.one_process));
        let failed = if w.one_process { 3 } else { 2 };
        assert_eq!(
            sorted_samples(&s, now),
            [
                format!("orders_total{{outcome=\"failed\"}} {failed}"),
                "orders_total{outcome=\"ok\"} 79".to_string()
            ],
            "{w:?}"
        );
    }
}

#[test]
fn counter_survives_staleness_and_forgetting() {
    let mut s = store();
    let now = t0();
    s.apply(&worker("w1"), &[counter(10.0)], Scope::Worker, now)
        .unwrap();
    s.apply(&worker("w2"), &[counter(5.0)], Scope::Worker, now)
        .unwrap();
    let later = now.after(Duration::from_secs(120));
    s.apply(&worker("w1"), &[counter(10.0)], Scope::Worker, later)
        .unwrap();
    assert!(s.is_stale(1, later.mono));
    assert_eq!(samples(&s, later), ["requests_total{path=\"/a\"} 15"]);
    let much_later = now.after(Duration::from_secs(3600 * 2));
    s.apply(&worker("w1"), &[counter(10.0)], Scope::Worker, much_later)
        .unwrap();
    assert_eq!(s.sweep(much_later), ["push:instance=w2"]);
    assert_eq!(samples(&s, much_later), ["requests_total{path=\"/a\"} 15"]);
    s.apply(&worker("w1"), &[counter(3.0)], Scope::Worker, much_later)
        .unwrap();
    assert_eq!(samples(&s, much_later), ["requests_total{path=\"/a\"} 18"]);
}

#[test]
fn put_without_a_series_retires_its_counter() {
    let mut s = store();
    let now = t0();
    let both = [
        counter(7.0),
        scalar("other_total", MetricKind::Counter, &[], 2.0),
    ];
    s.apply(&worker("w1"), &both, Scope::Worker, now).unwrap();
    let stats = s
        .apply(&worker("w1"), &[counter(8.0)], Scope::Worker, now)
        .unwrap();
    assert_eq!(stats.removed, 1);
    assert_eq!(
        samples(&s, now),
        ["other_total 2", "requests_total{path=\"/a\"} 8"]
    );
    assert_eq!(s.worker_series_count(), 1);
}

#[test]
fn post_replaces_only_the_families_in_the_update() {
    let mut s = store();
    let now = t0();
    let gauge = scalar("queue", MetricKind::Gauge, &[], 4.0);
    s.apply(&worker("w1"), &[counter(7.0), gauge], Scope::Worker, now)
        .unwrap();
    s.apply(&worker("w1"), &[counter(9.0)], Scope::Families, now)
        .unwrap();
    assert_eq!(
        samples(&s, now),
        ["queue 4", "requests_total{path=\"/a\"} 9"]
    );
    assert_eq!(s.worker_series_count(), 2);
}

#[test]
fn series_scope_upserts() {
    let mut s = store();
    let now = t0();
    let a = scalar("hits_total", MetricKind::Counter, &[("k", "a")], 1.0);
    let b = scalar("hits_total", MetricKind::Counter, &[("k", "b")], 2.0);
    s.apply(&worker("w1"), &[a], Scope::Series, now).unwrap();
    s.apply(&worker("w1"), &[b], Scope::Series, now).unwrap();
    assert_eq!(
        samples(&s, now),
        ["hits_total{k=\"a\"} 1", "hits_total{k=\"b\"} 2"]
    );
    assert_eq!(s.worker_series_count(), 2);
}

#[test]
fn histogram_merges_bucket_by_bucket_and_survives_restart() {
    let mut s = store();
    let now = t0();
    let bounds = [0.1, 1.0, f64::INFINITY];
    s.apply(
        &worker("w1"),
        &[histogram(&bounds, &[1.0, 3.0, 4.0], 2.5)],
        Scope::Worker,
        now,
    )
    .unwrap();
    s.apply(
        &worker("w2"),
        &[histogram(&bounds, &[2.0, 2.0, 3.0], 4.0)],
        Scope::Worker,
        now,
    )
    .unwrap();
    let expected = [
        "latency_seconds_bucket{le=\"0.1\"} 3",
        "latency_seconds_bucket{le=\"1.0\"} 5",
        "latency_seconds_bucket{le=\"+Inf\"} 7",
        "latency_seconds_count 7",
        "latency_seconds_sum 6.5",
    ];
    assert_eq!(samples(&s, now), expected);
    s.remove_worker("push:instance=w2");
    assert_eq!(samples(&s, now), expected);
    // w1 restarts with one observation.
    s.apply(
        &worker("w1"),
        &[histogram(&bounds, &[0.0, 1.0, 1.0], 0.5)],
        Scope::Worker,
        now,
    )
    .unwrap();
    assert_eq!(
        samples(&s, now),
        [
            "latency_seconds_bucket{le=\"0.1\"} 3",
            "latency_seconds_bucket{le=\"1.0\"} 6",
            "latency_seconds_bucket{le=\"+Inf\"} 8",
            "latency_seconds_count 8",
            "latency_seconds_sum 7",
        ]
    );
}

#[test]
fn mismatched_histogram_is_rejected_and_does_not_corrupt_the_merged_one() {
    let mut s = store();
    let now = t0();
    let bounds = [0.1, 1.0, f64::INFINITY];
    s.apply(
        &worker("w1"),
        &[histogram(&bounds, &[1.0, 3.0, 4.0], 2.5)],
        Scope::Worker,
        now,
    )
    .unwrap();
    let before = samples(&s, now);
    let err = s
        .apply(
            &worker("w2"),
            &[histogram(&[0.5, f64::INFINITY], &[9.0, 9.0], 1.0)],
            Scope::Worker,
            now,
        )
        .unwrap_err();
    assert_eq!(err.reason(), "histogram_layout_mismatch");
    assert!(err.to_string().contains("[0.5,+Inf]"), "{err}");
    assert_eq!(s.layout_mismatches, 1);
    assert_eq!(samples(&s, now), before);
    assert!(
        !s.has_worker("push:instance=w2"),
        "a rejected update must not register the worker"
    );
}

#[test]
fn summary_keeps_count_and_sum() {
    let mut s = store();
    let now = t0();
    for (w, sum, count) in [("w1", 1.5, 3.0), ("w2", 0.5, 1.0)] {
        let mut f = Family::new("rpc_seconds", MetricKind::Summary);
        f.series.push(Series {
            labels: labels(&[]),
            value: Value::Summary { sum, count },
            timestamp: None,
        });
        s.apply(&worker(w), &[f], Scope::Worker, now).unwrap();
    }
    assert_eq!(
        samples(&s, now),
        ["rpc_seconds_count 4", "rpc_seconds_sum 2"]
    );
}

fn gauge_store(mode: GaugeMode) -> (Store, Now) {
    let mut s = store();
    let now = t0();
    let mut f = |id: &str, v: f64, at: Now| {
        let mut fam = scalar("inflight", MetricKind::Gauge, &[], v);
        fam.mode = Some(mode);
        s.apply(&worker(id), &[fam], Scope::Worker, at).unwrap();
    };
    f("w1", 4.0, now);
    f("w2", 10.0, now.after(Duration::from_secs(1)));
    f("w3", 1.0, now.after(Duration::from_secs(2)));
    (s, now.after(Duration::from_secs(2)))
}

#[test]
fn every_gauge_mode_combines_as_documented() {
    let cases: [(GaugeMode, &[&str]); 6] = [
        (GaugeMode::Sum, &["inflight 15"]),
        (GaugeMode::Min, &["inflight 1"]),
        (GaugeMode::Max, &["inflight 10"]),
        (GaugeMode::Mean, &["inflight 5"]),
        (GaugeMode::Mostrecent, &["inflight 1"]),
        (
            GaugeMode::All,
            &[
                "inflight{instance=\"w1\"} 4",
                "inflight{instance=\"w2\"} 10",
                "inflight{instance=\"w3\"} 1",
            ],
        ),
    ];
    for (mode, expected) in cases {
        let (s, now) = gauge_store(mode);
        assert_eq!(samples(&s, now), expected, "{mode:?}");
        // The live variant gives the same while everyone is alive.
        let live = GaugeMode::parse(&format!("live{}", mode.as_str())).unwrap();
        let (s, now) = gauge_store(live);
        assert_eq!(samples(&s, now), expected, "{live:?}");
    }
}

#[test]
fn live_gauges_forget_departed_workers_and_others_keep_them() {
    let cases: [(GaugeMode, &[&str], &[&str]); 6] = [
        (GaugeMode::Sum, &["inflight 15"], &["inflight 5"]),
        (GaugeMode::Min, &["inflight 1"], &["inflight 1"]),
        (GaugeMode::Max, &["inflight 10"], &["inflight 4"]),
        (GaugeMode::Mean, &["inflight 5"], &["inflight 2.5"]),
        (GaugeMode::Mostrecent, &["inflight 1"], &["inflight 1"]),
        (
            GaugeMode::All,
            &[
                "inflight{instance=\"w1\"} 4",
                "inflight{instance=\"w2\"} 10",
                "inflight{instance=\"w3\"} 1",
            ],
            &["inflight{instance=\"w1\"} 4", "inflight{instance=\"w3\"} 1"],
        ),
    ];
    for (mode, kept, live_expected) in cases {
        let (mut s, now) = gauge_store(mode);
        s.remove_worker("push:instance=w2");
        assert_eq!(samples(&s, now), kept, "{mode:?}");
        let live = GaugeMode::parse(&format!("live{}", mode.as_str())).unwrap();
        let (mut s, now) = gauge_store(live);
        s.remove_worker("push:instance=w2");
        assert_eq!(samples(&s, now), live_expected, "{live:?}");
    }
}

#[test]
fn live_gauges_skip_stale_workers() {
    let (mut s, now) = gauge_store(GaugeMode::Livesum);
    let later = now.after(Duration::from_secs(61));
    let mut fam = scalar("inflight", MetricKind::Gauge, &[], 2.0);
    fam.mode = Some(GaugeMode::Livesum);
    s.apply(&worker("w1"), &[fam], Scope::Worker, later)
        .unwrap();
    assert_eq!(samples(&s, later), ["inflight 2"]);
    let (s, now) = gauge_store(GaugeMode::Sum);
    assert_eq!(
        samples(&s, now.after(Duration::from_secs(61))),
        ["inflight 15"]
    );
}

#[test]
fn gauge_mode_precedence_label_then_rule_then_default() {
    let mut config = SidecarConfig::default();
    config.aggregation.default_gauge_mode = GaugeMode::Max;
    config.aggregation.rules.push(AggregationRule {
        pattern: "^app_inflight".into(),
        mode: GaugeMode::Min,
    });
    let mut s = Store::new(StoreSettings::from_config(&config));
    let now = t0();
    for (id, v) in [("w1", 3.0), ("w2", 5.0)] {
        let fams = [
            scalar("app_inflight", MetricKind::Gauge, &[], v),
            scalar("temperature", MetricKind::Gauge, &[], v),
            scalar("queue", MetricKind::Gauge, &[("_aggregate", "sum")], v),
        ];
        s.apply(&worker(id), &fams, Scope::Worker, now).unwrap();
    }
    assert_eq!(
        samples(&s, now),
        ["app_inflight 3", "queue 8", "temperature 5"]
    );
}

#[test]
fn invalid_aggregate_label_is_rejected() {
    let mut s = store();
    let err = s
        .apply(
            &worker("w1"),
            &[scalar(
                "g",
                MetricKind::Gauge,
                &[("_aggregate", "median")],
                1.0,
            )],
            Scope::Worker,
            t0(),
        )
        .unwrap_err();
    assert_eq!(err.reason(), "invalid_aggregate");
}

#[test]
fn type_conflict_is_rejected_without_touching_data() {
    let mut s = store();
    let now = t0();
    s.apply(&worker("w1"), &[counter(1.0)], Scope::Worker, now)
        .unwrap();
    let err = s
        .apply(
            &worker("w2"),
            &[scalar("requests_total", MetricKind::Gauge, &[], 1.0)],
            Scope::Worker,
            now,
        )
        .unwrap_err();
    assert_eq!(err.reason(), "type_conflict");
    assert_eq!(samples(&s, now), ["requests_total{path=\"/a\"} 1"]);
}

#[test]
fn worker_labels_collapse_into_duplicates_are_rejected() {
    let mut s = store();
    let mut f = Family::new("x_total", MetricKind::Counter);
    for pid in ["1", "2"] {
        f.series.push(Series {
            labels: labels(&[("pid", pid)]),
            value: Value::Scalar(1.0),
            timestamp: None,
        });
    }
    let now = t0();
    let err = s
        .apply(&worker("w1"), std::slice::from_ref(&f), Scope::Worker, now)
        .unwrap_err();
    assert_eq!(err.reason(), "duplicate_series");
    // The same when the store already holds the series (found by position, not by text),
    // and the held value is left as it was.
    s.apply(
        &worker("w1"),
        &[scalar("x_total", MetricKind::Counter, &[], 5.0)],
        Scope::Worker,
        now,
    )
    .unwrap();
    let err = s
        .apply(&worker("w1"), &[f], Scope::Worker, now)
        .unwrap_err();
    assert_eq!(err.reason(), "duplicate_series");
    assert!(err.to_string().contains("x_total"), "{err}");
    assert_eq!(samples(&s, now), ["x_total 5"]);
}

#[test]
fn series_limit_protects_other_workers() {
    let mut config = SidecarConfig::default();
    config.limits.max_series_per_worker = 2;
    let mut s = Store::new(StoreSettings::from_config(&config));
    let now = t0();
    s.apply(&worker("good"), &[counter(1.0)], Scope::Worker, now)
        .unwrap();
    let mut big = Family::new("big_total", MetricKind::Counter);
    for v in ["a", "b", "c"] {
        big.series.push(Series {
            labels: labels(&[("k", v)]),
            value: Value::Scalar(1.0),
            timestamp: None,
        });
    }
    let err = s
        .apply(&worker("bad"), &[big], Scope::Worker, now)
        .unwrap_err();
    assert_eq!(err.reason(), "too_many_series");
    // Series scope counts what the worker already holds.
    for k in ["a", "b"] {
        let f = scalar("small_total", MetricKind::Counter, &[("k", k)], 1.0);
        s.apply(&worker("bad"), &[f], Scope::Series, now).unwrap();
    }
    let f = scalar("small_total", MetricKind::Counter, &[("k", "a")], 2.0);
    s.apply(&worker("bad"), &[f], Scope::Series, now).unwrap();
    let f = scalar("small_total", MetricKind::Counter, &[("k", "c")], 1.0);
    assert!(s.apply(&worker("bad"), &[f], Scope::Series, now).is_err());
    assert_eq!(
        samples(&s, now),
        [
            "requests_total{path=\"/a\"} 1",
            "small_total{k=\"a\"} 2",
            "small_total{k=\"b\"} 1"
        ]
    );
}

#[test]
fn common_labels_override_series_labels_and_worker_labels_vanish() {
    let mut s = store();
    let mut w = worker("w1");
    w.common_labels = vec![("job".into(), "api".into())];
    let f = scalar(
        "up_total",
        MetricKind::Counter,
        &[("job", "body"), ("instance", "x"), ("a", "b\"c")],
        1.0,
    );
    s.apply(&w, &[f], Scope::Worker, t0()).unwrap();
    assert_eq!(samples(&s, t0()), ["up_total{a=\"b\\\"c\",job=\"api\"} 1"]);
}

#[test]
fn reserved_prefix_is_rejected() {
    let mut s = store();
    let err = s
        .apply(
            &worker("w1"),
            &[scalar(
                "monasca_sidecar_workers",
                MetricKind::Gauge,
                &[],
                1.0,
            )],
            Scope::Worker,
            t0(),
        )
        .unwrap_err();
    assert_eq!(err.reason(), "reserved_name");
}

#[test]
fn forget_worker_drops_values_without_retiring() {
    let mut s = store();
    let now = t0();
    s.apply(&worker("w1"), &[counter(10.0)], Scope::Worker, now)
        .unwrap();
    s.apply(&worker("w2"), &[counter(5.0)], Scope::Worker, now)
        .unwrap();
    assert!(s.forget_worker("push:instance=w2"));
    assert_eq!(samples(&s, now), ["requests_total{path=\"/a\"} 10"]);
    assert!(!s.forget_worker("push:instance=w2"));
}

#[test]
fn empty_families_disappear() {
    let mut s = store();
    let now = t0();
    s.apply(
        &worker("w1"),
        &[scalar("g", MetricKind::Gauge, &[], 1.0)],
        Scope::Worker,
        now,
    )
    .unwrap();
    s.apply(&worker("w1"), &[], Scope::Worker, now).unwrap();
    assert_eq!(text(&s, now), "");
    assert_eq!(s.series_count(), 0);
}
