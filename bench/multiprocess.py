#!/usr/bin/env python3
"""Multiprocess directory: monasca-sidecar vs prometheus_client's MultiProcessCollector.

Usage: bench/multiprocess.py [RUNS]   (called by bench/run.py; prints a Markdown section)

Directories are written by the real prometheus_client code (bench/mp_write.py). The Python
figure is MultiProcessCollector + generate_latest, in-process (no HTTP); the sidecar figure is
a full HTTP GET /metrics from the release binary (which re-checks the directory before every
render), so it includes what the Python figure leaves out.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SIDECAR = os.path.join(ROOT, "target", "release", "monasca-sidecar")

PY_TIMER = """
import sys, time
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
d, runs = sys.argv[1], int(sys.argv[2])
for _ in range(runs):
    t = time.perf_counter()
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg, path=d)
    body = generate_latest(reg)
    print(time.perf_counter() - t, len(body))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_times(directory):
    out = subprocess.run([sys.executable, "-c", PY_TIMER, directory, str(RUNS)], check=True,
                         text=True, capture_output=True).stdout
    return [float(line.split()[0]) for line in out.splitlines()]


def get(port):
    t = time.perf_counter()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
    return time.perf_counter() - t, body


def sidecar_times(directory, env_proof):
    """Steady-state GET /metrics times, and the time until the first complete view."""
    port = free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(f'listen: {{metrics: "127.0.0.1:{port}", ingest: "127.0.0.1:{free_port()}", '
              f'statsd: "127.0.0.1:{free_port()}"}}\nmultiprocessDir: {directory}\n'
              "limits: {maxSeriesPerWorker: 1000000}\n")
    cfg.close()
    # A process whose environment names the directory proves the pid namespace is shared, so
    # the sidecar may use /proc liveness (and fold and delete dead pids' files).
    proof = None
    if env_proof:
        proof = subprocess.Popen(["sleep", "600"], env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory))
    start = time.perf_counter()
    proc = subprocess.Popen([SIDECAR, "--config", cfg.name], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                _, body = get(port)
                if b"bench_" in body:
                    break
            except OSError:
                time.sleep(0.01)
        first = time.perf_counter() - start
        get(port)  # settle: the first background scans may still be compacting
        time.sleep(1.5)
        times = [get(port)[0] for _ in range(RUNS)]
        files = len(os.listdir(directory))
        return times, first, files
    finally:
        proc.kill()
        proc.wait()
        if proof:
            proof.kill()
            proof.wait()


def fmt(values, scale=1000, digits=1):
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{med * scale:.{digits}f} ms ({lo * scale:.{digits}f}–{hi * scale:.{digits}f})"


def main():
    work = tempfile.mkdtemp(prefix="monasca-mp-bench-")
    rows = []
    try:
        live = os.path.join(work, "live")
        os.makedirs(live)
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "mp_write.py"), live, "live", "64", "1000"],
                       check=True)
        py = python_times(live)
        sc, first, _ = sidecar_times(live, env_proof=False)
        rows.append(("64 live workers x 1,000 series, unchanged between scrapes", py, sc, first, None))

        for compact in (False, True):
            dead = os.path.join(work, f"dead{int(compact)}")
            os.makedirs(dead)
            subprocess.run([sys.executable, os.path.join(ROOT, "bench", "mp_write.py"), dead, "dead", "500"],
                           check=True)
            before = len(os.listdir(dead))
            py = python_times(dead)
            sc, first, after = sidecar_times(dead, env_proof=compact)
            label = (f"{before:,} dead-pid files, " +
                     (f"compacted by the sidecar ({after} files left)" if compact
                      else "not compacted (no shared pid namespace)"))
            rows.append((label, py, sc, first, after))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("## Multiprocess directory: monasca-sidecar vs prometheus_client MultiProcessCollector\n")
    print("Directories written by the real prometheus_client code (`bench/mp_write.py`). Python: "
          "`MultiProcessCollector` + `generate_latest` in-process. Sidecar: an HTTP `GET /metrics` "
          "to the release binary, which re-checks the directory before rendering (unchanged files are "
          "compared in place, so this is the incremental re-scrape). First view: from process start "
          "to the first complete `/metrics` (cold scan included).\n")
    print("| directory | Python collector | sidecar GET /metrics | ratio | sidecar first view |")
    print("| --- | --- | --- | --- | --- |")
    for label, py, sc, first, _ in rows:
        ratio = statistics.median(py) / statistics.median(sc)
        print(f"| {label} | {fmt(py)} | {fmt(sc, digits=2)} | {ratio:.0f}x | {first * 1000:.0f} ms |")
    print()


if __name__ == "__main__":
    main()
