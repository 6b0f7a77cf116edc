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
    let families = crate::sources::parse::text::parse(text, false).expect("test exposition parses");
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
    // b leaves (departed, values kept); a restarts (all its counter-like values retired: its
    // histogram starts again too) and drops one counter.
    app.store.write().remove_worker("push:job=api,instance=b");
    apply(
        &app,
        &push_worker("a"),
        &format!(
            "# TYPE rq_total counter\nrq_total{{path=\"/x\"}} 1\n# TYPE temp gauge\ntemp{{_aggregate=\"max\"}} 3\n# TYPE s summary\ns_sum 1\ns_count 2\n{}",
            hist(1)
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
    let _statsd = install(&app, restored);
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

/// Encodes a store capture as the store section alone.
fn encoded(capture: crate::store::StoreCapture) -> Vec<u8> {
    let mut e = Enc::default();
    capture.encode(&mut e);
    e.buf
}

/// Updates of every kind: values up and down, a new worker, a new family, a departure, a
/// worker retired for good (its values moved into the retired totals).
fn churn(store: &mut crate::store::Store, now: Now) {
    let text = "# TYPE rq_total counter\nrq_total{path=\"/x\"} 40\nrq_total{path=\"/z\"} 1\n\
                # TYPE temp gauge\ntemp{_aggregate=\"max\"} 30\n";
    let families = crate::sources::parse::text::parse(text, false).expect("parses");
    store
        .apply(&push_worker("a"), &families, Scope::Worker, now)
        .expect("applied");
    let text = "# TYPE new_total counter\nnew_total 5\n";
    let families = crate::sources::parse::text::parse(text, false).expect("parses");
    store
        .apply(&push_worker("c"), &families, Scope::Worker, now)
        .expect("applied");
    store.remove_worker("push:job=api,instance=c");
    store.retire_worker("push:job=api,instance=b");
}

#[test]
fn a_capture_is_a_consistent_cut_and_does_not_hold_the_store_lock() {
    let now = Now::now();
    let app = populated(now);
    let before = rendered(&app, now);
    // Two captures of the same moment: one encoded at once, one after the store moved on.
    let (at_once, held) = {
        let store = app.store.read();
        (store.capture(), store.capture())
    };
    let expected = encoded(at_once);
    {
        // The capture is alive, yet the store's lock is free: ingest goes on.
        let mut store = app
            .store
            .try_write()
            .expect("a capture must not hold the store's lock");
        churn(&mut store, now);
    }
    let after = rendered(&app, now);
    assert_ne!(after, before);
    assert!(after.contains("new_total{job=\"api\"} 5\n"), "{after}");
    // What the capture encodes is the store as it was when it was taken, byte for byte.
    assert_eq!(encoded(held), expected);
    // ...and it decodes into a store that renders exactly what was shown then.
    let restored = Store::decode_state(StoreSettings::default(), &mut Dec::new(&expected), now)
        .expect("decodes");
    let back = App::new(SidecarConfig::default());
    *back.store.write() = restored;
    assert_eq!(rendered(&back, now), before);
    // The live store was not disturbed by the copy the update made of the shared families.
    assert_eq!(rendered(&app, now), after);
    let mut fresh = app.store.write();
    let expected_now = encoded(fresh.capture());
    churn(&mut fresh, now);
    assert_ne!(encoded(fresh.capture()), expected_now);
}

/// Polls a future once: `Some` when it is already done (nothing is waited for).
fn ready_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_writer_is_on_the_disk_ingest_and_metrics_go_on_and_it_writes_its_cut() {
    use std::sync::mpsc;
    let now = Now::now();
    let app = populated(now);
    let dir = std::env::temp_dir().join(format!(
        "monasca-state-slow-disk-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // The second write stops on the "disk" until the test lets it go.
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    let calls = AtomicU64::new(0);
    let slow: FileWriter = Arc::new(move |dir: &Path, bytes: &[u8]| {
        if calls.fetch_add(1, Ordering::SeqCst) == 1 {
            let _ = entered_tx.lock().send(());
            let _ = release_rx.lock().recv();
        }
        write_file(dir, bytes)
    });
    let persister = Persister::with_file_writer(&app, dir.clone(), LoadOutcome::Missing, slow);
    app.set_persister(persister.clone());
    // A first update, written normally.
    apply(
        &app,
        &push_worker("a"),
        "# TYPE rq_total counter\nrq_total{path=\"/x\"} 20\n",
        now,
    );
    persister.write(&app).await;
    let first = app.store.read().version();
    assert!(ready_now(app.durable(first)).is_some());
    // A second update; its write gets stuck on the disk.
    apply(
        &app,
        &push_worker("a"),
        "# TYPE rq_total counter\nrq_total{path=\"/x\"} 30\n",
        now,
    );
    let second = app.store.read().version();
    let writer = {
        let (p, app) = (persister.clone(), app.clone());
        tokio::spawn(async move { p.write(&app).await })
    };
    tokio::task::spawn_blocking(move || entered.recv().expect("the write reached the disk"))
        .await
        .unwrap();
    // Meanwhile: ingest takes the store's lock, /metrics renders, and a scrape of values
    // already on disk does not wait for the writer.
    {
        let mut store = app
            .store
            .try_write()
            .expect("the writer must not hold the store's lock while on the disk");
        let families = crate::sources::parse::text::parse(
            "# TYPE rq_total counter\nrq_total{path=\"/x\"} 50\n",
            false,
        )
        .unwrap();
        store
            .apply(&push_worker("a"), &families, Scope::Worker, now)
            .unwrap();
    }
    let shown = rendered(&app, now);
    assert!(
        shown.contains("rq_total{job=\"api\",path=\"/x\"} 65\n"),
        "{shown}"
    );
    assert!(ready_now(app.durable(first)).is_some());
    // Values not on disk yet are what a scrape waits for (bounded): here, still pending.
    assert!(ready_now(app.durable(second)).is_none());
    release.send(()).unwrap();
    writer.await.unwrap();
    assert!(ready_now(app.durable(second)).is_some());
    // The file holds the cut the write captured (a at 30: 10 retired + 30 + b's 5), not the
    // update made meanwhile (a at 50).
    let data = std::fs::read(dir.join(FILE_NAME)).unwrap();
    let back = restore(&data, now).unwrap();
    let text = rendered(&back, now);
    assert!(
        text.contains("rq_total{job=\"api\",path=\"/x\"} 45\n"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
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
    let mut acc = crate::sources::statsd::Accumulator::default();
    acc.set_clock(now.mono);
    acc.ingest_datagram(b"jobs:3|c\nlat:250|ms\nlevel:7|g\nlevel:+2|g");
    let mut e = Enc::default();
    acc.encode_state(now, &mut e);
    let restored =
        crate::sources::statsd::Accumulator::decode_state(&mut Dec::new(&e.buf), now).unwrap();
    let mut back = crate::sources::statsd::Accumulator::default();
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
    let sum = crate::sources::multiprocess::retired::fnv1a(&file);
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
