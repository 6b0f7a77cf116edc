"""A worker exposing its own /metrics with prometheus_client's start_http_server (the
ordinary, non-multiprocess mode), for the sidecar's scrape-mode tests.

Usage: scrape_worker.py PORT

Prints "ready" once serving, then obeys commands on stdin, answering "ok":
  inc K    jobs_total{queue="q"} += K and inflight = K
"""
import sys

from prometheus_client import Counter, Gauge, start_http_server

JOBS = Counter("jobs", "Jobs done.", ["queue"])
INFLIGHT = Gauge("inflight", "Jobs in flight.")

start_http_server(int(sys.argv[1]), addr="127.0.0.1")
print("ready", flush=True)
for line in sys.stdin:
    parts = line.split()
    if parts and parts[0] == "inc":
        JOBS.labels("q").inc(float(parts[1]))
        INFLIGHT.set(float(parts[1]))
        print("ok", flush=True)
