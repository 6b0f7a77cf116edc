//! The sidecar's own metrics (`monasca_sidecar_*`) through `prometheus-client`.
//!
//! Components keep the library's atomic [`Counter`]s and [`Gauge`]s and register them once in
//! the [`App`](crate::app::App)'s [`Registry`] (prefix `monasca_sidecar`); values only known
//! at render time (store sizes) come from a [`Collector`](prometheus_client::collector::Collector)
//! using [`const_counter`]/[`const_gauge`]. At render time [`families`] reads the registry
//! through the library's Prometheus data model (`prometheus_protobuf::encode`, no bytes are
//! encoded) into the renderer's [`SelfFamily`] values, so the one renderer of
//! [`crate::expose`] writes them in both exposition formats, sorted among the aggregated
//! families. Label text is built by [`monasca_runtime::labels::push_label`] only.

use crate::expose::SelfFamily;
use crate::model::MetricKind;
use prometheus_client::encoding::prometheus_protobuf::{encode, prometheus_data_model as pb};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
pub use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::atomic::AtomicU64;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;

/// A counter of non-integer amounts (seconds).
pub type SecondsCounter = Counter<f64, AtomicU64>;
/// A gauge of non-integer amounts (seconds).
pub type SecondsGauge = Gauge<f64, AtomicU64>;

/// The prefix every self-metric name gets from the registry.
pub const PREFIX: &str = "monasca_sidecar";

/// A new, empty registry for the sidecar's own metrics.
pub fn registry() -> Registry {
    Registry::with_prefix(PREFIX)
}

/// A counter family with one label whose values are a fixed enum's, each child created up
/// front: an increment is one atomic add on the child (no lock, no lookup), and every value
/// is exposed from the start, zeros included.
#[derive(Clone, Debug)]
pub struct EnumCounters<const N: usize> {
    family: Family<[(&'static str, &'static str); 1], Counter>,
    children: [Counter; N],
}

impl<const N: usize> EnumCounters<N> {
    /// `values[i]` is the label value of the enum variant with index `i`.
    pub fn new(label: &'static str, values: [&'static str; N]) -> Self {
        let family = Family::default();
        let children = values.map(|v| family.get_or_create_owned(&[(label, v)]));
        EnumCounters { family, children }
    }

    /// The child of the variant with index `i` (always in range for an enum's `index()`).
    pub fn child(&self, i: usize) -> &Counter {
        &self.children[i]
    }

    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.family.clone());
    }
}

/// Registers a counter family whose label values are created on first use (the fixed
/// reasons an error path names) so that it is listed, HELP and TYPE, before its first series
/// too, as every self-metric family is (the registry leaves a family with no series out).
pub fn register_listed<S>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    family: Family<S, Counter>,
) where
    S: Clone + Eq + std::hash::Hash + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    registry.register_collector(Box::new(Listed {
        name: name.to_string(),
        help: format!("{help}."),
        family,
    }));
}

#[derive(Debug)]
struct Listed<S> {
    name: String,
    help: String,
    family: Family<S, Counter>,
}

impl<S> prometheus_client::collector::Collector for Listed<S>
where
    S: Clone + Eq + std::hash::Hash + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric =
            encoder.encode_descriptor(&self.name, &self.help, None, MetricType::Counter)?;
        self.family.encode(metric)
    }
}

/// Writes a counter whose value is read at render time (from inside a `Collector`). `help`
/// gets a final `.` as [`Registry::register`] adds one, so both kinds read alike.
pub fn const_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(descriptor(encoder, name, help, MetricType::Counter)?)
}

/// Writes a gauge whose value is read at render time (from inside a `Collector`); `help` as
/// for [`const_counter`].
pub fn const_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(descriptor(encoder, name, help, MetricType::Gauge)?)
}

/// The HELP and TYPE of a render-time metric, `help` ended with the `.` the registry adds.
fn descriptor<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, &format!("{help}."), None, kind)
}

/// Writes a family with one label whose values are read at render time (from inside a
/// `Collector`): one series per `(label value, value)`; `kind` is a counter or a gauge, `help`
/// as for [`const_counter`].
pub fn const_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    series: impl IntoIterator<Item = (&'a str, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = descriptor(encoder, name, help, kind)?;
    for (label_value, value) in series {
        let labels = [(label, label_value)];
        let metric = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(metric)?,
            _ => ConstGauge::new(value).encode(metric)?,
        }
    }
    Ok(())
}

/// Every metric of `registry` as the renderer's families (in registration order).
pub fn families(registry: &Registry) -> Vec<SelfFamily> {
    match encode(registry) {
        Ok(families) => families.into_iter().filter_map(family).collect(),
        Err(e) => {
            // Only a collector can fail, and ours write into memory only.
            tracing::error!(error = %e, "self-metrics not collected");
            Vec::new()
        }
    }
}

/// One family of the data model; `None` for kinds the sidecar does not register.
fn family(f: pb::MetricFamily) -> Option<SelfFamily> {
    let (kind, value): (MetricKind, fn(&pb::Metric) -> Option<f64>) = match f.r#type() {
        pb::MetricType::Counter => (MetricKind::Counter, |m| m.counter.as_ref().map(|c| c.value)),
        pb::MetricType::Gauge => (MetricKind::Gauge, |m| m.gauge.as_ref().map(|g| g.value)),
        other => {
            tracing::error!(family = %f.name, kind = ?other, "self-metric of an unsupported kind left out");
            return None;
        }
    };
    let mut samples: Vec<(String, f64)> = f
        .metric
        .iter()
        .filter_map(|m| {
            let mut labels = String::new();
            for pair in &m.label {
                monasca_runtime::labels::push_label(&mut labels, &pair.name, &pair.value);
            }
            value(m).map(|v| (labels, v))
        })
        .collect();
    // A family's children come out of a hash map: sorted, a scrape reads the same each time.
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    Some(SelfFamily {
        name: f.name,
        kind,
        help: f.help,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Sizes;

    impl prometheus_client::collector::Collector for Sizes {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            const_gauge(&mut encoder, "series", "Series held", 7.0)?;
            let targets = [("b:1", 0.5), ("a\\1", 1.0)];
            const_family(
                &mut encoder,
                "up",
                "Up",
                MetricType::Gauge,
                "target",
                targets,
            )?;
            const_counter(&mut encoder, "resets", "Resets seen", 2.0)
        }
    }

    #[test]
    fn registered_metrics_become_the_renderers_families() {
        let mut registry = registry();
        let pushes: Counter = Counter::default();
        registry.register("pushes", "Pushes accepted", pushes.clone());
        let seconds = SecondsGauge::default();
        registry.register("render_last_seconds", "Last render", seconds.clone());
        let reasons = EnumCounters::new("reason", ["bad", "with \"quote\"\n"]);
        reasons.register(&mut registry, "errors", "Errors by reason");
        registry.register_collector(Box::new(Sizes));

        pushes.inc_by(3);
        seconds.set(0.25);
        reasons.child(1).inc();

        let mut got = families(&registry);
        got.iter_mut()
            .for_each(|f| f.samples.sort_by(|a, b| a.0.cmp(&b.0)));
        let summary: Vec<_> = got
            .iter()
            .map(|f| (f.name.as_ref(), f.kind, f.help.as_ref(), f.samples.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "monasca_sidecar_pushes_total",
                    MetricKind::Counter,
                    "Pushes accepted.",
                    vec![(String::new(), 3.0)]
                ),
                (
                    "monasca_sidecar_render_last_seconds",
                    MetricKind::Gauge,
                    "Last render.",
                    vec![(String::new(), 0.25)]
                ),
                (
                    "monasca_sidecar_errors_total",
                    MetricKind::Counter,
                    "Errors by reason.",
                    vec![
                        (r#"reason="bad""#.to_string(), 0.0),
                        (r#"reason="with \"quote\"\n""#.to_string(), 1.0)
                    ]
                ),
                (
                    "monasca_sidecar_series",
                    MetricKind::Gauge,
                    "Series held.",
                    vec![(String::new(), 7.0)]
                ),
                (
                    "monasca_sidecar_up",
                    MetricKind::Gauge,
                    "Up.",
                    vec![
                        (r#"target="a\\1""#.to_string(), 1.0),
                        (r#"target="b:1""#.to_string(), 0.5)
                    ]
                ),
                (
                    "monasca_sidecar_resets_total",
                    MetricKind::Counter,
                    "Resets seen.",
                    vec![(String::new(), 2.0)]
                ),
            ]
        );
    }

    #[test]
    fn an_enum_child_is_the_familys_series() {
        let counters = EnumCounters::new("reason", ["a", "b"]);
        counters.child(0).inc_by(5);
        let mut registry = registry();
        counters.register(&mut registry, "dropped", "Dropped");
        let got = families(&registry);
        let a = got[0].samples.iter().find(|s| s.0 == r#"reason="a""#);
        assert_eq!(a.map(|s| s.1), Some(5.0));
    }
}
