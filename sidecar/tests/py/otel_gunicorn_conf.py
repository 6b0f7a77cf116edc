"""gunicorn config for otel_gunicorn_app: one MeterProvider per worker, created after fork.

OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (the sidecar), OTEL_METRIC_EXPORT_INTERVAL and
OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE come from the environment, read by the
real SDK. With OTEL_TEST_WORKER_ATTRIBUTES=1 each worker's resource is `Resource.create(...)`
(the SDK adds a random `service.instance.id`) plus `worker.id` and `process.pid`; otherwise
every worker sends the very same resource (`Resource(...)`, no defaults added), and the sidecar
tells the workers apart by their cumulative streams' start times.
"""
import os

from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource


def post_fork(server, worker):
    attributes = {"service.name": "otel-gunicorn", "deployment.environment": "test"}
    if os.environ.get("OTEL_TEST_WORKER_ATTRIBUTES") == "1":
        attributes["worker.id"] = str(worker.age)
        attributes["process.pid"] = os.getpid()
        resource = Resource.create(attributes)
    else:
        resource = Resource(attributes)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(
        MeterProvider(metric_readers=[reader], resource=resource)
    )
