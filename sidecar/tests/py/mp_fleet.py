"""A fleet of real prometheus_client multiprocess workers for the sidecar's tests.

Usage: mp_fleet.py DIR N

Forks N workers from one parent (like a pre-fork server: the metrics are defined in the
parent, each child gets its own `*_<pid>.db` files when it first touches a metric). Every
metric type and every gauge mode is written with values that depend on the worker index.
Prints one JSON line {"parent": pid, "pids": [...]} once all workers have written, then
obeys commands on stdin, one per line, answering "ok" (or "err ...") on stdout:

  kill I        SIGKILL worker I and reap it
  work I        worker I does its work once more
  grow I        worker I adds 2,000 new series (its counter file grows past 64 KiB, doubling)
  exit          (or end of input) stop every worker and exit
"""
import json
import os
import signal
import sys

directory, n = sys.argv[1], int(sys.argv[2])
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory

from prometheus_client import Counter, Gauge, Histogram, Summary  # noqa: E402

MODES = ["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
         "mostrecent", "livemostrecent"]


def supported(mode):
    """prometheus_client before 0.17 has no mostrecent modes (and writes no timestamps)."""
    try:
        # Labelled, so that no value (and no file) is created.
        Gauge(f"mp_probe_{mode}", "Probe.", ["x"], multiprocess_mode=mode, registry=None)
        return True
    except ValueError:
        return False


MODES = [m for m in MODES if supported(m)]
REQUESTS = Counter("mp_requests", "Requests.", ["method", "code"])
EVENTS = Counter("mp_events", "Events.")
GAUGES = {m: Gauge(f"mp_gauge_{m}", f"Gauge in mode {m}.", ["kind"], multiprocess_mode=m)
          for m in MODES}
LATENCY = Histogram("mp_latency_seconds", "Latency.", ["route"])
SIZE = Summary("mp_size_bytes", "Size.")
ODD = Counter("mp_odd_labels", "Label values that need escaping.", ["path"])
GROW = Counter("mp_grow", "Many series.", ["series"])


def work(i):
    REQUESTS.labels("GET", "200").inc(i + 1)
    REQUESTS.labels("POST", "500").inc(2 * (i + 1))
    EVENTS.inc(i + 0.5)
    for k, m in enumerate(MODES):
        GAUGES[m].labels("a").set(10 * i + k + 0.25)
        GAUGES[m].labels("b").set(-i)
    for v in (0.001 * i, 0.3, 2.0, 20.0):
        LATENCY.labels("/x").observe(v)
    LATENCY.labels("/y").observe(0.05 * i)
    SIZE.observe(100 * i)
    SIZE.observe(5)
    ODD.labels('/\u00fc"x\\y\n\u20ac\U0001F600').inc(i)


def child(i, cmd_r, done_w):
    work(i)
    os.write(done_w, b"x")
    while True:
        c = os.read(cmd_r, 1)
        if c == b"w":
            work(i)
            os.write(done_w, b"x")
        elif c == b"g":
            for k in range(2000):
                GROW.labels(f"series-{k:05d}").inc(k)
            os.write(done_w, b"x")
        else:
            os._exit(0)


workers = []
for i in range(n):
    cmd_r, cmd_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(cmd_w)
        os.close(done_r)
        child(i, cmd_r, done_w)
    os.close(cmd_r)
    os.close(done_w)
    os.read(done_r, 1)
    workers.append({"pid": pid, "cmd": cmd_w, "done": done_r})

print(json.dumps({"parent": os.getpid(), "pids": [w["pid"] for w in workers]}), flush=True)

for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    try:
        if parts[0] == "kill":
            w = workers[int(parts[1])]
            os.kill(w["pid"], signal.SIGKILL)
            os.waitpid(w["pid"], 0)
        elif parts[0] == "work":
            w = workers[int(parts[1])]
            os.write(w["cmd"], b"w")
            os.read(w["done"], 1)
        elif parts[0] == "grow":
            w = workers[int(parts[1])]
            os.write(w["cmd"], b"g")
            os.read(w["done"], 1)
        elif parts[0] == "exit":
            break
        print("ok", flush=True)
    except Exception as e:  # reported to the test, which fails with it
        print("err", e, flush=True)

for w in workers:
    try:
        os.write(w["cmd"], b"q")
    except OSError:
        pass
for w in workers:
    try:
        os.waitpid(w["pid"], 0)
    except ChildProcessError:
        pass
