#!/usr/bin/env python3
"""Multiprocess directory: monasca-sidecar vs prometheus_client's MultiProcessCollector.

Usage: bench/multiprocess.py [RUNS]   (bench/run.py imports `measure`; alone it prints JSON)

Every case puts both sides on the SAME directory, written by the real prometheus_client code
(bench/mp_write.py, and prometheus_client's own MmapedDict for the updates):
- unchanged: 64 live workers x 1,000 series, nothing written between scrapes;
- changing: the same directory, every worker updates 10% of its series, then both sides
  read it (a live app's steady state: each side sees one update between its scrapes);
- written back: the same, with the files written back (`sync`) before each update, as the
  kernel does within ~30 s on a disk-backed volume: every update moves each changed file's
  ctime, so the sidecar compares each whole;
- churned: 2,000 files of 500 dead pids, before compaction (`multiprocessLiveness: mtime`, as
  the operator sets it without a shared pid namespace: nothing is deleted) and after the sidecar compacted them (`proc`, a shared pid
  namespace; both sides then read what is left); the pile-up (Python on the 2,000 files) is the user's alternative to compaction;
- cold first view: from the sidecar's process start to its first complete /metrics.
Python: MultiProcessCollector + generate_latest in this process (no HTTP). Sidecar: an HTTP
GET /metrics to the release binary over one kept-alive connection (as Prometheus scrapes),
which re-checks the directory before rendering. Both are
timed after untimed warm-up reads (one collect; three GETs after the first complete view). After
every update both outputs are checked to show the updated value, so neither side is timed on
stale data.
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.mmap_dict import MmapedDict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDECAR = os.path.join(ROOT, "target", "release", "monasca-sidecar")
WRITER = os.path.join(ROOT, "bench", "mp_write.py")
LIVE_WORKERS, LIVE_SERIES, DEAD_PIDS = 64, 1000, 500
CHANGED_SHARE = 0.10
# Untimed GETs after the sidecar's first complete view, before the timed ones.
WARMUP_GETS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_collect(directory):
    """One MultiProcessCollector + generate_latest: (seconds, body)."""
    t = time.perf_counter()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    body = generate_latest(registry)
    return time.perf_counter() - t, body


def get(port):
    t = time.perf_counter()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read()
    return time.perf_counter() - t, body


class Sidecar:
    """The release sidecar reading `directory` with `multiprocessLiveness: <liveness>`, as the
    operator configures it: `proc` in a pod with a shared pid namespace (dead pids' files are
    folded and deleted), `mtime` without one (nothing is deleted)."""

    def __init__(self, directory, liveness="mtime"):
        self.directory, self.liveness = directory, liveness
        self.conn = None
        self.config = None
        self.starts = 0
        self.start()

    def start(self):
        """Starts the sidecar on ports of its own (free a moment ago: another process may take
        one before the sidecar binds it, and then the sidecar exits at start)."""
        self.starts += 1
        if self.config is not None:
            os.unlink(self.config.name)
        self.port = free_port()
        self.config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        self.config.write(
            f'listen: {{metrics: "127.0.0.1:{self.port}", ingest: "127.0.0.1:{free_port()}", '
            f'statsd: "127.0.0.1:{free_port()}", otlp: "127.0.0.1:{free_port()}"}}\n'
            f'multiprocessDir: {self.directory}\n'
            f"multiprocessLiveness: {self.liveness}\nlimits: {{maxSeriesPerWorker: 1000000}}\n")
        self.config.close()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([SIDECAR, "--config", self.config.name],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def first_view(self, complete):
        """Seconds from process start until `complete(body)` holds for a GET /metrics."""
        while True:
            if self.proc.poll() is not None:
                # Before its first view it can only have lost a port race: started again on
                # new ports (twice at most), the time counted from the new start.
                if self.starts == 3:
                    raise RuntimeError("monasca-sidecar exited (started 3 times)")
                self.start()
                continue
            try:
                _, body = get(self.port)
                if complete(body):
                    return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.005)

    def scrape(self, path="/metrics"):
        """One timed GET of `path` (`/metrics`) over a kept-alive HTTP/1.1 connection, as
        Prometheus scrapes (no TCP handshake and no urllib set-up per request): (seconds, body)."""
        t = time.perf_counter()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request("GET", path)
                response = self.conn.getresponse()
                body = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # The server closed the idle connection: the retry (timed too) opens a new one.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        return time.perf_counter() - t, body

    def stop(self):
        if self.conn is not None:
            self.conn.close()
        self.proc.kill()
        self.proc.wait()
        os.unlink(self.config.name)


def sample_value(body, name, labels):
    """The value of one sample in a text exposition (either side's float formatting)."""
    pattern = re.escape(name) + r"\{" + re.escape(labels) + r"\} (\S+)"
    m = re.search(pattern.encode(), body)
    return float(m.group(1)) if m else None


def live_complete(body):
    return (body.count(b'bench_requests_total{') >= expected_counters()
            and b"bench_latency_seconds_count" in body and b"bench_inflight{" in body)


def expected_counters():
    n_hist = max(1, LIVE_SERIES // 20 // 13)
    return LIVE_SERIES - LIVE_SERIES // 5 - n_hist * 13


class Updater:
    """Updates CHANGED_SHARE of every worker's series through prometheus_client's MmapedDict
    (the code a worker's `inc()` runs), a different slice each step."""

    def __init__(self, directory):
        self.files = []
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            keys = [k for k, _, _, _ in MmapedDict.read_all_values_from_file(path)]
            self.files.append((MmapedDict(path), keys))
        self.step_no = 0
        self.changed_per_step = 0

    def step(self):
        self.step_no += 1
        changed = 0
        for mmap, keys in self.files:
            n = max(1, int(len(keys) * CHANGED_SHARE))
            start = (self.step_no * n) % len(keys)
            for j in range(n):
                key = keys[(start + j) % len(keys)]
                value, _timestamp = mmap.read_value(key)
                mmap.write_value(key, value + 1, 0.0)
                changed += 1
        self.changed_per_step = changed

    def probe(self):
        """A counter this step changed, and its total over all workers now."""
        for mmap, keys in self.files:
            n = max(1, int(len(keys) * CHANGED_SHARE))
            start = (self.step_no * n) % len(keys)
            for j in range(n):
                key = keys[(start + j) % len(keys)]
                metric, sample, labels, _ = json.loads(key)
                if sample == "bench_requests_total":
                    total = sum(m.read_value(key)[0] for m, ks in self.files if key in set(ks))
                    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                    return sample, label_text, total
        raise RuntimeError("no counter among the updated keys")

    def close(self):
        for mmap, _ in self.files:
            mmap.close()


def scan_count(body):
    """The sidecar's count of multiprocess scans, from its own self-metric in a /metrics body."""
    m = re.search(rb"^monasca_sidecar_multiprocess_scans_total (\S+)$", body, re.M)
    if m is None:
        raise RuntimeError("no monasca_sidecar_multiprocess_scans_total in the sidecar's /metrics")
    return float(m.group(1))


def check_same(what, body, probe):
    name, labels, total = probe
    seen = sample_value(body, name, labels)
    if seen is None or abs(seen - total) > 1e-6 * max(1.0, abs(total)):
        raise RuntimeError(f"{what}: {name}{{{labels}}} is {seen}, the files hold {total}")


def write(directory, *args):
    os.makedirs(directory)
    subprocess.run([sys.executable, WRITER, directory, *args], check=True)


def timed_checked(runs, fetch, what, probe):
    """The times of `runs` fetches, each output checked to show `probe`."""
    times = []
    for _ in range(runs):
        t, body = fetch()
        check_same(what, body, probe)
        times.append(t)
    return times


def changing(s, updater, live, runs, written_back):
    """`runs` timings of each side reading the directory right after one update step:
    (python, sidecar, redone). `written_back`: the kernel writes the dirty pages back before
    each update (`sync`), as it does within ~30 s on a disk-backed volume, so the update's
    first write to each page moves its file's ctime and the sidecar compares every changed
    file whole, as it must after such a change; otherwise most pages are still dirty from the
    previous step and their writes leave the ctime alone."""
    case = "written back" if written_back else "changing"
    py, sc = [], []
    scans = scan_count(s.scrape()[1])
    redone = 0
    # One update, then both sides read that same directory: each sees exactly 10% of every
    # worker's series changed since its previous scrape. (Updating again between the two
    # scrapes gave the sidecar two steps, 20%, per scrape: its cost follows the number of
    # changed values, Python's does not.) Which side reads first alternates, so neither always
    # finds the other's reads in the caches.
    i = 0
    while len(sc) < runs:
        if written_back:
            os.sync()
        updater.step()
        probe = updater.probe()
        timed = {}
        sides = [(lambda: python_collect(live), "python"), (s.scrape, "sidecar")]
        for fetch, who in (sides if i % 2 == 0 else sides[::-1]):
            t, body = fetch()
            check_same(f"{who}, {case}", body, probe)
            timed[who] = t
            if who == "sidecar":
                before, scans = scans, scan_count(body)
        i += 1
        # The sidecar also scans in the background (every second, unless a scan started in
        # the last half second): one that ran since the last GET may have taken the update
        # before this GET did. Only GETs that were the one scan since the previous GET are
        # timed; the others are measured again.
        if scans != before + 1:
            redone += 1
            if redone > 3 * runs:
                raise RuntimeError("background scans kept running between the GETs")
            continue
        py.append(timed["python"])
        sc.append(timed["sidecar"])
    return py, sc, redone


def measure(runs, work):
    """Every case's timings (seconds), as a dict for bench/run.py."""
    out = {"runs": runs, "workers": LIVE_WORKERS, "series": LIVE_SERIES, "dead_pids": DEAD_PIDS}
    live = os.path.join(work, "live")
    write(live, "live", str(LIVE_WORKERS), str(LIVE_SERIES))
    out["live_files"] = len(os.listdir(live))

    # Cold first view: a fresh sidecar each run (the directory is in the page cache, as it is
    # for a sidecar restarted beside a running app).
    cold = []
    for _ in range(runs):
        s = Sidecar(live)
        cold.append(s.first_view(live_complete))
        s.stop()
    out["cold_first_view"] = cold

    # Both sides are timed in their steady state, after untimed warm-up reads: Python's first
    # collect, the sidecar's first GETs after its first complete view (they map the files
    # and check them whole once before only their value slots are compared).
    python_collect(live)
    out["python_unchanged"] = [python_collect(live)[0] for _ in range(runs)]
    s = Sidecar(live)
    try:
        s.first_view(live_complete)
        for _ in range(WARMUP_GETS):
            s.scrape()
        out["sidecar_unchanged"] = [s.scrape()[0] for _ in range(runs)]

        updater = Updater(live)
        try:
            py, sc, redone = changing(s, updater, live, runs, written_back=False)
            out["python_changing"], out["sidecar_changing"] = py, sc
            out["changing_redone"] = redone
            py, sc, redone = changing(s, updater, live, runs, written_back=True)
            out["python_written_back"], out["sidecar_written_back"] = py, sc
            out["written_back_redone"] = redone
        finally:
            updater.close()
        out["changed_per_step"] = updater.changed_per_step
        # The floor of any GET that follows a Python collect on this machine: the same sidecar
        # answering `/healthz` (no scan, no render) after one, so the changing row's GETs can be
        # read against what waking an idle process and its client costs here.
        idle = []
        for _ in range(runs):
            python_collect(live)
            idle.append(s.scrape("/healthz")[0])
        out["healthz_after_collect"] = idle
    finally:
        s.stop()

    dead = os.path.join(work, "dead")
    write(dead, "dead", str(DEAD_PIDS))
    out["dead_files_before"] = len(os.listdir(dead))
    probe = ("bench_jobs_total", 'queue="a"', float(sum(range(DEAD_PIDS))))
    # Before compaction: no shared pid namespace (mtime liveness), so the sidecar reads all files
    # and deletes none.
    s = Sidecar(dead)
    try:
        s.first_view(lambda b: b"bench_jobs_total" in b)
        s.scrape()
        out["sidecar_churned"] = timed_checked(runs, s.scrape, "sidecar, churned", probe)
    finally:
        s.stop()
    out["python_churned"] = timed_checked(runs, lambda: python_collect(dead), "python, churned", probe)
    if len(os.listdir(dead)) != out["dead_files_before"]:
        raise RuntimeError("files disappeared without compaction")

    # Compaction: the sidecar folds the dead pids into *_retired.db files and deletes theirs;
    # then both sides read what is left.
    s = Sidecar(dead, liveness="proc")
    try:
        s.first_view(lambda b: b"bench_jobs_total" in b)
        deadline = time.time() + 60
        while len(os.listdir(dead)) >= out["dead_files_before"] and time.time() < deadline:
            time.sleep(0.1)
            get(s.port)
        time.sleep(1.5)  # the background scans that may still be folding
        s.scrape()
        out["dead_files_after"] = len(os.listdir(dead))
        out["sidecar_compacted"] = timed_checked(runs, s.scrape, "sidecar, compacted", probe)
    finally:
        s.stop()
    out["python_compacted"] = timed_checked(runs, lambda: python_collect(dead), "python, compacted", probe)
    return out


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    work = tempfile.mkdtemp(prefix="monasca-mp-bench-")
    try:
        print(json.dumps(measure(runs, work), indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
