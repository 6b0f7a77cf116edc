#!/usr/bin/env python3
"""Benchmarks of monasca-sidecar and monasca-operator, side by side with the tools users would
pick instead, and the criterion micro-benchmarks: one command writes all of BENCHMARKS.md.

One command (from the repository root):  python3 bench/run.py
It builds the release binaries, runs every comparison on this machine in this run, repeats
each side-by-side figure RUNS times (default 5; median, min and max), runs the criterion
benches, and the operator against a real control plane (the binaries `ci/control-plane/
install.sh` caches). Every figure, every ratio (both sides measured in this run), the goals
table (met or not met) and the "where we are not ahead" list are computed here; nothing in
BENCHMARKS.md is written by hand. Needs: Debian prometheus-pushgateway, PyPI prometheus_client
(both installed by ci/test.sh), the control-plane binaries for the operator section.

Environment: RUNS, PUSH_SECONDS (5), STATSD_SECONDS (5), PODS (10000), SECTIONS (a comma list of
section names, for development; a partial run says so in its header), BUILD=0 (do not build the
release binaries first).
"""
import glob
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
RUNS = int(os.environ.get("RUNS", "5"))
PUSH_SECONDS = int(os.environ.get("PUSH_SECONDS", "5"))
STATSD_SECONDS = int(os.environ.get("STATSD_SECONDS", "5"))
PODS = int(os.environ.get("PODS", "10000"))
ALL_SECTIONS = ["footprint", "push", "render", "statsd", "multiprocess", "operator", "admission",
                "state", "criterion"]
SECTIONS = os.environ.get("SECTIONS", ",".join(ALL_SECTIONS)).split(",")
CRITERION_BENCHES = ["core", "parse", "statsd", "otlp", "multiprocess"]
CRITERION_ARGS = ["--warm-up-time", "1", "--measurement-time", "3", "--noplot"]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU time of a whole process (every thread), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ExitedEarly(RuntimeError):
    """A server process ended before it listened."""


def wait_port(port, timeout=20, server=None):
    """Returns once something accepts on `port`; with `server` (a Server), fails at once if that
    process ends first, with its error line (see `Server.stderr_tail`)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server is not None and server.proc.poll() is not None:
            raise ExitedEarly(f"{os.path.basename(server.argv[0])} exited with {server.proc.returncode} "
                              f"before listening on {port}: {server.stderr_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}" + (f": {server.stderr_tail()}" if server else ""))


def median(values):
    return statistics.median(values)


def fmt(values, unit="", scale=1.0, digits=0):
    """Median (min–max) of `values`."""
    vals = [v * scale for v in values]
    f = f"{{:,.{digits}f}}"
    return f"{f.format(median(vals))}{unit} ({f.format(min(vals))}–{f.format(max(vals))})"


def ms(values, digits=1):
    return fmt(values, " ms", 1000, digits)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Report:
    """The sections, the goals table and the "not ahead" list of one run."""

    def __init__(self):
        self.sections = []
        self.current = ALL_SECTIONS[0]
        self.goals = []
        self.behind = []

    def add(self, text):
        self.sections.append((ALL_SECTIONS.index(self.current), text))

    def goal(self, area, goal, figure, met, why):
        """A goal row; `why` (no figures: those come from the run) explains a miss."""
        self.goals.append({"area": area, "goal": goal, "figure": figure, "met": met, "why": why})

    def not_ahead(self, text):
        """A side-by-side comparison this run does not win."""
        self.behind.append(text)

    def goals_table(self):
        rows = [f"| {g['area']} | {g['goal']} | {g['figure']} | {'met' if g['met'] else '**not met**'} |"
                for g in self.goals]
        met = sum(g["met"] for g in self.goals)
        return ("## Goals\n\n"
                f"{met} of {len(self.goals)} goals met in this run.\n\n"
                "| area | goal | figure (this run) | |\n| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")

    def not_ahead_list(self):
        items = [f"- **{g['area']}: {g['goal']}** not met ({g['figure']}). {g['why']}"
                 for g in self.goals if not g["met"]] + [f"- {t}" for t in self.behind]
        if not items:
            items = ["- Nothing in this run: every goal met, every comparison won."]
        return ("## Where we are not ahead, and why\n\n"
                "Computed from the goals table and the comparisons above: every goal not met and "
                "every comparison where the other tool was faster or smaller.\n\n" + "\n".join(items) + "\n")


class Server:
    """A server process on loopback, killed on exit. Its stderr is kept in a temporary file, to
    say why it did not start."""

    def __init__(self, argv, port, files=()):
        self.argv = argv
        self.files = list(files)  # removed at stop: the server reads them while it runs
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.port = port
        try:
            wait_port(port, server=self)
        except Exception:
            self.stop()
            raise

    def stderr_tail(self, limit=4000):
        self.stderr.seek(0, os.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - limit))
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        # A Rust binary's `Error: ...` line, not the backtrace after it.
        errors = [line for line in lines if line.startswith("Error")]
        return (errors or lines or ["(nothing on stderr)"])[-1]

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.stderr.close()
        for path in self.files:
            os.unlink(path)
        self.files = []


def sidecar(extra=""):
    """A release sidecar with every listener on a port of its own. A port another process took
    between `free_port` and the sidecar's bind makes it exit at start: it is started again on new
    ports (twice at most)."""
    for attempt in (1, 2, 3):
        metrics, ingest, statsd, otlp = free_port(), free_port(), free_port(), free_port()
        cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        cfg.write(
            f'listen: {{metrics: "127.0.0.1:{metrics}", ingest: "127.0.0.1:{ingest}", '
            f'statsd: "127.0.0.1:{statsd}", otlp: "127.0.0.1:{otlp}"}}\n'
            "limits: {maxBodyBytes: 67108864, maxSeriesPerWorker: 1000000}\n" + extra
        )
        cfg.close()
        s = None
        try:
            s = Server([os.path.join(RELEASE, "monasca-sidecar"), "--config", cfg.name], ingest,
                       files=[cfg.name])
            wait_port(metrics, server=s)
        except Exception as e:
            if s is not None:
                s.stop()  # (also when it still runs but never listened on `metrics`)
            if not isinstance(e, ExitedEarly) or attempt == 3:
                raise
            log(f"{e}; starting it again on new ports")
            continue
        s.metrics_port = metrics
        s.statsd_port = statsd
        return s


def pushgateway():
    port = free_port()
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if not binary:
        raise RuntimeError("install Debian prometheus-pushgateway")
    # No persistence file: like the sidecar, keep pushed groups in memory only (Debian's build
    # defaults to /var/lib/prometheus/pushgateway.data, which would be reloaded at start).
    return Server([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="], port)


def push_load(port, pushers, series, seconds, fmt_, shared=False):
    argv = [os.path.join(RELEASE, "examples", "push_load"), f"127.0.0.1:{port}", str(pushers),
            str(series), str(seconds), fmt_] + (["shared"] if shared else [])
    return json.loads(sh(*argv))


def metrics_text(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read().decode()


def samples(text, name_pattern):
    """Values of every sample whose metric name matches `name_pattern` (a regex)."""
    pattern = re.compile(r"^(" + name_pattern + r")(\{[^}]*\})? (\S+)", re.M)
    return [float(m.group(3)) for m in pattern.finditer(text)]


def build():
    log("building release binaries ...")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "monasca-sidecar", "--bin", "monasca-sidecar",
                    "--example", "push_load", "--example", "statsd_loss"], check=True, cwd=ROOT)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "monasca-operator", "--bin", "monasca-operator"],
                   check=True, cwd=ROOT)


# --- sections -----------------------------------------------------------------------------


def section_footprint(r):
    rows = []
    for name in ["monasca-sidecar", "monasca-operator"]:
        path = os.path.join(RELEASE, name)
        rows.append(f"| `{name}` release binary | {os.path.getsize(path) / 1e6:.1f} MB |")
    idle, pg = [], []
    for _ in range(RUNS):
        s = sidecar()
        time.sleep(1)
        idle.append(s.rss_kib())
        s.stop()
        p = pushgateway()
        time.sleep(1)
        pg.append(p.rss_kib())
        p.stop()
    rows.append(f"| `monasca-sidecar` idle RSS (defaults, all listeners up) | {fmt(idle, ' MiB', 1 / 1024, 1)} |")
    rows.append(f"| Prometheus Pushgateway idle RSS, for comparison | {fmt(pg, ' MiB', 1 / 1024, 1)} |")
    if median(idle) > median(pg):
        r.not_ahead(f"**Idle RSS**: the sidecar {median(idle) / 1024:.1f} MiB, Pushgateway {median(pg) / 1024:.1f} MiB.")
    r.add("## Footprint\n\nThe operator's idle RSS is in [the operator section](#the-operator-against-a-real-control-plane).\n\n"
          "| what | figure |\n| --- | --- |\n" + "\n".join(rows) + "\n")


def section_push(r):
    pushers, per = 16, 31_250
    rows = []
    for fmt_ in ["text", "protobuf"]:
        results = {}
        for name, start in [("monasca-sidecar", sidecar), ("Pushgateway", pushgateway)]:
            rates, mem = [], []
            for run in range(RUNS):
                srv = start()
                idle = srv.rss_kib()
                res = push_load(srv.port, pushers, per, PUSH_SECONDS, fmt_)
                if res["errors"] or not res["requests"]:
                    raise RuntimeError(f"{name} push errors: {res}")
                rates.append(res["samples_per_second"])
                mem.append((srv.rss_kib() - idle) * 1024 / res["series"])
                srv.stop()
                log(f"push {fmt_} {name} run {run + 1}: {res['samples_per_second']:,.0f} samples/s")
            results[name] = (rates, mem)
        sr, sm = results["monasca-sidecar"]
        pr, pm = results["Pushgateway"]
        rate_ratio, mem_ratio = median(sr) / median(pr), median(pm) / median(sm)
        rows.append(f"| {fmt_} | samples/s | {fmt(sr)} | {fmt(pr)} | {rate_ratio:.1f}x |")
        rows.append(f"| {fmt_} | RSS bytes per series | {fmt(sm)} | {fmt(pm)} | {mem_ratio:.1f}x smaller |")
        if rate_ratio < 1:
            r.not_ahead(f"**Push rate, {fmt_}**: {rate_ratio:.2f}x Pushgateway's.")
        if mem_ratio < 1:
            r.not_ahead(f"**Push memory, {fmt_}**: {median(sm):,.0f} bytes per series, Pushgateway {median(pm):,.0f}.")
        r.goal("Push", f"RSS per pushed series ({fmt_}) <= 200 bytes", f"{median(sm):,.0f} bytes",
               median(sm) <= 200,
               "Every series here has one worker, so the series key, its index entry and the "
               "worker's value are all paid per series; RSS also keeps the allocator's high-water "
               "mark from parsing 16 concurrent bodies. Interning label names and values and compact "
               "keys are the planned fix (in `sidecar/src/store/`).")
    r.add(
        f"## Push ingest: monasca-sidecar vs Prometheus Pushgateway\n\n"
        f"{pushers} concurrent pushers, each PUTting its own group of {per:,} counter series over a keep-alive "
        f"connection for {PUSH_SECONDS} s ({pushers * per:,} series in all); the load generator "
        f"(`sidecar/examples/push_load.rs`) shares the 2 cores with the server. RSS per series = (RSS after "
        f"- RSS idle) / series. Ratios: medians of the two sides in this run.\n\n"
        "| body | figure | monasca-sidecar | Pushgateway | ratio |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows) + "\n"
    )


def section_render(r):
    s = sidecar()
    push_load(s.port, 16, 100_000, 2, "text", shared=True)
    times, gz_times = [], []
    for _ in range(RUNS):
        for accept_gzip, bucket in [(False, times), (True, gz_times)]:
            req = urllib.request.Request(f"http://127.0.0.1:{s.metrics_port}/metrics")
            if accept_gzip:
                req.add_header("Accept-Encoding", "gzip")
            t = time.perf_counter()
            body = urllib.request.urlopen(req).read()
            bucket.append(time.perf_counter() - t)
            if not accept_gzip:
                size = len(body)
    s.stop()
    r.goal("Render", "`/metrics` of 100k series from 16 workers <= 50 ms", ms(times), median(times) <= 0.05,
           "Rendering walks every series and every worker's value.")
    r.add(
        "## `/metrics` of 100k series aggregated from 16 workers\n\n"
        "Time for a full HTTP GET (render, and gzip when asked, plus transfer to a Python client).\n\n"
        "| response | time |\n| --- | --- |\n"
        f"| text 0.0.4, {size / 1e6:.1f} MB | {ms(times)} |\n"
        f"| gzip | {ms(gz_times)} |\n"
    )


def statsd_once(rate, per_datagram):
    """One whole-pipeline run against a real sidecar process: lines sent, received, flushed to
    the store (the counters' sum in /metrics), and the sidecar process's CPU seconds."""
    s = sidecar()
    try:
        time.sleep(0.5)
        cpu_before = cpu_seconds(s.proc.pid)
        sent = json.loads(sh(os.path.join(RELEASE, "examples", "statsd_loss"), str(rate), str(STATSD_SECONDS),
                             str(per_datagram), f"127.0.0.1:{s.statsd_port}"))
        # Until the receiver drained its socket buffer and a flush (every 100 ms) applied the
        # last lines: two readings 300 ms apart that agree. The renders of these few GETs (1,000
        # series) are charged to the pipeline too.
        previous = None
        for _ in range(20):
            time.sleep(0.3)
            text = metrics_text(s.metrics_port)
            received = sum(samples(text, r"monasca_sidecar_statsd_lines_total"))
            flushed = sum(samples(text, r"loss_[a-z]+_c[0-9]+_total"))
            dropped = sum(samples(text, r"monasca_sidecar_statsd_datagrams_dropped_total"))
            if (received, flushed) == previous:
                break
            previous = (received, flushed)
        cpu = cpu_seconds(s.proc.pid) - cpu_before
        return {"sent": sent["lines_sent"], "received": received, "counters_sent": sent["counter_increments"],
                "counters_flushed": flushed, "kernel_dropped": dropped, "cpu": cpu}
    finally:
        s.stop()


def section_statsd(r):
    rows = []
    per_core_at = {}
    lost_at = {}
    for rate, per_datagram in [(100_000, 1), (200_000, 1), (400_000, 1), (400_000, 10)]:
        runs = [statsd_once(rate, per_datagram) for _ in range(RUNS)]
        lost = [(x["sent"] - x["received"]) * 100 / x["sent"] for x in runs]
        unflushed = [x["counters_sent"] - x["counters_flushed"] for x in runs]
        per_core = [x["received"] / x["cpu"] for x in runs if x["cpu"] > 0]
        cpu_share = [x["cpu"] * 100 / STATSD_SECONDS for x in runs]
        kernel_dropped = max(x["kernel_dropped"] for x in runs)
        rows.append(f"| {rate:,} | {per_datagram} | {fmt(lost, ' %', 1, 4)} | {int(kernel_dropped):,} | "
                    f"{int(max(unflushed)):,} | {fmt(cpu_share, ' %')} | {fmt(per_core)} |")
        per_core_at[(rate, per_datagram)] = per_core
        lost_at[(rate, per_datagram)] = (lost, unflushed)
        log(f"statsd {rate} x{per_datagram}: lost {lost} per core {per_core}")
    best = per_core_at[(400_000, 1)]
    r.goal("StatsD", "whole pipeline >= 1 M lines/s per core (400k lines/s, 1 line per datagram)",
           f"{median(best):,.0f} lines/s per core", median(best) >= 1_000_000,
           "One datagram per line costs a system call's share, the parse, the mapping and a hash "
           "lookup per line; the figure charges the whole process (flushes, timers, idle runtime "
           "threads) to the lines.")
    lost, unflushed = lost_at[(400_000, 1)]
    r.goal("StatsD", "0 lines lost at 400k lines/s (received and in `/metrics`)",
           f"{max(lost):.4f} % lost, {int(max(unflushed)):,} counter increments missing (worst run)",
           max(lost) == 0 and max(unflushed) == 0,
           "Loss means the kernel socket buffer filled while the receive thread was off the CPU.")
    r.add(
        "## StatsD over loopback UDP: the whole pipeline\n\n"
        f"A real sidecar process; {STATSD_SECONDS} s at each fixed rate, sent with sendmmsg by "
        "`sidecar/examples/statsd_loss.rs` (a mix of plain, DogStatsD, monasca-statsd counters and "
        "timers over 1,000 series). Lost = lines sent - `monasca_sidecar_statsd_lines_total`; "
        "unflushed = counter increments sent - the sum of those counters in the sidecar's `/metrics` "
        "(worst run), so a line is counted only once it went through receive, map, accumulate and "
        "flush. Kernel drops = the sidecar's own `monasca_sidecar_statsd_datagrams_dropped_total` "
        "(datagrams the kernel dropped with the socket buffer full; worst run). "
        "CPU = the whole sidecar process's user + system time (every thread) during the send "
        "and drain, as a share of one core over the sending time; lines/s per core = lines received / CPU seconds.\n\n"
        "| lines/s sent | lines per datagram | lost | kernel drops (datagrams) | unflushed | sidecar CPU | "
        "lines/s per core |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )


def times(ratio):
    """A ratio as the tables show it: whole above 10, two decimals below 1."""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"


def section_multiprocess(r):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import multiprocess as mp  # noqa: E402  (bench/multiprocess.py)

    work = tempfile.mkdtemp(prefix="monasca-mp-bench-")
    try:
        m = mp.measure(RUNS, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    w, n = m["workers"], m["series"]
    ratio = {k: median(m[f"python_{k}"]) / median(m[f"sidecar_{k}"])
             for k in ["unchanged", "changing", "written_back", "churned", "compacted"]}
    pile_up = median(m["python_churned"]) / median(m["sidecar_compacted"])
    before, after = m["dead_files_before"], m["dead_files_after"]
    rows = [
        f"| {w} live workers x {n:,} series, unchanged between scrapes | {ms(m['python_unchanged'])} | "
        f"{ms(m['sidecar_unchanged'], 2)} | {times(ratio['unchanged'])} |",
        f"| the same, every worker updating 10% of its series, then both sides reading it ({m['changed_per_step']:,} "
        f"values changed between one side's scrapes) | {ms(m['python_changing'])} | {ms(m['sidecar_changing'], 2)} | {times(ratio['changing'])} |",
        f"| the same, the kernel having written the files back before each update (`sync`; on a disk-backed volume it "
        f"does within ~30 s): the update moves every changed file's ctime, so the sidecar compares each whole | "
        f"{ms(m['python_written_back'])} | {ms(m['sidecar_written_back'], 2)} | {times(ratio['written_back'])} |",
        f"| churned: {before:,} files of {m['dead_pids']} dead pids, before compaction (no shared pid namespace) | "
        f"{ms(m['python_churned'])} | {ms(m['sidecar_churned'], 2)} | {times(ratio['churned'])} |",
        f"| churned, after the sidecar compacted them ({after} files left) | {ms(m['python_compacted'])} | "
        f"{ms(m['sidecar_compacted'], 2)} | {times(ratio['compacted'])} |",
        f"| the user's alternative: Python on the {before:,} piled-up files, sidecar on the compacted directory | "
        f"{ms(m['python_churned'])} | {ms(m['sidecar_compacted'], 2)} | {times(pile_up)} |",
    ]
    one_collect = median(m["python_unchanged"])
    cold = median(m["cold_first_view"])
    for key, label in [("unchanged", "unchanged"), ("changing", "changing (10% of series per scrape)")]:
        r.goal("Multiprocess", f"{w} workers x {n:,} series, {label}: >= 50x MultiProcessCollector",
               f"{ratio[key]:.1f}x", ratio[key] >= 50,
               "The sidecar's figure is a whole HTTP request to another process on a 2-core machine "
               "shared with the client; every scrape checks every file (an fstat and its value slots, "
               "read in place through a mapping) and renders every series"
               + ("; each GET here follows a Python collect or the update, not another GET, so it "
                  "meets cold CPU caches (on this VM a pause alone makes memory reads markedly "
                  "slower): the value slots scattered over every mapped file, and every byte of each "
                  "file whose ctime moved (written since its last check), compared with the sidecar's "
                  "copy to prove that only values changed. Even a `GET /healthz` (no scan, no render) "
                  f"after a Python collect takes {median(m['healthz_after_collect']) * 1000:.2f} ms on "
                  "this machine: the cost of waking an idle process and its client, which the "
                  "in-process Python collect never pays." if key == "changing" else "."))
    r.goal("Multiprocess", f"cold first view ({w} x {n:,}) faster than one Python collect",
           f"{cold * 1000:.0f} ms vs {one_collect * 1000:.0f} ms", cold < one_collect,
           "The first view includes process start, the first read of every file and applying every "
           "worker-series to the store.")
    for key, label in [("churned", "churned directory before compaction"), ("compacted", "compacted directory")]:
        if ratio[key] < 1:
            r.not_ahead(f"**Multiprocess, {label}**: {ratio[key]:.2f}x the Python collector, which "
                        "runs in-process on the few files left (no HTTP), while the sidecar's figure "
                        "is a whole HTTP request to another process.")
    r.add(
        "## Multiprocess directory: monasca-sidecar vs prometheus_client MultiProcessCollector\n\n"
        "Both sides read the same directory in every row, written by the real prometheus_client code "
        "(`bench/mp_write.py`; updates through prometheus_client's own `MmapedDict`). Python: "
        "`MultiProcessCollector` + `generate_latest` in-process (no HTTP). Sidecar: an HTTP `GET /metrics` "
        "to the release binary over one kept-alive HTTP/1.1 connection (as Prometheus scrapes; Python's "
        "`http.client`), which re-checks the directory before rendering. The unchanged row's GETs follow "
        "one another; in the changing rows each follows the update or a Python collect. Both are timed after "
        "untimed warm-up reads (one collect; three GETs after the sidecar's first complete view). After each update both "
        "outputs are checked to show the updated total (`bench/multiprocess.py`). A changing-row GET is "
        "timed only if its scan was the sidecar's one scan since the previous GET (its "
        "`monasca_sidecar_multiprocess_scans_total` went up by one), so no background scan took the update "
        f"first: {m['changing_redone']} and {m['written_back_redone']} measured again in this run (changing, "
        "written back). Ratio = Python / "
        "sidecar, medians of this run.\n\n"
        "| directory | Python collector | sidecar GET /metrics | ratio |\n| --- | --- | --- | --- |\n"
        + "\n".join(rows) + "\n\n"
        f"Cold first view ({w} x {n:,}, {m['live_files']} files): from the sidecar's process start to its first "
        f"complete `/metrics`: {ms(m['cold_first_view'], 0)}, against one Python collect of the same "
        f"directory: {ms(m['python_unchanged'], 0)}.\n\n"
        f"The floor of a GET here: the same sidecar answering `GET /healthz` (no scan, no render) over the "
        f"same connection right after a Python collect takes {ms(m['healthz_after_collect'], 2)}.\n"
    )


def section_operator(r):
    log("operator: starting a control plane (etcd, kube-apiserver, kube-controller-manager) ...")
    env = dict(os.environ, PODS=str(PODS),
               MONASCA_OPERATOR_BIN=os.path.join(RELEASE, "monasca-operator"))
    text = subprocess.run(["cargo", "bench", "-q", "-p", "monasca-e2e", "--bench", "operator_scale"],
                          check=True, text=True, capture_output=True, cwd=ROOT, env=env).stdout
    o = json.loads(text.strip().splitlines()[-1])
    pods = o["pods"]
    idle_mib = o["idle_rss_kib"] / 1024
    per_pod = (o["loaded_rss_kib"] - o["idle_rss_kib"]) * 1024 / pods
    adm_idle, adm_loaded = o["admission_idle_seconds"], o["admission_loaded_seconds"]
    disc = o["discovery_seconds"]

    def pct(values):
        return (f"p50 {percentile(values, 50) * 1000:.1f} ms, p99 {percentile(values, 99) * 1000:.1f} ms, "
                f"max {max(values) * 1000:.1f} ms")

    r.goal("Operator", "idle RSS <= 40 MB", f"{idle_mib:.1f} MiB", o["idle_rss_kib"] * 1024 <= 40e6,
           "The kube client, TLS, the webhook and admin servers and the runtime are resident before "
           "any pod is stored.")
    r.goal("Operator", f"RSS per watched pod <= 2 KB ({pods:,} pods stored)", f"{per_pod:,.0f} bytes",
           per_pod <= 2048,
           "Each pod is held once, as a compact `PodEntry` (name, phase, IP, the sidecar label and port, "
           "the annotations and owner the controller reads), not a k8s-openapi `Pod`, and decoded "
           "straight from the watch's JSON (no `Pod` is ever built); plus the store's key and the "
           "allocator's high-water mark from decoding list pages and watch events.")
    r.goal("Operator", "pods watched once", f"{o['operator_pod_watches']} pod watches open",
           o["operator_pod_watches"] == 1,
           "Counted at the apiserver (`apiserver_longrunning_requests`, pod WATCHes opened by the operator).")
    r.add(
        "## The operator against a real control plane\n\n"
        f"`e2e/benches/operator_scale.rs`: etcd, kube-apiserver and kube-controller-manager "
        f"(Kubernetes {o['kubernetes']}) on this machine, no kubelet; the release operator out of "
        f"cluster. {pods:,} pods created through the apiserver (each admitted and injected by the "
        f"webhook, then given a Running status with an IP, as a kubelet would) in {o['create_seconds']:.0f} s. "
        "RSS: median of three readings a second apart. One control plane and one load per run of "
        "`bench/run.py`; the latency figures are percentiles over the requests.\n\n"
        "| what | figure |\n| --- | --- |\n"
        f"| idle RSS (ready, one MetricsSidecar, no pods) | {idle_mib:.1f} MiB |\n"
        f"| RSS with {pods:,} injected pods stored | {o['loaded_rss_kib'] / 1024:.1f} MiB |\n"
        f"| RSS per watched pod | {per_pod:,.0f} bytes |\n"
        f"| pod watches the operator opens at the apiserver | {o['operator_pod_watches']} |\n"
        f"| `GET /discovery/targets` at {pods:,} targets ({o['discovery_bytes'] / 1e6:.1f} MB), {len(disc)} GETs | {pct(disc)} |\n"
        f"| admission: a dry-run pod create through the apiserver (webhook included), idle, {len(adm_idle)} creates | {pct(adm_idle)} |\n"
        f"| the same while the informers hold {pods:,} pods | {pct(adm_loaded)} |\n"
    )


def section_admission(r):
    env = dict(os.environ, ADMISSION_RUNS=str(RUNS))
    text = subprocess.run(["cargo", "bench", "-q", "-p", "monasca-operator", "--bench", "admission", "--",
                           "--table-only"], check=True, text=True, capture_output=True, cwd=ROOT, env=env).stdout
    lines = [l for l in text.splitlines() if l.startswith("|") or l.startswith("Admission")]
    paced = next(l for l in lines if l.startswith("| 5, paced"))
    p99 = float(paced.split("|")[5].split()[0])
    r.goal("Admission", "webhook p99 <= 1 ms at 5,000 reviews/s offered (TLS, 5 connections, each review timed from when it went out)", f"{p99:.3f} ms",
           p99 <= 1.0, "Client and server share the 2 cores.")
    r.add("## Admission review latency over TLS (monasca-operator webhook)\n\n"
          "`operator/benches/admission.rs`, the webhook alone (no apiserver).\n\n" + "\n".join(lines) + "\n")


def section_state(r):
    env = dict(os.environ, STATE_RUNS=str(RUNS))
    text = subprocess.run(["cargo", "bench", "-q", "-p", "monasca-sidecar", "--bench", "state", "--",
                           "--table-only"], check=True, text=True, capture_output=True, cwd=ROOT, env=env).stdout
    table = "\n".join(l for l in text.splitlines() if l.startswith("|") or l.startswith("State file"))
    r.add("## Persisted state (`stateDir`) at 500k worker-series\n\n"
          f"`sidecar/benches/state.rs`, median of {RUNS} runs. Only the capture holds the store's read "
          "lock (families are shared, not copied: `/metrics` renders go on, ingest waits that long); "
          "the capture is encoded and the file written after the lock is released, on a blocking "
          "thread. The price: an update of a family that a capture being encoded still holds copies "
          "that family first (at most once per family and write); the last two rows show it for an "
          "update touching every family.\n\n" + table + "\n")


def criterion_results(since):
    """Criterion's estimates written since `since`: (id, median seconds, throughput per second)."""
    out = []
    for path in glob.glob(os.path.join(ROOT, "target", "criterion", "**", "new", "benchmark.json"), recursive=True):
        if os.path.getmtime(path) < since:
            continue
        with open(path) as f:
            meta = json.load(f)
        with open(os.path.join(os.path.dirname(path), "estimates.json")) as f:
            seconds = json.load(f)["median"]["point_estimate"] / 1e9
        throughput = meta.get("throughput") or {}
        if "Elements" in throughput:
            per_second = f"{throughput['Elements'] / seconds:,.0f} elements/s"
            value = throughput["Elements"] / seconds
        elif "Bytes" in throughput:
            per_second = f"{throughput['Bytes'] / seconds / (1 << 20):,.0f} MiB/s"
            value = throughput["Bytes"] / seconds
        else:
            per_second, value = "", None
        out.append((meta["full_id"], seconds, per_second, value))
    return sorted(out)


def human_time(seconds):
    for unit, scale in [("s", 1), ("ms", 1e3), ("µs", 1e6), ("ns", 1e9)]:
        if seconds * scale >= 1:
            return f"{seconds * scale:,.2f} {unit}"
    return f"{seconds * 1e9:.3f} ns"


def section_criterion(r):
    rows, notes = [], []
    ingest = None
    for bench in CRITERION_BENCHES:
        log(f"cargo bench --bench {bench} ...")
        since = time.time()
        res = subprocess.run(["cargo", "bench", "-q", "-p", "monasca-sidecar", "--bench", bench, "--"]
                             + CRITERION_ARGS, check=True, text=True, capture_output=True, cwd=ROOT)
        for line in (res.stdout + res.stderr).splitlines():
            if line.startswith(("memory:", "bodies:")) or re.match(r"^\d+ points:", line) or line.startswith("  "):
                if ": sidecar " in line or not line.startswith("  "):
                    notes.append(f"- `{bench}`: {line.strip()}")
        for full_id, seconds, per_second, value in criterion_results(since):
            rows.append(f"| `{bench}` | `{full_id}` | {human_time(seconds)} | {per_second} |")
            if full_id == "ingest/parse_and_apply_100k_samples":
                ingest = value
    if ingest is not None:
        r.goal("Push", "parse + apply >= 1 M samples/s per core (100k samples into a store of 16 workers)",
               f"{ingest:,.0f} samples/s", ingest >= 1_000_000, "Parsing and the store's per-series lookups.")
    r.add("## Micro-benchmarks (criterion, one core)\n\n"
          f"`cargo bench -p monasca-sidecar --bench <name> -- {' '.join(CRITERION_ARGS)}`, run by this script "
          "in this run: criterion's median estimate of each function (one thread). The state bench is in "
          "its own section above; the operator's admission bench in its table.\n\n"
          "| bench | function | time per iteration | throughput |\n| --- | --- | --- | --- |\n"
          + "\n".join(rows) + "\n\n" + ("Printed by the benches in the same run:\n\n" + "\n".join(notes) + "\n"
                                         if notes else ""))


SECTIONS_BY_NAME = {
    "footprint": section_footprint,
    "push": section_push,
    "render": section_render,
    "statsd": section_statsd,
    "multiprocess": section_multiprocess,
    "operator": section_operator,
    "admission": section_admission,
    "state": section_state,
    "criterion": section_criterion,
}


def host_speed():
    """Seconds a fixed single-thread CPU workload takes here now (best of 3, each in a fresh
    Python): the absolute rates of the goals table scale with it, so two runs' figures can be
    compared only alongside it."""
    loop = "import time\nt = time.perf_counter()\ns = 0\nfor i in range(10_000_000): s += i\nprint(time.perf_counter() - t)"
    return min(float(sh(sys.executable, "-c", loop)) for _ in range(3))


def main():
    started = time.time()
    if os.environ.get("BUILD", "1") != "0":  # BUILD=0: use the release binaries already built
        build()
    speed_before = host_speed()
    r = Report()
    failed = []
    # The sections that build benches with cargo first, so no compile runs beside a measurement
    # of the others; BENCHMARKS.md keeps the order of ALL_SECTIONS.
    compiling = ["criterion", "admission", "state", "operator"]
    for name in sorted(SECTIONS, key=lambda n: (n not in compiling, ALL_SECTIONS.index(n))):
        log(f"== {name}")
        r.current = name
        section_started = time.time()
        try:
            SECTIONS_BY_NAME[name](r)
        except Exception as e:  # one broken section must not lose the others' figures
            detail = getattr(e, "stderr", None) or ""
            log(f"section {name} failed: {e}\n{detail[-3000:]}")
            failed.append(name)
            r.add(f"## {name}: not measured\n\nThe section failed in this run: `{str(e)[:300]}`.\n")
        log(f"== {name}: {time.time() - section_started:.0f} s")
    speed_after = host_speed()
    minutes = (time.time() - started) / 60
    partial = "" if set(SECTIONS) >= set(ALL_SECTIONS) else f" Partial run: only {', '.join(SECTIONS)}."
    if failed:
        partial += f" Sections that failed (their goals are missing): {', '.join(failed)}."
    header = [
        "# Benchmarks\n",
        f"Generated by `python3 bench/run.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} "
        f"in {minutes:.0f} minutes; nothing here is written by hand. Side-by-side figures: median of {RUNS} runs "
        "(min–max in brackets), both sides measured in this run on the same machine; ratios are of those "
        f"medians. Criterion figures: criterion's median estimate, run by the same script.{partial}\n",
        "## Machine and versions\n",
        f"- {os.cpu_count()} CPUs: {cpu_model()}; {mem_total()} memory; Linux {platform.release()} (shared machine: other work may run)",
        f"- Host speed: 10 million integer additions in a Python loop (one thread, best of 3) took "
        f"{speed_before:.2f} s before the measurements and {speed_after:.2f} s after them; absolute rates "
        "(samples/s, lines/s, latencies) scale with it, ratios measured in the same run do not",
        f"- {sh('rustc', '--version').strip()}",
        f"- {pushgateway_version()}",
        f"- prometheus_client {python_pkg_version('prometheus_client')}, Python {platform.python_version()}\n",
    ]
    sections = [text for _, text in sorted(r.sections, key=lambda s: s[0])]
    body = header + [r.goals_table()] + sections + [r.not_ahead_list()]
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(body))
    log(f"wrote BENCHMARKS.md in {minutes:.1f} minutes")


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def mem_total():
    with open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
    return f"{kib / 1024 / 1024:.0f} GiB"


def pushgateway_version():
    binary = shutil.which("prometheus-pushgateway") or "pushgateway"
    r = subprocess.run([binary, "--version"], text=True, capture_output=True)
    return ((r.stdout or r.stderr).splitlines() or ["pushgateway (unknown version)"])[0]


def python_pkg_version(name):
    r = subprocess.run([sys.executable, "-c", f"import importlib.metadata as m; print(m.version('{name}'))"],
                       text=True, capture_output=True)
    return r.stdout.strip() or "not installed"


if __name__ == "__main__":
    main()
