// An example worker that pushes its metrics to the monasca-sidecar beside it with the Prometheus
// Java client library (io.prometheus simpleclient + simpleclient_pushgateway; built by pom.xml
// beside this file: mvn package, then java -jar target/push-worker.jar <id>).
//
// Several processes of it run in one container, like the workers of a pre-fork server. Each one
// PUTs its own cumulative values to the Pushgateway API of the sidecar under its own grouping key:
// PUT http://127.0.0.1:9091/metrics/job/orders/instance/<id>. The sidecar keeps the latest push
// of every worker and serves their aggregate on :9102, so Prometheus sees one
// orders_processed_total per pod, not one per worker; when a worker restarts and its counters
// start again from zero, the aggregate does not go backwards.
//
// A Go service does the same push with client_golang:
//   push.New("http://127.0.0.1:9091", "orders").Grouping("instance", id).
//       Collector(processed).Push()
//
// Environment: PUSH_URL (default http://127.0.0.1:9091), PUSH_INTERVAL_SECONDS (default 5,
// fractions allowed), PUSH_ROUNDS (default 0: forever). PUSH_PAUSE_AFTER=<k> makes the worker
// block after its k-th push: the end-to-end test (e2e/tests/clients.rs) SIGKILLs it there, at a
// point where it knows exactly what the worker last pushed. After every successful push the
// worker prints what it pushed on one line ("pushed <round> ok=.. failed=.. ..."), which that
// test sums to know the exact totals.
//
// PROMETHEUS_DISABLE_CREATED_SERIES=true (set in deployment.yaml) stops simpleclient from
// pushing a *_created gauge per counter and histogram: each worker has its own creation time,
// and a sum of timestamps across workers means nothing.

import io.prometheus.client.CollectorRegistry;
import io.prometheus.client.Counter;
import io.prometheus.client.Gauge;
import io.prometheus.client.Histogram;
import io.prometheus.client.exporter.PushGateway;
import java.io.IOException;
import java.net.URL;
import java.util.Collections;
import java.util.Locale;
import java.util.Map;
import java.util.Random;

public class PushWorker {
    static final double[] BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0};
    /** The bucket whose cumulative count the worker reports on stdout (le="0.1"). */
    static final int REPORTED_BUCKET = 4;

    final CollectorRegistry registry = new CollectorRegistry();
    final Counter processed = Counter.build()
            .name("orders_processed_total").help("Orders processed.")
            .labelNames("outcome").register(registry);
    final Histogram seconds = Histogram.build()
            .name("order_processing_seconds").help("Time to process an order.")
            .buckets(BUCKETS).register(registry);
    final Gauge queueDepth = Gauge.build()
            .name("orders_queue_depth").help("Orders waiting in this worker's queue.")
            .register(registry);

    PushWorker() {
        // Both outcomes exist from the first push on (a series that appears late has no start).
        processed.labels("ok");
        processed.labels("failed");
    }

    public static void main(String[] args) throws Exception {
        String id = args.length > 0 ? args[0] : "worker-" + ProcessHandle.current().pid();
        String base = System.getenv().getOrDefault("PUSH_URL", "http://127.0.0.1:9091");
        long intervalMs = (long) (1000 * Double.parseDouble(
                System.getenv().getOrDefault("PUSH_INTERVAL_SECONDS", "5")));
        long rounds = Long.parseLong(System.getenv().getOrDefault("PUSH_ROUNDS", "0")); // 0: forever
        long pauseAfter = Long.parseLong(System.getenv().getOrDefault("PUSH_PAUSE_AFTER", "0"));
        PushGateway gateway = new PushGateway(new URL(base));
        Map<String, String> groupingKey = Collections.singletonMap("instance", id);
        PushWorker worker = new PushWorker();
        Random random = new Random();
        for (long round = 1; rounds == 0 || round <= rounds; round++) {
            worker.work(random);
            try {
                // PUT: this push replaces the worker's previous one (its cumulative values).
                gateway.push(worker.registry, "orders", groupingKey);
                System.out.println("pushed " + round + " " + worker.report());
                System.out.flush();
            } catch (IOException e) {
                // The sidecar may not be up yet: the next push carries the same cumulative values.
                System.err.printf("%s: push failed: %s%n", id, e);
            }
            if (round == pauseAfter) {
                Thread.sleep(Long.MAX_VALUE);
            }
            Thread.sleep(intervalMs);
        }
    }

    /** Simulates a batch of orders. */
    void work(Random random) {
        int batch = 1 + random.nextInt(20);
        for (int i = 0; i < batch; i++) {
            // Multiples of 1/128 s: sums stay exact in floating point.
            double latency = random.nextInt(96) / 128.0;
            processed.labels(random.nextInt(50) == 0 ? "failed" : "ok").inc();
            seconds.observe(latency);
        }
        queueDepth.set(random.nextInt(10));
    }

    /** The cumulative values of the last push, read back from the client library. */
    String report() {
        Histogram.Child.Value h = seconds.labels().get();
        return String.format(Locale.ROOT, "ok=%d failed=%d count=%d sum=%s le0.1=%d queue=%d",
                (long) processed.labels("ok").get(), (long) processed.labels("failed").get(),
                (long) h.buckets[h.buckets.length - 1], Double.toString(h.sum),
                (long) h.buckets[REPORTED_BUCKET], (long) queueDepth.get());
    }
}
