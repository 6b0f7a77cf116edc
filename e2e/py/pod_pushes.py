"""Pushes from several worker identities with the real prometheus_client, run inside a real pod
beside its sidecar (e2e/tests/cluster/real_pods.rs, push variant).

Usage: pod_pushes.py GATEWAY
Worker wK (K = 1..4) does 5*K jobs, pushing its whole registry after each one with
push_to_gateway (PUT: cumulative app_jobs_total, the app_job_seconds histogram, one
observation of 0.05 s per job, and gauge app_queue_depth = K). Then w1 adds app_retries_total = 3
with pushadd_to_gateway (POST: its other families stay), and w4 is deleted with
delete_from_gateway (DELETE: its gauge goes, its counts stay in the totals).
Prints one line per step, "done" at the end.
"""
import sys

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               delete_from_gateway, push_to_gateway, pushadd_to_gateway)

gateway = sys.argv[1]
JOB = "pushapp"
WORKERS = 4
JOBS_PER_K = 5

for k in range(1, WORKERS + 1):
    registry = CollectorRegistry()
    jobs = Counter("app_jobs", "Jobs done.", registry=registry)
    latency = Histogram("app_job_seconds", "Job time.", buckets=(0.1, 1.0), registry=registry)
    depth = Gauge("app_queue_depth", "Jobs waiting.", registry=registry)
    depth.set(k)
    for _ in range(JOBS_PER_K * k):
        jobs.inc()
        latency.observe(0.05)
        push_to_gateway(gateway, job=JOB, registry=registry, grouping_key={"instance": f"w{k}"})
    print(f"w{k} pushed {JOBS_PER_K * k} jobs", flush=True)

retries_registry = CollectorRegistry()
retries = Counter("app_retries", "Jobs retried.", registry=retries_registry)
retries.inc(3)
pushadd_to_gateway(gateway, job=JOB, registry=retries_registry, grouping_key={"instance": "w1"})
print("w1 pushadd app_retries_total 3", flush=True)

delete_from_gateway(gateway, job=JOB, grouping_key={"instance": f"w{WORKERS}"})
print(f"w{WORKERS} deleted", flush=True)
print("done", flush=True)
