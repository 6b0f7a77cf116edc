"""Writes benchmark directories with the real prometheus_client multiprocess code.

Usage: mp_write.py DIR live WORKERS SERIES | mp_write.py DIR dead PIDS

Each worker is a distinct pid as prometheus_client sees it: the client's own
MultiProcessValue is given a process identifier we choose, so its MmapedDict writes real
`counter_<pid>.db`, `histogram_<pid>.db`, `gauge_<mode>_<pid>.db` files, byte for byte what
a fleet of processes would leave (without forking thousands of them). Dead pids are numbers
above any live pid on this machine.
"""
import os
import sys

directory, kind = sys.argv[1], sys.argv[2]
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
from prometheus_client import Counter, Gauge, Histogram, Summary, values  # noqa: E402

current = [0]
values.ValueClass = values.MultiProcessValue(process_identifier=lambda: current[0])

if kind == "live":
    workers, series = int(sys.argv[3]), int(sys.argv[4])
    # series per worker: 75% counters, 5% histograms of 10 buckets (13 samples), 20% livesum gauges
    n_hist = max(1, series // 20 // 13)
    n_gauge = series // 5
    n_counter = series - n_gauge - n_hist * 13
    for w in range(workers):
        current[0] = 100000 + w
        c = Counter("bench_requests", "Requests.", ["endpoint"], registry=None)
        g = Gauge("bench_inflight", "In flight.", ["slot"], registry=None, multiprocess_mode="livesum")
        h = Histogram("bench_latency_seconds", "Latency.", ["route"], registry=None,
                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        for i in range(n_counter):
            c.labels(f"/v2.0/metrics/{i}").inc(w + i)
        for i in range(n_gauge):
            g.labels(str(i)).set(i)
        for i in range(n_hist):
            h.labels(f"r{i}").observe(0.03 * (w % 7))
elif kind == "dead":
    pids = int(sys.argv[3])
    for p in range(pids):
        current[0] = 4_000_000 + p
        Counter("bench_jobs", "Jobs.", ["queue"], registry=None).labels("a").inc(p)
        Histogram("bench_job_seconds", "Job time.", registry=None).observe(0.2)
        Gauge("bench_last", "Last.", registry=None, multiprocess_mode="all").set(p)
        Summary("bench_payload_bytes", "Payload.", registry=None).observe(100)
else:
    sys.exit(f"unknown kind {kind}")
