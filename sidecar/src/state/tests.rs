//! The state file, fed by values: round trips through a real store, and damaged files
//! (every truncation, every bit flip, random bodies in a valid frame) that must be refused
//! whole, never panic and never half-load.

use super::*;
use crate::expose::{Format, render};
use crate::store::{Scope, Source, WorkerKey};
use monasca_config::SidecarConfig;
use proptest::prelude::*;

fn push_worker(id: &str) -> WorkerKey {
    let mut key = WorkerKey::new(
        Source::Push,
        format!("push:job=api,instance={id}"),
        vec![("instance".into(), id.into())],
    );
    key.common_labels = vec![("job".into(), "api".into())];
    key
}

fn apply(app: &App, worker: &WorkerKey, text: &str, now: Now) {
    let families = crate::parse::text::parse(text, false).expect("test exposition parses");
    app.store
        .write()
        .apply(worker, &families, Scope::Worker, now)
        .expect("applied");
}

/// A store with live, departed, reset and dropped values of every kind.
fn populated(now: Now) -> Arc<App> {
    let app = App::new(SidecarConfig::default());
    let hist = |n: u32| {
        format!(
            "# TYPE lat_seconds histogram\nlat_seconds_bucket{{le=\"0.5\"}} {n}\nlat_seconds_bucket{{le=\"+Inf\"}} {}\nlat_seconds_sum 3.5\nlat_seconds_count {}\n",
            n + 1,
            n + 1
        )
    };
    apply(
        &app,
        &push_worker("a"),
        &format!(
            "# TYPE rq_total counter\nrq_total{{path=\"/x\"}} 10\nrq_total{{path=\"/y\"}} 2\n# TYPE temp gauge\ntemp{{_aggregate=\"max\"}} 3\n# TYPE s summary\ns_sum 1\ns_count 2\n{}",
            hist(4)
        ),
        now,
    );
    apply(
        &app,
        &push_worker("b"),
        "# TYPE rq_total counter\nrq_total{path=\"/x\"} 5\n# TYPE temp gauge\ntemp{_aggregate=\"max\"} 9\n",
        now,
    );
    // b leaves (departed, values kept); a restarts one counter (retired) and drops another.
    app.store.write().remove_worker("push:job=api,instance=b");
    apply(
        &app,
        &push_worker("a"),
        &format!(
            "# TYPE rq_total counter\nrq_total{{path=\"/x\"}} 1\n# TYPE temp gauge\ntemp{{_aggregate=\"max\"}} 3\n# TYPE s summary\ns_sum 1\ns_count 2\n{}",
            hist(6)
        ),
        now,
    );
    app
}

fn rendered(app: &App, now: Now) -> String {
    let mut out = Vec::new();
    render(&app.store.read(), Format::Text, now.mono, &[], &mut out);
    String::from_utf8(out).unwrap()
}

fn restore(bytes: &[u8], now: Now) -> Result<Arc<App>, DecodeError> {
    let app = App::new(SidecarConfig::default());
    let restored = decode(bytes, StoreSettings::default(), now)?;
    install(&app, restored);
    Ok(app)
}

#[test]
fn restored_store_renders_exactly_what_was_saved() {
    let now = Now::now();
    let app = populated(now);
    let before = rendered(&app, now);
    assert!(
        before.contains("rq_total{job=\"api\",path=\"/x\"} 16\n"),
        "{before}"
    );
    let snap = snapshot(&app, Vec::new());
    let later = now.after(Duration::from_secs(5));
    let restored = restore(&snap.bytes, later).unwrap();
    assert_eq!(rendered(&restored, later), rendered(&app, later));
    // Ages come back through wall-clock seconds (an f64 near 1.8e9, so ~0.2 µs of rounding);
    // everything else round-trips exactly.
    let ages_apart = |mut infos: Vec<crate::store::WorkerInfo>| {
        let ages: Vec<f64> = infos
            .iter_mut()
            .map(|w| std::mem::take(&mut w.age_seconds))
            .collect();
        (infos, ages)
    };
    let (restored_info, restored_ages) = ages_apart(restored.store.read().workers_info(later));
    let (saved_info, saved_ages) = ages_apart(app.store.read().workers_info(later));
    assert_eq!(restored_info, saved_info);
    for (r, s) in restored_ages.iter().zip(&saved_ages) {
        assert!((r - s).abs() < 1e-3, "age {s} restored as {r}");
    }
    // A second round trip writes the same bytes (apart from the snapshot time).
    let again = snapshot(&restored, Vec::new());
    assert_eq!(again.bytes.len(), snap.bytes.len());
}

#[test]
fn returning_worker_continues_and_departed_total_stays() {
    let now = Now::now();
    let app = App::new(SidecarConfig::default());
    apply(
        &app,
        &push_worker("a"),
        "# TYPE rq_total counter\nrq_total 10\n",
        now,
    );
    apply(
        &app,
        &push_worker("b"),
        "# TYPE rq_total counter\nrq_total 5\n",
        now,
    );
    app.store.write().remove_worker("push:job=api,instance=b");
    let restored = restore(&snapshot(&app, Vec::new()).bytes, now).unwrap();
    assert!(rendered(&restored, now).contains("rq_total{job=\"api\"} 15\n"));
    apply(
        &restored,
        &push_worker("a"),
        "# TYPE rq_total counter\nrq_total 11\n",
        now,
    );
    assert!(rendered(&restored, now).contains("rq_total{job=\"api\"} 16\n"));
}

#[test]
fn forget_timer_continues_from_the_persisted_last_seen() {
    let now = Now::now();
    let app = populated(now);
    let bytes = snapshot(&app, Vec::new()).bytes;
    let forget = StoreSettings::default().forget_after;
    // Restored before forgetAfter ran out: the workers are still there.
    let early = restore(&bytes, now.after(forget / 2)).unwrap();
    assert_eq!(early.store.read().worker_count(), 1);
    // ...and forgotten when it ran out in the meantime, counters retired, not lost.
    let late_now = now.after(forget + Duration::from_secs(1));
    let late = restore(&bytes, late_now).unwrap();
    assert_eq!(late.store.read().worker_count(), 0);
    let text = rendered(&late, late_now);
    assert!(
        text.contains("rq_total{job=\"api\",path=\"/x\"} 16\n"),
        "{text}"
    );
    assert!(
        text.contains("lat_seconds_count{job=\"api\"} 7\n"),
        "{text}"
    );
}

#[test]
fn multiprocess_workers_are_left_to_their_own_files() {
    let now = Now::now();
    let app = populated(now);
    let pid = WorkerKey::new(
        Source::Multiprocess,
        "multiprocess:pid=42",
        vec![("pid".into(), "42".into())],
    );
    apply(&app, &pid, "# TYPE mp_total counter\nmp_total 3\n", now);
    let restored = restore(&snapshot(&app, Vec::new()).bytes, now).unwrap();
    assert!(!restored.store.read().has_worker("multiprocess:pid=42"));
    assert!(!rendered(&restored, now).contains("mp_total"));
}

#[test]
fn statsd_accumulator_round_trips() {
    let now = Now::now();
    let mut acc = crate::statsd::Accumulator::default();
    acc.set_clock(now.mono);
    acc.ingest_datagram(b"jobs:3|c\nlat:250|ms\nlevel:7|g\nlevel:+2|g");
    let mut e = Enc::default();
    acc.encode_state(now, &mut e);
    let restored = crate::statsd::Accumulator::decode_state(&mut Dec::new(&e.buf), now).unwrap();
    let mut back = crate::statsd::Accumulator::default();
    back.restore(restored);
    let mut a = acc.take_changes();
    let mut b = back.take_changes();
    for changes in [&mut a, &mut b] {
        for c in changes.iter_mut() {
            c.series
                .sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        }
    }
    assert_eq!(a, b);
    assert_eq!(back.series_count(), 3);
}

#[test]
fn every_truncation_and_every_bit_flip_is_refused() {
    let now = Now::now();
    let bytes = snapshot(&populated(now), Vec::new()).bytes;
    for len in 0..bytes.len() {
        let err = decode(&bytes[..len], StoreSettings::default(), now).unwrap_err();
        let expected = if len == 0 {
            DecodeError::Empty
        } else {
            DecodeError::Truncated
        };
        assert_eq!(err, expected, "truncated to {len}");
    }
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            assert!(
                decode(&bad, StoreSettings::default(), now).is_err(),
                "byte {i} bit {bit} flipped was accepted"
            );
        }
    }
    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(
        decode(&future, StoreSettings::default(), now).unwrap_err(),
        DecodeError::FutureVersion(2)
    );
}

/// A file with `body` in a valid frame (length and checksum right), so the decoder of the
/// sections is what the input reaches.
fn framed(mut file: Vec<u8>, body_edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut body = file[HEADER..file.len() - 8].to_vec();
    body_edit(&mut body);
    file.truncate(HEADER);
    file[12..20].copy_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&body);
    let sum = crate::multiprocess::retired::fnv1a(&file);
    file.extend_from_slice(&sum.to_le_bytes());
    file
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn damaged_bodies_in_a_valid_frame_never_panic_or_half_load(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let now = Now::now();
        let good = snapshot(&populated(now), Vec::new()).bytes;
        let bad = framed(good, |body| {
            for (at, byte) in &edits {
                let i = at.index(body.len());
                body[i] = *byte;
            }
            if truncate {
                body.truncate(cut.index(body.len()));
            }
        });
        // Either refused whole, or a store that renders and saves again.
        if let Ok(app) = restore(&bad, now) {
            let _ = rendered(&app, now);
            let _ = snapshot(&app, Vec::new());
        }
    }

    #[test]
    fn random_bytes_are_refused(data in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(decode(&data, StoreSettings::default(), Now::now()).is_err());
    }
}
