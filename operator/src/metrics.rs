//! Self-metrics, rendered by hand in the Prometheus text format 0.0.4.
//!
//! Every label value comes from a fixed enum ([`Outcome`], [`SkipReason`], [`ReloadResult`]), so
//! cardinality is bounded whatever the requests contain. Counters are plain atomics: admission
//! is on the pod-creation path and must not contend on a lock to count itself.

use crate::inject::SkipReason;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How one AdmissionReview ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted with a patch.
    Injected,
    /// Admitted unchanged (see the skip reason).
    Skipped,
    /// Not an AdmissionReview: answered HTTP 400.
    Invalid,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Injected, Outcome::Skipped, Outcome::Invalid];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Invalid => "invalid",
        }
    }
}

/// How a serving-certificate reload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    Loaded,
    Failed,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 2] = [ReloadResult::Loaded, ReloadResult::Failed];

    pub fn label(self) -> &'static str {
        match self {
            ReloadResult::Loaded => "loaded",
            ReloadResult::Failed => "failed",
        }
    }
}

/// Upper bounds (seconds) of the review latency histogram: admission budgets are in
/// milliseconds, so the buckets are too.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A fixed-bucket histogram over atomics.
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The operator's self-metrics.
pub struct Metrics {
    reviews: [AtomicU64; Outcome::ALL.len()],
    skips: [AtomicU64; SkipReason::ALL.len()],
    latency: Histogram,
    cert_reloads: [AtomicU64; ReloadResult::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reviews: std::array::from_fn(|_| AtomicU64::new(0)),
            skips: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Histogram::default(),
            cert_reloads: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Metrics {
    /// Counts one review and its handling time.
    pub fn review(&self, outcome: Outcome, skip: Option<SkipReason>, elapsed: Duration) {
        self.reviews[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(reason) = skip {
            self.skips[reason.index()].fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(elapsed);
    }

    /// Counts one serving-certificate reload attempt.
    pub fn cert_reload(&self, result: ReloadResult) {
        self.cert_reloads[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Reviews counted with `outcome` so far.
    pub fn reviews(&self, outcome: Outcome) -> u64 {
        self.reviews[outcome as usize].load(Ordering::Relaxed)
    }

    /// Skips counted with `reason` so far.
    pub fn skips(&self, reason: SkipReason) -> u64 {
        self.skips[reason.index()].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(
            out,
            "# HELP monasca_operator_admission_reviews_total AdmissionReviews answered, by outcome."
        );
        let _ = writeln!(
            out,
            "# TYPE monasca_operator_admission_reviews_total counter"
        );
        for outcome in Outcome::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_admission_reviews_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                self.reviews(outcome)
            );
        }
        let _ = writeln!(
            out,
            "# HELP monasca_operator_admission_skips_total Pods admitted unchanged, by reason."
        );
        let _ = writeln!(out, "# TYPE monasca_operator_admission_skips_total counter");
        for reason in SkipReason::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_admission_skips_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.skips(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP monasca_operator_admission_duration_seconds Time to answer one AdmissionReview (parse, decide, serialize)."
        );
        let _ = writeln!(
            out,
            "# TYPE monasca_operator_admission_duration_seconds histogram"
        );
        let mut cumulative = 0u64;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "monasca_operator_admission_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.latency.counts[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "monasca_operator_admission_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "monasca_operator_admission_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "monasca_operator_admission_duration_seconds_count {cumulative}"
        );
        let _ = writeln!(
            out,
            "# HELP monasca_operator_tls_reloads_total Serving certificate reloads after the files changed, by result."
        );
        let _ = writeln!(out, "# TYPE monasca_operator_tls_reloads_total counter");
        for result in ReloadResult::ALL {
            let _ = writeln!(
                out,
                "monasca_operator_tls_reloads_total{{result=\"{}\"}} {}",
                result.label(),
                self.cert_reloads[result as usize].load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lists_every_fixed_label_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.review(Outcome::Injected, None, Duration::from_micros(300));
        m.review(
            Outcome::Skipped,
            Some(SkipReason::NotRequested),
            Duration::from_millis(3),
        );
        m.review(Outcome::Invalid, None, Duration::from_secs(5));
        let text = m.render();
        assert!(text.contains("monasca_operator_admission_reviews_total{outcome=\"injected\"} 1"));
        assert!(
            text.contains("monasca_operator_admission_skips_total{reason=\"not_requested\"} 1")
        );
        assert!(text.contains("monasca_operator_admission_skips_total{reason=\"host_network\"} 0"));
        assert!(
            text.contains("monasca_operator_admission_duration_seconds_bucket{le=\"0.0005\"} 1")
        );
        assert!(
            text.contains("monasca_operator_admission_duration_seconds_bucket{le=\"0.005\"} 2")
        );
        assert!(text.contains("monasca_operator_admission_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("monasca_operator_admission_duration_seconds_count 3"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
