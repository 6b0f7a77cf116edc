"""A minimal WSGI app instrumented with prometheus_client in multiprocess mode, run by the
sidecar's tests under real gunicorn workers (PROMETHEUS_MULTIPROC_DIR set by the test).

GET /hello   counts one request (app_requests_total{path="/hello"}) and its latency
GET /pid     answers the serving worker's pid (not counted)
"""
import os
import time

from prometheus_client import Counter, Histogram

REQUESTS = Counter("app_requests", "Requests served.", ["path"])
LATENCY = Histogram("app_request_seconds", "Request latency.", ["path"])


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/pid":
        body = str(os.getpid()).encode()
    else:
        start = time.perf_counter()
        body = b"hello\n"
        REQUESTS.labels(path).inc()
        LATENCY.labels(path).observe(time.perf_counter() - start)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
