// An example worker (illustrative) that pushes its metrics to the monasca-sidecar beside it.
//
// Several processes of it run in one container, like the workers of a pre-fork server. Each one
// PUTs its own cumulative values, in the Prometheus text format, to the Pushgateway API of the
// sidecar under its own grouping key: PUT http://127.0.0.1:9091/metrics/job/orders/instance/<id>.
// The sidecar keeps the latest push of every worker and serves their aggregate on :9102, so
// Prometheus sees one orders_processed_total per pod, not one per worker; when a worker restarts
// and its counters start again from zero, the aggregate does not go backwards.
//
// Prometheus client libraries do exactly this push:
//   Java: PushGateway.builder().address("127.0.0.1:9091").job("orders")
//             .groupingKey("instance", id).build().push();
//   Go:   push.New("http://127.0.0.1:9091", "orders").Grouping("instance", id).
//             Collector(processed).Push()
// This file uses the JDK alone so that the example needs no build: java PushWorker.java <id>.

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Locale;
import java.util.Random;

public class PushWorker {
    static final double[] BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0};

    long ok;
    long failed;
    final long[] bucketCounts = new long[BUCKETS.length];
    long count;
    double sum;
    int queueDepth;

    public static void main(String[] args) throws Exception {
        String id = args.length > 0 ? args[0] : "worker-" + ProcessHandle.current().pid();
        String base = System.getenv().getOrDefault("PUSH_URL", "http://127.0.0.1:9091");
        long intervalMs = 1000L * Long.parseLong(System.getenv().getOrDefault("PUSH_INTERVAL_SECONDS", "5"));
        long rounds = Long.parseLong(System.getenv().getOrDefault("PUSH_ROUNDS", "0")); // 0: forever
        URI uri = URI.create(base + "/metrics/job/orders/instance/" + id);
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();
        PushWorker worker = new PushWorker();
        Random random = new Random();
        for (long round = 1; rounds == 0 || round <= rounds; round++) {
            worker.work(random);
            HttpRequest request = HttpRequest.newBuilder(uri)
                    .timeout(Duration.ofSeconds(5))
                    .header("Content-Type", "text/plain; version=0.0.4")
                    .PUT(HttpRequest.BodyPublishers.ofString(worker.exposition()))
                    .build();
            try {
                HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
                if (response.statusCode() / 100 != 2) {
                    System.err.printf("%s: push refused: %d %s%n", id, response.statusCode(), response.body().trim());
                }
            } catch (IOException e) {
                // The sidecar may not be up yet: the next push carries the same cumulative values.
                System.err.printf("%s: push failed: %s%n", id, e);
            }
            Thread.sleep(intervalMs);
        }
    }

    /** Simulates a batch of orders. */
    void work(Random random) {
        int batch = 1 + random.nextInt(20);
        for (int i = 0; i < batch; i++) {
            double seconds = random.nextDouble() * random.nextDouble() * 0.5;
            if (random.nextInt(50) == 0) {
                failed++;
            } else {
                ok++;
            }
            count++;
            sum += seconds;
            for (int b = 0; b < BUCKETS.length; b++) {
                if (seconds <= BUCKETS[b]) {
                    bucketCounts[b]++;
                }
            }
        }
        queueDepth = random.nextInt(10);
    }

    /** This worker's cumulative values in the Prometheus text format 0.0.4. */
    String exposition() {
        StringBuilder out = new StringBuilder();
        out.append("# HELP orders_processed_total Orders processed.\n");
        out.append("# TYPE orders_processed_total counter\n");
        out.append("orders_processed_total{outcome=\"ok\"} ").append(ok).append('\n');
        out.append("orders_processed_total{outcome=\"failed\"} ").append(failed).append('\n');
        out.append("# HELP order_processing_seconds Time to process an order.\n");
        out.append("# TYPE order_processing_seconds histogram\n");
        for (int b = 0; b < BUCKETS.length; b++) {
            out.append("order_processing_seconds_bucket{le=\"").append(BUCKETS[b]).append("\"} ")
                    .append(bucketCounts[b]).append('\n');
        }
        out.append("order_processing_seconds_bucket{le=\"+Inf\"} ").append(count).append('\n');
        out.append("order_processing_seconds_sum ").append(String.format(Locale.ROOT, "%.6f", sum)).append('\n');
        out.append("order_processing_seconds_count ").append(count).append('\n');
        out.append("# HELP orders_queue_depth Orders waiting in this worker's queue.\n");
        out.append("# TYPE orders_queue_depth gauge\n");
        out.append("orders_queue_depth ").append(queueDepth).append('\n');
        return out.toString();
    }
}
