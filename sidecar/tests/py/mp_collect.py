"""Prints what prometheus_client's MultiProcessCollector exposes for a directory.

Usage: mp_collect.py DIR [--pid-dead PID ...] [--time]

--pid-dead calls multiprocess.mark_process_dead for each pid first (what apps are told to do
from gunicorn's child_exit hook). --time prints only the collection time in seconds, the best
of 3 runs (for the benchmark comparison).
"""
import sys
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import multiprocess

args = sys.argv[1:]
directory = args.pop(0)
timing = "--time" in args
dead = []
if "--pid-dead" in args:
    dead = [a for a in args[args.index("--pid-dead") + 1:] if not a.startswith("--")]
for pid in dead:
    multiprocess.mark_process_dead(int(pid), directory)

registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=directory)
if timing:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        generate_latest(registry)
        best = min(best, time.perf_counter() - start)
    print(f"{best:.6f}")
else:
    sys.stdout.write(generate_latest(registry).decode())
