"""An example WSGI API instrumented with prometheus_client (illustrative).

gunicorn runs it in several worker processes. PROMETHEUS_MULTIPROC_DIR, set in this container by
monasca-operator (MetricsSidecar `multiprocess: true`), puts prometheus_client in multiprocess
mode: each worker writes its values to *.db files in that directory, shared with the
monasca-sidecar container, which aggregates them into one /metrics on port 9102. Nothing here
serves metrics, and nothing here knows about the sidecar.
"""

import json
import os
import random
import time

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("api_requests", "Requests served.", ["method", "endpoint", "status"])
LATENCY = Histogram("api_request_seconds", "Time to serve a request.", ["endpoint"])
# Requests being served right now, summed over the live workers (dead workers' values vanish).
IN_FLIGHT = Gauge("api_inflight_requests", "Requests in progress.", multiprocess_mode="livesum")
# When each live worker started: one series per worker (labelled pid), dead workers dropped.
STARTED = Gauge("api_worker_start_time_seconds", "Start time of the worker process.",
                multiprocess_mode="liveall")
STARTED.set_to_current_time()

ENDPOINTS = {"/": "root", "/v2.0/metrics": "metrics", "/healthz": "healthz"}


def app(environ, start_response):
    endpoint = ENDPOINTS.get(environ.get("PATH_INFO", "/"), "other")
    start = time.perf_counter()
    with IN_FLIGHT.track_inprogress():
        if endpoint == "other":
            status, body = "404 Not Found", {"error": "not found"}
        elif endpoint == "healthz":
            status, body = "200 OK", {"status": "ok"}
        else:
            time.sleep(random.uniform(0.001, 0.05))  # some work
            status, body = "200 OK", {"worker": os.getpid(), "endpoint": endpoint}
    payload = (json.dumps(body) + "\n").encode()
    REQUESTS.labels(environ.get("REQUEST_METHOD", "GET"), endpoint, status.split()[0]).inc()
    LATENCY.labels(endpoint).observe(time.perf_counter() - start)
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(payload)))])
    return [payload]
