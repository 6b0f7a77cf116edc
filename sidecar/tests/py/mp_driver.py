"""One real prometheus_client multiprocess worker, driven line by line over stdin.

Usage: mp_driver.py DIR [IDENTIFIER]

With IDENTIFIER, the worker names its files with it instead of its pid (client_python's
`MultiProcessValue(process_identifier=...)`), as some pre-fork servers do. Prints
{"pid": pid, "ident": ident} first, then answers each command with "ok":

  inc NAME N [W]        counter NAME (label w=W, default "x") += N
  observe NAME V        histogram NAME observes V
  summary NAME V        summary NAME observes V
  set NAME MODE V       gauge NAME (multiprocess_mode MODE) set to V
  exit                  (or end of input) exit
"""
import json
import os
import sys

directory = sys.argv[1]
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
ident = sys.argv[2] if len(sys.argv) > 2 else None

from prometheus_client import values  # noqa: E402

if ident is not None:
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: ident)

from prometheus_client import Counter, Gauge, Histogram, Summary  # noqa: E402

counters, histograms, summaries, gauges = {}, {}, {}, {}
print(json.dumps({"pid": os.getpid(), "ident": ident or str(os.getpid())}), flush=True)
for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    cmd = parts[0]
    if cmd == "inc":
        name = parts[1]
        if name not in counters:
            counters[name] = Counter(name, "Counter.", ["w"])
        counters[name].labels(parts[3] if len(parts) > 3 else "x").inc(float(parts[2]))
    elif cmd == "observe":
        name = parts[1]
        if name not in histograms:
            histograms[name] = Histogram(name, "Histogram.", buckets=(0.5, 1.0, 5.0))
        histograms[name].observe(float(parts[2]))
    elif cmd == "summary":
        name = parts[1]
        if name not in summaries:
            summaries[name] = Summary(name, "Summary.")
        summaries[name].observe(float(parts[2]))
    elif cmd == "set":
        name, mode = parts[1], parts[2]
        if name not in gauges:
            gauges[name] = Gauge(name, "Gauge.", multiprocess_mode=mode)
        gauges[name].set(float(parts[3]))
    elif cmd == "exit":
        break
    print("ok", flush=True)
