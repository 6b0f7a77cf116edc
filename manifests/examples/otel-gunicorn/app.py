"""An example WSGI API instrumented with the OpenTelemetry SDK (metrics only).

The MeterProvider is created per worker in gunicorn.conf.py's post_fork hook; the instruments
are looked up lazily, after it is set.
"""
import time

from opentelemetry import metrics

_instruments = None


def instruments():
    global _instruments
    if _instruments is None:
        meter = metrics.get_meter("example.api", "1.0")
        _instruments = (
            meter.create_counter("http.server.requests", unit="{request}",
                                 description="Requests served."),
            meter.create_histogram("http.server.request.duration", unit="s",
                                   description="Request latency."),
        )
    return _instruments


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    requests, duration = instruments()
    start = time.perf_counter()
    body = b"hello\n"
    requests.add(1, {"http.route": path})
    duration.record(time.perf_counter() - start, {"http.route": path})
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
