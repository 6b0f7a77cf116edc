"""A minimal WSGI app instrumented with the OpenTelemetry Python SDK, run by the sidecar's OTLP
tests under real gunicorn workers. The MeterProvider is created per worker in gunicorn's
`post_fork` hook (otel_gunicorn_conf.py), as OpenTelemetry documents for pre-fork servers.

GET /hello   counts one request (app.requests{path="/hello"}), records its latency
             (app.request.duration, seconds) and moves an up-down counter (app.active);
             answers "hello <pid>"
GET /pid     answers the serving worker's pid (not counted)
"""
import os
import time

from opentelemetry import metrics

_instruments = None


def instruments():
    # The meter provider is set in post_fork; look the instruments up afterwards.
    global _instruments
    if _instruments is None:
        meter = metrics.get_meter("otel_gunicorn_app", "1.0")
        _instruments = (
            meter.create_counter("app.requests", unit="{request}", description="Requests served."),
            meter.create_histogram("app.request.duration", unit="s", description="Request latency."),
            meter.create_up_down_counter("app.active", unit="{request}", description="Requests in flight."),
        )
    return _instruments


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/pid":
        body = str(os.getpid()).encode()
    else:
        requests, duration, active = instruments()
        start = time.perf_counter()
        active.add(1, {"path": path})
        body = b"hello %d\n" % os.getpid()
        requests.add(1, {"path": path})
        duration.record(time.perf_counter() - start, {"path": path})
        active.add(-1, {"path": path})
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
