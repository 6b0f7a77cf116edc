//! Scrape mode against 4 real worker HTTP servers (prometheus_client's `start_http_server`,
//! given as one port range) plus a gzip-answering unix-socket worker found by a glob. One
//! worker is SIGKILLed mid-test and later restarted: the total never decreases, the dead
//! worker's last values are kept, its restart (counters back at zero) adds to the total.

mod multiprocess_support;

use monasca_config::SidecarConfig;
use monasca_sidecar::app::App;
use monasca_sidecar::expose::{self, Format};
use monasca_sidecar::sources::SourceContext;
use monasca_sidecar::sources::scrape;
use multiprocess_support::{PyProcess, samples, scratch, self_metric, wait_until};
use std::io::Write as _;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JOBS: &str = "jobs_total{queue=\"q\"}";

/// A base port with `n` consecutive free ports after it.
fn free_ports(n: u16) -> u16 {
    use std::hash::{BuildHasher, RandomState};
    for attempt in 0u64..200 {
        let base = 20_000 + (RandomState::new().hash_one(attempt) % 40_000) as u16;
        let held: Vec<TcpListener> = (0..n)
            .filter_map(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// The runtime the scrape source runs on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn render(app: &App) -> String {
    let mut out = Vec::new();
    let own = app.self_families();
    let store = app.store.read();
    expose::render(&store, Format::Text, app.now().mono, &own, &mut out);
    String::from_utf8(out).expect("utf-8")
}

/// A worker on a unix socket that answers a gzip-compressed exposition and records the
/// Accept header it was sent.
async fn unix_worker(listener: tokio::net::UnixListener, accept: Arc<Mutex<String>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let accept = accept.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some(line) = text
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("accept:"))
            {
                *accept.lock().expect("lock") = line[7..].trim().to_string();
            }
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(b"# TYPE unix_jobs_total counter\nunix_jobs_total 7\n")
                .expect("gzip");
            let body = gz.finish().expect("gzip");
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        });
    }
}

#[test]
fn four_workers_one_killed_totals_never_decrease() {
    let base = free_ports(4);
    let mut workers: Vec<PyProcess> = (0..4)
        .map(|i| PyProcess::plain("scrape_worker.py", &[&(base + i).to_string()]))
        .collect();
    for w in &workers {
        assert_eq!(w.first_line, "ready");
    }
    let sockets = scratch("scrape-sockets");
    let runtime = runtime();
    let _guard = runtime.enter();
    let accept = Arc::new(Mutex::new(String::new()));
    let listener =
        tokio::net::UnixListener::bind(sockets.join("w1.sock")).expect("bind unix socket");
    runtime.spawn(unix_worker(listener, accept.clone()));

    let config = SidecarConfig::from_yaml(&format!(
        "scrape: {{targets: [\"127.0.0.1:{base}-{}\", \"unix:{}/*.sock\"], interval: 200ms, timeout: 2s}}\nstaleAfter: 3s\n",
        base + 3,
        sockets.display()
    ))
    .expect("config");
    let app = App::new(config);
    let _scraper = scrape::spawn(&SourceContext::standalone(&app));

    for (i, w) in workers.iter_mut().enumerate() {
        w.command(&format!("inc {}", (i + 1) * 10));
    }
    let total = |app: &App| samples(&render(app)).get(JOBS).copied().unwrap_or(0.0);
    assert!(
        wait_until(Duration::from_secs(15), || total(&app) == 100.0),
        "never reached 100:\n{}",
        render(&app)
    );
    let text = render(&app);
    for i in 0..4 {
        let up = format!(
            "monasca_sidecar_scrape_up{{target=\"127.0.0.1:{}\"}}",
            base + i
        );
        assert_eq!(self_metric(&text, &up), Some(1.0), "{up}\n{text}");
    }
    let unix_up = format!(
        "monasca_sidecar_scrape_up{{target=\"unix:{}/w1.sock\"}}",
        sockets.display()
    );
    assert_eq!(self_metric(&text, &unix_up), Some(1.0), "{text}");
    assert_eq!(
        samples(&text).get("unix_jobs_total"),
        Some(&7.0),
        "gzip body read"
    );
    assert_eq!(*accept.lock().expect("lock"), "text/plain;version=0.0.4");
    assert!(text.contains("monasca_sidecar_scrape_duration_seconds{target=\"127.0.0.1:"));

    // Watch every render from now on.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (app, stop, seen) = (app.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let v = samples(&render(&app)).get(JOBS).copied().unwrap_or(0.0);
                seen.lock().expect("lock").push(v);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Kill worker 2 (30 jobs): its last values stay, it is reported down.
    workers[2].kill();
    let down = format!(
        "monasca_sidecar_scrape_up{{target=\"127.0.0.1:{}\"}}",
        base + 2
    );
    assert!(wait_until(Duration::from_secs(10), || {
        self_metric(&render(&app), &down) == Some(0.0)
    }));
    assert_eq!(total(&app), 100.0);
    for i in [0, 1, 3] {
        workers[i].command("inc 1");
    }
    assert!(wait_until(Duration::from_secs(10), || total(&app) == 103.0));
    // Past staleAfter the dead worker is stale, still counted.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(total(&app), 103.0);
    let errors = render(&app);
    assert!(
        self_metric(
            &errors,
            "monasca_sidecar_scrape_errors_total{reason=\"connect\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{errors}"
    );

    // It restarts on the same port with fresh counters: the old 30 stay retired.
    workers[2] = PyProcess::plain("scrape_worker.py", &[&(base + 2).to_string()]);
    workers[2].command("inc 5");
    assert!(
        wait_until(Duration::from_secs(15), || total(&app) == 108.0),
        "after restart: {}",
        total(&app)
    );
    assert_eq!(self_metric(&render(&app), &down), Some(1.0));

    stop.store(true, Ordering::SeqCst);
    watcher.join().expect("watcher");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.len() > 20, "only {} renders", seen.len());
    for w in seen.windows(2) {
        assert!(w[1] >= w[0], "total went down: {} -> {}", w[0], w[1]);
    }
    drop(_scraper);
    drop(workers);
    let _ = std::fs::remove_dir_all(&sockets);
}

/// A target that is one process (`oneProcessPerTarget`), restarted with a rare counter
/// already back at its old value by its first scrape: the restart shows in its
/// `process_start_time_seconds` (prometheus_client's process collector) or in another counter
/// going down, and every counter of the previous life is kept. Beside it, a sidecar with the
/// per-series default scrapes the same target: it cannot tell the first restart from a
/// process that counted nothing since.
#[test]
fn one_process_targets_keep_every_count_across_restarts() {
    let port = free_ports(1);
    let start = |before: &[&str]| {
        let mut args = vec![port.to_string()];
        args.extend(before.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let w = PyProcess::plain("scrape_worker.py", &args);
        assert_eq!(w.first_line, "ready");
        w
    };
    let runtime = runtime();
    let _guard = runtime.enter();
    let sidecar = |one_process: bool| {
        let config = SidecarConfig::from_yaml(&format!(
            "scrape: {{targets: [\"127.0.0.1:{port}\"], interval: 100ms, timeout: 2s, oneProcessPerTarget: {one_process}}}\n"
        ))
        .expect("config");
        let app = App::new(config);
        let scraper = scrape::spawn(&SourceContext::standalone(&app));
        (app, scraper)
    };
    let (whole, _whole_scraper) = sidecar(true);
    let (per_series, _per_series_scraper) = sidecar(false);
    let up = format!("monasca_sidecar_scrape_up{{target=\"127.0.0.1:{port}\"}}");
    let counts = |app: &App| {
        let shown = samples(&render(app));
        let get = |name: &str| shown.get(name).copied().unwrap_or(f64::NAN);
        (get(JOBS), get("failures_total"))
    };
    let until = |app: &App, want: (f64, f64)| {
        assert!(
            wait_until(Duration::from_secs(15), || counts(app) == want),
            "never reached {want:?}:\n{}",
            render(app)
        );
    };
    // Each sidecar has seen the target fail since the kill, then answer again. A start time
    // within the sidecar's jitter allowance of the last one is the same process (Go's moves
    // by a second in a live process): the old process lives past it first.
    let life = Duration::from_secs_f64(monasca_sidecar::store::START_TIME_JITTER_SECONDS + 0.5);
    let restart = |worker: &mut PyProcess, born: &mut Instant, before: &[&str]| {
        if let Some(left) = life.checked_sub(born.elapsed()) {
            std::thread::sleep(left);
        }
        worker.kill();
        for app in [&whole, &per_series] {
            assert!(wait_until(Duration::from_secs(10), || {
                self_metric(&render(app), &up) == Some(0.0)
            }));
        }
        *worker = start(before);
        *born = Instant::now();
        for app in [&whole, &per_series] {
            assert!(wait_until(Duration::from_secs(10), || {
                self_metric(&render(app), &up) == Some(1.0)
            }));
        }
    };

    let mut worker = start(&["inc", "10", "fail", "1"]);
    let mut born = Instant::now();
    until(&whole, (10.0, 1.0));
    until(&per_series, (10.0, 1.0));

    // Restarted, both counters back at their old values by the first scrape: only the start
    // time shows it.
    restart(&mut worker, &mut born, &["inc", "10", "fail", "1"]);
    until(&whole, (20.0, 2.0));
    // The per-series sidecar has scraped the new process (up again) and sees a continuation.
    assert_eq!(counts(&per_series), (10.0, 1.0));

    // Restarted again, jobs below their old value this time: per series, jobs alone restart;
    // the rare failure (back at 1) continues there, and is counted anew by the whole worker.
    restart(&mut worker, &mut born, &["inc", "3", "fail", "1"]);
    until(&whole, (23.0, 3.0));
    until(&per_series, (13.0, 1.0));
    // (`monasca_sidecar_worker_restarts_total` on the sidecar's /metrics.)
    assert_eq!(whole.store.read().worker_restarts, 2);
    assert_eq!(per_series.store.read().worker_restarts, 0);

    // The new life counts on as usual.
    worker.command("fail 1");
    until(&whole, (23.0, 4.0));
}
