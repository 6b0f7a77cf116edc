"""Prints OTLP export request bodies made by the real OpenTelemetry Python SDK, for the
sidecar's OTLP tests: one line of hex (the protobuf body the OTLP/HTTP exporter POSTs) and one
line of OTLP/JSON (the same message in the protobuf JSON mapping with integer enums, which is
OTLP/JSON's form when no trace/span ids are present).

usage: otlp_bodies.py COUNT   -- a counter at COUNT, a histogram of COUNT observations of 0.5,
                                 a gauge at 7 and an up-down counter at -3
"""
import sys

from google.protobuf.json_format import MessageToJson
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

count = int(sys.argv[1])
reader = InMemoryMetricReader()
provider = MeterProvider(
    metric_readers=[reader],
    resource=Resource({"service.name": "json-svc", "worker.id": "7", "region": "eu"}),
)
meter = provider.get_meter("bodies", "2.0")
counter = meter.create_counter("jobs.done", unit="{job}", description="Jobs done.")
hist = meter.create_histogram("job.duration", unit="s", description="Job time.")
updown = meter.create_up_down_counter("queue.depth", description="Queue depth.")
gauge = meter.create_gauge("temperature", unit="Cel")
for _ in range(count):
    counter.add(1, {"queue": "a"})
    hist.record(0.5, {"queue": "a"})
updown.add(-3, {"queue": "a"})
gauge.set(7, {"room": "1"})
request = encode_metrics(reader.get_metrics_data())
print(request.SerializeToString().hex())
print(MessageToJson(request, use_integers_for_enums=True, indent=None))
