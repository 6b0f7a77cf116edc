"""Worker churn with the real prometheus_client: short-lived forked workers, as under
gunicorn's max_requests, each with its own `*_<pid>.db` files.

Usage: mp_churn.py DIR

Prints {"parent": pid} first, then obeys commands on stdin, answering one line:

  batch K   fork K workers that each do one unit of work and exit; all reaped before "ok"
  live K    fork K workers that do one unit of work and stay; answers "ok PID PID ..."
  exit      (or end of input) stop the live workers and exit

One unit of work: requests_total{w="x"} += 1, latency observes 0.25, size observes 3,
a `sum` gauge set to 1 and a `livesum` gauge set to 1.
"""
import json
import os
import sys

directory = sys.argv[1]
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory

from prometheus_client import Counter, Gauge, Histogram, Summary  # noqa: E402

REQUESTS = Counter("churn_requests", "Requests.", ["w"])
LATENCY = Histogram("churn_latency_seconds", "Latency.")
SIZE = Summary("churn_size_bytes", "Size.")
EVER = Gauge("churn_ever", "1 per worker, kept after death.", multiprocess_mode="sum")
LIVE = Gauge("churn_live", "1 per live worker.", multiprocess_mode="livesum")


def work():
    REQUESTS.labels("x").inc()
    LATENCY.observe(0.25)
    SIZE.observe(3)
    EVER.set(1)
    LIVE.set(1)


live = []
print(json.dumps({"parent": os.getpid()}), flush=True)
for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    if parts[0] == "batch":
        pids = []
        for _ in range(int(parts[1])):
            pid = os.fork()
            if pid == 0:
                work()
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        print("ok", flush=True)
    elif parts[0] == "live":
        pids = []
        for _ in range(int(parts[1])):
            r, w = os.pipe()
            done_r, done_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(w)
                work()
                os.write(done_w, b"x")
                os.read(r, 1)
                os._exit(0)
            os.close(r)
            os.read(done_r, 1)
            live.append((pid, w))
            pids.append(pid)
        print("ok " + " ".join(str(p) for p in pids), flush=True)
    elif parts[0] == "exit":
        break
    else:
        print("err unknown command", flush=True)

# Each child also holds the pipes of the children forked before it, so end of file would
# never come: tell each one to go.
for pid, w in live:
    os.write(w, b"q")
    os.close(w)
for pid, w in live:
    os.waitpid(pid, 0)
