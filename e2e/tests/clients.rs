//! Non-Python clients end to end: several worker processes of a Go program built on
//! `github.com/prometheus/client_golang` (`push.New(..).Grouping("instance", id).Push()`,
//! delimited protobuf bodies) and of the Java example `manifests/examples/push/PushWorker.java`
//! built with Maven against the `io.prometheus` client library (`PushGateway.push`, text 0.0.4)
//! push to a real sidecar; one worker is SIGKILLed and restarted under its id, another is
//! SIGKILLed for good, the others run on. A real Prometheus (Debian `prometheus`) scrapes the
//! sidecar every second, and every check is PromQL through its HTTP API: exact totals, no
//! counter reset, one series per label set, no worker label.
//!
//! The programs are built by the test itself and cached by the hash of their sources (see
//! [`cache_dir`]), so a rerun does not build again. This file has its own harness
//! (`harness = false`, libtest-mimic) because the Go and Maven toolchains may be missing: the
//! standard harness can only pass or fail at run time, and a test that cannot run must be
//! reported as *ignored, with the reason* (or fail, under `CI=true`), never as passed.

use libtest_mimic::{Arguments, Failed, Trial};
use monasca_e2e::prometheus::{Prometheus, unix_now, wait};
use monasca_e2e::sidecar::Sidecar;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

const GO_WORKER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/go-push-worker");
const JAVA_EXAMPLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/examples/push");

fn main() {
    let mut args = Arguments::from_args();
    // Each test runs a sidecar, a Prometheus and five client processes (JVMs for Java): on a
    // small machine they run one after the other unless asked otherwise.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let trials = vec![
        toolchain_trial(
            "go_client_golang_push_workers_exact_totals_in_prometheus",
            &[("go", &["version"])],
            "Go 1.23 or newer is needed",
            go_client_golang_push_workers,
        ),
        toolchain_trial(
            "java_push_worker_example_exact_totals_in_prometheus",
            &[("mvn", &["-v"]), ("java", &["-version"])],
            "Maven 3 and a JDK 17 or newer are needed",
            java_push_worker_example,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// A trial that needs the given toolchain commands. When one is missing the trial is ignored and
/// the reason printed, except under `CI=true`, where it fails with that reason.
fn toolchain_trial(
    name: &'static str,
    tools: &[(&str, &[&str])],
    needs: &str,
    test: fn() -> Result<(), Failed>,
) -> Trial {
    let missing: Vec<String> = tools
        .iter()
        .filter_map(|(tool, args)| tool_missing(tool, args))
        .collect();
    if missing.is_empty() {
        return Trial::test(name, test);
    }
    let reason = format!("{}: {needs} (see e2e/README.md)", missing.join("; "));
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        Trial::test(name, move || {
            Err(format!("CI=true and this test cannot run: {reason}").into())
        })
    } else {
        eprintln!("{name}: ignored: {reason}");
        Trial::test(name, || Ok(())).with_ignored_flag(true)
    }
}

/// `Some(reason)` when `tool args` cannot be run successfully.
fn tool_missing(tool: &str, args: &[&str]) -> Option<String> {
    match Command::new(tool).args(args).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`{tool} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("`{tool}` not found on PATH ({e})")),
    }
}

// ----------------------------------------------------------------------------------------------
// Building the clients, cached outside the clone.

/// Where built clients are kept between runs: `$MONASCA_E2E_CACHE`, else
/// `$XDG_CACHE_HOME/monasca-sidecar/e2e-clients`, else `~/.cache/monasca-sidecar/e2e-clients`.
/// Entries are named by a hash of the sources, so an edit builds anew and a rerun does not.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MONASCA_E2E_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("monasca-sidecar").join("e2e-clients")
}

/// FNV-1a over the files' names and contents: a cache key, not a security measure.
fn source_key(dir: &Path, files: &[&str]) -> Result<String, Failed> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let content = std::fs::read(dir.join(file))
            .map_err(|e| format!("read {}: {e}", dir.join(file).display()))?;
        for byte in file.bytes().chain([0]).chain(content).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!("{hash:016x}"))
}

/// Runs a build command; its output is shown only when it fails.
fn run_build(what: &str, cmd: &mut Command) -> Result<(), Failed> {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    println!("{what}: built in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The Go worker (`e2e/clients/go-push-worker`), built with `go build` on first use.
fn go_worker_binary() -> Result<PathBuf, Failed> {
    let dir = Path::new(GO_WORKER_DIR);
    let key = source_key(dir, &["go.mod", "go.sum", "main.go"])?;
    let cache = cache_dir();
    let binary = cache.join(format!("go-push-worker-{key}"));
    if binary.exists() {
        println!("go-push-worker: cached at {}", binary.display());
        return Ok(binary);
    }
    std::fs::create_dir_all(&cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    let partial = cache.join(format!(
        "go-push-worker-{key}.partial-{}",
        std::process::id()
    ));
    run_build(
        "go build e2e/clients/go-push-worker",
        Command::new("go")
            .args(["build", "-trimpath", "-buildvcs=false", "-o"])
            .arg(&partial)
            .arg(".")
            .current_dir(dir),
    )?;
    // Renamed into place whole, so a concurrent or interrupted run never sees half a binary.
    std::fs::rename(&partial, &binary).map_err(|e| format!("cache the Go worker: {e}"))?;
    Ok(binary)
}

/// The Java example's runnable jar, built with `mvn package` (local `~/.m2`) on first use, in a
/// copy of the example under the cache directory (no build output lands in the repository).
fn java_worker_jar() -> Result<PathBuf, Failed> {
    let dir = Path::new(JAVA_EXAMPLE_DIR);
    let files = ["pom.xml", "PushWorker.java"];
    let key = source_key(dir, &files)?;
    let cache = cache_dir();
    let project = cache.join(format!("java-push-worker-{key}"));
    let jar = project.join("target/push-worker.jar");
    if jar.exists() {
        println!("java push worker: cached at {}", jar.display());
        return Ok(jar);
    }
    let partial = cache.join(format!(
        "java-push-worker-{key}.partial-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| format!("create {}: {e}", partial.display()))?;
    for file in files {
        std::fs::copy(dir.join(file), partial.join(file))
            .map_err(|e| format!("copy {file}: {e}"))?;
    }
    run_build(
        "mvn package manifests/examples/push",
        Command::new("mvn")
            .args(["-q", "-B", "package"])
            .current_dir(&partial),
    )?;
    let _ = std::fs::remove_dir_all(&project);
    std::fs::rename(&partial, &project).map_err(|e| format!("cache the Java worker: {e}"))?;
    Ok(jar)
}

// ----------------------------------------------------------------------------------------------
// Worker processes.

/// A client worker process whose `pushed ...` stdout lines (one per successful push) are tracked.
struct Worker {
    name: String,
    child: Child,
    lines: Receiver<String>,
    last: Option<String>,
    /// Successful pushes so far (one `pushed` line each).
    pushes: u32,
}

/// What one worker process pushed, once it is gone.
struct Pushed {
    /// The line of its last successful push.
    last: String,
    /// How many pushes succeeded.
    pushes: u32,
}

impl Worker {
    fn spawn(name: &str, mut cmd: Command) -> Worker {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start worker {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("pushed ") {
                    let _ = tx.send(line);
                }
            }
        });
        Worker {
            name: name.to_string(),
            child,
            lines,
            last: None,
            pushes: 0,
        }
    }

    /// Waits for the next completed push and returns its line.
    fn next_push(&mut self) -> String {
        let line = match self.lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("worker {}: no push within 60s", self.name),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "worker {} exited ({:?}) before its next push; its stderr is above",
                self.name,
                self.child.wait()
            ),
        };
        self.last = Some(line.clone());
        self.pushes += 1;
        line
    }

    /// Waits for the push numbered `round` (the worker stops there when it has `pause-after`).
    fn wait_for_push(&mut self, round: u32) -> String {
        let prefix = format!("pushed {round}");
        loop {
            let line = self.next_push();
            if line == prefix || line.starts_with(&format!("{prefix} ")) {
                return line;
            }
        }
    }

    /// SIGKILLs the worker (blocked after its last push).
    fn kill(mut self) -> Pushed {
        self.child.kill().expect("SIGKILL worker");
        let _ = self.child.wait();
        // The worker was blocked: it cannot have pushed again after the line we saw.
        if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            panic!("worker {} pushed after its pause: {line}", self.name);
        }
        println!("SIGKILLed worker {} after: {:?}", self.name, self.last);
        self.pushed()
    }

    /// Waits for the worker to finish its rounds.
    fn finish(mut self) -> Pushed {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(60)) {
            self.last = Some(line);
            self.pushes += 1;
        }
        let status = self.child.wait().expect("wait for worker");
        assert!(
            status.success(),
            "worker {} exited with {status}",
            self.name
        );
        self.pushed()
    }

    fn pushed(&mut self) -> Pushed {
        Pushed {
            last: self.last.take().expect("the worker pushed"),
            pushes: self.pushes,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scenario's processes: `steady` workers run all their rounds; `victim` is SIGKILLed after
/// its `victim_pause`-th push and started again under the same id; `lost` is SIGKILLed after its
/// `lost_pause`-th push and never comes back. Returns, per worker id, the last push line of each
/// process that ran under it, in order.
struct Scenario<'a> {
    spawn: &'a dyn Fn(&str, u32, u32) -> Worker,
    steady: &'a [&'a str],
    rounds: u32,
    victim: &'a str,
    victim_pause: u32,
    victim_again: u32,
    lost: &'a str,
    lost_pause: u32,
}

/// What a scenario leaves: the last line of each process per worker id, and the moment (Unix
/// seconds) after Prometheus had the first samples and before any kill.
struct Outcome {
    pushes: BTreeMap<String, Vec<Pushed>>,
    t0: f64,
}

impl Scenario<'_> {
    fn run(&self, prom: &Prometheus, first_series: &str) -> Outcome {
        let mut steady: Vec<Worker> = self
            .steady
            .iter()
            .map(|id| (self.spawn)(id, self.rounds, 0))
            .collect();
        let mut victim = (self.spawn)(self.victim, self.rounds, self.victim_pause);
        let mut lost = (self.spawn)(self.lost, self.rounds, self.lost_pause);
        for w in steady.iter_mut().chain([&mut victim, &mut lost]) {
            w.next_push();
        }
        let seen = wait(Duration::from_secs(30), || {
            prom.value(first_series).is_some()
        });
        assert!(seen, "Prometheus never saw {first_series}:\n{}", prom.log());
        // The kills come after t0: the paused workers wait for them.
        let t0 = unix_now();
        let mut pushes: BTreeMap<String, Vec<Pushed>> = BTreeMap::new();
        victim.wait_for_push(self.victim_pause);
        pushes
            .entry(self.victim.into())
            .or_default()
            .push(victim.kill());
        let again = (self.spawn)(self.victim, self.victim_again, 0);
        lost.wait_for_push(self.lost_pause);
        pushes
            .entry(self.lost.into())
            .or_default()
            .push(lost.kill());
        for w in steady {
            let id = w.name.clone();
            pushes.entry(id).or_default().push(w.finish());
        }
        pushes
            .entry(self.victim.into())
            .or_default()
            .push(again.finish());
        Outcome { pushes, t0 }
    }
}

/// The sidecar's own account, through Prometheus too: it accepted exactly the pushes the workers
/// saw succeed, refused none, and saw the restarted worker's counters go down (and retired them).
fn check_sidecar_self_metrics(prom: &Prometheus, outcome: &Outcome) {
    let pushes: u32 = outcome.pushes.values().flatten().map(|p| p.pushes).sum();
    let t = Duration::from_secs(10);
    prom.check("monasca_sidecar_pushes_total", f64::from(pushes), t);
    prom.check(
        "sum(monasca_sidecar_ingest_errors_total) or vector(0)",
        0.0,
        t,
    );
    let resets = prom.value("monasca_sidecar_counter_resets_total");
    println!("PromQL check: monasca_sidecar_counter_resets_total  expected>0  actual={resets:?}");
    assert!(
        resets.is_some_and(|r| r > 0.0),
        "the restarted worker's counters were not seen to restart: {resets:?}"
    );
}

/// Checks common to both clients after the totals: over the window since `t0` (which holds the
/// kills and the restart), no counter series was ever reset; one series per label set; no series
/// carries a worker label, and `instance` is the sidecar's own target.
fn check_no_reset_and_no_worker_labels(
    prom: &Prometheus,
    sidecar: &Sidecar,
    t0: f64,
    counters: &[&str],
    prefix: &str,
    series_counts: &[(&str, f64)],
) {
    std::thread::sleep(Duration::from_secs(2));
    let window = (unix_now() - t0).ceil() as u64;
    for counter in counters {
        prom.check(
            &format!("sum(resets({counter}[{window}s]))"),
            0.0,
            Duration::from_secs(1),
        );
    }
    for (query, expected) in series_counts {
        prom.check(query, *expected, Duration::from_secs(1));
    }
    let series = prom.query(&format!("{{__name__=~\"{prefix}.+\"}}"));
    assert!(!series.is_empty(), "no {prefix}* series in Prometheus");
    for s in series {
        let labels = s["metric"].as_object().expect("labels");
        for worker_label in ["pid", "worker", "_id", "exported_instance"] {
            assert!(!labels.contains_key(worker_label), "{s}");
        }
        assert_eq!(
            labels["instance"],
            sidecar.metrics_addr().to_string(),
            "{s}"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Go: client_golang's push package.

/// Per round, the Go worker adds 3 to `goworker_jobs_total{outcome="ok"}`, 1 to
/// `{outcome="failed"}` every 4th round, observes 0.0625, 0.25 and 2 in `goworker_job_seconds`
/// (buckets 0.1, 1) and sets `goworker_queue_depth` to the round (see main.go).
fn go_client_golang_push_workers() -> Result<(), Failed> {
    let binary = go_worker_binary()?;
    // Long staleness: every worker id's last gauge value still counts at the end (`sum`).
    let sidecar = Sidecar::start("staleAfter: 10m\n");
    let prom = Prometheus::start(&[sidecar.metrics_addr()]);
    let gateway = sidecar.ingest_url();
    let spawn = |id: &str, rounds: u32, pause_after: u32| {
        let mut cmd = Command::new(&binary);
        cmd.args(["-gateway", &gateway, "-job", "goworker", "-instance", id])
            .arg(format!("-rounds={rounds}"))
            .arg("-interval=200ms")
            .arg(format!("-pause-after={pause_after}"));
        Worker::spawn(id, cmd)
    };
    let scenario = Scenario {
        spawn: &spawn,
        steady: &["w0", "w2"],
        rounds: 30,
        victim: "w1",
        victim_pause: 6,
        victim_again: 10,
        lost: "w3",
        lost_pause: 4,
    };
    let outcome = scenario.run(&prom, "sum(goworker_jobs_total)");
    // Rounds pushed by each process, from its own last line ("pushed <round>").
    let rounds = |line: &str| -> u32 {
        line.strip_prefix("pushed ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected worker line {line:?}"))
    };
    let per_process: Vec<u32> = outcome
        .pushes
        .values()
        .flatten()
        .map(|p| {
            // Every round's push succeeded (a failed push ends the Go worker).
            assert_eq!(p.pushes, rounds(&p.last), "{}", p.last);
            p.pushes
        })
        .collect();
    assert_eq!(per_process.iter().sum::<u32>(), 30 + 30 + 6 + 10 + 4);
    let total_rounds: u32 = per_process.iter().sum();
    let failed: u32 = per_process.iter().map(|r| r / 4).sum();
    // The gauge: each worker id's latest value; w1's restart replaced its own departed 6.
    let gauge: u32 = outcome
        .pushes
        .values()
        .map(|processes| rounds(&processes.last().expect("a process per id").last))
        .sum();
    println!(
        "Go workers: {} processes, {total_rounds} rounds pushed; expected ok={} failed={failed} observations={} gauge={gauge}",
        per_process.len(),
        3 * total_rounds,
        3 * total_rounds
    );
    let t = Duration::from_secs(20);
    let r = f64::from(total_rounds);
    prom.check("sum(goworker_jobs_total{outcome=\"ok\"})", 3.0 * r, t);
    prom.check(
        "sum(goworker_jobs_total{outcome=\"failed\"})",
        f64::from(failed),
        t,
    );
    prom.check("sum(goworker_job_seconds_count)", 3.0 * r, t);
    prom.check("sum(goworker_job_seconds_bucket{le=\"0.1\"})", r, t);
    prom.check("sum(goworker_job_seconds_bucket{le=\"+Inf\"})", 3.0 * r, t);
    prom.check("sum(goworker_job_seconds_sum)", 2.3125 * r, t);
    prom.check("sum(goworker_queue_depth)", f64::from(gauge), t);
    check_sidecar_self_metrics(&prom, &outcome);
    check_no_reset_and_no_worker_labels(
        &prom,
        &sidecar,
        outcome.t0,
        &[
            "goworker_jobs_total",
            "goworker_job_seconds_count",
            "goworker_job_seconds_bucket",
        ],
        "goworker_",
        &[
            ("count(goworker_jobs_total)", 2.0),
            ("count(goworker_job_seconds_bucket)", 3.0),
            ("count(goworker_queue_depth)", 1.0),
        ],
    );
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// Java: the example in manifests/examples/push, built with Maven.

/// What a Java worker reported for its last push:
/// `pushed <round> ok=.. failed=.. count=.. sum=.. le0.1=.. queue=..`.
#[derive(Debug, Default, Clone, Copy)]
struct JavaPush {
    ok: f64,
    failed: f64,
    count: f64,
    sum: f64,
    le_0_1: f64,
    queue: f64,
}

impl JavaPush {
    fn parse(line: &str) -> JavaPush {
        let mut p = JavaPush::default();
        for field in line.split_whitespace().skip(2) {
            let (key, value) = field
                .split_once('=')
                .unwrap_or_else(|| panic!("unexpected field {field:?} in {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad number in {line:?}"));
            match key {
                "ok" => p.ok = value,
                "failed" => p.failed = value,
                "count" => p.count = value,
                "sum" => p.sum = value,
                "le0.1" => p.le_0_1 = value,
                "queue" => p.queue = value,
                _ => panic!("unexpected field {key:?} in {line:?}"),
            }
        }
        p
    }
}

fn java_push_worker_example() -> Result<(), Failed> {
    let jar = java_worker_jar()?;
    // As the example's MetricsSidecar, with a long staleness so that every worker id's last
    // gauge value still counts at the end.
    let sidecar = Sidecar::start(
        "staleAfter: 10m\naggregation:\n  rules:\n    - match: \"^orders_queue_depth$\"\n      mode: livesum\n",
    );
    let prom = Prometheus::start(&[sidecar.metrics_addr()]);
    let gateway = sidecar.ingest_url();
    let spawn = |id: &str, rounds: u32, pause_after: u32| {
        let mut cmd = Command::new("java");
        cmd.args([
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Xmx32m",
            "-jar",
        ])
        .arg(&jar)
        .arg(id)
        .env("PUSH_URL", &gateway)
        .env("PUSH_INTERVAL_SECONDS", "0.25")
        .env("PUSH_ROUNDS", rounds.to_string())
        .env("PUSH_PAUSE_AFTER", pause_after.to_string())
        .env("PROMETHEUS_DISABLE_CREATED_SERIES", "true");
        Worker::spawn(id, cmd)
    };
    let scenario = Scenario {
        spawn: &spawn,
        steady: &["worker-0", "worker-2"],
        rounds: 20,
        victim: "worker-1",
        // A restart shows when one of the worker's counters goes down. After 8 rounds of
        // 1-20 orders the victim has counted more than the new process's first push can
        // (at most 20) but for a chance of about 5e-6, so the restart always shows.
        victim_pause: 8,
        victim_again: 8,
        lost: "worker-3",
        lost_pause: 3,
    };
    let outcome = scenario.run(&prom, "sum(orders_processed_total)");
    let mut total = JavaPush::default();
    let mut gauge = 0.0;
    let mut processes = 0;
    for pushed in outcome.pushes.values() {
        for process in pushed {
            let p = JavaPush::parse(&process.last);
            total.ok += p.ok;
            total.failed += p.failed;
            total.count += p.count;
            total.sum += p.sum;
            total.le_0_1 += p.le_0_1;
            processes += 1;
        }
        gauge += JavaPush::parse(&pushed.last().expect("a process per id").last).queue;
    }
    assert_eq!(processes, 5);
    assert_eq!(total.ok + total.failed, total.count);
    println!("Java workers: {processes} processes; expected {total:?}, queue depth {gauge}");
    let t = Duration::from_secs(20);
    prom.check("sum(orders_processed_total{outcome=\"ok\"})", total.ok, t);
    prom.check(
        "sum(orders_processed_total{outcome=\"failed\"})",
        total.failed,
        t,
    );
    prom.check("sum(order_processing_seconds_count)", total.count, t);
    prom.check(
        "sum(order_processing_seconds_bucket{le=\"+Inf\"})",
        total.count,
        t,
    );
    prom.check(
        "sum(order_processing_seconds_bucket{le=\"0.1\"})",
        total.le_0_1,
        t,
    );
    // Latencies are multiples of 1/128 s: the sums are exact in floating point.
    prom.check("sum(order_processing_seconds_sum)", total.sum, t);
    prom.check("sum(orders_queue_depth)", gauge, t);
    // PROMETHEUS_DISABLE_CREATED_SERIES (deployment.yaml sets it too): no summed timestamps.
    prom.check(
        "absent({__name__=~\"order.*_created\"})",
        1.0,
        Duration::from_secs(1),
    );
    check_sidecar_self_metrics(&prom, &outcome);
    check_no_reset_and_no_worker_labels(
        &prom,
        &sidecar,
        outcome.t0,
        &[
            "orders_processed_total",
            "order_processing_seconds_count",
            "order_processing_seconds_bucket",
        ],
        "order",
        &[
            ("count(orders_processed_total)", 2.0),
            ("count(order_processing_seconds_bucket)", 9.0),
            ("count(orders_queue_depth)", 1.0),
        ],
    );
    Ok(())
}
