//! Unit tests of the pure parts. The format is also checked against the real client in
//! `tests/multiprocess.rs`; here the layout rules are pinned byte by byte.

use super::format::{self, FileError, FileKind, Key, KeyError};
use super::merge::{MergeIssues, Parsed, build_families};
use super::retired::{Table, fnv1a};
use crate::model::{MetricKind, Value};
use monasca_config::GaugeMode;
use std::borrow::Cow;

fn file(entries: &[(&str, f64, f64)]) -> Vec<u8> {
    let mut out = Vec::new();
    format::start_file(&mut out);
    for (k, v, t) in entries {
        format::encode_entry(&mut out, k, *v, *t);
    }
    assert!(format::finish_file(&mut out));
    out
}

fn key(metric: &str, sample: &str, labels: &[(&str, &str)], help: &str) -> String {
    format::encode_key(metric, sample, labels, help)
}

#[test]
fn file_names_like_the_client_writes_them() {
    let cases = [
        ("counter_123.db", FileKind::Counter, "123"),
        ("histogram_7.db", FileKind::Histogram, "7"),
        ("summary_99999.db", FileKind::Summary, "99999"),
        ("gauge_all_1.db", FileKind::Gauge(GaugeMode::All), "1"),
        (
            "gauge_liveall_2.db",
            FileKind::Gauge(GaugeMode::Liveall),
            "2",
        ),
        (
            "gauge_livesum_3.db",
            FileKind::Gauge(GaugeMode::Livesum),
            "3",
        ),
        (
            "gauge_livemostrecent_4.db",
            FileKind::Gauge(GaugeMode::Livemostrecent),
            "4",
        ),
        ("counter_retired.db", FileKind::Counter, "retired"),
        (
            "gauge_sum_worker_1.db",
            FileKind::Gauge(GaugeMode::Sum),
            "worker_1",
        ),
    ];
    for (name, kind, pid) in cases {
        let parsed = format::parse_file_name(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!((parsed.kind, parsed.pid), (kind, pid), "{name}");
        assert_eq!(kind.file_name(pid), name);
    }
    for bad in [
        "counter.db",
        "counter_.db",
        "counter_1.txt",
        "gauge_1.db",
        "gauge_mean_1.db",
        "gauge_bogus_1.db",
        "info_1.db",
        ".counter_retired.db.tmp",
    ] {
        assert_eq!(format::parse_file_name(bad), None, "{bad}");
    }
}

#[test]
fn key_encoding_matches_json_dumps_sort_keys() {
    // Exactly what `json.dumps([...], sort_keys=True)` prints (checked with python3).
    assert_eq!(
        key(
            "rq",
            "rq_total",
            &[("code", "200"), ("method", "GET")],
            "Requests."
        ),
        r#"["rq", "rq_total", {"code": "200", "method": "GET"}, "Requests."]"#
    );
    assert_eq!(key("g", "g", &[], ""), r#"["g", "g", {}, ""]"#);
    assert_eq!(
        key("u", "u_total", &[("p", "/ü\"x\\y\n€😀\u{7f}")], "h\t"),
        r#"["u", "u_total", {"p": "/\u00fc\"x\\y\n\u20ac\ud83d\ude00\u007f"}, "h\t"]"#
    );
}

#[test]
fn keys_parse_back_borrowing_when_unescaped() {
    let k = key(
        "u",
        "u_total",
        &[("a", "plain"), ("p", "/ü\"x\\y\n😀")],
        "Help.",
    );
    let parsed = format::parse_key(&k).expect("parses");
    assert_eq!(parsed.metric, "u");
    assert_eq!(parsed.sample, "u_total");
    assert_eq!(parsed.help, "Help.");
    assert_eq!(parsed.label("a"), Some("plain"));
    assert_eq!(parsed.label("p"), Some("/ü\"x\\y\n😀"));
    assert!(matches!(parsed.labels[0].1, Cow::Borrowed(_)));
    assert!(matches!(parsed.labels[1].1, Cow::Owned(_)));
    // Compact separators and raw UTF-8 are valid JSON too.
    let compact = format::parse_key(r#"["m","m",{"k":"v ü"},"h"]"#).expect("parses");
    assert_eq!(compact.label("k"), Some("v ü"));
}

#[test]
fn malformed_keys_are_rejected() {
    for bad in [
        "",
        "[]",
        r#"["m", "m", {}]"#,
        r#"["m", "m", {"k": 1}, "h"]"#,
        r#"["m", "m", {"k": "v", "k": "w"}, "h"]"#,
        r#"["m", "m", {"k": "v"}, "h"] x"#,
        r#"["m", "m", {"k": "\x"}, "h"]"#,
        r#"["m", "m", {"k": "\ud83d"}, "h"]"#,
        "[\"m\", \"m\", {\"k\": \"a\u{1}\"}, \"h\"]",
        r#"["m", "m", {"k": "v"}, "h""#,
        r#"["m", "m", {"k" "v"}, "h"]"#,
    ] {
        assert!(format::parse_key(bad).is_err(), "{bad:?} should fail");
    }
    assert!(matches!(
        format::parse_key(r#"["m", "m", {"k": "v", "k": "w"}, "h"]"#),
        Err(KeyError::DuplicateLabel(_))
    ));
}

#[test]
fn entries_are_padded_to_eight_bytes_like_the_client() {
    // Key lengths 0..=16 cover every padding (1 to 8 spaces, never 0).
    for len in 0..=16usize {
        let k = "k".repeat(len);
        let data = file(&[(&k, 1.5, 2.5)]);
        let pad = 8 - (len + 4) % 8;
        assert!((1..=8).contains(&pad));
        assert_eq!(data.len(), 8 + 4 + len + pad + 16, "len {len}");
        assert_eq!((4 + len + pad) % 8, 0);
        let e: Vec<_> = format::entries(&data)
            .expect("header")
            .collect::<Result<_, _>>()
            .expect("entries");
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].key, e[0].value, e[0].timestamp),
            (k.as_str(), 1.5, 2.5)
        );
        assert_eq!(e[0].value_offset % 8, 0);
    }
}

#[test]
fn bytes_past_used_are_never_read() {
    let mut data = file(&[("a", 1.0, 0.0), ("b", 2.0, 0.0)]);
    let used = data.len();
    // A preallocated file: zeros (or anything) after `used`.
    data.extend_from_slice(&[0xff; 100]);
    let keys: Vec<_> = format::entries(&data)
        .expect("header")
        .map(|e| e.map(|e| e.key))
        .collect::<Result<_, _>>()
        .expect("entries");
    assert_eq!(keys, ["a", "b"]);
    // `used` pointing at the first entry's end: the second is invisible.
    let first_end = 8 + 4 + 1 + 3 + 16;
    data[..4].copy_from_slice(&(first_end as i32).to_ne_bytes());
    assert_eq!(format::entries(&data).expect("header").count(), 1);
    assert!(used > first_end);
}

#[test]
fn corrupt_and_truncated_files_fail_cleanly() {
    let good = file(&[("[\"a\", \"a\", {}, \"\"]", 1.0, 0.0)]);
    // Fresh file (used still 0) is empty, not corrupt.
    assert_eq!(format::entries(&[0u8; 64]).expect("empty").count(), 0);
    assert_eq!(format::entries(&[]).err(), Some(FileError::ShortHeader));
    assert!(matches!(
        format::entries(&good[..good.len() - 1]),
        Err(FileError::UsedBeyondEnd { .. })
    ));
    let mut bad_used = good.clone();
    bad_used[..4].copy_from_slice(&5i32.to_ne_bytes());
    assert_eq!(
        format::entries(&bad_used).err(),
        Some(FileError::BadUsed(5))
    );
    bad_used[..4].copy_from_slice(&(-1i32).to_ne_bytes());
    assert!(format::entries(&bad_used).is_err());
    // `used` cutting an entry in half.
    let mut cut = good.clone();
    cut[..4].copy_from_slice(&((good.len() - 8) as i32).to_ne_bytes());
    let r: Vec<_> = format::entries(&cut).expect("header").collect();
    assert!(matches!(r.as_slice(), [Err(FileError::EntryOverrun(8))]));
    // Negative and huge key lengths.
    let mut neg = good.clone();
    neg[8..12].copy_from_slice(&(-4i32).to_ne_bytes());
    assert!(matches!(
        format::entries(&neg).expect("header").next(),
        Some(Err(FileError::BadKeyLength(8)))
    ));
    let mut huge = good.clone();
    huge[8..12].copy_from_slice(&i32::MAX.to_ne_bytes());
    assert!(matches!(
        format::entries(&huge).expect("header").next(),
        Some(Err(FileError::EntryOverrun(8)))
    ));
    // Invalid UTF-8 in a key.
    let mut utf = good.clone();
    utf[12] = 0xff;
    assert!(matches!(
        format::entries(&utf).expect("header").next(),
        Some(Err(FileError::KeyNotUtf8(8)))
    ));
    // Iteration stops after the first error.
    assert_eq!(format::entries(&cut).expect("header").count(), 1);
}

/// A file as prometheus_client before 0.17 writes it: no timestamp after each value.
fn legacy_file(entries: &[(&str, f64)]) -> Vec<u8> {
    let mut out = vec![0u8; format::HEADER_LEN];
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as i32).to_ne_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend(std::iter::repeat_n(b' ', 8 - (k.len() + 4) % 8));
        out.extend_from_slice(&v.to_ne_bytes());
    }
    let used = out.len() as i32;
    out[..4].copy_from_slice(&used.to_ne_bytes());
    out
}

#[test]
fn legacy_layout_becomes_the_current_one_with_zero_timestamps() {
    // Every key length, so every padding, and one to three entries.
    for len in 4..30 {
        let long = format!("[\"{}\"]", "m".repeat(len - 4));
        let keys = [long.as_str(), "[\"a\", \"a\", {}, \"\"]", "[\"b\"]"];
        for n in 1..=keys.len() {
            let entries: Vec<(&str, f64)> = keys[..n]
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, i as f64 + 0.5))
                .collect();
            let mut data = legacy_file(&entries);
            // What the client leaves after `used` (its mmap is preallocated) is never read.
            let mut preallocated = data.clone();
            preallocated.resize(data.len() + 64, 0);
            assert!(
                format::normalize_legacy(&mut data),
                "len {len}, {n} entries"
            );
            assert!(format::normalize_legacy(&mut preallocated));
            let current: Vec<(&str, f64, f64)> =
                entries.iter().map(|(k, v)| (*k, *v, 0.0)).collect();
            assert_eq!(data, file(&current), "len {len}, {n} entries");
            assert_eq!(preallocated, data);
        }
    }
}

#[test]
fn current_empty_and_broken_files_are_left_alone() {
    let mut current = file(&[("[\"a\"]", 1.0, 2.0), ("[\"bb\"]", 3.0, 0.0)]);
    let before = current.clone();
    assert!(!format::normalize_legacy(&mut current));
    assert_eq!(current, before);
    for mut untouched in [
        vec![],
        vec![0u8; 64],
        file(&[]),
        // `used` cutting a legacy entry: neither layout fits, the reader reports it.
        {
            let mut cut = legacy_file(&[("[\"a\"]", 1.0)]);
            let used = (cut.len() - 4) as i32;
            cut[..4].copy_from_slice(&used.to_ne_bytes());
            cut
        },
        // A key that is not the client's JSON list.
        legacy_file(&[("{}", 1.0)]),
    ] {
        let before = untouched.clone();
        assert!(!format::normalize_legacy(&mut untouched));
        assert_eq!(untouched, before);
    }
}

#[test]
fn normalizing_any_bytes_never_panics_and_yields_a_readable_file() {
    use proptest::prelude::*;
    proptest!(ProptestConfig::with_cases(2000), |(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), entries in proptest::collection::vec(("[a-z\\[\"]{0,20}", any::<f64>()), 0..4), flip in any::<usize>())| {
        // Random bytes, and legacy files with one byte damaged.
        let mut legacy = legacy_file(&entries.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>());
        if !legacy.is_empty() {
            let at = flip % legacy.len();
            legacy[at] ^= 0x5a;
        }
        for data in [&mut bytes, &mut legacy] {
            if format::normalize_legacy(data) {
                let all: Result<Vec<_>, _> = format::entries(data).expect("header").collect();
                prop_assert!(all.is_ok(), "{:?}", all);
            }
        }
    });
}

fn parsed<'a>(kind: FileKind, k: &'a str, value: f64, ts: f64) -> Parsed<'a> {
    Parsed {
        kind,
        key: format::parse_key(k).expect("key"),
        value,
        timestamp: ts,
    }
}

#[test]
fn histogram_buckets_become_cumulative_with_count() {
    let keys = [
        key("lat", "lat_sum", &[("r", "/x")], "L."),
        key("lat", "lat_bucket", &[("le", "0.5"), ("r", "/x")], "L."),
        key("lat", "lat_bucket", &[("le", "+Inf"), ("r", "/x")], "L."),
        key("lat", "lat_bucket", &[("le", "0.1"), ("r", "/x")], "L."),
        key("lat", "lat_bucket", &[("le", "0.1"), ("r", "/y")], "L."),
    ];
    let entries = vec![
        parsed(FileKind::Histogram, &keys[0], 7.5, 0.0),
        parsed(FileKind::Histogram, &keys[1], 2.0, 0.0),
        parsed(FileKind::Histogram, &keys[2], 1.0, 0.0),
        parsed(FileKind::Histogram, &keys[3], 3.0, 0.0),
        parsed(FileKind::Histogram, &keys[4], 4.0, 0.0),
    ];
    let mut issues = MergeIssues::default();
    let fams = build_families(&entries, &mut issues);
    assert_eq!(issues, MergeIssues::default());
    assert_eq!(fams.len(), 1);
    assert_eq!(
        (fams[0].name.as_ref(), fams[0].kind),
        ("lat", MetricKind::Histogram)
    );
    assert_eq!(fams[0].series.len(), 1);
    let Value::Histogram(x) = &fams[0].series[0].value else {
        panic!("histogram")
    };
    assert_eq!(x.bounds, [0.1, 0.5, f64::INFINITY]);
    assert_eq!(x.buckets, [3.0, 5.0, 6.0]);
    assert_eq!((x.count, x.sum), (6.0, 7.5));
    assert_eq!(
        fams[0].series[0].labels.len(),
        1,
        "le is not a series label"
    );
    // No +Inf in the file yet (the client writes it last when it creates a histogram): the
    // series is skipped until it is complete, so a truncated layout is never fixed.
    assert!(
        fams[0]
            .series
            .iter()
            .all(|s| s.labels.iter().all(|l| l.value != "/y"))
    );
}

#[test]
fn families_are_named_and_typed_like_the_exposition() {
    let keys = [
        key("rq", "rq_total", &[("m", "GET")], "R."),
        key("g", "g", &[], "G."),
        key("s", "s_count", &[], "S."),
        key("s", "s_sum", &[], "S."),
        key("mr", "mr", &[], "M."),
        key("mr", "mr", &[("x", "never_set")], "M."),
    ];
    let entries = vec![
        parsed(FileKind::Counter, &keys[0], 3.0, 0.0),
        parsed(FileKind::Counter, &keys[0], 4.0, 0.0),
        parsed(FileKind::Gauge(GaugeMode::Livesum), &keys[1], 2.0, 0.0),
        parsed(FileKind::Summary, &keys[2], 5.0, 0.0),
        parsed(FileKind::Summary, &keys[3], 9.0, 0.0),
        parsed(FileKind::Gauge(GaugeMode::Mostrecent), &keys[4], 1.0, 100.0),
        parsed(FileKind::Gauge(GaugeMode::Mostrecent), &keys[5], 1.0, 0.0),
        // The same gauge name in another mode: a conflict, left out.
        parsed(FileKind::Gauge(GaugeMode::Max), &keys[1], 2.0, 0.0),
    ];
    let mut issues = MergeIssues::default();
    let fams = build_families(&entries, &mut issues);
    assert_eq!(issues.conflicts, 1);
    let names: Vec<_> = fams
        .iter()
        .map(|f| (f.name.as_ref(), f.kind, f.mode))
        .collect();
    assert_eq!(
        names,
        [
            ("rq_total", MetricKind::Counter, None),
            ("g", MetricKind::Gauge, Some(GaugeMode::Livesum)),
            ("s", MetricKind::Summary, None),
            ("mr", MetricKind::Gauge, Some(GaugeMode::Mostrecent)),
        ]
    );
    assert_eq!(
        fams[0].series[0].value,
        Value::Scalar(7.0),
        "duplicates summed"
    );
    assert_eq!(
        fams[2].series[0].value,
        Value::Summary {
            sum: 9.0,
            count: 5.0
        }
    );
    assert_eq!(
        fams[3].series.len(),
        1,
        "never-set mostrecent value skipped"
    );
    assert_eq!(fams[3].series[0].timestamp, Some(100.0));
    assert_eq!(fams[0].help.as_deref(), Some("R."));
}

#[test]
fn retired_tables_fold_by_mode_and_round_trip() {
    let k = key("x", "x_total", &[("a", "1")], "X.");
    let k = format::parse_key(&k).expect("key");
    let mut t = Table::default();
    assert!(t.fold(FileKind::Counter, &k, 2.0, 0.0));
    assert!(t.fold(FileKind::Counter, &k, 3.0, 0.0));
    assert!(!t.fold(FileKind::Gauge(GaugeMode::All), &k, 3.0, 0.0));
    assert!(!t.fold(FileKind::Gauge(GaugeMode::Livesum), &k, 3.0, 0.0));
    let mut min = Table::default();
    let mut max = Table::default();
    let mut mr = Table::default();
    for (v, ts) in [(5.0, 10.0), (-1.0, 30.0), (7.0, 20.0), (100.0, 0.0)] {
        min.fold(FileKind::Gauge(GaugeMode::Min), &k, v, ts);
        max.fold(FileKind::Gauge(GaugeMode::Max), &k, v, ts);
        mr.fold(FileKind::Gauge(GaugeMode::Mostrecent), &k, v, ts);
    }
    let value = |t: &Table, kind| t.parsed(kind).next().map(|p| (p.value, p.timestamp));
    assert_eq!(value(&t, FileKind::Counter), Some((5.0, 0.0)));
    assert_eq!(
        value(&min, FileKind::Gauge(GaugeMode::Min)),
        Some((-1.0, 0.0))
    );
    assert_eq!(
        value(&max, FileKind::Gauge(GaugeMode::Max)),
        Some((100.0, 0.0))
    );
    assert_eq!(
        value(&mr, FileKind::Gauge(GaugeMode::Mostrecent)),
        Some((-1.0, 30.0))
    );

    // Unsorted labels fold into the same cell as sorted ones.
    let unsorted = Key {
        metric: "x".into(),
        sample: "x_total".into(),
        labels: [("b".into(), "2".into()), ("a".into(), "1".into())]
            .into_iter()
            .collect(),
        help: "X.".into(),
    };
    let mut u = Table::default();
    u.fold(FileKind::Counter, &unsorted, 1.0, 0.0);
    u.fold(
        FileKind::Counter,
        &format::parse_key(&key("x", "x_total", &[("a", "1"), ("b", "2")], "X.")).expect("key"),
        1.0,
        0.0,
    );
    assert_eq!(u.len(), 1);

    t.folded.push(super::retired::FoldedFile {
        file: "counter_42.db".into(),
        dev: 1,
        ino: 2,
        len: 3,
        hash: 4,
    });
    let bytes = t.encode(format::Layout::Current).expect("encode");
    // The prometheus_client part is a valid file on its own.
    assert_eq!(format::entries(&bytes).expect("header").count(), 1);
    let back = Table::decode(FileKind::Counter, &bytes).expect("decode");
    assert!(back.trailer_ok);
    assert_eq!(back.table.folded, t.folded);
    assert_eq!(value(&back.table, FileKind::Counter), Some((5.0, 0.0)));
    // A damaged trailer loses only the bookkeeping.
    let mut damaged = bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let back = Table::decode(FileKind::Counter, &damaged).expect("decode");
    assert!(!back.trailer_ok);
    assert!(back.table.folded.is_empty());
    assert_eq!(value(&back.table, FileKind::Counter), Some((5.0, 0.0)));

    // For a directory of prometheus_client < 0.17 workers: their layout, same table back.
    let legacy = t.encode(format::Layout::Legacy).expect("encode");
    let used = format::entries(&legacy).expect("header").used();
    assert_eq!(
        used,
        bytes.len() - (legacy.len() - used) - 8,
        "8 bytes less per entry"
    );
    let back = Table::decode(FileKind::Counter, &legacy).expect("decode");
    assert!(back.trailer_ok);
    assert_eq!(back.table.folded, t.folded);
    assert_eq!(value(&back.table, FileKind::Counter), Some((5.0, 0.0)));
}

#[test]
fn fnv_is_the_reference_function() {
    assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
    assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
}

#[test]
fn bounds_parse_like_float() {
    assert_eq!(format::parse_bound("+Inf"), Some(f64::INFINITY));
    assert_eq!(format::parse_bound("0.005"), Some(0.005));
    assert_eq!(format::parse_bound("1.0"), Some(1.0));
    assert_eq!(format::parse_bound("1e3"), Some(1000.0));
    assert_eq!(format::parse_bound("NaN"), None);
    assert_eq!(format::parse_bound("x"), None);
}

pub(super) mod scanning {
    //! The reader over real directories (files in the client's exact format, written with
    //! the encoder the format tests pin), with `/proc` liveness: crash safety, restarts,
    //! counter resets, config reloads.

    use super::super::format::{self, FileKind};
    use super::super::liveness::{Liveness, LivenessMode, LivenessPolicy};
    use super::super::{Options, Reader};
    use crate::app::App;
    use crate::expose::{Format, render};
    use monasca_config::SidecarConfig;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    /// A pid above any `pid_max`: never alive.
    const DEAD: u32 = 99_999_999;

    pub(in crate::sources::multiprocess) fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mp-unit-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    fn write_counter(dir: &Path, pid: u32, value: f64) -> PathBuf {
        let key = format::encode_key("c", "c_total", &[("a", "x")], "C.");
        let mut out = Vec::new();
        format::start_file(&mut out);
        format::encode_entry(&mut out, &key, value, 0.0);
        assert!(format::finish_file(&mut out));
        out.resize(1 << 16, 0);
        let path = dir.join(FileKind::Counter.file_name(&pid.to_string()));
        std::fs::write(&path, out).expect("write");
        path
    }

    fn start(dir: &Path) -> (Arc<App>, Reader) {
        start_with(dir, "", LivenessPolicy::Proc)
    }

    fn total(app: &App) -> Option<f64> {
        let mut out = Vec::new();
        render(
            &app.store.read(),
            Format::Text,
            app.now().mono,
            &[],
            &mut out,
        );
        String::from_utf8_lossy(&out)
            .lines()
            .find_map(|l| l.strip_prefix("c_total{a=\"x\"} "))
            .and_then(|v| v.parse().ok())
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_crash_between_folding_and_deleting_never_counts_twice() {
        let dir = scratch("crash");
        let me = std::process::id();
        write_counter(&dir, me, 3.0);
        let (app, mut reader) = start(&dir);
        reader.scan(&app); // creates the directory state
        if let Some(st) = reader.dir_state() {
            st.crash_before_delete = true;
        }
        write_counter(&dir, DEAD, 5.0);
        reader.scan(&app);
        assert_eq!(total(&app), Some(8.0));
        // The "crash": the dead worker's file is still there, already in the totals.
        let mut expected = vec![
            "counter_99999999.db".to_string(),
            format!("counter_{me}.db"),
            "counter_retired.db".to_string(),
        ];
        expected.sort();
        assert_eq!(files(&dir), expected);
        drop(reader);
        // The restart recognises the leftover (same inode, same content) and deletes it.
        let (app, mut reader) = start(&dir);
        reader.scan(&app);
        assert_eq!(total(&app), Some(8.0), "counted once");
        assert_eq!(
            files(&dir),
            [format!("counter_{me}.db"), "counter_retired.db".to_string()]
        );
        reader.scan(&app);
        assert_eq!(total(&app), Some(8.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_file_under_a_folded_name_is_a_new_worker() {
        let dir = scratch("reuse");
        let me = std::process::id();
        write_counter(&dir, me, 3.0);
        let (app, mut reader) = start(&dir);
        reader.scan(&app);
        if let Some(st) = reader.dir_state() {
            st.crash_before_delete = true;
        }
        write_counter(&dir, DEAD, 5.0);
        reader.scan(&app);
        assert_eq!(total(&app), Some(8.0));
        drop(reader);
        // Before the restart, the pid is reused: a different file (new inode) that then
        // died with a value of its own.
        let path = dir.join("counter_99999999.db");
        std::fs::remove_file(&path).expect("rm");
        write_counter(&dir, DEAD, 2.0);
        let (app, mut reader) = start(&dir);
        reader.scan(&app);
        assert_eq!(total(&app), Some(10.0));
        assert_eq!(
            files(&dir),
            [format!("counter_{me}.db"), "counter_retired.db".to_string()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_counter_reset_in_a_live_file_survives_a_restart() {
        let dir = scratch("reset");
        let me = std::process::id();
        let path = write_counter(&dir, me, 10.0);
        let (app, mut reader) = start(&dir);
        reader.scan(&app);
        assert_eq!(total(&app), Some(10.0));
        // Counter.reset() then inc(4): the value drops in place.
        let key_len = format::encode_key("c", "c_total", &[("a", "x")], "C.").len();
        let offset = 8 + 4 + key_len + (8 - (key_len + 4) % 8);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.write_all_at(&4.0f64.to_ne_bytes(), offset as u64)
            .expect("write");
        reader.scan(&app);
        assert_eq!(total(&app), Some(14.0));
        assert!(files(&dir).contains(&"counter_retired.db".to_string()));
        drop(reader);
        let (app, mut reader) = start(&dir);
        reader.scan(&app);
        assert_eq!(total(&app), Some(14.0), "the reset is persisted");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A reader on `dir` with the given extra config and liveness option (the config's
    /// `multiprocessLiveness` wins over it unless `auto`).
    pub(in crate::sources::multiprocess) fn start_with(
        dir: &Path,
        extra: &str,
        liveness: LivenessPolicy,
    ) -> (Arc<App>, Reader) {
        let yaml = format!("multiprocessDir: {:?}\n{extra}", dir.display().to_string());
        let app = App::new(SidecarConfig::from_yaml(&yaml).expect("config"));
        let reader = Reader::new(Options {
            liveness,
            interval: Duration::from_secs(3600),
            env_dir: None,
        });
        (app, reader)
    }

    fn summary(reader: &Reader) -> super::super::scan::RoundSummary {
        reader.stats.summary.lock().unwrap_or_default()
    }

    fn age(path: &Path, by: Duration) {
        let f = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        f.set_modified(SystemTime::now() - by).expect("set mtime");
    }

    #[test]
    fn mtime_liveness_keeps_no_copy_of_quiet_files_and_stays_exact() {
        let dir = scratch("released");
        let hour = Duration::from_secs(3600);
        let quiet: Vec<PathBuf> = (0..3)
            .map(|i| {
                let p = write_counter(&dir, DEAD - i, 10.0 + f64::from(i));
                age(&p, hour);
                p
            })
            .collect();
        write_counter(&dir, std::process::id(), 100.0);
        let (app, mut reader) =
            start_with(&dir, "multiprocessLiveness: mtime\n", LivenessPolicy::Auto);
        reader.scan(&app);
        assert_eq!(total(&app), Some(133.0));
        let s = summary(&reader);
        assert_eq!(
            s.released, 3,
            "the three quiet files are held without a copy"
        );
        assert_eq!(
            s.not_compacting,
            Some(super::super::NotCompacting::MtimeLiveness)
        );
        reader.scan(&app);
        assert_eq!(total(&app), Some(133.0), "a released file still counts");
        assert_eq!(files(&dir).len(), 4, "nothing deleted");

        // A quiet worker writes again (same file): read back, and its new value counts.
        let key_len = format::encode_key("c", "c_total", &[("a", "x")], "C.").len();
        let offset = 8 + 4 + key_len + (8 - (key_len + 4) % 8);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&quiet[0])
            .expect("open");
        f.write_all_at(&15.0f64.to_ne_bytes(), offset as u64)
            .expect("write");
        drop(f);
        reader.scan(&app);
        assert_eq!(total(&app), Some(138.0));
        assert_eq!(
            summary(&reader).released,
            2,
            "the woken worker keeps its copy"
        );

        // The store forgets the directory (`POST /v1/clear`): released files are read back.
        app.clear();
        reader.scan(&app);
        assert_eq!(total(&app), Some(138.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_file_cap_is_checked_before_any_file_is_read() {
        let dir = scratch("cap");
        for i in 0..5 {
            write_counter(&dir, DEAD - i, 1.0);
        }
        let (app, mut reader) = start_with(
            &dir,
            "multiprocessLiveness: mtime\nlimits: {maxMultiprocessFiles: 2}\n",
            LivenessPolicy::Auto,
        );
        settle();
        reader.scan(&app);
        let s = summary(&reader);
        assert_eq!((s.files, s.skipped), (2, 3));
        assert_eq!(
            total(&app),
            Some(2.0),
            "only the files under the cap are read"
        );
        settle();
        reader.scan(&app);
        assert_eq!(total(&app), Some(2.0), "the same two, not others");
        assert_eq!(
            reader.dir_state().map(|st| st.listings),
            Some(2),
            "a listing that skipped files is not reused (what it skips depends on what is tracked)"
        );
        assert_eq!(
            reader.stats.file_reads.get(),
            4,
            "two files read per scan: the skipped ones are never opened"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Scans and returns how many times the directory was listed (not reused) in all.
    fn scan_counting_listings(app: &App, reader: &mut Reader) -> u64 {
        reader.scan(app);
        reader.dir_state().map_or(0, |st| st.listings)
    }

    /// Waits until a change to `dir` is old enough that the next one is sure to move its
    /// ctime (see `fs::settled`).
    fn settle() {
        std::thread::sleep(Duration::from_millis(80));
    }

    #[test]
    fn a_standing_directory_is_listed_once_and_every_entry_change_is_seen() {
        let dir = scratch("listing");
        write_counter(&dir, DEAD, 1.0);
        write_counter(&dir, DEAD - 1, 2.0);
        let (app, mut reader) = start_with(
            &dir,
            "multiprocessLiveness: mtime\nmultiprocessCompact: false\n",
            LivenessPolicy::Auto,
        );
        settle();
        assert_eq!(scan_counting_listings(&app, &mut reader), 1);
        assert_eq!(scan_counting_listings(&app, &mut reader), 1, "reused");
        assert_eq!(total(&app), Some(3.0));

        // Each change below is left to settle before the scan, so the directory's stamp is
        // trusted again: it is the change of stamp that has the directory listed again.
        // A new file.
        write_counter(&dir, DEAD - 2, 4.0);
        settle();
        assert_eq!(scan_counting_listings(&app, &mut reader), 2);
        assert_eq!(total(&app), Some(7.0), "the new worker is read");
        assert_eq!(scan_counting_listings(&app, &mut reader), 2, "reused");

        // A file replaced by a rename (another inode under the same name).
        let staged = dir.join("staged");
        std::fs::create_dir(&staged).expect("mkdir");
        let replacement = write_counter(&staged, DEAD, 10.0);
        std::fs::rename(
            &replacement,
            dir.join(FileKind::Counter.file_name(&DEAD.to_string())),
        )
        .expect("rename");
        std::fs::remove_dir(&staged).expect("rmdir");
        settle();
        assert_eq!(scan_counting_listings(&app, &mut reader), 3);
        assert_eq!(
            total(&app),
            Some(16.0),
            "the replacement's value, not the old one's"
        );

        // A removed file.
        std::fs::remove_file(dir.join(FileKind::Counter.file_name(&(DEAD - 1).to_string())))
            .expect("rm");
        settle();
        assert_eq!(scan_counting_listings(&app, &mut reader), 4);
        assert_eq!(
            summary(&reader).files,
            2,
            "the removed file is no longer read"
        );
        assert_eq!(
            total(&app),
            Some(16.0),
            "its counter is retired, not dropped: the total never goes back"
        );

        // A change scanned before it settled: listed again, and not kept for the next round.
        write_counter(&dir, DEAD - 3, 8.0);
        assert_eq!(scan_counting_listings(&app, &mut reader), 5);
        assert_eq!(total(&app), Some(24.0));
        assert_eq!(
            scan_counting_listings(&app, &mut reader),
            6,
            "not trusted yet"
        );

        // Standing still, it is listed anyway once every FULL_READ_ROUNDS rounds.
        settle();
        let before = scan_counting_listings(&app, &mut reader);
        let rounds = super::super::scan::FULL_READ_ROUNDS;
        let mut after = before;
        for _ in 0..rounds {
            after = scan_counting_listings(&app, &mut reader);
        }
        assert!(
            after == before + 1,
            "one listing in {rounds} standing rounds: {before} -> {after}"
        );
        assert_eq!(total(&app), Some(24.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn switching_directories_keeps_counters() {
        let one = scratch("one");
        let two = scratch("two");
        let me = std::process::id();
        write_counter(&one, me, 5.0);
        write_counter(&two, me, 7.0);
        let (app, mut reader) = start(&one);
        reader.scan(&app);
        assert_eq!(total(&app), Some(5.0));
        let mut config = (*app.config()).clone();
        config.multiprocess_dir = Some(two.display().to_string());
        app.set_config(config);
        reader.scan(&app);
        assert_eq!(
            total(&app),
            Some(12.0),
            "the first directory's counters are retired"
        );
        let mut config = (*app.config()).clone();
        config.multiprocess_dir = None;
        app.set_config(config);
        reader.scan(&app);
        assert_eq!(total(&app), Some(12.0));
        let _ = std::fs::remove_dir_all(&one);
        let _ = std::fs::remove_dir_all(&two);
    }

    /// A fake `/proc` with `btime` 1000.
    fn fake_proc(name: &str, dir: &Path) -> PathBuf {
        let root = scratch(name);
        std::fs::write(root.join("stat"), "cpu 1 2 3\nbtime 1000\n").expect("stat");
        // `pid (comm) state ... starttime` (field 22), in ticks of 1/100 s since boot.
        let stat = |state: &str, start_ticks: u64| {
            let mut fields = vec![state.to_string()];
            fields.extend((4..22).map(|i| i.to_string()));
            fields.push(start_ticks.to_string());
            fields.extend((23..30).map(|i| i.to_string()));
            format!("42 (a (b) c) {}\n", fields.join(" "))
        };
        for (pid, state, start) in [(100, "S", 500), (101, "Z", 500), (104, "S", 90_000)] {
            let p = root.join(pid.to_string());
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join("stat"), stat(state, start)).expect("stat");
        }
        let p = root.join("102");
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::write(
            p.join("environ"),
            format!("HOME=/\0PROMETHEUS_MULTIPROC_DIR={}\0X=1\0", dir.display()),
        )
        .expect("environ");
        root
    }

    fn set_stat(root: &Path, pid: u32, state: &str, start_ticks: u64) {
        let mut fields = vec![state.to_string()];
        fields.extend((4..22).map(|i| i.to_string()));
        fields.push(start_ticks.to_string());
        fields.extend((23..30).map(|i| i.to_string()));
        let p = root.join(pid.to_string());
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::write(p.join("stat"), format!("{pid} (x) {}\n", fields.join(" "))).expect("stat");
    }

    #[test]
    fn liveness_from_proc_deletes_only_what_is_proven_dead() {
        let dir = scratch("live-dir");
        let root = fake_proc("proc", &dir);
        let mut l = Liveness::with_proc_root(LivenessPolicy::Auto, root.clone());
        assert_eq!(l.mode(), LivenessMode::Mtime);
        let stale = Duration::from_secs(60);
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        // Without proof, an old file is stale and deletion is never allowed.
        let v = l.check(&dir, "100", old, old, stale);
        assert!(!v.alive && !v.reliable);
        assert!(
            l.detect(&dir, ["100", "101"].into_iter()),
            "pid 102 uses the dir"
        );
        assert_eq!(l.mode(), LivenessMode::Proc);
        // Started at 1005 s, file written at 1500 s: alive, and now confirmed as the writer.
        let written = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500);
        let v = l.check(&dir, "100", written, written, stale);
        assert!(v.alive && v.reliable);
        // A zombie never confirmed: not alive, but not proven dead either.
        let v = l.check(&dir, "101", written, written, stale);
        assert!(!v.alive && !v.reliable, "unconfirmed zombie");
        // No process, never confirmed, and file names not known to be pids (a custom
        // process_identifier looks the same): kept.
        let v = l.check(&dir, "103", written, written, stale);
        assert!(!v.alive && !v.reliable, "no process, unconfirmed");
        assert!(!l.gone("103"));
        let v = l.check(&dir, "4999999", written, written, stale);
        assert!(!v.reliable, "custom identifier");
        // Started at 1900 s, after the last write at 1500 s: another process holds the pid;
        // it may write the same files: kept, shown as live.
        let v = l.check(&dir, "104", written, written, stale);
        assert!(v.alive && !v.reliable, "reused pid");
        // The confirmed writer exits: proven dead.
        std::fs::remove_dir_all(root.join("100")).expect("rm");
        let v = l.check(&dir, "100", written, written, stale);
        assert!(!v.alive && v.reliable);
        assert!(l.gone("100"));
        // A confirmed pid taken over by a process with another start time is undecided.
        set_stat(&root, 105, "S", 500);
        assert!(l.check(&dir, "105", written, written, stale).reliable);
        set_stat(&root, 105, "S", 600);
        let v = l.check(&dir, "105", written, written, stale);
        assert!(v.alive && !v.reliable, "pid reused after confirmation");
        // A confirmed zombie is dead.
        set_stat(&root, 106, "S", 500);
        assert!(l.check(&dir, "106", written, written, stale).alive);
        set_stat(&root, 106, "Z", 500);
        let v = l.check(&dir, "106", written, written, stale);
        assert!(!v.alive && v.reliable);
        // A file pid seen using the directory: names are pids, so an unconfirmed pid with
        // no process is dead.
        set_stat(&root, 102, "S", 500);
        assert!(l.check(&dir, "102", written, written, stale).alive);
        let v = l.check(&dir, "103", written, written, stale);
        assert!(!v.alive && v.reliable, "names are pids now");
        assert!(l.gone("103"));
        // Non-numeric pids fall back to file changes.
        let now = SystemTime::now();
        assert!(!l.check(&dir, "worker-a", now, now, stale).reliable);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn proc_policy_trusts_names_and_ignores_wall_clock_steps_for_confirmed_pids() {
        let dir = scratch("proc-policy");
        let root = fake_proc("proc3", &dir);
        let mut l = Liveness::with_proc_root(LivenessPolicy::Proc, root.clone());
        let stale = Duration::from_secs(60);
        let written = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500);
        assert!(l.check(&dir, "100", written, written, stale).alive);
        // The wall clock steps back before the process started: the confirmed writer stays
        // alive (start ticks compared, not wall times).
        let earlier = SystemTime::UNIX_EPOCH + Duration::from_secs(1_001);
        assert!(l.check(&dir, "100", earlier, earlier, stale).alive);
        // An unconfirmed live process whose start looks later than the write (a clock step)
        // is never declared dead.
        let v = l.check(&dir, "104", written, written, stale);
        assert!(v.alive && !v.reliable);
        // With `proc` promised by the config, a pid with no process is dead.
        assert!(l.gone("103"));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn liveness_without_proof_stays_mtime() {
        let dir = scratch("unproven");
        let other = scratch("other");
        let root = fake_proc("proc2", &other);
        let mut l = Liveness::with_proc_root(LivenessPolicy::Auto, root.clone());
        assert!(!l.detect(&dir, ["100"].into_iter()));
        assert_eq!(l.mode(), LivenessMode::Mtime);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn plain_runs_are_found_like_a_scalar_scan() {
    // The SWAR scan inside key strings must stop exactly where a byte loop would.
    let alphabet = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGüé€😀";
    for len in 0..40 {
        for special in ['"', '\\', '\u{1}', '\u{1f}'] {
            for at in 0..=len {
                let mut s: Vec<char> = alphabet.chars().cycle().take(len).collect();
                if at < len {
                    s[at] = special;
                }
                let text: String = s.into_iter().collect();
                let b = text.as_bytes();
                for from in 0..=b.len().min(9) {
                    let scalar = b[from..]
                        .iter()
                        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                        .map_or(b.len(), |p| p + from);
                    let fast = format::skip_plain(b, from);
                    // Exact, or short of the end by less than a word (the byte loop
                    // finishes); never past a special byte.
                    assert!(
                        fast == scalar || (fast < scalar && b.len() - fast < 8),
                        "{text:?} from {from}: {fast} vs {scalar}"
                    );
                }
            }
        }
    }
}
