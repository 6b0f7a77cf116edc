"""Sends a known amount of work with the real monasca-statsd client (PyPI monasca-statsd).

Usage: monasca_statsd_sender.py PORT REQUESTS
Each request: a counter increment with dimensions, a timer (sent by the client as a |g gauge),
and a queue-depth gauge. UDP on loopback; sent slowly enough that nothing is dropped.
"""
import sys
import time

import monascastatsd

port, requests = int(sys.argv[1]), int(sys.argv[2])
client = monascastatsd.Client(name="monasca", host="127.0.0.1", port=port,
                              dimensions={"service": "monitoring", "component": "api"})
counter = client.get_counter("requests")
gauge = client.get_gauge("queue")
timer = client.get_timer()
for i in range(requests):
    counter.increment(dimensions={"endpoint": "/v2.0/metrics", "status": str(200 + i % 2)})
    timer.timing("db_query_seconds", 0.01 * (i % 5))
    gauge.send("depth", i % 7)
    if i % 50 == 0:
        time.sleep(0.01)
print("sent", requests, flush=True)
