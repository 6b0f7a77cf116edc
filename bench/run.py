#!/usr/bin/env python3
"""Side-by-side benchmarks: monasca-sidecar vs the tools users would pick instead.

One command (from the repository root):  python3 bench/run.py
It builds the release binaries, runs every comparison on this machine in this run, repeats
each figure (RUNS times, default 5) and writes BENCHMARKS.md (median, min and max). Servers
are started on loopback ports and stopped afterwards. Needs: Debian prometheus-pushgateway,
PyPI prometheus_client (installed by .ci/run and by this script when missing).
"""
import json
import os
import platform
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
SECTIONS = os.environ.get("SECTIONS", "footprint,push,render,statsd,multiprocess,admission,state").split(",")


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


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stats(values):
    return statistics.median(values), min(values), max(values)


def fmt(values, unit="", scale=1.0, digits=0):
    med, lo, hi = stats([v * scale for v in values])
    f = f"{{:,.{digits}f}}"
    return f"{f.format(med)}{unit} ({f.format(lo)}–{f.format(hi)})"


class Server:
    """A server process on loopback, killed on exit."""

    def __init__(self, argv, port):
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = port
        wait_port(port)

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def sidecar(extra=""):
    metrics, ingest, statsd = free_port(), free_port(), free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(
        f'listen: {{metrics: "127.0.0.1:{metrics}", ingest: "127.0.0.1:{ingest}", statsd: "127.0.0.1:{statsd}"}}\n'
        "limits: {maxBodyBytes: 67108864, maxSeriesPerWorker: 1000000}\n" + extra
    )
    cfg.close()
    s = Server([os.path.join(RELEASE, "monasca-sidecar"), "--config", cfg.name], ingest)
    wait_port(metrics)
    s.metrics_port = metrics
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


def build():
    log("building release binaries ...")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "monasca-sidecar", "--bin", "monasca-sidecar",
                    "--example", "push_load", "--example", "statsd_loss"], check=True, cwd=ROOT)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "monasca-operator", "--bin", "monasca-operator"],
                   check=True, cwd=ROOT)


def section_footprint(out):
    rows = []
    for name in ["monasca-sidecar", "monasca-operator"]:
        path = os.path.join(RELEASE, name)
        rows.append(f"| `{name}` release binary | {os.path.getsize(path) / 1e6:.1f} MB |")
    idle = []
    for _ in range(RUNS):
        s = sidecar()
        time.sleep(1)
        idle.append(s.rss_kib())
        s.stop()
    rows.append(f"| `monasca-sidecar` idle RSS (defaults, all listeners up) | {fmt(idle, ' MiB', 1 / 1024, 1)} |")
    pg = []
    for _ in range(RUNS):
        p = pushgateway()
        time.sleep(1)
        pg.append(p.rss_kib())
        p.stop()
    rows.append(f"| Prometheus Pushgateway idle RSS, for comparison | {fmt(pg, ' MiB', 1 / 1024, 1)} |")
    out.append("## Footprint\n\n| what | figure |\n| --- | --- |\n" + "\n".join(rows) + "\n")
    out.append("The operator's idle RSS needs a Kubernetes API server, which this machine does not have; "
               "it is not measured here.\n")


def section_push(out):
    pushers, per = 16, 31_250
    rows = []
    for fmt_ in ["text", "protobuf"]:
        results = {}
        for name, start in [("monasca-sidecar", sidecar), ("Pushgateway", pushgateway)]:
            rates, mem = [], []
            for run in range(RUNS):
                srv = start()
                idle = srv.rss_kib()
                r = push_load(srv.port, pushers, per, PUSH_SECONDS, fmt_)
                if r["errors"] or not r["requests"]:
                    raise RuntimeError(f"{name} push errors: {r}")
                rates.append(r["samples_per_second"])
                mem.append((srv.rss_kib() - idle) * 1024 / r["series"])
                srv.stop()
                log(f"push {fmt_} {name} run {run + 1}: {r['samples_per_second']:,.0f} samples/s")
            results[name] = (rates, mem)
        sr, sm = results["monasca-sidecar"]
        pr, pm = results["Pushgateway"]
        rows.append(f"| {fmt_} | samples/s | {fmt(sr)} | {fmt(pr)} | {statistics.median(sr) / statistics.median(pr):.1f}x |")
        rows.append(f"| {fmt_} | RSS bytes per series | {fmt(sm)} | {fmt(pm)} | {statistics.median(pm) / statistics.median(sm):.1f}x smaller |")
    out.append(
        f"## Push ingest: monasca-sidecar vs Prometheus Pushgateway\n\n"
        f"{pushers} concurrent pushers, each PUTting its own group of {per:,} counter series over a keep-alive "
        f"connection for {PUSH_SECONDS} s ({pushers * per:,} series in all); the load generator "
        f"(`sidecar/examples/push_load.rs`) shares the 2 cores with the server. RSS per series = (RSS after "
        f"- RSS idle) / series.\n\n"
        "| body | figure | monasca-sidecar | Pushgateway | ratio |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows) + "\n"
    )


def section_render(out):
    s = sidecar()
    push_load(s.port, 16, 100_000, 2, "text", shared=True)
    times, gz_times = [], []
    for _ in range(max(RUNS, 7)):
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
    out.append(
        "## `/metrics` of 100k series aggregated from 16 workers\n\n"
        "Time for a full HTTP GET (render, and gzip when asked, plus transfer to a Python client).\n\n"
        "| response | time |\n| --- | --- |\n"
        f"| text 0.0.4, {size / 1e6:.1f} MB | {fmt(times, ' ms', 1000, 1)} |\n"
        f"| gzip | {fmt(gz_times, ' ms', 1000, 1)} |\n"
    )


def section_statsd(out):
    rows = []
    for rate in [100_000, 200_000, 400_000]:
        lost, cpu = [], []
        for _ in range(RUNS):
            text = sh(os.path.join(RELEASE, "examples", "statsd_loss"), str(rate), "5", "1")
            for line in text.splitlines():
                if line.startswith("received:"):
                    lost.append(float(line.split("(")[1].split()[0]))
                if line.startswith("receiver thread CPU:"):
                    cpu.append(float(line.split("(")[1].split()[0]))
        per_core = [rate * 100 / c for c in cpu if c > 0]
        rows.append(f"| {rate:,} | {fmt(lost, ' %', 1, 4)} | {fmt(cpu, ' %')} | {fmt(per_core)} |")
        log(f"statsd {rate}: lost {lost} cpu {cpu}")
    out.append(
        "## StatsD over loopback UDP\n\n5 s at each fixed rate, one line per datagram (the hardest case), "
        "sent with sendmmsg by `sidecar/examples/statsd_loss.rs`. Lines/s per core = rate / receive-thread "
        "CPU share.\n\n| lines/s sent | lost | receive thread CPU | lines/s per core |\n| --- | --- | --- | --- |\n"
        + "\n".join(rows) + "\n"
    )


def section_multiprocess(out):
    script = os.path.join(ROOT, "bench", "multiprocess.py")
    if not os.path.exists(script):
        out.append("## Multiprocess directory\n\n(not run: bench/multiprocess.py missing)\n")
        return
    out.append(subprocess.run([sys.executable, script, str(RUNS)], check=True, text=True,
                              capture_output=True, cwd=ROOT).stdout)


def section_admission(out):
    env = dict(os.environ, ADMISSION_RUNS=str(RUNS))
    text = subprocess.run(["cargo", "bench", "-q", "-p", "monasca-operator", "--bench", "admission", "--",
                           "--table-only"], check=True, text=True, capture_output=True, cwd=ROOT, env=env).stdout
    table = "\n".join(l for l in text.splitlines() if l.startswith("|") or l.startswith("Admission"))
    out.append("## Admission review latency over TLS (monasca-operator webhook)\n\n" + table + "\n")


def section_state(out):
    env = dict(os.environ, STATE_RUNS=str(RUNS))
    text = subprocess.run(["cargo", "bench", "-q", "-p", "monasca-sidecar", "--bench", "state", "--",
                           "--table-only"], check=True, text=True, capture_output=True, cwd=ROOT, env=env).stdout
    table = "\n".join(l for l in text.splitlines() if l.startswith("|") or l.startswith("State file"))
    out.append("## Persisted state (`stateDir`) at 500k worker-series\n\n"
               "`sidecar/benches/state.rs`, median of the runs. Only the capture holds the store's read "
               "lock (families are shared, not copied: `/metrics` renders go on, ingest waits that long); "
               "the capture is encoded and the file written after the lock is released, on a blocking "
               "thread. The price: an update of a family that a capture being encoded still holds copies "
               "that family first (at most once per family and write); the last two rows show it for an "
               "update touching every family.\n\n" + table + "\n")


def main():
    build()
    out = [
        "# Benchmarks\n",
        f"Generated by `python3 bench/run.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"Each figure: median of {RUNS} runs (min–max in brackets), all on the same machine in the same run.\n",
        "## Machine and versions\n",
        f"- {os.cpu_count()} CPUs: {cpu_model()}; {mem_total()} memory; Linux {platform.release()} (shared machine: other work may run)",
        f"- {sh('rustc', '--version').strip()}",
        f"- {pushgateway_version()}",
        f"- prometheus_client {python_pkg_version('prometheus_client')}, Python {platform.python_version()}\n",
    ]
    sections = {
        "footprint": section_footprint,
        "push": section_push,
        "render": section_render,
        "statsd": section_statsd,
        "multiprocess": section_multiprocess,
        "admission": section_admission,
        "state": section_state,
    }
    for name in SECTIONS:
        log(f"== {name}")
        sections[name](out)
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(out))
    log("wrote BENCHMARKS.md")


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
