// Command go-push-worker is one worker of a multi-process application that pushes its metrics
// to the monasca-sidecar with the real Go client library, exactly as a Go service would:
//
//	push.New(gateway, job).Grouping("instance", id).Collector(...).Push()
//
// client_golang's Pusher sends delimited protobuf bodies (PUT, so each push replaces the
// worker's previous one). The end-to-end test e2e/tests/clients.rs runs several of these
// processes against a real sidecar, SIGKILLs one, and checks the totals through a real
// Prometheus.
//
// The work is deterministic so that the test knows the exact totals: every round adds 3 to
// goworker_jobs_total{outcome="ok"}, adds 1 to {outcome="failed"} every 4th round, observes
// 0.0625, 0.25 and 2 in the histogram goworker_job_seconds (buckets 0.1 and 1; dyadic values,
// so the sums are exact in floating point) and sets the gauge goworker_queue_depth to the round
// number. After each successful push it prints "pushed <round>" on stdout.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
)

func main() {
	gateway := flag.String("gateway", "http://127.0.0.1:9091", "base URL of the sidecar's Pushgateway API")
	job := flag.String("job", "goworker", "job name of the push")
	instance := flag.String("instance", "", "this worker's id (grouping label instance); required")
	rounds := flag.Int("rounds", 10, "rounds of work, one push each")
	interval := flag.Duration("interval", 200*time.Millisecond, "pause between rounds")
	pauseAfter := flag.Int("pause-after", 0, "after this many pushes, block forever (so a test can SIGKILL the worker at a known point); 0: never")
	flag.Parse()
	if *instance == "" || *rounds < 1 || *pauseAfter < 0 {
		fmt.Fprintln(os.Stderr, "usage: go-push-worker -instance ID [-gateway URL] [-job JOB] [-rounds N>=1] [-interval D] [-pause-after K]")
		os.Exit(2)
	}

	jobs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "goworker_jobs_total",
		Help: "Jobs processed by this worker.",
	}, []string{"outcome"})
	seconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "goworker_job_seconds",
		Help:    "Time to process a job.",
		Buckets: []float64{0.1, 1},
	})
	queue := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "goworker_queue_depth",
		Help: "Jobs waiting in this worker's queue.",
	})
	// Both outcomes exist from the first push on, as a real service would initialise them.
	jobs.WithLabelValues("failed")
	pusher := push.New(*gateway, *job).
		Grouping("instance", *instance).
		Collector(jobs).
		Collector(seconds).
		Collector(queue)

	for round := 1; round <= *rounds; round++ {
		jobs.WithLabelValues("ok").Add(3)
		if round%4 == 0 {
			jobs.WithLabelValues("failed").Inc()
		}
		for _, v := range []float64{0.0625, 0.25, 2} {
			seconds.Observe(v)
		}
		queue.Set(float64(round))
		if err := pusher.Push(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: push %d failed: %v\n", *instance, round, err)
			os.Exit(1)
		}
		fmt.Printf("pushed %d\n", round)
		if round == *pauseAfter {
			select {} // wait for the test's SIGKILL
		}
		if round < *rounds {
			time.Sleep(*interval)
		}
	}
}
