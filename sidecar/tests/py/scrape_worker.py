"""A worker exposing its own /metrics with prometheus_client's start_http_server (the
ordinary, non-multiprocess mode, with the default process collector's
`process_start_time_seconds`), for the sidecar's scrape-mode tests.

Usage: scrape_worker.py PORT [COMMAND ARG]...

Runs the COMMAND ARG pairs before it serves (what a restarted process counted by the time it
is first scraped), prints "ready" once serving, then obeys commands on stdin, answering "ok":
  inc K    jobs_total{queue="q"} += K and inflight = K
  fail K   failures_total += K (a rarely counted outcome)
"""
import sys

from prometheus_client import Counter, Gauge, start_http_server

JOBS = Counter("jobs", "Jobs done.", ["queue"])
FAILURES = Counter("failures", "Jobs failed.")
INFLIGHT = Gauge("inflight", "Jobs in flight.")


def obey(command, arg):
    if command == "inc":
        JOBS.labels("q").inc(float(arg))
        INFLIGHT.set(float(arg))
    elif command == "fail":
        FAILURES.inc(float(arg))
    else:
        raise SystemExit(f"unknown command {command!r}")


before = sys.argv[2:]
for command, arg in zip(before[::2], before[1::2]):
    obey(command, arg)
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
print("ready", flush=True)
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 2:
        obey(*parts)
        print("ok", flush=True)
