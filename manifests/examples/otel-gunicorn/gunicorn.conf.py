# gunicorn settings for the OpenTelemetry example: 4 workers, each with its own MeterProvider
# created after fork (a provider created before fork would be shared by copies that never
# export). The exporter reads OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, set by the operator.
import os

from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

bind = "0.0.0.0:8000"
workers = 4
max_requests = 1000
max_requests_jitter = 100


def post_fork(server, worker):
    resource = Resource.create({
        "service.name": "otel-gunicorn",
        # A worker attribute: identifies the process, never becomes a label.
        "process.pid": os.getpid(),
    })
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=10000)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader], resource=resource))
