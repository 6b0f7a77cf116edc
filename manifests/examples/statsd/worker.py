"""An example worker pool reporting with monasca-statsd (illustrative).

WORKERS processes each handle simulated invoices and send, over UDP to the sidecar on
127.0.0.1:8125:
  billing.invoices        counter with dimensions   -> billing_invoices_total{service,status}
  billing.invoice_seconds timer (a |g of seconds)   -> billing_invoice_seconds histogram (mapping)
  billing.queue           gauge                     -> billing_queue
  billing.debug.loop      gauge                     -> dropped by a mapping
StatsD carries deltas, so all processes add up in the sidecar without knowing about each other.
"""

import multiprocessing
import os
import random
import time

import monascastatsd


def work(index, rounds):
    client = monascastatsd.Client(
        name="billing",
        host=os.environ.get("STATSD_HOST", "127.0.0.1"),
        port=int(os.environ.get("STATSD_PORT", "8125")),
        dimensions={"service": "billing"},
    )
    invoices = client.get_counter("invoices")
    queue = client.get_gauge("queue")
    debug = client.get_gauge("debug")
    timer = client.get_timer()
    n = 0
    while rounds == 0 or n < rounds:
        n += 1
        with timer.time("invoice_seconds"):
            time.sleep(random.uniform(0.005, 0.2))
        status = "failed" if random.random() < 0.02 else "ok"
        invoices.increment(dimensions={"status": status})
        queue.send("", random.randint(0, 10))
        debug.send("loop", n)


def main():
    workers = int(os.environ.get("WORKERS", "4"))
    rounds = int(os.environ.get("ROUNDS", "0"))  # 0: forever
    procs = [multiprocessing.Process(target=work, args=(i, rounds)) for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"worker {p.pid} exited with {p.exitcode}")


if __name__ == "__main__":
    main()
