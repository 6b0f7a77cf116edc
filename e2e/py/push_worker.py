"""A worker that pushes its cumulative counter to the sidecar with the real prometheus_client.

Usage: push_worker.py GATEWAY INSTANCE PUSHES INTERVAL_SECONDS [PAUSE_AFTER]
Prints "pushed N" (flushed) after each successful push, so a test that kills the process knows
exactly what the sidecar last received from it. With PAUSE_AFTER, the worker blocks after that
push (a test kills it there: no push can be in flight, however slow the machine).
"""
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, push_to_gateway

gateway, instance, pushes, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
pause_after = int(sys.argv[5]) if len(sys.argv) > 5 else 0
registry = CollectorRegistry()
jobs = Counter("app_jobs", "Jobs done.", registry=registry)
latency = Histogram("app_job_seconds", "Job time.", buckets=(0.1, 1.0), registry=registry)
for n in range(1, pushes + 1):
    jobs.inc()
    latency.observe(0.05)
    push_to_gateway(gateway, job="pushapp", registry=registry, grouping_key={"instance": instance})
    print(f"pushed {n}", flush=True)
    if n == pause_after:
        time.sleep(3600)
    time.sleep(interval)
